"""The simulator's OAuth side: Google's token and authorization endpoints, and who may read what.

Principals are service accounts (a public key the test registers; the JWT-bearer grant checks the
assertion's signature, issuer, audience and lifetime) and people (an OAuth client, a refresh
token, and the authorization-code grant with PKCE behind an authorization endpoint that consents
at once and redirects to the client's loopback ``redirect_uri``). Access tokens have a TTL on the
simulator's clock (:meth:`OAuthServer.advance` moves it), and revoking a principal kills its
refresh token, its key and every live access token. Each principal may read the properties it
was given, at a permission level, including ``siteUnverifiedUser`` entries that list a property
but give no access to its data; a principal given no list reads every property.

The API server asks :meth:`OAuthServer.lookup` who a bearer token belongs to, and
:meth:`OAuthServer.permission` / :meth:`OAuthServer.site_entries` what that principal may read.
Secrets are compared, never logged; the server keeps only hashes of issued tokens.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PERMISSION_LEVELS = ("siteOwner", "siteFullUser", "siteRestrictedUser", "siteUnverifiedUser")
READABLE = frozenset(PERMISSION_LEVELS[:3])
TOKEN_PATH = "/token"
AUTH_PATH = "/o/oauth2/auth"
REVOKE_PATH = "/revoke"


class TokenState(Enum):
    """What the server knows about a bearer token."""

    UNKNOWN = "unknown"  # not issued here: the server's static-token rules apply
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass
class Principal:
    """A Google identity: ``sa:<email>`` or ``user:<name>``; ``sites`` maps property -> level,
    ``None`` for every property (owner)."""

    id: str
    sites: dict[str, str] | None = None
    revoked: bool = False
    public_key: str | None = None
    tokens_issued: int = 0


@dataclass
class _Issued:
    principal: str
    expires_at: float


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    principal: str
    challenge: str | None
    method: str


@dataclass
class OAuthServer:
    """Google's OAuth endpoints for the simulator; ``token_ttl_s`` is an access token's life.

    ``drop_next``: that many next token requests have their connection reset (a network error).
    ``token_prefix`` / ``refresh_prefix`` start every issued token (a canary for secret scans).
    """

    token_ttl_s: float = 3600.0
    clock: Callable[[], float] = time.time
    issuer: str = ""
    principals: dict[str, Principal] = field(default_factory=dict)
    token_requests: int = 0
    failed_grants: int = 0
    drop_next: int = 0
    token_prefix: str = "ya29.sim-"
    refresh_prefix: str = "1//sim-refresh-"
    _offset: float = 0.0
    _clients: dict[str, str] = field(default_factory=dict)
    _refresh: dict[str, tuple[str, str]] = field(default_factory=dict)
    _issued: dict[str, _Issued] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _consent_as: str | None = None

    # set-up by tests --------------------------------------------------------------------------

    @property
    def token_uri(self) -> str:
        """The token endpoint's URL (what a key file's ``token_uri`` must name)."""
        if not self.issuer:
            raise RuntimeError("the simulator is not started")
        return self.issuer.rstrip("/") + TOKEN_PATH

    @property
    def auth_uri(self) -> str:
        """The authorization endpoint's URL (a client-secrets file's ``auth_uri``)."""
        return self.issuer.rstrip("/") + AUTH_PATH

    def now(self) -> float:
        """The simulator's clock for token lifetimes."""
        return self.clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the token clock forward (tokens expire without waiting)."""
        self._offset += seconds

    def add_service_account(self, email: str, public_key_pem: str,
                            sites: Mapping[str, str] | None = None) -> Principal:
        """Register a service account whose JWT assertions ``public_key_pem`` verifies."""
        principal = self._add(f"sa:{email}", sites)
        principal.public_key = public_key_pem
        return principal

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Register an OAuth client (what a client-secrets file names)."""
        self._clients[client_id] = client_secret

    def add_user(self, name: str, client_id: str, sites: Mapping[str, str] | None = None,
                 *, consent: bool = True) -> str:
        """Register a person with a refresh token for ``client_id``; return that token. With
        ``consent`` the authorization endpoint logs in as this person."""
        principal = self._add(f"user:{name}", sites)
        if consent:
            self._consent_as = principal.id
        return self._new_refresh(principal.id, client_id)

    def set_sites(self, principal_id: str, sites: Mapping[str, str] | None) -> None:
        """Change what a principal may read (e.g. remove its permission mid-run)."""
        self.principals[principal_id].sites = None if sites is None else dict(sites)

    def revoke(self, principal_id: str) -> None:
        """Revoke a principal: its key and refresh tokens are refused, live tokens die."""
        self.principals[principal_id].revoked = True

    def _add(self, principal_id: str, sites: Mapping[str, str] | None) -> Principal:
        for level in (sites or {}).values():
            if level not in PERMISSION_LEVELS:
                raise ValueError(f"unknown permission level {level!r}")
        principal = Principal(principal_id, None if sites is None else dict(sites))
        self.principals[principal_id] = principal
        return principal

    def _new_refresh(self, principal_id: str, client_id: str) -> str:
        token = self.refresh_prefix + secrets.token_urlsafe(24)
        self._refresh[_digest(token)] = (principal_id, client_id)
        return token

    # questions from the API server ------------------------------------------------------------

    def lookup(self, token: str) -> tuple[TokenState, str | None]:
        """The state of a bearer token and, if issued here, its principal's id."""
        issued = self._issued.get(_digest(token))
        if issued is None:
            return TokenState.UNKNOWN, None
        if self.principals[issued.principal].revoked:
            return TokenState.REVOKED, issued.principal
        if self.now() >= issued.expires_at:
            return TokenState.EXPIRED, issued.principal
        return TokenState.VALID, issued.principal

    def permission(self, principal_id: str, site: str) -> str | None:
        """The principal's level on ``site`` (``None``: not listed); owner of all if unlimited."""
        principal = self.principals.get(principal_id)
        if principal is None or principal.sites is None:
            return "siteOwner"
        return principal.sites.get(site)

    def can_read(self, principal_id: str, site: str) -> bool:
        """Whether the principal may query ``site``'s data."""
        return self.permission(principal_id, site) in READABLE

    def site_entries(self, principal_id: str) -> list[dict[str, str]] | None:
        """``sites.list`` entries for a principal with a list, ``None`` for an unlimited one."""
        principal = self.principals.get(principal_id)
        if principal is None or principal.sites is None:
            return None
        return [{"siteUrl": s, "permissionLevel": level}
                for s, level in sorted(principal.sites.items())]

    # HTTP -------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Mount the token, authorization and revocation endpoints."""
        app.router.add_post(TOKEN_PATH, self._handle_token)
        app.router.add_get(AUTH_PATH, self._handle_authorize)
        app.router.add_post(REVOKE_PATH, self._handle_revoke)

    async def _handle_token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        if self.drop_next > 0:
            self.drop_next -= 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        fields.update(_basic_auth(request.headers.get("Authorization", "")))
        grant = fields.get("grant_type", "")
        extra: dict[str, Any] = {}
        try:
            if grant == JWT_BEARER:
                principal = self._jwt_grant(fields.get("assertion", ""))
            elif grant == "refresh_token":
                principal = self._refresh_grant(fields)
            elif grant == "authorization_code":
                principal, extra = self._code_grant(fields)
            else:
                raise _GrantError("unsupported_grant_type", f"Invalid grant_type: {grant}")
        except _GrantError as exc:
            self.failed_grants += 1
            return web.json_response({"error": exc.code, "error_description": exc.description},
                                     status=exc.status)
        return web.json_response({**self._issue(principal), **extra})

    def _issue(self, principal_id: str) -> dict[str, Any]:
        token = self.token_prefix + secrets.token_urlsafe(32)
        self._issued[_digest(token)] = _Issued(principal_id, self.now() + self.token_ttl_s)
        self.principals[principal_id].tokens_issued += 1
        return {"access_token": token, "expires_in": int(self.token_ttl_s),
                "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/"
                "webmasters.readonly"}

    def _jwt_grant(self, assertion: str) -> str:
        from google.auth import exceptions, jwt

        try:
            claims = jwt.decode(assertion, verify=False)
        except (ValueError, exceptions.GoogleAuthError):
            raise _GrantError("invalid_grant", "Invalid JWT: malformed.") from None
        principal = self.principals.get(f"sa:{claims.get('iss')}")
        if principal is None or principal.public_key is None:
            raise _GrantError("invalid_grant", "Invalid grant: account not found")
        try:
            # google-auth checks iat/exp against the real clock; ours may be advanced
            # google-auth addresses Google's token URI whatever token_uri the key file names
            verified = jwt.decode(assertion, certs=principal.public_key,
                                  audience=[self.token_uri, GOOGLE_TOKEN_URI],
                                  clock_skew_in_seconds=int(self._offset) + 10)
        except (ValueError, exceptions.GoogleAuthError):
            raise _GrantError("invalid_grant", "Invalid JWT Signature.") from None
        if not str(verified.get("scope", "")).strip():
            raise _GrantError("invalid_scope", "Invalid OAuth scope or ID token audience "
                              "provided.")
        if principal.revoked:
            raise _GrantError("invalid_grant", "Invalid JWT Signature.")
        return principal.id

    def _check_client(self, fields: Mapping[str, str]) -> str:
        client_id = fields.get("client_id", "")
        expected = self._clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected,
                                                          fields.get("client_secret", "")):
            raise _GrantError("invalid_client", "The OAuth client was not found.", status=401)
        return client_id

    def _refresh_grant(self, fields: Mapping[str, str]) -> str:
        client_id = self._check_client(fields)
        found = self._refresh.get(_digest(fields.get("refresh_token", "")))
        if found is None or found[1] != client_id or self.principals[found[0]].revoked:
            raise _GrantError("invalid_grant", "Token has been expired or revoked.")
        return found[0]

    def _code_grant(self, fields: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        client_id = self._check_client(fields)
        code = self._codes.pop(fields.get("code", ""), None)
        if code is None or code.client_id != client_id or (
                code.redirect_uri != fields.get("redirect_uri")):
            raise _GrantError("invalid_grant", "Malformed auth code.")
        if code.challenge is not None and _challenge(fields.get("code_verifier", ""),
                                                     code.method) != code.challenge:
            raise _GrantError("invalid_grant", "Invalid code verifier.")
        if self.principals[code.principal].revoked:
            raise _GrantError("invalid_grant", "Token has been expired or revoked.")
        return code.principal, {"refresh_token": self._new_refresh(code.principal, client_id)}

    async def _handle_authorize(self, request: web.Request) -> web.Response:
        q = request.query
        redirect = q.get("redirect_uri", "")
        parts = urlsplit(redirect)
        if q.get("client_id") not in self._clients:
            return web.Response(status=401, text="Error 401: invalid_client")
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            # Google refuses out-of-band and non-loopback redirects for installed apps
            return web.Response(status=400, text="Error 400: invalid_request (redirect_uri "
                                "must be a loopback address)")
        if q.get("response_type") != "code" or "webmasters" not in q.get("scope", ""):
            return web.Response(status=400, text="Error 400: invalid_request")
        if self._consent_as is None:
            return web.Response(status=403, text="Error 403: access_denied (no test user)")
        code = "4/sim-" + secrets.token_urlsafe(16)
        self._codes[code] = _Code(str(q["client_id"]), redirect, self._consent_as,
                                  q.get("code_challenge"), q.get("code_challenge_method", "plain"))
        answer = {"code": code, "scope": q.get("scope", "")}
        if "state" in q:
            answer["state"] = q["state"]
        raise web.HTTPFound(f"{redirect}?{urlencode(answer)}")

    async def _handle_revoke(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token") or request.query.get("token", ""))
        digest = _digest(token)
        found = self._refresh.pop(digest, None)
        issued = self._issued.pop(digest, None)
        if found is None and issued is None:
            return web.json_response({"error": "invalid_token"}, status=400)
        return web.json_response({})


class _GrantError(Exception):
    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(code)
        self.code, self.description, self.status = code, description, status


def _basic_auth(header: str) -> dict[str, str]:
    """client_id and client_secret from HTTP Basic auth (client_secret_basic), if sent."""
    from urllib.parse import unquote

    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return {}
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except ValueError:
        return {}
    return {"client_id": unquote(user), "client_secret": unquote(password)}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _challenge(verifier: str, method: str) -> str:
    if method == "S256":
        raw = hashlib.sha256(verifier.encode()).digest()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return verifier
