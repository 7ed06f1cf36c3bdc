"""``gsckit login``: the installed-app OAuth flow for people, saved where gsckit finds it.

google-auth-oauthlib's flow with a redirect to ``http://127.0.0.1:<port>/`` (Google blocked the
copy-paste "out-of-band" flow, so there is none here): the link is printed, and opened in a
browser where one exists. After consent the browser is sent back to that loopback address, the
code is exchanged (with PKCE) for a refresh token, and an authorized-user JSON file is written
under the user's config directory with mode 0600. :func:`gsckit.auth.resolve` then uses it when
nothing else is given. On a remote kernel, pick a ``port`` and forward it (see the README).
"""

from __future__ import annotations

import contextlib
import json
import os
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, CredentialsError
from .credentials import SCOPE
from .sources import _is_loopback_url, login_path

CLIENT_HINT = ("download it from Cloud Console -> APIs & Services -> Credentials -> Create "
               "credentials -> OAuth client ID -> Desktop app")


def login(client_secrets: str | os.PathLike[str], *, port: int = 0,
          open_browser: bool | None = None, browser: str | None = None,
          path: str | os.PathLike[str] | None = None, timeout_s: float | None = 300.0) -> Path:
    """Sign a person in with the OAuth installed-app flow; return the saved file's path.

    ``client_secrets``: the OAuth client's JSON (a "Desktop app" client). ``port``: the loopback
    port the browser is redirected to (0 picks a free one; choose one to forward it from a remote
    kernel). ``open_browser``: ``None`` opens one only where the system has one; the link is
    always printed. ``path``: where to save (default :func:`gsckit.auth.login_path`).
    """
    flow_module = _import_flow()
    secrets_file = Path(client_secrets)
    token_uri = _check_client_secrets(secrets_file)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0..65535, got {port}")
    target = Path(path) if path is not None else login_path()
    if target.is_dir():
        raise ConfigError(f"the login file path {str(target)!r} is a directory")
    flow = flow_module.InstalledAppFlow.from_client_secrets_file(str(secrets_file),
                                                                 scopes=[SCOPE])
    if open_browser is None:
        open_browser = _has_browser(browser)
    failure: str | None = None
    with _loopback_token_endpoint(token_uri):
        try:
            creds = flow.run_local_server(
                host="127.0.0.1", port=port, open_browser=open_browser, browser=browser,
                authorization_prompt_message="Open this link to sign in to Google and allow "
                "gsckit to read Search Console data:\n{url}",
                success_message="gsckit is signed in. You may close this window.",
                timeout_seconds=timeout_s, access_type="offline", prompt="consent")
        except OSError as exc:
            raise ConfigError(f"cannot listen on 127.0.0.1:{port} for the sign-in redirect "
                              f"({exc.strerror or exc}); choose another --port") from None
        except Exception as exc:  # oauthlib's errors may quote the request; name the kind only
            failure = type(exc).__name__
    if failure is not None:
        raise CredentialsError(f"sign-in did not complete ({failure}); run 'gsckit login' "
                               "again")
    if not creds.refresh_token:
        raise CredentialsError("Google returned no refresh token; remove gsckit's access at "
                               "https://myaccount.google.com/permissions and log in again")
    save(target, {"type": "authorized_user", "client_id": creds.client_id,
                  "client_secret": creds.client_secret, "refresh_token": creds.refresh_token,
                  "token_uri": creds.token_uri})
    print(f"Signed in. Saved to {target} (mode 0600); gsckit uses it when no other "
          "credentials are given.")
    return target


def save(target: Path, info: dict[str, Any]) -> None:
    """Write ``info`` as JSON, readable by the owner only, replacing any earlier file."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = target.with_name(target.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    os.replace(temporary, target)


def _import_flow() -> Any:
    try:
        import google_auth_oauthlib.flow as flow_module  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError("gsckit login needs google-auth-oauthlib: "
                          "pip install 'gsckit[login]'") from None
    return flow_module


def _check_client_secrets(file: Path) -> str:
    """The client's token URI, after checking the file is an OAuth client's JSON."""
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"client secrets file {str(file)!r} does not exist; "
                          f"{CLIENT_HINT}") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise ConfigError(f"client secrets file {str(file)!r} is not readable JSON") from None
    client = info.get("installed") or info.get("web") if isinstance(info, dict) else None
    if not isinstance(client, dict) or not all(client.get(k) for k in (
            "client_id", "client_secret", "auth_uri", "token_uri")):
        kind = info.get("type") if isinstance(info, dict) else None
        extra = f" (it is a {kind!r} file; pass that with --credentials)" if kind else ""
        raise ConfigError(f"{str(file)!r} is not an OAuth client secrets file{extra}; "
                          f"{CLIENT_HINT}")
    return str(client["token_uri"])


def _has_browser(name: str | None) -> bool:
    try:
        webbrowser.get(name)
    except webbrowser.Error:
        return False
    return True


@contextlib.contextmanager
def _loopback_token_endpoint(token_uri: str) -> Iterator[None]:
    """Let oauthlib talk plain HTTP to a loopback token endpoint (the simulator) only."""
    key = "OAUTHLIB_INSECURE_TRANSPORT"
    if not _is_loopback_url(token_uri) or key in os.environ:
        yield
        return
    os.environ[key] = "1"
    try:
        yield
    finally:
        os.environ.pop(key, None)
