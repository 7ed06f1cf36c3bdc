"""Access tokens for the API: a static token, a token callable, or a google-auth credentials file.

Tokens live only in memory and only reach the ``Authorization`` header. Every object here has a
redacting ``repr`` and every error message names the source (a file path, an environment variable),
never its content. ``identity`` is a non-secret id that keys the per-credential rate limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .errors import CredentialsError

SCOPE = "https://www.googleapis.com/auth/webmasters.readonly"
TOKEN_ENV = "GSC_ACCESS_TOKEN"

TokenSource = Callable[[], "str | Awaitable[str]"]


def _check_token(token: object, source: str) -> str:
    if not isinstance(token, str) or not token:
        raise CredentialsError(f"the access token from {source} is empty")
    if len(token) > 8192 or not token.isascii() or not token.isprintable() or " " in token:
        raise CredentialsError(f"the access token from {source} contains spaces, control or "
                               "non-ASCII characters; pass the bare token")
    return token


class Credentials:
    """Base class: something that yields a bearer token and may refresh it after a 401."""

    identity: str = "credential"
    can_refresh: bool = False

    async def token(self) -> str:
        raise NotImplementedError

    async def refresh(self) -> None:
        """Get a fresh token; a no-op for sources that cannot refresh."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identity={self.identity!r}, token=<redacted>)"


class StaticToken(Credentials):
    """A fixed OAuth access token (``--token`` or ``GSC_ACCESS_TOKEN``); cannot be refreshed."""

    def __init__(self, token: str, source: str = "the token argument") -> None:
        self._token = _check_token(token, source)
        self.identity = "token:" + hashlib.sha256(self._token.encode()).hexdigest()[:8]

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

    async def _fetch(self) -> str:
        value = self._source()
        if inspect.isawaitable(value):
            value = await value
        return _check_token(value, "the token callable")

    async def token(self) -> str:
        if self._token is None:
            self._token = await self._fetch()
        return self._token

    async def refresh(self) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            self._token = await self._fetch()


class GoogleCredentials(Credentials):
    """Wraps google-auth credentials; refreshes off the event loop, one refresh at a time."""

    can_refresh = True

    def __init__(self, creds: Any, identity: str) -> None:
        self._creds = creds
        self._lock: asyncio.Lock | None = None
        self.identity = identity

    async def token(self) -> str:
        if not self._creds.valid:
            await self.refresh()
        return str(self._creds.token)

    async def refresh(self) -> None:
        import google.auth.exceptions
        from google.auth.transport.requests import Request

        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            try:
                await asyncio.to_thread(self._creds.refresh, Request())
            except google.auth.exceptions.RefreshError as exc:
                reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "refused"
                raise CredentialsError(f"token refresh failed: {reason.split(':')[0]}; "
                                       "re-create the credentials") from None


def from_file(path: str | os.PathLike[str]) -> GoogleCredentials:
    """Load a service-account or authorized-user JSON file (no network until the first request)."""
    file = Path(path)
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError(f"credentials file {str(file)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CredentialsError(f"credentials file {str(file)!r} is not readable JSON") from None
    if not isinstance(info, dict):
        raise CredentialsError(f"credentials file {str(file)!r} is not a JSON object")
    kind = info.get("type")
    required = {
        "service_account": ("client_email", "private_key", "token_uri"),
        "authorized_user": ("client_id", "client_secret", "refresh_token"),
    }
    if kind not in required:
        raise CredentialsError(f"credentials file {str(file)!r} has type {kind!r}; expected "
                               "'service_account' or 'authorized_user'")
    missing = [k for k in required[kind] if not info.get(k)]
    if missing:
        raise CredentialsError(f"credentials file {str(file)!r} lacks {', '.join(missing)}")
    loaded = _load_google(kind, info)
    if loaded is None:
        # raised outside the except block so no exception holding key material rides along
        raise CredentialsError(f"credentials file {str(file)!r} is malformed (the private key "
                               "or a field could not be parsed)")
    return loaded


def _load_google(kind: str, info: dict[str, Any]) -> GoogleCredentials | None:
    try:
        if kind == "service_account":
            from google.oauth2 import service_account

            creds = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
            return GoogleCredentials(creds, "sa:" + str(info["client_email"]))
        from google.oauth2 import credentials as user_credentials

        creds = user_credentials.Credentials.from_authorized_user_info(info, scopes=[SCOPE])
        return GoogleCredentials(creds, "user:" + str(info["client_id"])[:16])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def resolve(token: str | TokenSource | Credentials | None = None,
            credentials_file: str | os.PathLike[str] | None = None) -> Credentials:
    """Pick the credential source: explicit token, token callable, file, then the environment."""
    if token is not None and credentials_file is not None:
        raise CredentialsError("give either a token or a credentials file, not both")
    if isinstance(token, Credentials):
        return token
    if callable(token):
        return CallableToken(token)
    if token is not None:
        return StaticToken(token)
    if credentials_file is not None:
        return from_file(credentials_file)
    if os.environ.get(TOKEN_ENV):
        return StaticToken(os.environ[TOKEN_ENV], f"${TOKEN_ENV}")
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return from_file(os.environ["GOOGLE_APPLICATION_CREDENTIALS"])
    raise CredentialsError(f"no credentials: pass a token (--token or ${TOKEN_ENV}) or a "
                           "service-account / authorized-user JSON file (--credentials)")
