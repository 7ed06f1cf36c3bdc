"""Validate a backfill request and split it into day slices.

A slice is one (site, search type, dimension set, filters, day): the unit that is fetched page by
page, committed atomically and recorded in the ledger. Everything here runs before the first
request, so bad input costs nothing. Combinations Google is documented to reject are refused here
too; ones only suspected are sent (see the README, "Inputs that Google refuses").
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

SEARCH_TYPES = ("web", "image", "video", "news", "discover", "googleNews")
DIMENSIONS = ("date", "query", "page", "country", "device", "searchAppearance", "hour")
FILTER_DIMENSIONS = ("query", "page", "country", "device", "searchAppearance")
DATA_STATES = ("final", "all", "hourly_all")
OPERATORS = ("equals", "notEquals", "contains", "notContains", "includingRegex", "excludingRegex")
DEVICES = ("DESKTOP", "MOBILE", "TABLET")
RETENTION_MONTHS = 16
ROW_CAP = 50_000  # Google: "a maximum of 50K rows of data per day per search type"
HOURLY_DAYS = 10
DEFAULT_DIMENSIONS = ("date", "query", "page")
# Google: "queries and positions are not supported by the Google Discover report ... if an
# unsupported dimension is requested, the API will return an error" (Search Central blog,
# 2021-10-25); Google News answers the same for query (the error connectors report)
NO_QUERY_TYPES = ("discover", "googleNews")

_CANON = {name.lower(): name for name in (*SEARCH_TYPES, *DIMENSIONS, *DATA_STATES, *OPERATORS)}
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}$", re.IGNORECASE)


class HorizonWarning(UserWarning):
    """A start older than Search Console keeps (16 months; 10 days of hourly data) was moved to
    the earliest available day, so a re-run after the horizon moved still runs."""


@dataclass(frozen=True)
class Filter:
    """One dimension filter: ``Filter("query", "contains", "shoes")``."""

    dimension: str
    operator: str
    expression: str

    @classmethod
    def parse(cls, text: str) -> Filter:
        """Parse ``"DIMENSION OPERATOR EXPRESSION"``, e.g. ``"page contains /blog/"``."""
        parts = text.strip().split(None, 2)
        if len(parts) != 3:
            raise ConfigError(
                f"filter {text!r} must read 'DIMENSION OPERATOR EXPRESSION', "
                "e.g. 'query contains shoes'"
            )
        return cls(*parts)

    def to_api(self) -> dict[str, str]:
        return {"dimension": self.dimension, "operator": self.operator,
                "expression": self.expression}


@dataclass(frozen=True)
class Query:
    """A validated backfill request: what to fetch, for which sites and days."""

    sites: tuple[str, ...]
    start: date
    end: date
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS
    search_types: tuple[str, ...] = ("web",)
    data_state: str = "final"
    filters: tuple[Filter, ...] = ()

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True)
class Slice:
    """One day of one stream: the unit of fetching, committing and resuming."""

    site: str
    search_type: str
    dimensions: tuple[str, ...]
    filters: tuple[Filter, ...]
    data_state: str
    day: date

    @cached_property
    def dimensions_key(self) -> str:
        return ",".join(self.dimensions)

    @cached_property
    def filters_key(self) -> str:
        if not self.filters:
            return ""
        ordered = sorted(self.filters, key=lambda f: (f.dimension, f.operator, f.expression))
        return json.dumps([f.to_api() for f in ordered], separators=(",", ":"))

    @cached_property
    def stream(self) -> tuple[str, str, str, str]:
        """Everything but the day: slices of one stream behave alike (page counts)."""
        return (self.site, self.search_type, self.dimensions_key, self.filters_key)

    @cached_property
    def key(self) -> str:
        """Stable slice id used by the ledger (data state excluded: a re-fetch replaces)."""
        return "|".join((*self.stream, self.day.isoformat()))

    def body(self, start_row: int, row_limit: int) -> dict[str, Any]:
        """The JSON request body for one page of this slice."""
        body: dict[str, Any] = {
            "startDate": self.day.isoformat(),
            "endDate": self.day.isoformat(),
            "dimensions": list(self.dimensions),
            "type": self.search_type,
            "dataState": self.data_state,
            "rowLimit": row_limit,
            "startRow": start_row,
        }
        if self.filters:
            body["dimensionFilterGroups"] = [
                {"groupType": "and", "filters": [f.to_api() for f in self.filters]}
            ]
        return body


def pacific_today() -> date:
    """Today in Search Console's time zone (America/Los_Angeles)."""
    try:
        from zoneinfo import ZoneInfo

        return datetime.now(ZoneInfo("America/Los_Angeles")).date()
    except Exception:  # no tz database on this machine: PST is close enough for a date bound
        return datetime.now(timezone(timedelta(hours=-8))).date()


def earliest_day(today: date) -> date:
    """The oldest day Search Console still serves: 16 months before ``today``."""
    month = today.month - 1 - RETENTION_MONTHS
    year = today.year + month // 12
    month = month % 12 + 1
    for day in (today.day, 30, 29, 28):
        try:
            return date(year, month, day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def check_site(site: object) -> str:
    """Return ``site`` if it is a Search Console property id, else raise with the fix."""
    if not isinstance(site, str) or not site:
        raise ConfigError("site must be a property such as 'sc-domain:example.com' or "
                          "'https://www.example.com/'")
    if site != site.strip() or any(c.isspace() for c in site):
        raise ConfigError(f"site {site!r} contains whitespace")
    if "%" in site:
        raise ConfigError(f"site {site!r} looks percent-encoded; pass it as shown in Search "
                          "Console, e.g. 'sc-domain:example.com'")
    if site.startswith("sc-domain:"):
        host = site[len("sc-domain:"):]
        if not _HOST.match(host) or "." not in host:
            raise ConfigError(f"site {site!r}: a domain property is 'sc-domain:' plus a bare "
                              "domain, e.g. 'sc-domain:example.com'")
        return site
    parts = urlsplit(site)
    if parts.scheme in ("http", "https") and parts.hostname and _HOST.match(parts.hostname):
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(f"site {site!r}: a URL-prefix property has no query, fragment "
                              "or credentials")
        if not site.endswith("/"):
            raise ConfigError(f"site {site!r}: URL-prefix properties end with '/'; "
                              f"did you mean {site + '/'!r}?")
        return site
    raise ConfigError(f"site {site!r} is not a Search Console property: use "
                      "'sc-domain:example.com' or 'https://www.example.com/'")


def check_day(value: object, what: str) -> date:
    """Parse ``YYYY-MM-DD`` (or accept a ``date``)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            if len(value) == 10:
                return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{what} date {value!r} is not a valid YYYY-MM-DD date")


def _canon(value: object, allowed: Sequence[str], what: str) -> str:
    if isinstance(value, str):
        name = _CANON.get(value.lower())
        if name is not None and name in allowed:
            return name
    raise ConfigError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}")


def _as_tuple(value: str | Iterable[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def check_dimensions(dimensions: str | Iterable[str] | None, data_state: str
                     ) -> tuple[str, ...]:
    dims = tuple(_canon(d, DIMENSIONS, "dimension") for d in _as_tuple(dimensions,
                                                                      DEFAULT_DIMENSIONS))
    seen = {d for d in dims if dims.count(d) > 1}
    if seen:
        raise ConfigError(f"dimension {sorted(seen)[0]!r} is listed twice")
    if "searchAppearance" in dims and len(dims) > 1:
        raise ConfigError("searchAppearance cannot be grouped with another dimension; "
                          "query it alone, then filter by one appearance")
    if "hour" in dims and data_state != "hourly_all":
        raise ConfigError("the hour dimension needs data_state 'hourly_all'")
    return dims


def check_filter(f: Filter | str) -> Filter:
    if isinstance(f, str):
        f = Filter.parse(f)
    if not isinstance(f, Filter):
        raise ConfigError(f"filter {f!r} must be a gsckit.Filter or 'DIMENSION OPERATOR VALUE'")
    dimension = _canon(f.dimension, FILTER_DIMENSIONS, "filter dimension")
    operator = _canon(f.operator, OPERATORS, "filter operator")
    expression = f.expression
    if not isinstance(expression, str) or not expression or len(expression) > 4096:
        raise ConfigError("a filter expression must be 1 to 4096 characters")
    if operator.endswith("Regex"):
        try:
            re.compile(expression)
        except re.error as exc:
            raise ConfigError(f"filter regex {expression!r} is invalid: {exc}") from None
    if dimension == "country" and operator in ("equals", "notEquals") and not re.fullmatch(
            r"[A-Za-z]{3}", expression):
        raise ConfigError(f"country filter {expression!r} must be an ISO 3166-1 alpha-3 code "
                          "such as 'usa'")
    if dimension == "device" and operator in ("equals", "notEquals") and (
            expression.upper() not in DEVICES):
        raise ConfigError(f"device filter {expression!r} must be one of {', '.join(DEVICES)}")
    return Filter(dimension, operator, expression)


def make_query(
    sites: str | Iterable[str],
    start: date | str,
    end: date | str,
    *,
    dimensions: str | Iterable[str] | None = None,
    search_type: str | Iterable[str] = "web",
    data_state: str = "final",
    filters: Iterable[Filter | str] = (),
    today: date | None = None,
) -> Query:
    """Validate every part of a backfill request; raise :class:`ConfigError` on the first fault."""
    site_list = (sites,) if isinstance(sites, str) else tuple(sites)
    if not site_list:
        raise ConfigError("give at least one site")
    checked_sites = tuple(dict.fromkeys(check_site(s) for s in site_list))
    first = check_day(start, "start")
    last = check_day(end, "end")
    if first > last:
        raise ConfigError(f"start {first} is after end {last}")
    today = today or pacific_today()
    if last > today:
        raise ConfigError(f"end {last} is in the future (today is {today} in Pacific time)")
    state = _canon(data_state, DATA_STATES, "data_state")
    first = clamp_start(first, last, earliest_day(today), "Search Console's 16 months of data")
    if state == "hourly_all":
        first = clamp_start(first, last, today - timedelta(days=HOURLY_DAYS),
                            f"hourly data (the last {HOURLY_DAYS} days)")
    types = tuple(dict.fromkeys(_canon(t, SEARCH_TYPES, "search type")
                                for t in _as_tuple(search_type, ("web",))))
    if not types:
        raise ConfigError("give at least one search type")
    if isinstance(filters, (str, Filter)):
        filters = (filters,)
    dims = check_dimensions(dimensions, state)
    checked_filters = tuple(check_filter(f) for f in filters)
    check_search_types(types, dims, checked_filters)
    return Query(
        sites=checked_sites,
        start=first,
        end=last,
        dimensions=dims,
        search_types=types,
        data_state=state,
        filters=checked_filters,
    )


def clamp_start(first: date, last: date, oldest: date, what: str) -> date:
    """``first``, or ``oldest`` with a :class:`HorizonWarning` if ``first`` is older; refuse a
    range that ends before ``oldest``. A halted run re-run the next day must not fail because
    the horizon moved overnight."""
    if last < oldest:
        raise ConfigError(f"the whole range {first} to {last} is older than {what}; the "
                          f"earliest day is {oldest}")
    if first < oldest:
        warnings.warn(f"start {first} is older than {what}; starting at the earliest day, "
                      f"{oldest}", HorizonWarning, stacklevel=3)
        return oldest
    return first


def check_search_types(types: Sequence[str], dimensions: Sequence[str],
                       filters: Sequence[Filter]) -> None:
    """Refuse dimension and filter combinations Google rejects for a search type."""
    no_query = [t for t in types if t in NO_QUERY_TYPES]
    if not no_query:
        return
    kind = no_query[0]
    hint = (f"; backfill {kind} on its own" if len(types) > 1 else "")
    if "query" in dimensions:
        rest = ",".join(d for d in dimensions if d != "query") or "date,page"
        raise ConfigError(f"search type {kind!r} has no query data and Google rejects the query "
                          f"dimension for it: use dimensions {rest!r}{hint}")
    if any(f.dimension == "query" for f in filters):
        raise ConfigError(f"search type {kind!r} has no query data and Google rejects a query "
                          f"filter for it: drop the query filter{hint}")


def plan(query: Query) -> list[Slice]:
    """Every day slice of ``query``, oldest day first (nearest to expiring), sites interleaved."""
    slices = []
    for offset in range(query.days):
        day = query.start + timedelta(days=offset)
        for site in query.sites:
            for search_type in query.search_types:
                slices.append(Slice(site, search_type, query.dimensions, query.filters,
                                    query.data_state, day))
    return slices
