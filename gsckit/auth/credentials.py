"""Credential objects: something that yields a bearer token, refreshes it, and names its source.

Tokens live only in memory and only reach the ``Authorization`` header. Every object here has a
redacting ``repr`` and every error message names the source (a file path, a client_email, an
environment variable), never its content. ``identity`` is a short non-secret id that keys the
per-credential rate limit; ``source`` is the one line a person reads ("service account
bot@p.iam.gserviceaccount.com (key file sa.json)").
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import CredentialRefused, CredentialsError, TransportError

SCOPE = "https://www.googleapis.com/auth/webmasters.readonly"
TOKEN_ENV = "GSC_ACCESS_TOKEN"

TokenSource = Callable[[], "str | Awaitable[str]"]


def check_token(token: object, source: str) -> str:
    """Return ``token`` if it looks like a bare bearer token, else raise (never echoing it)."""
    if not isinstance(token, str) or not token:
        raise CredentialsError(f"the access token from {source} is empty")
    if len(token) > 8192 or not token.isascii() or not token.isprintable() or " " in token:
        raise CredentialsError(f"the access token from {source} contains spaces, control or "
                               "non-ASCII characters; pass the bare token")
    return token


class Credentials:
    """Base class: something that yields a bearer token and may refresh it after a 401.

    ``identity`` keys the rate limiter; ``source`` names where the credential came from;
    ``client_email`` is set for service accounts (the user to add in Search Console).
    """

    identity: str = "credential"
    source: str = "a credential"
    client_email: str | None = None
    can_refresh: bool = False

    async def token(self) -> str:
        raise NotImplementedError

    async def refresh(self) -> None:
        """Get a fresh token after the API rejected the current one; a no-op if impossible."""

    @property
    def expiry(self) -> datetime | None:
        """When the current token expires (UTC), if known."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r}, token=<redacted>)"


class StaticToken(Credentials):
    """A fixed OAuth access token (``--token`` or ``GSC_ACCESS_TOKEN``); cannot be refreshed."""

    def __init__(self, token: str, source: str = "the token argument") -> None:
        self._token = check_token(token, source)
        self.identity = "token:" + hashlib.sha256(self._token.encode()).hexdigest()[:8]
        self.source = f"a static access token ({source})"

    async def token(self) -> str:
        return self._token


class CallableToken(Credentials):
    """Calls a function (sync or async) for a token, again after every 401."""

    can_refresh = True

    def __init__(self, source: TokenSource, identity: str = "callable") -> None:
        self._source = source
        self._token: str | None = None
        self._lock: asyncio.Lock | None = None
        self.identity = identity
        self.source = f"a token callable ({getattr(source, '__qualname__', 'callable')})"

    async def _fetch(self) -> str:
        value = self._source()
        if inspect.isawaitable(value):
            value = await value
        return check_token(value, "the token callable")

    async def token(self) -> str:
        if self._token is None:
            self._token = await self._fetch()
        return self._token

    async def refresh(self) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            self._token = await self._fetch()


class GoogleCredentials(Credentials):
    """Wraps google-auth credentials and runs their token lifecycle.

    A token is refreshed before it is used whenever google-auth no longer calls it valid, which
    includes its own margin of 3 min 45 s before expiry, so a running backfill never sends a
    token about to expire. The refresh is blocking HTTP, so it runs in a thread, and one at a
    time per credential: workers that queued behind a refresh reuse its token. A network error
    (or a token endpoint error Google marks retryable) becomes a retryable
    :class:`~gsckit.TransportError`, so the request is retried like any other; a refused grant
    becomes :class:`~gsckit.CredentialRefused`, naming the source and the ``fix``.
    """

    can_refresh = True

    def __init__(self, creds: Any, identity: str, source: str = "google-auth credentials", *,
                 client_email: str | None = None, fix: str = "") -> None:
        self._creds = creds
        self._lock: asyncio.Lock | None = None
        self._transport: Any = None
        self._generation = 0
        self._stale = False
        self._refused: CredentialRefused | None = None
        self.identity = identity
        self.source = source
        self.client_email = client_email
        self.fix = fix or "check or re-create the credentials"

    @property
    def expiry(self) -> datetime | None:
        expiry = getattr(self._creds, "expiry", None)
        # google-auth keeps naive UTC datetimes
        return expiry.replace(tzinfo=UTC) if isinstance(expiry, datetime) else None

    @property
    def google_credentials(self) -> Any:
        """The wrapped google-auth object (for libraries that take one)."""
        return self._creds

    async def token(self) -> str:
        if self._refused is not None:
            raise self._refused
        if self._stale or not self._creds.valid:
            await self._refresh(self._generation)
        return str(self._creds.token)

    async def refresh(self) -> None:
        """Refresh after a 401. Failures surface from the next :meth:`token`: a network error
        leaves the token stale (refreshed again, retried like a request), a refusal is kept."""
        self._stale = True
        try:
            await self._refresh(self._generation)
        except TransportError:
            pass
        except CredentialRefused as refused:
            self._refused = refused

    async def _refresh(self, seen: int) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._generation != seen and self._creds.valid:
                return  # refreshed by another worker while this one waited
            await asyncio.to_thread(self._refresh_blocking)
            self._generation += 1
            self._stale = False

    def _refresh_blocking(self) -> None:
        import google.auth.exceptions as gexc

        if self._transport is None:
            from google.auth.transport.requests import Request

            self._transport = Request()
        failure: BaseException | None = None
        try:
            self._creds.refresh(self._transport)
        except gexc.TransportError:
            failure = TransportError(f"network error while refreshing the token of {self.source}"
                                     "; retrying")
        except gexc.RefreshError as exc:
            if exc.retryable:
                failure = TransportError(f"the token endpoint failed for {self.source} "
                                         f"({_error_code(exc)}); retrying")
            else:
                failure = self.refused(_error_code(exc))
        except (gexc.GoogleAuthError, ValueError) as exc:
            failure = self.refused(type(exc).__name__)
        if failure is not None:
            # raised outside the except block: the original error may quote a token or key
            raise failure

    def refused(self, code: str) -> CredentialRefused:
        """The error for a refused grant: names the source and the fix, never a secret."""
        return CredentialRefused(f"the token endpoint refused {self.source} ({code}); "
                                 f"{self.fix}")

    def remaining_s(self, now: datetime | None = None) -> float | None:
        """Seconds the current token has left, if its expiry is known."""
        expiry = self.expiry
        if expiry is None:
            return None
        return (expiry - (now or datetime.now(UTC))).total_seconds()


def _error_code(exc: BaseException) -> str:
    """The OAuth error code of a refresh failure (``invalid_grant``), without its free text."""
    details = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(details, dict) and isinstance(details.get("error"), str):
        code = details["error"]
    else:
        text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "refused"
        code = text.split(":")[0].split()[0] if text.strip() else "refused"
    return code if code.replace("_", "").isalnum() and len(code) <= 40 else "refused"
