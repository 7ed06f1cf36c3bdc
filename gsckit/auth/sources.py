"""Where credentials come from, and the order gsckit looks for them when none is given.

Explicit arguments win: ``token=`` (a string, a callable, or a :class:`Credentials`), then
``credentials=`` (a JSON file). Otherwise, in order:

1. ``$GSC_ACCESS_TOKEN`` (a bare access token);
2. ``$GOOGLE_APPLICATION_CREDENTIALS`` (any google-auth JSON file);
3. the file ``gsckit login`` wrote (:func:`login_path`);
4. gcloud's application-default credentials file (``gcloud auth application-default login``);
5. the metadata server, only when running on Google Cloud (Compute Engine, Cloud Run, GKE).

Every source goes through google-auth with the scope ``webmasters.readonly``; ``impersonate=``
turns any of them into a service account's short-lived tokens (the caller needs the "Service
Account Token Creator" role on it). Loading touches no network.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import CredentialsError
from .credentials import (
    SCOPE,
    TOKEN_ENV,
    CallableToken,
    Credentials,
    GoogleCredentials,
    StaticToken,
    TokenSource,
)

ADC_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
LOGIN_FILE = "authorized_user.json"
SA_FIX = ("the key was deleted, disabled or revoked: create a new JSON key in Cloud Console -> "
          "IAM & Admin -> Service accounts -> Keys and pass it with --credentials")
USER_FIX = ("the refresh token expired or was revoked (a consent screen in 'Testing' expires them "
            "after 7 days): run 'gsckit login' again")
ADC_USER_FIX = ("the refresh token expired or was revoked: run 'gcloud auth application-default "
                "login --client-id-file=CLIENT.json --scopes=" + SCOPE + "' again")
IMPERSONATE_FIX = ("the caller may not impersonate this service account: grant it the Service "
                   "Account Token Creator role on the account")

TokenArg = str | TokenSource | Credentials | None
FileArg = str | os.PathLike[str]


def config_dir() -> Path:
    """gsckit's folder in the user's config directory (``$XDG_CONFIG_HOME/gsckit``,
    ``~/.config/gsckit``, or ``%APPDATA%\\gsckit`` on Windows)."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "gsckit"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gsckit"


def login_path() -> Path:
    """Where ``gsckit login`` keeps the authorized-user JSON (mode 0600)."""
    return config_dir() / LOGIN_FILE


def gcloud_adc_path() -> Path:
    """gcloud's application-default credentials file (``$CLOUDSDK_CONFIG`` honoured)."""
    if os.environ.get("CLOUDSDK_CONFIG"):
        folder = Path(os.environ["CLOUDSDK_CONFIG"])
    elif sys.platform == "win32" and os.environ.get("APPDATA"):
        folder = Path(os.environ["APPDATA"]) / "gcloud"
    else:
        folder = Path.home() / ".config" / "gcloud"
    return folder / "application_default_credentials.json"


def _read_json(file: Path) -> dict[str, Any]:
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError(f"credentials file {str(file)!r} does not exist") from None
    except IsADirectoryError:
        raise CredentialsError(f"credentials file {str(file)!r} is a directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CredentialsError(f"credentials file {str(file)!r} is not readable JSON") from None
    if not isinstance(info, dict):
        raise CredentialsError(f"credentials file {str(file)!r} is not a JSON object")
    return info


_REQUIRED = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
    "impersonated_service_account": ("service_account_impersonation_url",
                                     "source_credentials"),
}


def from_file(path: FileArg, *, origin: str = "", fix: str = "") -> GoogleCredentials:
    """Load a google-auth JSON file: service account, authorized user, or impersonated service
    account (what gcloud writes for ``--impersonate-service-account``). No network until the
    first request.

    ``origin`` says how the file was found (for the source line), ``fix`` overrides the advice
    given when its grant is refused.
    """
    file = Path(path)
    info = _read_json(file)
    kind = info.get("type")
    if kind not in _REQUIRED:
        raise CredentialsError(f"credentials file {str(file)!r} has type {kind!r}; expected "
                               f"one of {', '.join(repr(k) for k in _REQUIRED)}")
    missing = [k for k in _REQUIRED[kind] if not info.get(k)]
    if missing:
        raise CredentialsError(f"credentials file {str(file)!r} lacks {', '.join(missing)}")
    where = f"{origin} {file}" if origin else f"file {file}"
    loaded = _load_google(kind, info, where, fix)
    if loaded is None:
        # raised outside the except block so no exception holding key material rides along
        raise CredentialsError(f"credentials file {str(file)!r} is malformed (the private key "
                               "or a field could not be parsed)")
    return loaded


def _load_google(kind: str, info: dict[str, Any], where: str, fix: str
                 ) -> GoogleCredentials | None:
    try:
        if kind == "service_account":
            from google.oauth2 import service_account

            email = str(info["client_email"])
            sa = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
            return GoogleCredentials(sa, "sa:" + email, f"service account {email} ({where})",
                                     client_email=email, fix=fix or SA_FIX)
        if kind == "authorized_user":
            from google.oauth2 import credentials as user_credentials

            user = user_credentials.Credentials.from_authorized_user_info(info, scopes=[SCOPE])
            uri = info.get("token_uri")
            if isinstance(uri, str) and _is_loopback_url(uri):
                # google-auth always sends refresh tokens to Google; a loopback token_uri is
                # the simulator's and is the only other place they may go
                user = user.with_token_uri(uri)
            client = str(info["client_id"]).split(".")[0][:24]
            who = f"Google account {info['account']}" if info.get("account") else "a Google account"
            return GoogleCredentials(user, "user:" + client,
                                     f"{who} (authorized user, OAuth client {client}, {where})",
                                     fix=fix or USER_FIX)
        from google.auth import impersonated_credentials

        creds = impersonated_credentials.Credentials.from_impersonated_service_account_info(
            info, scopes=[SCOPE])
        email = str(info["service_account_impersonation_url"]).rsplit("/", 1)[-1].split(":")[0]
        return GoogleCredentials(creds, "sa:" + email,
                                 f"service account {email} (impersonated, {where})",
                                 client_email=email, fix=fix or IMPERSONATE_FIX)
    except Exception:  # google-auth raises many kinds for a malformed file; none is shown
        return None


def _is_loopback_url(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def impersonated(base: GoogleCredentials, target: str, *,
                 iam_endpoint: str | None = None) -> GoogleCredentials:
    """Short-lived tokens of service account ``target``, minted with ``base``'s identity."""
    if "@" not in target or " " in target:
        raise CredentialsError(f"impersonate={target!r} is not a service account email")
    from google.auth import impersonated_credentials

    creds = impersonated_credentials.Credentials(
        source_credentials=base.google_credentials, target_principal=target,
        target_scopes=[SCOPE], iam_endpoint_override=iam_endpoint)
    return GoogleCredentials(creds, "sa:" + target,
                             f"service account {target} (impersonated by {base.source})",
                             client_email=target, fix=IMPERSONATE_FIX)


def _metadata_server() -> GoogleCredentials | None:
    """The metadata server's credentials, only where it exists (no probing elsewhere)."""
    from google.auth.compute_engine import _metadata

    if not (os.environ.get("GCE_METADATA_HOST") or _metadata.detect_gce_residency_linux()):
        return None
    from google.auth import compute_engine

    creds = compute_engine.Credentials(scopes=[SCOPE])
    return GoogleCredentials(creds, "gce:default", "the Google Cloud metadata server's "
                             "service account", fix="check the instance's service account "
                             "and its scopes")


def from_environment() -> Credentials | None:
    """The first credential found by the documented order (see the module docstring)."""
    if os.environ.get(TOKEN_ENV):
        return StaticToken(os.environ[TOKEN_ENV], f"${TOKEN_ENV}")
    if os.environ.get(ADC_ENV):
        return from_file(os.environ[ADC_ENV], origin=f"${ADC_ENV}")
    if login_path().is_file():
        return from_file(login_path(), origin="gsckit login file")
    if gcloud_adc_path().is_file():
        return from_file(gcloud_adc_path(), origin="gcloud application-default file",
                         fix=ADC_USER_FIX)
    return _metadata_server()


NO_CREDENTIALS = (f"no credentials: pass a token (--token or ${TOKEN_ENV}), a service-account or "
                  f"authorized-user JSON file (--credentials or ${ADC_ENV}), run 'gsckit login', "
                  "or set up application default credentials (see 'Connect to Google' in the "
                  "README)")


def resolve(token: TokenArg = None, credentials_file: FileArg | None = None, *,
            impersonate: str | None = None) -> Credentials:
    """Pick one credential: explicit token, token callable, file, then the environment."""
    if token is not None and credentials_file is not None:
        raise CredentialsError("give either a token or a credentials file, not both")
    creds: Credentials | None
    if isinstance(token, Credentials):
        creds = token
    elif callable(token):
        creds = CallableToken(token)
    elif token is not None:
        creds = StaticToken(token)
    elif credentials_file is not None:
        creds = from_file(credentials_file)
    else:
        creds = from_environment()
    if creds is None:
        raise CredentialsError(NO_CREDENTIALS)
    if impersonate is not None:
        if not isinstance(creds, GoogleCredentials):
            raise CredentialsError("impersonate= needs google-auth credentials (a file, the "
                                   "login, or application default credentials), not a token")
        creds = impersonated(creds, impersonate)
    return creds


def resolve_all(token: TokenArg = None,
                credentials: FileArg | Iterable[FileArg] | None = None, *,
                impersonate: str | None = None) -> list[Credentials]:
    """Every credential of a run: one, or one per file when ``credentials`` is a list (a pool).

    Files naming the same identity twice are refused: they would share one user's quota.
    """
    if credentials is None or isinstance(credentials, str | os.PathLike):
        return [resolve(token, credentials, impersonate=impersonate)]
    files = list(credentials)
    if not files:
        raise CredentialsError("credentials=[] is empty: give at least one file")
    pool = [resolve(token, f, impersonate=impersonate) for f in files]
    seen: dict[str, str] = {}
    for creds in pool:
        if creds.identity in seen:
            raise CredentialsError(f"{creds.source} and {seen[creds.identity]} are the same "
                                   "identity: one user's quota cannot be pooled with itself")
        seen[creds.identity] = creds.source
    return pool
