"""The aiohttp app: the query and sites handlers, quotas, faults and stats, plus the clock and
truth methods tests use (the ``/_sim/*`` control endpoints live in ``control.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import polars as pl
from aiohttp import web

from ..errors import ConfigError
from ..planner import earliest_day
from .api import (
    BAD_GATEWAY_PAGE,
    ApiFailure,
    Request,
    as_filter,
    error_body,
    fault_failure,
    parse_request,
    response_body,
    unauthenticated,
)
from .clock import DayState, SimClock, newest_final_day
from .config import SimConfig
from .control import add_control_routes
from .keys import COUNTRIES, DEVICES, SEARCH_APPEARANCES, brand_term, page_text, query_text
from .model import Anomaly, planted_anomalies
from .oauth import OAuthServer, TokenState
from .truth import Dataset, Totals

_SAFE_SITE = re.compile(r"^[A-Za-z0-9:/._~%+@!$&'()*,;=\-\[\]]+$")
_DEFAULT_DIMENSIONS = ("date", "query", "page")


@dataclass
class RequestRecord:
    """One searchAnalytics query request as the server saw it (``token_id``, never the token);
    ``day`` and ``end_day`` are its startDate and endDate, ``search_type`` its type;
    ``dimensions`` and ``filters`` what it grouped and filtered by (a filter as ``(dimension,
    operator, expression)``)."""

    arrived: float
    finished: float = 0.0
    site: str = ""
    token_id: str | None = None
    day: date | None = None
    end_day: date | None = None
    data_state: str | None = None
    search_type: str | None = None
    start_row: int | None = None
    row_limit: int | None = None
    status: int | None = None
    rows: int = 0
    fault: str | None = None
    dimensions: tuple[str, ...] = ()
    filters: tuple[tuple[str, str, str], ...] = ()


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
    and RNG; :meth:`reset_stats` does too, and clears the stats and the request log. The clock
    (:meth:`set_now`, :meth:`advance`) and the truths (:meth:`ground_truth` and friends) work
    whether the server is started or not.
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config = config if config is not None else SimConfig()
        self.clock = SimClock(config.now)
        self.data = Dataset(config, self.clock)
        self.request_log: list[RequestRecord] = []
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._started = False
        self._base_url: str | None = None
        self._token_ids: dict[str, str] = {}
        self._sites_seen: dict[str, None] = {}
        self._quota: dict[str, _Window] = {}
        self._load: dict[str, _Window] = {}
        self._load_penalty: dict[str, float] = {}
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
        add_control_routes(app, self)
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

    # configuration ---------------------------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Replace config fields (``dataclasses.replace``), e.g. switch faults mid-run.

        A new ``now`` restarts the clock there (``None``: the real clock).
        """
        self.config = replace(self.config, **changes)
        self.data.config = self.config
        if "now" in changes:
            self.clock = self.data.clock = SimClock(self.config.now)
        if "seed" in changes:
            self._latency_rng = random.Random(self.config.seed)
        if "faults" in changes:
            self._restart_faults()

    def revise(self, site: str | None = None, day: date | None = None) -> None:
        """Revise upstream data: matching days then serve different keys and metrics."""
        self.data.revise(site, day)

    # the clock -------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The simulated moment (aware, Pacific)."""
        return self.clock.now()

    @property
    def today(self) -> date:
        """The simulated Pacific date."""
        return self.clock.today()

    def set_now(self, when: datetime | date | str) -> datetime:
        """Move the simulated clock to ``when`` (a date means noon Pacific)."""
        return self.clock.set(when)

    def advance(self, *, days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
        """Let simulated time pass at once, e.g. ``sim.advance(days=3)``."""
        return self.clock.advance(days=days, hours=hours, minutes=minutes)

    def day_state(self, day: date) -> DayState:
        """What ``day`` holds now: ``final``, ``fresh`` (with its completeness) or ``none``."""
        return self.data.state(day)

    def is_final(self, day: date) -> bool:
        """Whether ``day``'s data is final at the simulated now."""
        return self.data.state(day).kind == "final"

    def newest_final_day(self) -> date:
        """The newest final day at the simulated now (today when ``all_final``)."""
        config = self.config
        return newest_final_day(self.now, final_lag_days=config.final_lag_days,
                                all_final=config.all_final)

    # truths ----------------------------------------------------------------------------------

    def _request(self, what: str, day: date, end: date | None, search_type: str,
                 dimensions: Sequence[str], filters: Sequence[Any], data_state: str
                 ) -> Request:
        body: dict[str, Any] = {
            "startDate": day.isoformat(), "endDate": (end or day).isoformat(),
            "type": search_type, "dimensions": list(dimensions), "dataState": data_state,
            "dimensionFilterGroups": [{"filters": [as_filter(f) for f in filters]}],
        }
        try:
            return parse_request(body, self.config.restricted_dimensions)
        except ApiFailure as exc:
            raise ConfigError(f"{what}: {exc.message}") from None

    def _truth(self, what: str, site: str, day: date, end: date | None, search_type: str,
               dimensions: Sequence[str], filters: Sequence[Any], data_state: str, *,
               capped: bool = True, final: bool = False) -> pl.DataFrame:
        request = self._request(what, day, end, search_type, dimensions, filters, data_state)
        frame = self.data.answer(site, request, capped=capped, final=final)
        single = end is None or end == day
        return frame.drop("date") if single and "date" in frame.columns else frame

    def ground_truth(self, site: str, day: date, *, search_type: str = "web",
                     dimensions: Sequence[str] = _DEFAULT_DIMENSIONS,
                     filters: Sequence[Any] = (), data_state: str = "final",
                     end: date | None = None) -> pl.DataFrame:
        """Exactly the rows the API exposes for a slice at the simulated now: after filters and
        the cap, at ``data_state`` (so ``final`` on a fresh day is empty).

        Columns: one per requested dimension (snake_case, as stored) except ``date`` for a
        single day, then clicks, impressions (Int64), ctr and position (Float64; no position
        for Discover and Google News); in the API's order. ``end`` asks for a range.
        """
        return self._truth("ground_truth", site, day, end, search_type, dimensions, filters,
                           data_state)

    def final_truth(self, site: str, day: date, *, search_type: str = "web",
                    dimensions: Sequence[str] = _DEFAULT_DIMENSIONS,
                    filters: Sequence[Any] = (), end: date | None = None) -> pl.DataFrame:
        """What the API will expose for the slice once its days are final, whatever the clock
        says now (a day before today or in the retention window; a future day stays empty)."""
        return self._truth("final_truth", site, day, end, search_type, dimensions, filters,
                           "all", final=True)

    def uncapped_truth(self, site: str, day: date, *, search_type: str = "web",
                       dimensions: Sequence[str] = _DEFAULT_DIMENSIONS,
                       filters: Sequence[Any] = (), data_state: str = "final",
                       end: date | None = None, final: bool = False) -> pl.DataFrame:
        """Like :meth:`ground_truth` without the daily row cap: every key the grouping has
        (anonymized queries still never appear with ``query``). ``final=True``: as once final."""
        return self._truth("uncapped_truth", site, day, end, search_type, dimensions, filters,
                           "all" if final else data_state, capped=False, final=final)

    def totals(self, site: str, day: date, *, search_type: str = "web",
               filters: Sequence[Any] = (), data_state: str = "final",
               end: date | None = None, final: bool = False) -> Totals:
        """The slice's true totals, with what is attributable to a query and what is
        anonymized (``Totals.hidden_clicks_share``). ``final=True``: as once final."""
        request = self._request("totals", day, end, search_type, (), filters,
                                "all" if final else data_state)
        return self.data.totals(site, request, final=final)

    def fine_rows(self, site: str, day: date, *, search_type: str = "web",
                  data_state: str = "final") -> pl.DataFrame:
        """The day's fine rows at the simulated now, as text: query (null when anonymized),
        page, country, device, search_appearance (null when none), hour (0-23 Pacific),
        clicks, impressions, position."""
        request = self._request("fine_rows", day, None, search_type, (), (), data_state)
        [(_, state)] = self.data.day_states(request) or [(day, DayState("none", 0.0, 0))]
        rows = self.data.fine(site, search_type, day, state)
        return rows.select(
            query=query_text(rows["qr"], site).set(rows["qr"].is_null(), None),
            page=page_text(rows["page"], site),
            country=pl.Series(COUNTRIES).gather(rows["country"]),
            device=pl.Series(DEVICES).gather(rows["device"]),
            search_appearance=pl.Series(SEARCH_APPEARANCES).gather(rows["appearance"]),
            hour=rows["hour"],
            clicks=rows["clicks"],
            impressions=rows["impressions"],
            position=rows["sumpos"] / rows["impressions"],
        )

    def brand_terms(self, site: str) -> tuple[str, ...]:
        """The brand terms of a property's brand queries (e.g. ``("example",)``)."""
        return (brand_term(site),)

    def planted_anomalies(self, site: str, search_type: str = "web", start: date | None = None,
                          end: date | None = None) -> list[Anomaly]:
        """The drops and spikes planted in a stream between ``start`` and ``end`` (default: the
        retention window up to the simulated today)."""
        today = self.today
        config = self.config
        return planted_anomalies(config.seed, site, search_type, start or earliest_day(today),
                                 end or today, config.anomaly_every_days)

    def summary(self) -> dict[str, Any]:
        """The clock and the data states it implies, as ``GET /_sim/clock`` shows them."""
        return self.data.summary()

    def stats(self) -> dict[str, Any]:
        """What the server saw since the last reset (JSON-serialisable).

        ``ok`` counts complete 200 pages (not "truncate"/"invalid_json", which still count in
        ``by_status``; a reset sends no status). ``load_limited``: 403s from the load budget.
        ``peak_window*``: most query requests that arrived in any ``window_s`` window.
        ``duplicates``: 200 pages that repeated an earlier 200 for the same site and body while
        the data it covers was unchanged (a re-fetch after the clock or a revision changed a
        day is not one).
        """
        return {
            "requests": self._requests,
            "ok": self._ok,
            "by_status": dict(self._by_status),
            "faults": dict(self._faults),
            "rate_limited": self._by_status.get("429", 0),
            "load_limited": self._load_limited,
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
        self._load_limited = 0
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

    def _arrive(self, now: float, site: str, token_id: str | None) -> str | None:
        """Count an arrival in the stats and quota windows; return the quota fault it earns:
        ``"429"`` over the per-site or per-token rate, ``"403_quota"`` over the load budget."""
        window_s, over = self.config.window_s, None
        self._peak_all.add(now, window_s)
        self._peak_sites.setdefault(site, _Window()).add(now, window_s)
        if token_id is None:
            return None
        self._peak_tokens.setdefault(token_id, _Window()).add(now, window_s)
        for key in (f"site:{site}", f"token:{token_id}"):
            if self._quota.setdefault(key, _Window()).add(now, window_s) > (
                    self.config.quota_qpm):
                over = "429"
        if site in self.config.load_quota_sites:  # a persistent load quota answers first
            self._load_limited += 1
            return "403_quota"
        return over or self._over_load(now, site)

    def _over_load(self, now: float, site: str) -> str | None:
        """Spend one unit of the site's load budget; a site over it is refused for a while."""
        config = self.config
        if config.load_budget is None:
            return None
        if now >= self._load_penalty.get(site, 0.0):
            if self._load.setdefault(site, _Window()).add(now, config.load_window_s) <= (
                    config.load_budget):
                return None
            self._load_penalty[site] = now + config.load_penalty_s
        self._load_limited += 1
        return "403_quota"

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

    def _error(self, failure: ApiFailure) -> web.Response:
        """Google's error answer (``WWW-Authenticate`` on 401, ``Retry-After`` on 429 if set)."""
        headers = {}
        if failure.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
        if failure.status == 429 and self.config.faults.retry_after_s is not None:
            headers["Retry-After"] = f"{self.config.faults.retry_after_s:g}"
        return web.json_response(error_body(failure), status=failure.status, headers=headers)

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

        A reset or error-kind fault answers first (a 502 is the front end's HTML page); otherwise
        401, 429 over quota, 403/404 for the site, 400 for the body, else the page (cut by
        "truncate", replaced by "invalid_json").
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
        if fault == "502":  # the front end answers, in HTML: the API never saw the request
            record.status = 502
            return web.Response(status=502, content_type="text/html", charset="UTF-8",
                                text=BAD_GATEWAY_PAGE)
        if fault not in (None, "stall", "truncate", "invalid_json"):
            failure = fault_failure(fault, site)
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
                             over_quota: str | None
                             ) -> tuple[web.Response, tuple[Request, Any] | None]:
        """The answer without faults: an error, or 200 with the page (then also the query and
        the version of the data it shows)."""
        site, config = record.site, self.config
        try:
            if record.token_id is None:
                raise unauthenticated()
            if over_quota:
                raise fault_failure(over_quota, site)
            if site in config.forbidden_sites or not self._readable(record.token_id, site):
                raise fault_failure("403_permission", site)
            if (config.sites is not None and site not in config.sites) or not (
                    _SAFE_SITE.match(site)):
                raise fault_failure("404", site)
            self._sites_seen.setdefault(site)
            try:
                body = await request.json()
            except ValueError:
                raise ApiFailure(400, "parseError", "Invalid JSON payload received.") from None
            query = parse_request(body, config.restricted_dimensions)
        except ApiFailure as failure:
            record.status = failure.status
            return self._error(failure), None
        # off the event loop: a long range can take seconds, and other requests must not wait
        rows, text, version = await asyncio.to_thread(self._page, site, query)
        record.day, record.end_day, record.data_state = query.start, query.end, query.data_state
        record.search_type = query.search_type
        record.start_row, record.row_limit = query.start_row, query.row_limit
        record.dimensions = query.dimensions
        record.filters = tuple((f.dimension, f.operator, f.expression) for f in query.filters)
        record.status, record.rows = 200, rows
        response = web.Response(text=text, content_type="application/json", charset="UTF-8")
        return response, (query, version)

    def _page(self, site: str, query: Request) -> tuple[int, str, tuple[Any, ...]]:
        """The rows and JSON body of one page of an answer, and the data version it shows."""
        with self.data.lock:
            page = self.data.answer(site, query).slice(query.start_row, query.row_limit)
            version = self.data.version(site, query)
        body = response_body(page, query, metadata=self.data.metadata(query))
        return page.height, body, version

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
            return self._error(unauthenticated())
        level = self.oauth.permission(token_id, site)
        if site in self.config.forbidden_sites or level is None:
            return self._error(fault_failure("403_permission", site))
        if (self.config.sites is not None and site not in self.config.sites) or not (
                _SAFE_SITE.match(site)):
            return self._error(fault_failure("404", site))
        return web.json_response({"siteUrl": site, "permissionLevel": level})

    async def _handle_sites(self, request: web.Request) -> web.Response:
        token_id = self._token_id(request)
        if token_id is None:
            return self._error(unauthenticated())
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


async def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run a simulator until cancelled, announcing its URL on one line."""
    async with Simulator(config, host=host, port=port) as sim:
        print(f"gsckit simulator listening on {sim.base_url}", flush=True)
        await asyncio.Event().wait()

