"""The Search Analytics HTTP client: one page request, retried until it succeeds or must stop.

One aiohttp session per run (created inside the running loop), explicit timeouts, no redirects.
Each attempt waits for the site's quota pause (if any) and a rate-limiter slot keyed by site and
credential, so retries are paced and counted like first tries. Failures are classified into the
:mod:`gsckit.errors` tree; retryable ones back off with full jitter (``Retry-After`` wins), quota
errors that persist pause the whole site, and the page body is parsed off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
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


class QuotaExhausted(RateLimited):
    """Quota errors went on after a full site pause: Google's long-term load quota. Stop, resume
    later."""

    retryable = False


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
        self._emit = emit
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._parser: ThreadPoolExecutor | None = None
        self._paused_until: dict[str, float] = {}

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
        # parsing a page briefly needs several times its JSON size; more threads than cores
        # only add peak memory
        self._parser = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2),
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
        """Fetch one page, retrying what can be retried; raise what cannot."""
        if self._session is None:
            raise RuntimeError("use the Client inside 'async with'")
        policy = self.config.retry
        body = piece.body(start_row, self.config.row_limit)
        loop = asyncio.get_running_loop()
        attempt = 0
        refreshed = paused = False
        quota_streak = 0
        while True:
            attempt += 1
            await self._wait_pause(piece.site)
            creds = self.pool.pick(piece.site)
            self.pool.begin(creds)
            try:
                await self.limiter.acquire((("site", piece.site), ("credential", creds.identity)))
                started = loop.time()
                self.meter.note(started)
                try:
                    page = await self._attempt(piece, body, creds)
                except GsckitError as exc:
                    error = exc
                else:
                    self._log(piece, start_row, attempt, started, 200, page.height, "")
                    return Page(page, attempt)
            finally:
                self.pool.end(creds)
            status = error.status if isinstance(error, ApiError) else "error"
            self._log(piece, start_row, attempt, started, status, 0, _reason(error))
            if self._reroute(piece.site, creds, error):
                attempt -= 1
                continue
            if isinstance(error, Unauthorized) and not refreshed:
                refreshed = True
                self.retries += 1
                await creds.refresh()
                continue
            if isinstance(error, RateLimited):
                quota_streak += 1
                if quota_streak >= policy.quota_pause_after:
                    if paused:
                        raise QuotaExhausted(error.status, error.reason, error.message,
                                             site=piece.site, hint=(
                                                 "quota errors continued after a pause: the "
                                                 "long-term load quota; re-run later to resume"))
                    paused = True
                    quota_streak = 0
                    self.retries += 1
                    self._pause(piece.site, policy.quota_pause_s, _reason(error))
                    attempt = 0
                    continue
            else:
                quota_streak = 0
            if not getattr(error, "retryable", False) or attempt >= policy.max_attempts:
                raise error
            delay = self._backoff(attempt, getattr(error, "retry_after", None))
            self.retries += 1
            self._emit("retry", site=piece.site, day=piece.day, start_row=start_row,
                       attempt=attempt, delay_s=round(delay, 3), error=_reason(error))
            await asyncio.sleep(delay)

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

    async def _attempt(self, piece: Slice, body: dict[str, Any],
                       creds: Credentials) -> pl.DataFrame:
        assert self._session is not None
        token = await creds.token()
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._session.post(self.url(piece.site), json=body, headers=headers,
                                          allow_redirects=False) as resp:
                payload = await resp.read()
                status = resp.status
                if status != 200:
                    raise classify(status, resp.headers, payload, piece.site)
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__} talking to the API") from None
        except TimeoutError:
            raise TransportError("the API did not answer in time") from None
        return await asyncio.get_running_loop().run_in_executor(
            self._parser, parse_page, payload, piece.dimensions)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        policy = self.config.retry
        if retry_after is not None:
            return min(retry_after, policy.max_backoff_s)
        return self._rng.uniform(0, min(policy.max_backoff_s, policy.base_s * 2 ** (attempt - 1)))

    def _pause(self, site: str, seconds: float, reason: str) -> None:
        until = asyncio.get_running_loop().time() + seconds
        if until > self._paused_until.get(site, 0.0):
            self._paused_until[site] = until
            self._emit("pause", site=site, seconds=seconds, reason=reason)

    def paused_until(self, site: str) -> float:
        """Loop time at which ``site``'s quota pause ends (in the past if it is not paused)."""
        return self._paused_until.get(site, 0.0)

    async def _wait_pause(self, site: str) -> None:
        loop = asyncio.get_running_loop()
        # loop: another quota error may extend the pause while this one sleeps
        while (left := self._paused_until.get(site, 0.0) - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)

    def _log(self, piece: Slice, start_row: int, attempt: int, started: float,
             status: int | str, rows: int, error: str) -> None:
        latency = (asyncio.get_running_loop().time() - started) * 1000
        self._emit("request", site=piece.site, day=piece.day, search_type=piece.search_type,
                   start_row=start_row, status=status, rows=rows, attempt=attempt,
                   latency_ms=round(latency, 1), **({"error": error} if error else {}))


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return error.reason or f"http_{error.status}"
    return str(error)
