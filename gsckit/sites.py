"""Which properties each credential can read (``sites.list``), and the pre-flight built on it.

``sites()`` returns them as a polars frame, one row per (credential, property), with
``siteUnverifiedUser`` entries marked unreadable (Google lists them but gives no data). The
pre-flight asks every credential once, before a backfill sends its first query, and answers
which credentials may serve each site; a site none can read is refused with the closest property
a credential can read ('https://example.com/' against 'sc-domain:example.com') and the step that
fixes it (for a service account: add its client_email as a user of the property).
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import polars as pl
from yarl import URL

from . import auth
from .client import classify
from .config import DEFAULT_BASE_URL, check_base_url
from .errors import ApiError, ServerError, SiteNotReadable, TransportError, Unauthorized
from .planner import check_site

READABLE_LEVELS = frozenset({"siteOwner", "siteFullUser", "siteRestrictedUser"})
UNVERIFIED = "siteUnverifiedUser"
NETWORK_RETRIES_S = (0.2, 1.0, 3.0)
USERS_STEP = "Search Console -> Settings -> Users and permissions"


@dataclass(frozen=True)
class SiteEntry:
    """One property a credential sees in ``sites.list``; ``readable`` is false for unverified."""

    site_url: str
    permission_level: str
    credential: str

    @property
    def readable(self) -> bool:
        return self.permission_level in READABLE_LEVELS


async def _get_json(session: aiohttp.ClientSession, creds: auth.Credentials, url: URL,
                    site: str = "") -> Any:
    """GET with the credential's token: a network error (also while refreshing the token) is
    retried a few times, a 401 gets one refresh and one retry."""
    refreshed = False
    for delay in (*NETWORK_RETRIES_S, None):
        try:
            return await _get_once(session, creds, url, site)
        except Unauthorized:
            if refreshed or not creds.can_refresh:
                raise
            refreshed = True
            await creds.refresh()
        except (TransportError, ServerError):
            if delay is None:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _get_once(session: aiohttp.ClientSession, creds: auth.Credentials, url: URL,
                    site: str) -> Any:
    headers = {"Authorization": f"Bearer {await creds.token()}"}
    try:
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise classify(resp.status, resp.headers, body, site)
    except aiohttp.ClientError as exc:
        raise TransportError(f"{type(exc).__name__} talking to the API") from None
    except TimeoutError:
        raise TransportError("the API did not answer in time") from None
    return json.loads(body) if body else {}


async def list_sites(session: aiohttp.ClientSession, creds: auth.Credentials,
                     base_url: str) -> list[SiteEntry]:
    """One ``sites.list`` call for ``creds``."""
    data = await _get_json(session, creds, URL(f"{base_url}webmasters/v3/sites"))
    entries = data.get("siteEntry") or [] if isinstance(data, dict) else []
    return [SiteEntry(str(e.get("siteUrl")), str(e.get("permissionLevel")), creds.source)
            for e in entries if isinstance(e, dict) and e.get("siteUrl")]


async def get_site(session: aiohttp.ClientSession, creds: auth.Credentials, base_url: str,
                   site: str) -> SiteEntry | None:
    """``sites.get`` for one property: its entry, or ``None`` on 403/404."""
    url = URL(f"{base_url}webmasters/v3/sites/{quote(site, safe='')}", encoded=True)
    try:
        data = await _get_json(session, creds, url, site)
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise
    return SiteEntry(str(data.get("siteUrl", site)), str(data.get("permissionLevel")),
                     creds.source)


def session(timeout_s: float = 30.0) -> aiohttp.ClientSession:
    """A short-lived session for account calls (not the engine's)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


async def sites_async(*, token: auth.TokenArg = None,
                      credentials: auth.FileArg | Iterable[auth.FileArg] | None = None,
                      base_url: str = DEFAULT_BASE_URL, impersonate: str | None = None
                      ) -> pl.DataFrame:
    """The properties every credential can read: ``site_url``, ``permission_level``,
    ``readable`` (false for unverified entries) and ``credential`` (its source line)."""
    root = check_base_url(base_url)
    pool = auth.resolve_all(token, credentials, impersonate=impersonate)
    async with session() as http:
        lists = await asyncio.gather(*(list_sites(http, c, root) for c in pool))
    rows = [e for entries in lists for e in entries]
    return pl.DataFrame(
        {"site_url": [e.site_url for e in rows],
         "permission_level": [e.permission_level for e in rows],
         "readable": [e.readable for e in rows],
         "credential": [e.credential for e in rows]},
        schema={"site_url": pl.String, "permission_level": pl.String, "readable": pl.Boolean,
                "credential": pl.String})


def sites(**options: Any) -> pl.DataFrame:
    """Blocking :func:`sites_async` (same keywords), for scripts and notebook cells."""
    from .runner import run_sync

    return run_sync(sites_async(**options))


# --- the closest readable property -----------------------------------------------------------

def _host(site: str) -> str:
    if site.startswith("sc-domain:"):
        host = site[len("sc-domain:"):]
    else:
        host = urlsplit(site).hostname or site
    return host.lower().removeprefix("www.")


def closest(site: str, readable: Sequence[str]) -> str | None:
    """The readable property a person most likely meant by ``site``, if any is close."""
    if not readable:
        return None
    if site + "/" in readable:
        return site + "/"
    host = _host(site)
    same = [s for s in readable if _host(s) == host]
    covering = [s for s in readable if s.startswith("sc-domain:")
                and (host == _host(s) or host.endswith("." + _host(s)))]
    # a domain property holds every URL of its host, so it is the safest guess
    for group in (covering, same):
        if group:
            return difflib.get_close_matches(site, group, n=1, cutoff=0.0)[0]
    near = difflib.get_close_matches(site, list(readable), n=1, cutoff=0.75)
    return near[0] if near else None


def why_unreadable(site: str, creds: auth.Credentials, entries: Sequence[SiteEntry]) -> str:
    """One sentence: why ``creds`` cannot read ``site``, the closest property, and the fix."""
    listed = {e.site_url: e for e in entries}
    readable = [e.site_url for e in entries if e.readable]
    if site in listed and not listed[site].readable:
        reason = (f"{creds.source} is only an unverified user of {site!r} "
                  f"({listed[site].permission_level}: no access to its data)")
    else:
        reason = (f"{site!r} is not among the {len(readable)} properties {creds.source} can "
                  "read")
    guess = closest(site, readable)
    hint = f"; did you mean {guess!r}?" if guess else ""
    if creds.client_email:
        step = (f" If {site!r} is right, add {creds.client_email} in {USERS_STEP} of that "
                "property (Restricted is enough).")
    else:
        step = (f" If {site!r} is right, sign in with an account that has access "
                f"('gsckit login'), or ask an owner to add you in {USERS_STEP}.")
    return reason + hint + "." + step


# --- the pre-flight ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Access:
    """What the pre-flight found: which credentials serve each site, and every listing."""

    serving: dict[str, tuple[auth.Credentials, ...]]
    listings: dict[str, tuple[SiteEntry, ...]]


async def preflight(site_list: Sequence[str], pool: Sequence[auth.Credentials],
                    base_url: str) -> Access:
    """One ``sites.list`` per credential; raise :class:`SiteNotReadable` for a site no
    credential can read. A site missing from a listing is confirmed with one ``sites.get``
    before it is counted as unreadable."""
    for site in site_list:
        check_site(site)
    async with session() as http:
        lists = await asyncio.gather(*(list_sites(http, c, base_url) for c in pool))
        listings = {c.identity: tuple(entries) for c, entries in zip(pool, lists, strict=True)}
        serving: dict[str, list[auth.Credentials]] = {s: [] for s in site_list}
        for creds, entries in zip(pool, lists, strict=True):
            readable = {e.site_url for e in entries if e.readable}
            for site in site_list:
                if site in readable:
                    serving[site].append(creds)
                elif not any(e.site_url == site for e in entries):
                    found = await get_site(http, creds, base_url, site)
                    if found is not None and found.readable:
                        serving[site].append(creds)
    for site in site_list:
        if not serving[site]:
            reasons = [why_unreadable(site, c, listings[c.identity]) for c in pool]
            raise SiteNotReadable(" ".join(reasons) if len(pool) == 1 else
                                  f"no credential can read {site!r}: " + " ".join(reasons))
    return Access({s: tuple(c) for s, c in serving.items()}, listings)
