"""The Search Analytics HTTP client: one page request, retried until it succeeds or must stop.

One aiohttp session per run (created inside the running loop), explicit timeouts, no redirects.
Each attempt takes a rate-limiter slot keyed by site and credential, so retries are paced and
counted like first tries. Failures are classified into the :mod:`gsckit.errors` tree; retryable
ones back off with full jitter (``Retry-After`` wins), and the page body is parsed off the event
loop. Google's two quota errors are handled apart:

- a rate limit (429, ``rateLimitExceeded``, ``userRateLimitExceeded``) lowers the limit of the
  site and credential keys (:meth:`SlidingWindowLimiter.slow_down`), then backs off and retries;
- the load quota (403 ``quotaExceeded`` / ``dailyLimitExceeded``) pauses the site at its first
  occurrence: the client raises :class:`SitePaused` instead of sleeping, so the engine parks the
  site's work and the workers serve other sites. If the load quota answers a request sent after
  the pause, it persists: :class:`QuotaExhausted` stops that site.

Runs in one process share one limiter per setting (:func:`shared_limiter`), so two backfills with
the same credential stay under its quota together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import polars as pl
from yarl import URL

from .auth import Credentials
from .auth.pool import CredentialPool
from .config import EngineConfig
from .errors import (
    ApiError,
    BadRequest,
    ConfigError,
    CredentialRefused,
    GsckitError,
    PermissionDenied,
    RateLimited,
    ServerError,
    SiteNotFound,
    TransportError,
    Unauthorized,
)
from .parse import parse_page
from .planner import Slice
from .ratelimit import SlidingWindowLimiter

QUOTA_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded",
                           "dailyLimitExceeded", "RESOURCE_EXHAUSTED"})
Emit = Callable[..., None]
T = TypeVar("T")


class QuotaExhausted(RateLimited):
    """The load quota answered a request sent after the site's pause: Google's long-term load
    quota. The site stops; a re-run later resumes it."""

    retryable = False


class SitePaused(Exception):
    """The site is paused until ``until`` (loop time) after the load quota: park its work."""

    def __init__(self, site: str, until: float) -> None:
        super().__init__(f"site {site!r} is paused")
        self.site = site
        self.until = until


LimiterKey = tuple[str, str]


def limiter_keys(site: str, credentials: Credentials) -> tuple[LimiterKey, LimiterKey]:
    """The rate-limiter keys of a request: its site and its credential (Google's two quotas)."""
    return ("site", site), ("credential", credentials.identity)


_Settings = tuple[int, float, float, "int | None"]
_SHARED_LOCK = threading.Lock()
_SHARED: dict[_Settings, SlidingWindowLimiter] = {}
_IN_USE: dict[LimiterKey, tuple[_Settings, int]] = {}


@contextlib.contextmanager
def shared_limiter(config: EngineConfig, keys: Iterable[LimiterKey]
                   ) -> Iterator[SlidingWindowLimiter]:
    """The process's limiter for ``config``'s rate settings, held for ``keys`` while in use.

    Two backfills in one process (two notebook cells, a background job and a cell) that use the
    same site or credential share its window, so together they stay under the quota; a run right
    after another also finds the window (and any slow-down) the first one left. A run whose
    rate settings differ from those of a running backfill on the same site or credential is
    refused: the two limits could not both hold.
    """
    settings: _Settings = (config.qpm, config.qpm_window_s, config.rate_decrease,
                           config.rate_increase)
    wanted = list(dict.fromkeys(keys))
    with _SHARED_LOCK:
        for key in wanted:
            held = _IN_USE.get(key)
            if held is not None and held[0] != settings:
                raise ConfigError(
                    f"another backfill in this process is using {key[0]} {key[1]!r} with other "
                    f"rate settings (qpm={held[0][0]} per {held[0][1]:g} s); use the same qpm "
                    "settings or wait for it to finish")
        limiter = _SHARED.get(settings)
        if limiter is None:
            limiter = _SHARED[settings] = SlidingWindowLimiter(
                config.qpm, config.qpm_window_s, decrease=config.rate_decrease,
                increase=config.rate_increase)
        for key in wanted:
            _IN_USE[key] = (settings, _IN_USE.get(key, (settings, 0))[1] + 1)
    try:
        yield limiter
    finally:
        with _SHARED_LOCK:
            for key in wanted:
                count = _IN_USE[key][1] - 1
                if count:
                    _IN_USE[key] = (settings, count)
                else:
                    del _IN_USE[key]


def forget_shared_limiters() -> None:
    """Drop the process's idle limiters, their windows and slow-downs (for test isolation).

    A limiter in use by a running backfill is kept.
    """
    with _SHARED_LOCK:
        busy = {settings for settings, _ in _IN_USE.values()}
        for settings in [s for s in _SHARED if s not in busy]:
            del _SHARED[settings]


@dataclass(frozen=True)
class Page:
    """One parsed page and what it cost."""

    frame: pl.DataFrame
    attempts: int


class RequestMeter:
    """Counts requests sent: in the current window, the peak in any window of ``window_s``, and
    the current per-minute rate over a short horizon (for the live gauge)."""

    def __init__(self, window_s: float, horizon_s: float = 10.0) -> None:
        self.window_s = window_s
        self.horizon_s = min(horizon_s, window_s)
        self.total = 0
        self.peak = 0
        self._first: float | None = None
        self._sent: deque[float] = deque()

    def note(self, now: float) -> None:
        self.total += 1
        self._first = now if self._first is None else self._first
        self._sent.append(now)
        self._trim(now)
        self.peak = max(self.peak, len(self._sent))

    def current(self, now: float) -> int:
        self._trim(now)
        return len(self._sent)

    def rate(self, now: float) -> float:
        """Requests per minute over the last ``horizon_s`` (or since the first request)."""
        if self._first is None:
            return 0.0
        span = min(self.horizon_s, max(now - self._first, 1e-3))
        recent = sum(1 for t in reversed(self._sent) if t > now - span)
        return recent * 60.0 / span

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _google_error(body: bytes) -> tuple[str, str, str]:
    """(reason, message, status) from a Google error envelope; empty strings if absent."""
    try:
        error = json.loads(body)["error"]
        reason = ""
        if isinstance(error.get("errors"), list) and error["errors"]:
            reason = str(error["errors"][0].get("reason") or "")
        return reason, str(error.get("message") or "")[:300], str(error.get("status") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", "", ""


def classify(status: int, headers: Any, body: bytes, site: str) -> ApiError:
    """Turn a non-200 answer into the matching :class:`ApiError` subclass."""
    reason, message, google_status = _google_error(body)
    retry_after = _retry_after(headers.get("Retry-After") if headers is not None else None)
    args: dict[str, Any] = {"site": site, "retry_after": retry_after}
    wording = message.lower()
    quota = (reason in QUOTA_REASONS or google_status == "RESOURCE_EXHAUSTED"
             or "quota" in wording or "rate limit" in wording)
    if status == 429 or (status == 403 and quota):
        return RateLimited(status, reason, message, **args)
    if status == 403:
        return PermissionDenied(status, reason, message, hint=(
            "add this credential as a user of the property in Search Console, or check the "
            "site string"), **args)
    if status == 401:
        return Unauthorized(status, reason, message, hint="the access token is invalid or "
                            "expired; pass a fresh token or a credentials file", **args)
    if status == 404:
        return SiteNotFound(status, reason, message, hint=(
            "use the exact property string from Search Console, e.g. 'sc-domain:example.com' "
            "or 'https://www.example.com/'"), **args)
    if status == 400:
        return BadRequest(status, reason, message, **args)
    if status == 408 or 500 <= status < 600:
        return ServerError(status, reason, message, **args)
    return ApiError(status, reason, message, hint="unexpected answer", **args)


class Client:
    """Fetches pages for the engine; use as ``async with Client(...) as client``."""

    def __init__(self, config: EngineConfig, credentials: Credentials | CredentialPool,
                 limiter: SlidingWindowLimiter, emit: Emit,
                 rng: random.Random | None = None) -> None:
        self.config = config
        # a pool picks the credential of each request (see gsckit/auth/pool.py)
        self.pool = (credentials if isinstance(credentials, CredentialPool)
                     else CredentialPool([credentials]))
        self.credentials = self.pool.members[0]
        self.limiter = limiter
        self.meter = RequestMeter(config.qpm_window_s)
        self.retries = 0
        self.rate_limited = 0
        self._emit = emit
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._parser: ThreadPoolExecutor | None = None
        self._pauses: dict[str, tuple[float, float]] = {}

    def __repr__(self) -> str:
        who = self.credentials if len(self.pool) == 1 else self.pool
        return f"Client(base_url={self.config.base_url!r}, credentials={who!r})"

    async def __aenter__(self) -> Client:
        if self._session is not None:
            raise RuntimeError("this Client is already open")
        timeouts = self.config.timeouts
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect,
                                          sock_read=timeouts.sock_read),
            connector=aiohttp.TCPConnector(limit=self.config.max_concurrency * 2 + 2),
            raise_for_status=False,
        )
        # one core stays for the event loop and the writer (measured on 2 cores: a second parse
        # thread added 40 MB of peak memory and no speed); more than 4 only add memory
        self._parser = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 2) - 1)),
                                          thread_name_prefix="gsckit-parse")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._parser is not None:
            self._parser.shutdown(wait=False, cancel_futures=True)

    def url(self, site: str) -> URL:
        """The query URL, the site percent-encoded as one path segment."""
        return URL(f"{self.config.base_url}webmasters/v3/sites/{quote(site, safe='')}"
                   "/searchAnalytics/query", encoded=True)

    async def fetch_page(self, piece: Slice, start_row: int) -> Page:
        """Fetch one page, retrying what can be retried; raise what cannot.

        Raises :class:`SitePaused` (never sleeps) while the site is paused for the load quota.
        """
        frame, attempts = await self.send(
            piece.site, piece.body(start_row, self.config.row_limit),
            partial(parse_page, dimensions=piece.dimensions),
            day=piece.day, search_type=piece.search_type, start_row=start_row)
        return Page(frame, attempts)

    async def send(self, site: str, body: dict[str, Any], parse: Callable[[bytes], T], *,
                   day: date, search_type: str, start_row: int = 0, kind: str = "page"
                   ) -> tuple[T, int]:
        """Send one query ``body`` for ``site`` under the limiter, retrying what can be retried,
        and return ``parse(answer bytes)`` (run off the event loop) and the attempts it took.

        ``day``, ``search_type``, ``start_row`` and ``kind`` (``page`` or ``probe``) describe
        the request in its events (a probe's carry ``request: "probe"``). Raises
        :class:`SitePaused` (never sleeps) while the site is paused for the load quota, and what
        cannot be retried.
        """
        if self._session is None:
            raise RuntimeError("use the Client inside 'async with'")
        policy = self.config.retry
        where = {"site": site, "day": day, "search_type": search_type, "start_row": start_row,
                 **({} if kind == "page" else {"request": kind})}
        loop = asyncio.get_running_loop()
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            self._check_pause(site)
            creds = self.pool.pick(site)
            keys = limiter_keys(site, creds)
            self.pool.begin(creds)
            try:
                await self.limiter.acquire(keys)
                self._check_pause(site)  # the pause may have begun while waiting
                granted = self.limiter.now()
                started = loop.time()
                self.meter.note(started)
                try:
                    result, rows = await self._attempt(site, body, creds, parse)
                except GsckitError as exc:
                    error = exc
                else:
                    self._log(where, attempt, started, 200, rows, "")
                    return result, attempt
            finally:
                self.pool.end(creds)
            status = error.status if isinstance(error, ApiError) else "error"
            self._log(where, attempt, started, status, 0, _reason(error))
            if self._reroute(site, creds, error):
                attempt -= 1
                continue
            if isinstance(error, Unauthorized) and not refreshed:
                refreshed = True
                self.retries += 1
                await creds.refresh()
                continue
            if isinstance(error, RateLimited):
                if error.load_quota:
                    raise self._load_quota(site, started, error)
                self._slow_down(site, keys, error, granted)
            if not getattr(error, "retryable", False) or attempt >= policy.max_attempts:
                raise error
            delay = self._backoff(attempt, getattr(error, "retry_after", None))
            self.retries += 1
            self._emit("retry", site=site, day=day, start_row=start_row,
                       attempt=attempt, delay_s=round(delay, 3), error=_reason(error))
            await asyncio.sleep(delay)

    def _slow_down(self, site: str, keys: tuple[LimiterKey, LimiterKey], error: RateLimited,
                   granted: float) -> None:
        """Lower the rate of the keys a rate-limit answer concerns (the user's alone for
        ``userRateLimitExceeded``, else the site's and the user's: Google does not say which)."""
        self.rate_limited += 1
        concerned = keys[1:] if error.reason == "userRateLimitExceeded" else keys
        if self.limiter.slow_down(concerned, since=granted):
            self._emit("slowdown", site=site, reason=_reason(error),
                       limit=self.limiter.limit_of(keys[0]),
                       credential_limit=self.limiter.limit_of(keys[1]),
                       window_s=self.limiter.window_s)

    def _check_pause(self, site: str) -> None:
        pause = self._pauses.get(site)
        if pause is not None and pause[1] > asyncio.get_running_loop().time():
            raise SitePaused(site, pause[1])

    def _load_quota(self, site: str, sent: float, error: RateLimited) -> Exception:
        """The signal for a load-quota answer to a request sent at ``sent`` (loop time)."""
        pause = self._pauses.get(site)
        if pause is not None and sent >= pause[1]:
            return QuotaExhausted(error.status, error.reason, error.message, site=site, hint=(
                "the load quota persisted after a pause: Google's long-term (daily) load quota; "
                "this site stopped, re-run later to resume it"))
        if pause is None:
            now = asyncio.get_running_loop().time()
            pause = self._pauses[site] = (now, now + self.config.retry.quota_pause_s)
            self._emit("pause", site=site, seconds=self.config.retry.quota_pause_s,
                       reason=_reason(error))
        return SitePaused(site, pause[1])

    def _reroute(self, site: str, creds: Credentials, error: GsckitError) -> bool:
        """In a pool, move a site off a credential that was refused or lost its permission;
        true when another credential can take the request."""
        if len(self.pool) == 1:
            return False
        if isinstance(error, CredentialRefused):
            self.pool.lose(creds, error)
            return True  # the next pick finds another credential, or says why none is left
        if isinstance(error, PermissionDenied):
            self.pool.drop(site, creds, error.reason or "403")
            return True
        return False

    async def _attempt(self, site: str, body: dict[str, Any], creds: Credentials,
                       parse: Callable[[bytes], T]) -> tuple[T, int]:
        """One HTTP attempt: the parsed answer and its row count, or the classified error."""
        assert self._session is not None
        token = await creds.token()
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._session.post(self.url(site), json=body, headers=headers,
                                          allow_redirects=False) as resp:
                payload = await resp.read()
                status = resp.status
                if status != 200:
                    raise classify(status, resp.headers, payload, site)
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__} talking to the API") from None
        except TimeoutError:
            raise TransportError("the API did not answer in time") from None
        result = await asyncio.get_running_loop().run_in_executor(self._parser, parse, payload)
        rows = result.height if isinstance(result, pl.DataFrame) else getattr(result, "rows", 0)
        return result, rows

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        policy = self.config.retry
        if retry_after is not None:
            return min(retry_after, policy.max_backoff_s)
        return self._rng.uniform(0, min(policy.max_backoff_s, policy.base_s * 2 ** (attempt - 1)))

    def _log(self, where: dict[str, Any], attempt: int, started: float, status: int | str,
             rows: int, error: str) -> None:
        latency = (asyncio.get_running_loop().time() - started) * 1000
        self._emit("request", **where, status=status, rows=rows, attempt=attempt,
                   latency_ms=round(latency, 1), **({"error": error} if error else {}))


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return error.reason or f"http_{error.status}"
    return str(error)
