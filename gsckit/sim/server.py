"""The aiohttp app: the query and sites handlers, quotas, faults, stats and control endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import polars as pl
from aiohttp import web

from ..errors import ConfigError
from .api import (
    _ApiFailure,
    _as_filter,
    _error_body,
    _fault_failure,
    _parse_query,
    _Query,
    _response_body,
    _unauthenticated,
)
from .config import SimConfig
from .data import _build_slice, _SliceSpec
from .oauth import OAuthServer, TokenState

_CACHE_SLICES = 64
_CACHE_ROWS = 2_000_000
_SAFE_SITE = re.compile(r"^[A-Za-z0-9:/._~%+@!$&'()*,;=\-\[\]]+$")


@dataclass
class RequestRecord:
    """One searchAnalytics query request as the server saw it (``token_id``, never the token)."""

    arrived: float
    finished: float = 0.0
    site: str = ""
    token_id: str | None = None
    day: date | None = None
    start_row: int | None = None
    row_limit: int | None = None
    status: int | None = None
    rows: int = 0
    fault: str | None = None



class _Window:
    """Arrival times within the last ``window_s`` seconds, and the most ever seen at once."""

    __slots__ = ("peak", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.peak = 0

    def add(self, now: float, window_s: float) -> int:
        """Record an arrival; return how many arrived in ``(now - window_s, now]``."""
        self.times.append(now)
        while self.times[0] <= now - window_s:
            self.times.popleft()
        self.peak = max(self.peak, len(self.times))
        return len(self.times)


# ---------------------------------------------------------------------------------------------
# The server


class Simulator:
    """The simulated Search Console API on ``host:port`` (port 0 picks a free one).

    Use as ``async with Simulator(SimConfig(...)) as sim:`` and point a client at
    ``sim.base_url``. A new ``faults`` value given to :meth:`configure` restarts the fault script
    and RNG; :meth:`reset_stats` does too, and clears the stats and the request log.
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config = config if config is not None else SimConfig()
        self.request_log: list[RequestRecord] = []
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._started = False
        self._base_url: str | None = None
        self._cache: OrderedDict[_SliceSpec, pl.DataFrame] = OrderedDict()
        self._cached_rows = 0
        self._revisions: Counter[tuple[str | None, date | None]] = Counter()
        self._token_ids: dict[str, str] = {}
        self._sites_seen: dict[str, None] = {}
        self._quota: dict[str, _Window] = {}
        self._latency_rng = random.Random(config.seed)
        self._in_flight = 0
        self.oauth = OAuthServer()  # tokens it issues name their principal; see oauth.py
        self.reset_stats()

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving."""
        if self._started:
            raise RuntimeError("this Simulator is already started; create a new one")
        self._started = True
        app = web.Application()
        app.router.add_post("/webmasters/v3/sites/{site}/searchAnalytics/query",
                            self._handle_query)
        app.router.add_get("/webmasters/v3/sites", self._handle_sites)
        app.router.add_get("/webmasters/v3/sites/{site}", self._handle_site)
        self.oauth.add_routes(app)
        app.router.add_get("/_sim/stats", self._handle_stats)
        app.router.add_post("/_sim/reset", self._handle_reset)
        app.router.add_post("/_sim/revise", self._handle_revise)
        app.router.add_get("/_sim/truth", self._handle_truth)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/"
        self.oauth.issuer = self._base_url

    async def close(self) -> None:
        """Stop serving; in-flight handlers (e.g. stalls) are cancelled."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/`` once started: the API root to give a client."""
        if self._base_url is None:
            raise RuntimeError("the Simulator is not started; use 'async with Simulator()'")
        return self._base_url

    # configuration, data and stats -----------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Replace config fields (``dataclasses.replace``), e.g. switch faults mid-run."""
        self.config = replace(self.config, **changes)
        if "seed" in changes:
            self._latency_rng = random.Random(self.config.seed)
        if "faults" in changes:
            self._restart_faults()

    def revise(self, site: str | None = None, day: date | None = None) -> None:
        """Revise upstream data: matching slices then serve different keys and metrics."""
        self._revisions[(site, day)] += 1

    def ground_truth(self, site: str, day: date, *, search_type: str = "web",
                     dimensions: Sequence[str] = ("date", "query", "page"),
                     filters: Sequence[Any] = ()) -> pl.DataFrame:
        """Exactly the rows the API exposes for one day slice (after filters and the cap).

        Columns: one per requested dimension except ``date`` (snake_case, as in the JSON keys),
        then clicks, impressions (Int64), ctr, position (Float64); clicks descending.
        """
        body: dict[str, Any] = {
            "startDate": day.isoformat(), "endDate": day.isoformat(), "type": search_type,
            "dimensions": list(dimensions),
            "dimensionFilterGroups": [{"filters": [_as_filter(f) for f in filters]}],
        }
        try:
            query = _parse_query(body)
        except _ApiFailure as exc:
            raise ConfigError(f"ground_truth: {exc.message}") from None
        frame = self._slice(site, query)
        return frame.drop("date") if "date" in frame.columns else frame

    def stats(self) -> dict[str, Any]:
        """What the server saw since the last reset (JSON-serialisable).

        ``ok`` counts complete 200 pages (not "truncate"/"invalid_json", which still count in
        ``by_status``; a reset sends no status). ``peak_window*``: most query requests that arrived
        in any ``window_s`` window. ``duplicates``: 200 pages that repeated an earlier 200 for the
        same site and request body.
        """
        return {
            "requests": self._requests,
            "ok": self._ok,
            "by_status": dict(self._by_status),
            "faults": dict(self._faults),
            "rate_limited": self._by_status.get("429", 0),
            "peak_window": self._peak_all.peak,
            "peak_window_by_site": {s: w.peak for s, w in self._peak_sites.items()},
            "peak_window_by_token": {t: w.peak for t, w in self._peak_tokens.items()},
            "duplicates": self._duplicates,
            "max_in_flight": self._max_in_flight,
            "in_flight": self._in_flight,
            "window_s": self.config.window_s,
        }

    def reset_stats(self) -> None:
        """Zero the stats and the request log; restart the fault script and RNG."""
        self._requests = 0
        self._ok = 0
        self._duplicates = 0
        self._max_in_flight = self._in_flight
        self._by_status: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._peak_all = _Window()
        self._peak_sites: dict[str, _Window] = {}
        self._peak_tokens: dict[str, _Window] = {}
        self._answered: set[tuple[Any, ...]] = set()
        self.request_log = []
        self._restart_faults()

    def _restart_faults(self) -> None:
        self._fault_rng = random.Random(self.config.faults.seed)
        self._query_index = 0

    def _revision(self, site: str, day: date) -> int:
        r = self._revisions
        return r[(None, None)] + r[(site, None)] + r[(None, day)] + r[(site, day)]

    def _rows_per_day(self, site: str, search_type: str, day: date) -> int:
        rows = self.config.rows_per_day
        return int(rows(site, search_type, day) if callable(rows) else rows)

    def _slice(self, site: str, query: _Query) -> pl.DataFrame:
        """The exposed rows of the slice ``query`` names, from a small LRU cache."""
        config = self.config
        spec = _SliceSpec(config.seed, site, query.search_type, query.dimensions,
                          query.filters, query.day, self._revision(site, query.day),
                          self._rows_per_day(site, query.search_type, query.day), config.row_cap)
        frame = self._cache.get(spec)
        if frame is not None:
            self._cache.move_to_end(spec)
            return frame
        frame = _build_slice(spec)
        self._cache[spec] = frame
        self._cached_rows += frame.height
        while len(self._cache) > _CACHE_SLICES or (
                self._cached_rows > _CACHE_ROWS and len(self._cache) > 1):
            self._cached_rows -= self._cache.popitem(last=False)[1].height
        return frame

    # request handling ------------------------------------------------------------------------

    def _token_id(self, request: web.Request) -> str | None:
        """``token#N`` for an accepted bearer token, else ``None`` (the token is never kept).

        A token the OAuth side issued is its principal's id while it lives (quota is per user)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        state, principal = self.oauth.lookup(token)
        if state is not TokenState.UNKNOWN:
            return principal if state is TokenState.VALID else None
        if self.config.tokens is not None and token not in self.config.tokens:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        return self._token_ids.setdefault(digest, f"token#{len(self._token_ids) + 1}")

    def _arrive(self, now: float, site: str, token_id: str | None) -> bool:
        """Count an arrival in the stats and quota windows; return whether it is over quota."""
        window_s, over = self.config.window_s, False
        self._peak_all.add(now, window_s)
        self._peak_sites.setdefault(site, _Window()).add(now, window_s)
        if token_id is not None:
            self._peak_tokens.setdefault(token_id, _Window()).add(now, window_s)
            for key in (f"site:{site}", f"token:{token_id}"):
                if self._quota.setdefault(key, _Window()).add(now, window_s) > (
                        self.config.quota_qpm):
                    over = True
        return over

    def _draw_fault(self) -> str | None:
        """This request's fault: the script's entry for its index, else a seeded draw."""
        self._query_index += 1
        faults = self.config.faults
        draw, edge = self._fault_rng.random(), 0.0
        chosen = None
        for kind, rate in faults.rates.items():
            edge += rate
            if draw < edge:
                chosen = kind
                break
        return faults.script.get(self._query_index, chosen)

    def _latency(self) -> float:
        config = self.config
        if config.latency_s <= 0:
            return 0.0
        spread = config.latency_s * config.latency_jitter
        return self._latency_rng.uniform(config.latency_s - spread, config.latency_s + spread)

    def _error(self, failure: _ApiFailure) -> web.Response:
        """Google's error answer (``WWW-Authenticate`` on 401, ``Retry-After`` on 429 if set)."""
        headers = {}
        if failure.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
        if failure.status == 429 and self.config.faults.retry_after_s is not None:
            headers["Retry-After"] = f"{self.config.faults.retry_after_s:g}"
        return web.json_response(_error_body(failure), status=failure.status, headers=headers)

    async def _handle_query(self, request: web.Request) -> web.StreamResponse:
        record = RequestRecord(arrived=time.monotonic(), site=request.match_info["site"])
        self._requests += 1
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._answer_query(request, record)
        finally:
            self._in_flight -= 1
            record.finished = time.monotonic()
            self.request_log.append(record)
            if record.status is not None:
                self._by_status[str(record.status)] += 1
            if record.fault is not None:
                self._faults[record.fault] += 1

    async def _answer_query(self, request: web.Request, record: RequestRecord
                            ) -> web.StreamResponse:
        """Draw the fault, wait the latency (and a stall), then answer.

        A reset or error-kind fault answers first; otherwise 401, 429 over quota, 403/404 for the
        site, 400 for the body, else the page (cut by "truncate", replaced by "invalid_json").
        """
        site = record.site
        record.token_id = self._token_id(request)
        over_quota = self._arrive(record.arrived, site, record.token_id)
        fault = record.fault = self._draw_fault()
        delay = self._latency() + (self.config.faults.stall_s if fault == "stall" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        if fault not in (None, "stall", "truncate", "invalid_json"):
            failure = _fault_failure(fault, site)
            record.status = failure.status
            return self._error(failure)
        response, served = await self._normal_answer(request, record, over_quota)
        if fault == "truncate":
            return await self._truncated(request, response)
        if fault == "invalid_json":
            record.status = 200
            return web.Response(status=200, content_type="application/json",
                                text='{"rows":[{"keys":["<html><body>Backend Error</body>')
        if served is not None:
            self._ok += 1
            if (site, served) in self._answered:
                self._duplicates += 1
            self._answered.add((site, served))
        return response

    async def _normal_answer(self, request: web.Request, record: RequestRecord,
                             over_quota: bool) -> tuple[web.Response, _Query | None]:
        """The answer without faults: an error, or 200 with the page (then also the query)."""
        site, config = record.site, self.config
        try:
            if record.token_id is None:
                raise _unauthenticated()
            if over_quota:
                raise _fault_failure("429", site)
            if site in config.forbidden_sites or not self._readable(record.token_id, site):
                raise _fault_failure("403_permission", site)
            if (config.sites is not None and site not in config.sites) or not (
                    _SAFE_SITE.match(site)):
                raise _fault_failure("404", site)
            self._sites_seen.setdefault(site)
            try:
                body = await request.json()
            except ValueError:
                raise _ApiFailure(400, "parseError", "Invalid JSON payload received.") from None
            query = _parse_query(body)
        except _ApiFailure as failure:
            record.status = failure.status
            return self._error(failure), None
        page = self._slice(site, query).slice(query.start_row, query.row_limit)
        record.day, record.start_row, record.row_limit = query.day, query.start_row, (
            query.row_limit)
        record.status, record.rows = 200, page.height
        response = web.Response(text=_response_body(page, query),
                                content_type="application/json", charset="UTF-8")
        return response, query

    async def _truncated(self, request: web.Request, full: web.Response) -> web.StreamResponse:
        """Send the status, headers and the real Content-Length, half the body, then hang up."""
        body = full.body if isinstance(full.body, bytes) else b""
        response = web.StreamResponse(status=full.status)
        response.content_type = "application/json"
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()  # close() flushes what was written; abort() would not
        return response

    def _readable(self, token_id: str, site: str) -> bool:
        return token_id not in self.oauth.principals or self.oauth.can_read(token_id, site)

    async def _handle_site(self, request: web.Request) -> web.Response:
        """``sites.get``: the caller's permission on one property, else 403 / 404."""
        token_id, site = self._token_id(request), request.match_info["site"]
        if token_id is None:
            return self._error(_unauthenticated())
        level = self.oauth.permission(token_id, site)
        if site in self.config.forbidden_sites or level is None:
            return self._error(_fault_failure("403_permission", site))
        if (self.config.sites is not None and site not in self.config.sites) or not (
                _SAFE_SITE.match(site)):
            return self._error(_fault_failure("404", site))
        return web.json_response({"siteUrl": site, "permissionLevel": level})

    async def _handle_sites(self, request: web.Request) -> web.Response:
        token_id = self._token_id(request)
        if token_id is None:
            return self._error(_unauthenticated())
        listed = self.oauth.site_entries(token_id)
        if listed is not None:
            return web.json_response({"siteEntry": listed} if listed else {})
        config = self.config
        sites = sorted(config.sites) if config.sites is not None else list(self._sites_seen)
        entries = [{"siteUrl": s, "permissionLevel": "siteOwner"} for s in sites
                   if s not in config.forbidden_sites]
        entries += [{"siteUrl": s, "permissionLevel": "siteUnverifiedUser"}
                    for s in sorted(config.forbidden_sites)]
        return web.json_response({"siteEntry": entries} if entries else {})

    # control endpoints for a simulator in another process ------------------------------------

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _handle_revise(self, request: web.Request) -> web.Response:
        try:
            day = request.query.get("day")
            self.revise(request.query.get("site"), date.fromisoformat(day) if day else None)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _handle_truth(self, request: web.Request) -> web.Response:
        """``/_sim/truth?site=&day=&type=&dimensions=a,b&filters=<JSON list>``: ground truth."""
        q = request.query
        try:
            dims = q.get("dimensions", "date,query,page")
            frame = self.ground_truth(
                q["site"], date.fromisoformat(q["day"]), search_type=q.get("type", "web"),
                dimensions=[d for d in dims.split(",") if d],
                filters=json.loads(q.get("filters", "[]")),
            )
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": f"bad truth request: {exc}"}, status=400)
        return web.Response(text='{"rows":' + frame.write_json() + "}",
                            content_type="application/json")


async def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run a simulator until cancelled, announcing its URL on one line."""
    async with Simulator(config, host=host, port=port) as sim:
        print(f"gsckit simulator listening on {sim.base_url}", flush=True)
        await asyncio.Event().wait()

