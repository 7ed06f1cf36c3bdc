"""``gsckit doctor``: check, in order, everything a backfill needs from Google, and say each fix.

1. which credential was found (its source line);
2. that each credential gets a token, and how long it has left;
3. what each credential can read (``sites.list``);
4. that each site string is readable, else the closest readable property and the exact step;
5. that one small query per site answers (one row of one day);
6. the quota headroom the credentials give.

A failed step skips what depends on it. Nothing is written anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from . import auth
from .client import classify
from .config import DEFAULT_BASE_URL, EngineConfig, check_base_url
from .errors import ConfigError, GsckitError, TransportError
from .planner import check_site, pacific_today
from .sites import SiteEntry, get_site, list_sites, session, why_unreadable

GOOGLE_QPM = 1_200


@dataclass(frozen=True)
class Check:
    """One step of the diagnosis: ``ok``, what was found, and the fix when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.name}: {self.detail}" + (f"\n     fix: {self.fix}"
                                                        if self.fix else "")


@dataclass(frozen=True)
class Diagnosis:
    """Every check ``gsckit doctor`` ran, in order; ``ok`` when none failed."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def summary(self) -> str:
        """The checks, one (or two, with the fix) lines each, and a verdict."""
        verdict = ("all checks passed" if self.ok else
                   f"{sum(not c.ok for c in self.checks)} check(s) failed")
        return "\n".join([*(c.line() for c in self.checks), verdict])

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


async def doctor_async(sites: Iterable[str] = (), *, token: auth.TokenArg = None,
                       credentials: auth.FileArg | Iterable[auth.FileArg] | None = None,
                       base_url: str = DEFAULT_BASE_URL, impersonate: str | None = None,
                       qpm: int | None = None) -> Diagnosis:
    """Run the checks for ``sites`` (none: only the credential checks) and return them."""
    root = check_base_url(base_url)
    site_list = list(dict.fromkeys([sites] if isinstance(sites, str) else sites))
    checks: list[Check] = []
    try:
        members = auth.resolve_all(token, credentials, impersonate=impersonate)
    except ConfigError as exc:
        checks.append(Check("credentials", False, str(exc), "see 'Connect to Google' in the "
                            "README: a service-account key, 'gsckit login', or ADC"))
        return Diagnosis(tuple(checks))
    for creds in members:
        checks.append(Check("credentials", True, f"using {creds.source}"))
    async with session() as http:
        listings: dict[str, list[SiteEntry]] = {}
        for creds in members:
            entries = await _account_checks(http, creds, root, checks)
            if entries is not None:
                listings[creds.identity] = entries
        usable = [c for c in members if c.identity in listings]
        serving: dict[str, list[auth.Credentials]] = {}
        for site in site_list:
            serving[site] = await _site_check(http, site, usable, listings, root, checks)
        for site, readers in serving.items():
            if readers:
                await _query_check(http, site, readers[0], root, checks)
    checks.append(_quota_check(usable, serving, qpm or EngineConfig().qpm))
    return Diagnosis(tuple(checks))


def doctor(sites: Iterable[str] = (), **options: Any) -> Diagnosis:
    """Blocking :func:`doctor_async` (same arguments)."""
    from .runner import run_sync

    return run_sync(doctor_async(sites, **options))


async def _account_checks(http: aiohttp.ClientSession, creds: auth.Credentials, root: str,
                          checks: list[Check]) -> list[SiteEntry] | None:
    """Token, then ``sites.list``; ``None`` if either failed."""
    name = f"token ({creds.identity})"
    try:
        await creds.token()
    except GsckitError as exc:
        fix = ("check the network and retry" if isinstance(exc, TransportError)
               else "see the message above")
        checks.append(Check(name, False, str(exc), fix))
        return None
    remaining = creds.remaining_s() if isinstance(creds, auth.GoogleCredentials) else None
    if remaining is not None:
        detail = f"obtained; valid for {remaining / 60:.0f} more minutes, refreshed on its own"
    elif creds.can_refresh:
        detail = "obtained; lifetime unknown, fetched again after a 401"
    else:
        detail = ("a static token: lifetime unknown (Google's last about an hour) and it "
                  "cannot be refreshed")
    checks.append(Check(name, True, detail))
    try:
        entries = await list_sites(http, creds, root)
    except GsckitError as exc:
        checks.append(Check(f"sites.list ({creds.identity})", False, str(exc),
                            "a 401 means the token is not valid for this API root"))
        return None
    readable = sum(e.readable for e in entries)
    unverified = len(entries) - readable
    checks.append(Check(f"sites.list ({creds.identity})", True,
                        f"can read {readable} properties"
                        + (f" ({unverified} more listed as unverified: no data)"
                           if unverified else "")))
    return entries


async def _site_check(http: aiohttp.ClientSession, site: str,
                      members: Sequence[auth.Credentials],
                      listings: dict[str, list[SiteEntry]], root: str,
                      checks: list[Check]) -> list[auth.Credentials]:
    """Which credentials read ``site``; a failed check names the closest property and fix."""
    name = f"site {site}"
    readable_anywhere = sorted({e.site_url for es in listings.values() for e in es
                                if e.readable})
    try:
        check_site(site)
    except ConfigError as exc:
        from .sites import closest

        guess = closest(site, readable_anywhere)
        checks.append(Check(name, False, str(exc), f"use {guess!r}" if guess else
                            "use the property string exactly as Search Console shows it"))
        return []
    readers: list[auth.Credentials] = []
    for creds in members:
        entries = listings[creds.identity]
        level = next((e.permission_level for e in entries if e.site_url == site), None)
        if level is None:
            found = await get_site(http, creds, root, site)
            level = found.permission_level if found is not None else None
        if level is not None and SiteEntry(site, level, "").readable:
            readers.append(creds)
    if readers:
        checks.append(Check(name, True, "readable by " + ", ".join(c.source for c in readers)))
    elif members:
        reasons = [why_unreadable(site, c, listings[c.identity]) for c in members]
        detail, _, step = " ".join(reasons).partition(" If ")
        checks.append(Check(name, False, detail, ("if the site string is right: " + step)
                            if step else ""))
    return readers


async def _query_check(http: aiohttp.ClientSession, site: str, creds: auth.Credentials,
                       root: str, checks: list[Check]) -> None:
    """One query of one row for a final day: proves the data endpoint answers for ``site``."""
    day = (pacific_today() - timedelta(days=5)).isoformat()
    url = URL(f"{root}webmasters/v3/sites/{quote(site, safe='')}/searchAnalytics/query",
              encoded=True)
    body = {"startDate": day, "endDate": day, "dimensions": ["date"], "rowLimit": 1}
    name = f"query {site}"
    try:
        headers = {"Authorization": f"Bearer {await creds.token()}"}
        async with http.post(url, json=body, headers=headers, allow_redirects=False) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise classify(resp.status, resp.headers, payload, site)
        rows = len(json.loads(payload).get("rows") or [])
    except (GsckitError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
        checks.append(Check(name, False, str(exc) or type(exc).__name__,
                            "a 429/403 quota answer means wait and retry; other codes: see "
                            "the error table in the README"))
        return
    checks.append(Check(name, True, f"answered for {day} ({rows} row{'s' if rows != 1 else ''})"))


def _quota_check(members: Sequence[auth.Credentials],
                 serving: dict[str, list[auth.Credentials]], qpm: int) -> Check:
    """The requests per minute the credentials allow, at gsckit's target per user and site."""
    if not members:
        return Check("quota", False, "no working credential", "fix the checks above")
    total = qpm * len(members)
    detail = (f"{len(members)} credential(s): up to {total:,} requests/min in all ({qpm} each, "
              f"{100 * qpm // GOOGLE_QPM}% of Google's {GOOGLE_QPM:,} per user); at most "
              f"{qpm}/min per site")
    shared = [f"{site} by {len(r)}" for site, r in serving.items() if len(r) > 1]
    if shared:
        detail += "; sites served by several credentials: " + ", ".join(shared)
    return Check("quota", True, detail)
