"""A Search Console simulator on 127.0.0.1 that behaves like the Search Analytics API.

Tests, the demo and the benchmarks run the whole pipeline against it, offline. It serves
``POST /webmasters/v3/sites/{siteUrl}/searchAnalytics/query`` with Google's paging rules (rowLimit
1-25,000, an empty page has no ``rows`` key, at most ``row_cap`` rows per day and search type,
sorted by clicks), Google-shaped errors, a per-site and per-token sliding-window quota, seeded and
scripted faults (errors, resets, truncated and invalid bodies, stalls) and upstream revisions.

Rows are a pure function of (seed, site, search type, dimensions, filters, day, revision), generated
columnar with polars, so :meth:`Simulator.ground_truth` is exactly what the pages return and a
25,000-row page costs a few milliseconds: the simulator is never the bottleneck of a benchmark.
:meth:`Simulator.stats` reports what the server saw (peak requests per window, duplicates, faults),
which is how benchmarks judge quota safety and data integrity from the server side.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

import polars as pl
from aiohttp import web

from ..errors import ConfigError
from ..planner import DATA_STATES, DIMENSIONS, FILTER_DIMENSIONS, OPERATORS, SEARCH_TYPES
from .oauth import OAuthServer, TokenState

RATE_FAULTS = ("429", "403_quota", "403_rate", "500", "503", "reset", "truncate", "invalid_json",
               "stall")
SCRIPT_ONLY_FAULTS = ("403_permission", "404", "401", "400")
FAULT_KINDS = RATE_FAULTS + SCRIPT_ONLY_FAULTS
MAX_ROW_LIMIT = 25_000
DEFAULT_ROW_LIMIT = 1_000

COUNTRIES = (
    "usa", "gbr", "can", "aus", "ind", "deu", "fra", "esp", "ita", "nld", "bra", "mex", "jpn",
    "kor", "chn", "pol", "swe", "nor", "dnk", "fin", "irl", "bel", "che", "aut", "prt", "grc",
    "tur", "isr", "are", "sau", "zaf", "nga", "egy", "ken", "arg", "chl", "col", "per", "phl",
    "idn", "mys", "sgp", "tha", "vnm", "pak", "bgd", "nzl", "cze", "hun", "rou", "ukr", "srb",
    "hrv", "svk", "svn", "ltu", "lva", "est", "bgr", "isl", "lux", "mlt", "cyp", "mdv",
)
DEVICES = ("DESKTOP", "MOBILE", "TABLET")
SEARCH_APPEARANCES = (
    "AMP_BLUE_LINK", "AMP_TOP_STORIES", "REVIEW_SNIPPET", "VIDEO", "FAQ_RICH_RESULT",
    "PRODUCT_SNIPPETS", "MERCHANT_LISTINGS", "TRANSLATED_RESULT",
)
_MODIFIERS = (
    "red", "blue", "black", "white", "green", "grey", "pink", "navy", "orange", "purple",
    "waterproof", "lightweight", "cheap", "best", "womens", "mens", "kids", "vegan", "leather",
    "wide", "vintage", "organic", "wireless", "foldable", "insulated", "breathable", "compact",
    "durable", "ergonomic", "recycled", "premium", "classic", "retro", "slim", "warm", "cool",
    "quiet", "fast", "soft", "sturdy",
)
_PRODUCTS = (
    "running shoes", "trail shoes", "hiking boots", "rain jacket", "yoga mat", "water bottle",
    "backpack", "sneakers", "sandals", "socks", "headphones", "smart watch", "tent",
    "sleeping bag", "bike helmet", "cycling gloves", "ski goggles", "swim goggles",
    "tennis racket", "golf balls", "fleece", "hoodie", "leggings", "shorts", "beanie",
    "camping stove", "head torch", "trekking poles", "climbing rope", "chalk bag", "duffel bag",
    "gym bag", "foam roller", "jump rope", "dumbbells", "kettlebell", "resistance bands",
    "fitness tracker", "sunglasses", "sun hat", "thermal top", "base layer", "down jacket",
    "softshell", "gaiters", "insoles", "laces", "shoe cleaner", "waist pack", "hydration vest",
)
_QUALIFIERS = ("", "sale", "review", "reviews", "near me", "for men", "for women", "for kids",
               "online", "uk", "size guide", "discount code", "price", "deals", "outlet",
               "best price", "amazon", "reddit", "how to clean", "vs", "clearance", "black friday",
               "free shipping", "in stock", "2026")
_QUERY_TAILS = _QUALIFIERS + tuple(str(k) for k in range(1, 501 - len(_QUALIFIERS)))
_SECTIONS = ("blog", "products", "guides", "shop", "reviews", "news", "help", "collections",
             "deals", "stories")
_PAGE_VARIANTS = ("", "-2", "-3", "-guide", "-sizes")

_SNAKE = {"date": "date", "query": "query", "page": "page", "country": "country",
          "device": "device", "searchAppearance": "search_appearance", "hour": "hour"}
_CARDINALITY = {
    "date": 1,
    "hour": 24,
    "query": len(_MODIFIERS) * len(_PRODUCTS) * len(_QUERY_TAILS),
    "page": len(_SECTIONS) * len(_MODIFIERS) * len(_PRODUCTS) * len(_PAGE_VARIANTS),
    "country": len(COUNTRIES),
    "device": len(DEVICES),
    "searchAppearance": len(SEARCH_APPEARANCES),
}
# How strongly low indices (popular values) dominate when keys are sampled: index = card * u**skew.
_SKEW = {"query": 2.0, "page": 1.6, "country": 3.0, "device": 1.5, "searchAppearance": 1.5}
_ENUMERATE_UP_TO = 200_000
_CACHE_SLICES = 64
_CACHE_ROWS = 2_000_000
_U32 = 1 << 32
_SAFE_SITE = re.compile(r"^[A-Za-z0-9:/._~%+@!$&'()*,;=\-\[\]]+$")
_CANON = {name.lower(): name for name in (*SEARCH_TYPES, *DIMENSIONS, *DATA_STATES, *OPERATORS)}
_NEGATED = {"notEquals": "equals", "notContains": "contains", "excludingRegex": "includingRegex"}
_ERROR_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 503: "UNAVAILABLE"}
_METRICS = ("clicks", "impressions", "ctr", "position")


@dataclass(frozen=True)
class Faults:
    """Injected failures: seeded per-request ``rates`` and a deterministic ``script``.

    ``rates`` maps a kind from :data:`RATE_FAULTS` to its probability per query request;
    ``script`` maps the 1-based index of a query request to any kind in :data:`FAULT_KINDS` and
    wins over ``rates`` (the seeded draw still happens, so a script entry never shifts later
    draws). ``stall`` holds ``stall_s`` before answering normally; when ``retry_after_s`` is set,
    every 429 carries ``Retry-After``.
    """

    seed: int = 0
    rates: Mapping[str, float] = field(default_factory=dict)
    script: Mapping[int, str] = field(default_factory=dict)
    stall_s: float = 30.0
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in RATE_FAULTS:
                raise ConfigError(f"fault kind {kind!r} cannot be drawn at a rate; choose from "
                                  f"{', '.join(RATE_FAULTS)} (fatal kinds go in script)")
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"fault rate for {kind!r} must be within [0, 1], got {rate}")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ConfigError("fault rates must add up to at most 1")
        for index, kind in self.script.items():
            if kind not in FAULT_KINDS:
                raise ConfigError(f"unknown fault kind {kind!r}; choose from "
                                  f"{', '.join(FAULT_KINDS)}")
            if index < 1:
                raise ConfigError(f"fault script indices start at 1, got {index}")
        if self.stall_s < 0 or (self.retry_after_s is not None and self.retry_after_s < 0):
            raise ConfigError("stall_s and retry_after_s must not be negative")
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))
        object.__setattr__(self, "script", MappingProxyType(dict(self.script)))


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator does, in one frozen object (change it with ``Simulator.configure``).

    ``rows_per_day``: rows a property has for (site, search type, day) before the cap, an int or
    ``f(site, search_type, day)``; clamped to the key combinations the dimensions allow.
    ``latency_s`` / ``latency_jitter``: latency per query, uniform in ``latency_s*(1±jitter)``.
    ``quota_qpm`` / ``window_s``: query requests allowed per site and per token in any ``window_s``
    window (more get 429); ``window_s`` is also the stats window. ``row_cap``: rows per day and
    search type ever exposed. ``tokens`` / ``sites``: ``None`` accepts any bearer token / property.
    ``forbidden_sites``: properties answered with 403 "sufficient permission".
    """

    seed: int = 1
    rows_per_day: int | Callable[[str, str, date], int] = 1000
    latency_s: float = 0.0
    latency_jitter: float = 0.5
    quota_qpm: int = 1200
    window_s: float = 60.0
    row_cap: int = 50_000
    tokens: frozenset[str] | None = None
    sites: frozenset[str] | None = None
    forbidden_sites: frozenset[str] = frozenset()
    faults: Faults = Faults()

    def __post_init__(self) -> None:
        if self.latency_s < 0 or not 0.0 <= self.latency_jitter <= 1.0:
            raise ConfigError("latency_s must be >= 0 and latency_jitter within [0, 1]")
        if self.quota_qpm < 1 or self.window_s <= 0:
            raise ConfigError("quota_qpm must be >= 1 and window_s > 0")
        if self.row_cap < 0:
            raise ConfigError("row_cap must not be negative")
        for name in ("tokens", "sites"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozenset(value))
        object.__setattr__(self, "forbidden_sites", frozenset(self.forbidden_sites))


@dataclass
class RequestRecord:
    """One searchAnalytics query request as the server saw it (``token_id``, never the token)."""

    arrived: float
    finished: float = 0.0
    site: str = ""
    token_id: str | None = None
    day: date | None = None
    start_row: int | None = None
    row_limit: int | None = None
    status: int | None = None
    rows: int = 0
    fault: str | None = None


class _Filter(NamedTuple):
    dimension: str
    operator: str
    expression: str


class _SliceSpec(NamedTuple):
    """Everything a slice's rows depend on; also the cache key."""

    seed: int
    site: str
    search_type: str
    dimensions: tuple[str, ...]
    filters: tuple[_Filter, ...]
    day: date
    revision: int
    total: int
    row_cap: int


class _Query(NamedTuple):
    """A validated query request body."""

    day: date
    dimensions: tuple[str, ...]
    search_type: str
    data_state: str
    filters: tuple[_Filter, ...]
    start_row: int
    row_limit: int


class _ApiFailure(Exception):
    """An error answer, raised while validating a request."""

    def __init__(self, status: int, reason: str, message: str, *, domain: str = "global",
                 location: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location


# ---------------------------------------------------------------------------------------------
# Deterministic columnar data generation


def _salt(*parts: object) -> int:
    """A 32-bit salt derived from ``parts``."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def _mix(x: pl.Series) -> pl.Series:
    """A 32-bit integer avalanche (bijective on [0, 2**32)), in Int64 without overflow."""
    x = x % _U32
    x = x ^ (x // 65536)
    x = (x * 0x45D9F3B) % _U32
    x = x ^ (x // 65536)
    x = (x * 0x45D9F3B) % _U32
    return x ^ (x // 65536)


def _hash(ids: pl.Series, salt: int) -> pl.Series:
    """A salted 32-bit hash of non-negative Int64 ids."""
    return _mix(_mix(ids) ^ salt)


def _unit(ids: pl.Series, salt: int) -> pl.Series:
    """A salted uniform float in [0, 1) per id."""
    return _hash(ids, salt) / float(_U32)


def _site_root(site: str) -> str:
    """Where the property's pages live: ``sc-domain:x.com`` → ``https://x.com/``."""
    if site.startswith("sc-domain:"):
        return f"https://{site[len('sc-domain:'):]}/"
    return site if site.endswith("/") else site + "/"


def _queries(index: pl.Series) -> pl.Series:
    """Query phrases for query indices (bijective): modifier, product, optional tail."""
    m, p = len(_MODIFIERS), len(_PRODUCTS)
    tails = pl.Series([f" {t}" if t else "" for t in _QUERY_TAILS])
    return pl.DataFrame({
        "m": pl.Series(_MODIFIERS).gather(index % m),
        "p": pl.Series(_PRODUCTS).gather(index // m % p),
        "t": tails.gather(index // (m * p)),
    }).select(pl.concat_str("m", pl.lit(" "), "p", "t").alias("query"))["query"]


def _pages(index: pl.Series, root: str) -> pl.Series:
    """Page URLs under ``root`` for page indices (bijective): section, slug, variant."""
    s, m, p = len(_SECTIONS), len(_MODIFIERS), len(_PRODUCTS)
    products = pl.Series([name.replace(" ", "-") for name in _PRODUCTS])
    return pl.DataFrame({
        "s": pl.Series(_SECTIONS).gather(index % s),
        "m": pl.Series(_MODIFIERS).gather(index // s % m),
        "p": products.gather(index // (s * m) % p),
        "v": pl.Series(_PAGE_VARIANTS).gather(index // (s * m * p)),
    }).select(pl.concat_str(pl.lit(root), "s", pl.lit("/"), "m", pl.lit("-"), "p", "v",
                            pl.lit("/")).alias("page"))["page"]


@lru_cache(maxsize=512)
def _hour_keys(day: date) -> tuple[str, ...]:
    """The 24 hour keys of ``day`` in Pacific time, e.g. ``2026-11-20T05:00:00-08:00``."""
    try:
        from zoneinfo import ZoneInfo

        tz: Any = ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database: PST is what Search Console uses most of the year
        tz = timezone(timedelta(hours=-8))
    return tuple(datetime(day.year, day.month, day.day, h, tzinfo=tz).isoformat()
                 for h in range(24))


def _digit_columns(dims: Sequence[str]) -> list[str]:
    return [f"_d{k}" for k in range(len(dims))]


def _enumerated(dims: Sequence[str], space: int, salt: int) -> pl.DataFrame:
    """Every key combination (mixed radix over ``_id``), in a seeded random order."""
    ids = pl.arange(0, space, eager=True, dtype=pl.Int64)
    columns, radix = {"_id": ids, "_o": _hash(ids, salt)}, 1
    for k in reversed(range(len(dims))):
        columns[f"_d{k}"] = ids // radix % _CARDINALITY[dims[k]]
        radix *= _CARDINALITY[dims[k]]
    frame = pl.DataFrame(columns).sort("_o", "_id")
    return frame.select("_id", *_digit_columns(dims))


def _sampled(dims: Sequence[str], start: int, count: int, salt: int) -> pl.DataFrame:
    """``count`` candidate keys drawn with popularity skew, row ids ``start..start+count``."""
    ids = pl.arange(start, start + count, eager=True, dtype=pl.Int64)
    columns = {"_id": ids}
    for k, dim in enumerate(dims):
        u = _unit(ids, _salt(salt, "dim", k)).pow(_SKEW.get(dim, 1.0))
        columns[f"_d{k}"] = (u * _CARDINALITY[dim]).floor().cast(pl.Int64)
    return pl.DataFrame(columns)


def _survivors(frame: pl.DataFrame, salt: int, revision: int) -> pl.DataFrame:
    """Candidates that still exist after ``revision`` upstream revisions (about 8% go each)."""
    if not revision:
        return frame
    return frame.filter(_hash(frame["_id"], _salt(salt, "revision", revision)) % 100 >= 8)


def _candidates(dims: Sequence[str], space: int, need: int, salt: int, revision: int
                ) -> pl.DataFrame:
    """The first ``need`` unique keys of the slice (fewer if the space runs out), in rank order.

    The candidate sequence is prefix-stable, so generating more rows never reorders earlier
    ones; a revision drops some candidates, letting later (new) keys move up.
    """
    if space <= max(_ENUMERATE_UP_TO, 4 * need):
        return _survivors(_enumerated(dims, space, salt), salt, revision).head(need)
    batches: list[pl.DataFrame] = []
    produced, found = 0, pl.DataFrame()
    for _ in range(64):
        count = max(1024, int((need - found.height) * 1.3) + 64)
        batches.append(_sampled(dims, produced, count, salt))
        produced += count
        unique = pl.concat(batches).unique(subset=_digit_columns(dims), keep="first",
                                           maintain_order=True)
        found = _survivors(unique, salt, revision)
        if found.height >= need:
            break
    return found.head(need)


def _key_columns(frame: pl.DataFrame, dims: Sequence[str], site: str, day: date
                 ) -> pl.DataFrame:
    """Replace digit columns by the key strings exactly as the API shows them."""
    columns = []
    for k, dim in enumerate(dims):
        digits = frame[f"_d{k}"]
        if dim == "date":
            values = pl.Series([day.isoformat()]).gather(digits)
        elif dim == "hour":
            values = pl.Series(_hour_keys(day)).gather(digits)
        elif dim == "query":
            values = _queries(digits)
        elif dim == "page":
            values = _pages(digits, _site_root(site))
        else:
            vocabulary = {"country": COUNTRIES, "device": DEVICES,
                          "searchAppearance": SEARCH_APPEARANCES}[dim]
            values = pl.Series(vocabulary).gather(digits)
        columns.append(values.alias(_SNAKE[dim]))
    return frame.drop(_digit_columns(dims)).with_columns(columns)


def _filter_mask(frame: pl.DataFrame, f: _Filter, dims: Sequence[str], salt: int) -> pl.Series:
    """Rows a filter keeps: real matching on a grouped dimension, else a stable ~50% subset."""
    positive = _NEGATED.get(f.operator, f.operator)
    if f.dimension not in dims:
        keep = _hash(frame["_id"], _salt(salt, "filter", f.dimension, positive,
                                         f.expression.lower())) % 2 == 0
    else:
        column = frame[_SNAKE[f.dimension]]
        exact = f.dimension in ("query", "page")
        if positive == "equals":
            keep = column == f.expression if exact else (
                column.str.to_lowercase() == f.expression.lower())
        elif positive == "contains":
            keep = column.str.to_lowercase().str.contains(f.expression.lower(), literal=True)
        else:
            keep = column.str.contains(f.expression if exact else f"(?i){f.expression}")
    return keep if positive == f.operator else ~keep


def _metrics(frame: pl.DataFrame, total: int, salt: int, revision: int) -> pl.DataFrame:
    """Zipf-like clicks by rank (ties, a long 0-click tail), impressions ≥ clicks, ctr, position."""
    top = max(2.0, total ** 0.9 / 4) * (1 + 0.05 * revision)
    rsalt = _salt(salt, "metrics", revision)
    ids = frame["_id"]
    rank = pl.arange(1, frame.height + 1, eager=True, dtype=pl.Int64).cast(pl.Float64)
    clicks = (top / rank.pow(0.95)).floor().cast(pl.Int64)
    reach = (3 + (_unit(ids, rsalt) * 37).floor()).cast(pl.Int64)
    impressions = clicks * reach + (1 + (_unit(ids, rsalt + 1) * 40).floor()).cast(pl.Int64)
    return frame.with_columns(
        clicks=clicks,
        impressions=impressions,
        ctr=clicks / impressions,
        position=1.0 + 59.0 * _unit(ids, rsalt + 2).pow(2.5),
    )


def _empty_slice(dims: Sequence[str]) -> pl.DataFrame:
    schema: dict[str, Any] = {_SNAKE[d]: pl.Utf8 for d in dims}
    schema.update(clicks=pl.Int64, impressions=pl.Int64, ctr=pl.Float64, position=pl.Float64)
    return pl.DataFrame(schema=schema)


def _build_slice(spec: _SliceSpec) -> pl.DataFrame:
    """The exposed rows of one slice, clicks descending: key columns (snake_case) then metrics."""
    dims = spec.dimensions
    space = math.prod(_CARDINALITY[d] for d in dims)
    total = min(spec.total, space)
    if total <= 0 or spec.row_cap <= 0:
        return _empty_slice(dims)
    salt = _salt(spec.seed, spec.site, spec.search_type, ",".join(dims), spec.day.isoformat())
    need = total if spec.filters else min(total, spec.row_cap)
    frame = _metrics(_candidates(dims, space, need, salt, spec.revision), total, salt,
                     spec.revision)
    frame = _key_columns(frame, dims, spec.site, spec.day)
    for f in spec.filters:
        frame = frame.filter(_filter_mask(frame, f, dims, salt))
    return frame.head(spec.row_cap).select(*(_SNAKE[d] for d in dims), *_METRICS)


def _encode_rows(page: pl.DataFrame, dims: Sequence[str]) -> str:
    """The ``rows`` array items of a page, comma-joined JSON objects.

    Keys come from a fixed vocabulary and an escape-free site root, so plain concatenation is
    valid JSON and about three times faster than a generic encoder.
    """
    parts: list[pl.Expr] = [pl.lit("{")]
    if dims:
        parts.append(pl.lit('"keys":["'))
        for k, dim in enumerate(dims):
            if k:
                parts.append(pl.lit('","'))
            parts.append(pl.col(_SNAKE[dim]))
        parts.append(pl.lit('"],'))
    for k, metric in enumerate(_METRICS):
        parts.extend([pl.lit(f'{"," if k else ""}"{metric}":'), pl.col(metric).cast(pl.Utf8)])
    parts.append(pl.lit("}"))
    return str(page.select(pl.concat_str(parts).str.join(",")).item())


def _response_body(page: pl.DataFrame, query: _Query) -> str:
    """The JSON body of a 200 answer; an empty page has no ``rows`` key."""
    grouped_by_page = "page" in query.dimensions or any(
        f.dimension == "page" for f in query.filters)
    tail = f'"responseAggregationType":"{"byPage" if grouped_by_page else "byProperty"}"}}'
    if page.height == 0:
        return "{" + tail
    return '{"rows":[' + _encode_rows(page, query.dimensions) + "]," + tail


# ---------------------------------------------------------------------------------------------
# Request validation


def _canonical(value: object, allowed: Sequence[str], what: str, location: str) -> str:
    if isinstance(value, str):
        name = _CANON.get(value.lower())
        if name is not None and name in allowed:
            return name
    raise _ApiFailure(400, "invalidParameter", f"Invalid {what} value: {value!r}. Allowed: "
                      f"{', '.join(allowed)}.", location=location)


def _dimensions(values: object) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise _ApiFailure(400, "invalidParameter", "dimensions must be a list.",
                          location="dimensions")
    dims = tuple(_canonical(v, DIMENSIONS, "dimension", f"dimensions[{k}]")
                 for k, v in enumerate(values))
    for dim in dims:
        if dims.count(dim) > 1:
            raise _ApiFailure(400, "invalidParameter",
                              f"Dimension {dim!r} is requested more than once.",
                              location="dimensions")
    if "searchAppearance" in dims and len(dims) > 1:
        raise _ApiFailure(400, "badRequest", "Cannot group by search appearance dimension "
                          "together with another dimension.")
    return dims


def _one_filter(raw: object, where: str) -> _Filter:
    if not isinstance(raw, dict):
        raise _ApiFailure(400, "invalidParameter", f"{where} must be an object.", location=where)
    dimension = _canonical(raw.get("dimension"), FILTER_DIMENSIONS, "filter dimension",
                           f"{where}.dimension")
    operator = _canonical(raw.get("operator", "equals"), OPERATORS, "filter operator",
                          f"{where}.operator")
    expression = raw.get("expression")
    if not isinstance(expression, str) or not expression or len(expression) > 4096:
        raise _ApiFailure(400, "invalidParameter", "A filter expression must be a string of "
                          "1 to 4096 characters.", location=f"{where}.expression")
    if operator.endswith("Regex"):
        try:
            pl.select(pl.lit("").str.contains(expression))
        except pl.exceptions.PolarsError:
            raise _ApiFailure(400, "invalidParameter", f"Invalid regular expression "
                              f"{expression!r}.", location=f"{where}.expression") from None
    return _Filter(dimension, operator, expression)


def _filters(groups: object) -> tuple[_Filter, ...]:
    if groups is None:
        return ()
    if not isinstance(groups, list):
        raise _ApiFailure(400, "invalidParameter", "dimensionFilterGroups must be a list.",
                          location="dimensionFilterGroups")
    found: list[_Filter] = []
    for g, group in enumerate(groups):
        where = f"dimensionFilterGroups[{g}]"
        if not isinstance(group, dict) or str(group.get("groupType", "and")).lower() != "and":
            raise _ApiFailure(400, "invalidParameter", "Only groupType 'and' is supported.",
                              location=f"{where}.groupType")
        raw_filters = group.get("filters", [])
        if not isinstance(raw_filters, list):
            raise _ApiFailure(400, "invalidParameter", "filters must be a list.",
                              location=f"{where}.filters")
        found.extend(_one_filter(f, f"{where}.filters[{k}]") for k, f in enumerate(raw_filters))
    return tuple(found)


def _integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int | None
             ) -> int:
    value = body.get(name)
    if value is None or (value == 0 and name == "rowLimit"):  # proto3: 0 means unset
        return default
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f"[{low}, ...]"
        raise _ApiFailure(400, "invalidParameter", f"Invalid value '{value}' for {name}. "
                          f"Values must be within the range: {bounds}", location=name)
    return value


def _day(body: Mapping[str, Any], name: str) -> date:
    value = body.get(name)
    if value is None:
        raise _ApiFailure(400, "required", f"Required field {name} is missing.", location=name)
    try:
        if isinstance(value, str) and len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise _ApiFailure(400, "invalidParameter", f"Invalid {name} {value!r}: expected YYYY-MM-DD.",
                      location=name)


def _parse_query(body: object) -> _Query:
    """Validate a searchAnalytics query body the way the API does (400 on the first fault)."""
    if not isinstance(body, dict):
        raise _ApiFailure(400, "parseError", "Invalid JSON payload received: expected an object.")
    start, end = _day(body, "startDate"), _day(body, "endDate")
    if start > end:
        raise _ApiFailure(400, "invalidParameter", "startDate must be on or before endDate.")
    if start != end:
        raise _ApiFailure(400, "invalidParameter", "The gsckit simulator serves one day per "
                          "request: startDate must equal endDate.", location="endDate")
    search_type = body.get("type", body.get("searchType", "web"))
    return _Query(
        day=start,
        dimensions=_dimensions(body.get("dimensions")),
        search_type=_canonical(search_type, SEARCH_TYPES, "type", "type"),
        data_state=_canonical(body.get("dataState", "final"), DATA_STATES, "dataState",
                              "dataState"),
        filters=_filters(body.get("dimensionFilterGroups")),
        start_row=_integer(body, "startRow", 0, 0, None),
        row_limit=_integer(body, "rowLimit", DEFAULT_ROW_LIMIT, 1, MAX_ROW_LIMIT),
    )


def _as_filter(value: object) -> dict[str, Any]:
    """A ``gsckit.planner.Filter``-like object or a dict, as an API filter dict."""
    if isinstance(value, Mapping):
        return dict(value)
    return {"dimension": getattr(value, "dimension", None),
            "operator": getattr(value, "operator", None),
            "expression": getattr(value, "expression", None)}


def _error_body(failure: _ApiFailure) -> dict[str, Any]:
    """Google's error envelope."""
    item: dict[str, Any] = {"message": failure.message, "domain": failure.domain,
                            "reason": failure.reason}
    if failure.location:
        item.update(location=failure.location, locationType="parameter")
    return {"error": {"code": failure.status, "message": failure.message, "errors": [item],
                      "status": _ERROR_STATUS[failure.status]}}


def _unauthenticated() -> _ApiFailure:
    return _ApiFailure(401, "authError", "Request had invalid authentication credentials. "
                       "Expected OAuth 2 access token, login cookie or other valid authentication "
                       "credential. See https://developers.google.com/identity/sign-in/web/"
                       "devconsole-project.", location="Authorization")


def _fault_failure(kind: str, site: str) -> _ApiFailure:
    """The error answer of an error-kind fault."""
    if kind == "429":
        return _ApiFailure(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    if kind == "403_quota":
        return _ApiFailure(403, "quotaExceeded", "Search Analytics load quota exceeded. Learn "
                           "about usage limits: https://developers.google.com/webmaster-tools/v3/"
                           "limits.", domain="usageLimits")
    if kind == "403_rate":
        return _ApiFailure(403, "userRateLimitExceeded", "User Rate Limit Exceeded",
                           domain="usageLimits")
    if kind == "500":
        return _ApiFailure(500, "backendError", "Backend Error")
    if kind == "503":
        return _ApiFailure(503, "backendError", "The service is currently unavailable.")
    if kind == "403_permission":
        return _ApiFailure(403, "forbidden", f"User does not have sufficient permission for site "
                           f"'{site}'. See also: https://support.google.com/webmasters/answer/"
                           "2451999.")
    if kind == "404":
        return _ApiFailure(404, "notFound", f"'{site}' is not a verified Search Console site in "
                           "this account.", location="siteUrl")
    if kind == "401":
        return _unauthenticated()
    return _ApiFailure(400, "badRequest", "Request contains an invalid argument.")


class _Window:
    """Arrival times within the last ``window_s`` seconds, and the most ever seen at once."""

    __slots__ = ("peak", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.peak = 0

    def add(self, now: float, window_s: float) -> int:
        """Record an arrival; return how many arrived in ``(now - window_s, now]``."""
        self.times.append(now)
        while self.times[0] <= now - window_s:
            self.times.popleft()
        self.peak = max(self.peak, len(self.times))
        return len(self.times)


# ---------------------------------------------------------------------------------------------
# The server


class Simulator:
    """The simulated Search Console API on ``host:port`` (port 0 picks a free one).

    Use as ``async with Simulator(SimConfig(...)) as sim:`` and point a client at
    ``sim.base_url``. A new ``faults`` value given to :meth:`configure` restarts the fault script
    and RNG; :meth:`reset_stats` does too, and clears the stats and the request log.
    """

    def __init__(self, config: SimConfig = SimConfig(), *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config
        self.request_log: list[RequestRecord] = []
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._started = False
        self._base_url: str | None = None
        self._cache: OrderedDict[_SliceSpec, pl.DataFrame] = OrderedDict()
        self._cached_rows = 0
        self._revisions: Counter[tuple[str | None, date | None]] = Counter()
        self._token_ids: dict[str, str] = {}
        self._sites_seen: dict[str, None] = {}
        self._quota: dict[str, _Window] = {}
        self._latency_rng = random.Random(config.seed)
        self._in_flight = 0
        self.oauth = OAuthServer()  # tokens it issues name their principal; see oauth.py
        self.reset_stats()

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving."""
        if self._started:
            raise RuntimeError("this Simulator is already started; create a new one")
        self._started = True
        app = web.Application()
        app.router.add_post("/webmasters/v3/sites/{site}/searchAnalytics/query",
                            self._handle_query)
        app.router.add_get("/webmasters/v3/sites", self._handle_sites)
        app.router.add_get("/webmasters/v3/sites/{site}", self._handle_site)
        self.oauth.add_routes(app)
        app.router.add_get("/_sim/stats", self._handle_stats)
        app.router.add_post("/_sim/reset", self._handle_reset)
        app.router.add_post("/_sim/revise", self._handle_revise)
        app.router.add_get("/_sim/truth", self._handle_truth)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, self._host, self._port).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/"
        self.oauth.issuer = self._base_url

    async def close(self) -> None:
        """Stop serving; in-flight handlers (e.g. stalls) are cancelled."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/`` once started: the API root to give a client."""
        if self._base_url is None:
            raise RuntimeError("the Simulator is not started; use 'async with Simulator()'")
        return self._base_url

    # configuration, data and stats -----------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Replace config fields (``dataclasses.replace``), e.g. switch faults mid-run."""
        self.config = replace(self.config, **changes)
        if "seed" in changes:
            self._latency_rng = random.Random(self.config.seed)
        if "faults" in changes:
            self._restart_faults()

    def revise(self, site: str | None = None, day: date | None = None) -> None:
        """Revise upstream data: matching slices then serve different keys and metrics."""
        self._revisions[(site, day)] += 1

    def ground_truth(self, site: str, day: date, *, search_type: str = "web",
                     dimensions: Sequence[str] = ("date", "query", "page"),
                     filters: Sequence[Any] = ()) -> pl.DataFrame:
        """Exactly the rows the API exposes for one day slice (after filters and the cap).

        Columns: one per requested dimension except ``date`` (snake_case, as in the JSON keys),
        then clicks, impressions (Int64), ctr, position (Float64); clicks descending.
        """
        body: dict[str, Any] = {
            "startDate": day.isoformat(), "endDate": day.isoformat(), "type": search_type,
            "dimensions": list(dimensions),
            "dimensionFilterGroups": [{"filters": [_as_filter(f) for f in filters]}],
        }
        try:
            query = _parse_query(body)
        except _ApiFailure as exc:
            raise ConfigError(f"ground_truth: {exc.message}") from None
        frame = self._slice(site, query)
        return frame.drop("date") if "date" in frame.columns else frame

    def stats(self) -> dict[str, Any]:
        """What the server saw since the last reset (JSON-serialisable).

        ``ok`` counts complete 200 pages (not "truncate"/"invalid_json", which still count in
        ``by_status``; a reset sends no status). ``peak_window*``: most query requests that arrived
        in any ``window_s`` window. ``duplicates``: 200 pages that repeated an earlier 200 for the
        same site and request body.
        """
        return {
            "requests": self._requests,
            "ok": self._ok,
            "by_status": dict(self._by_status),
            "faults": dict(self._faults),
            "rate_limited": self._by_status.get("429", 0),
            "peak_window": self._peak_all.peak,
            "peak_window_by_site": {s: w.peak for s, w in self._peak_sites.items()},
            "peak_window_by_token": {t: w.peak for t, w in self._peak_tokens.items()},
            "duplicates": self._duplicates,
            "max_in_flight": self._max_in_flight,
            "in_flight": self._in_flight,
            "window_s": self.config.window_s,
        }

    def reset_stats(self) -> None:
        """Zero the stats and the request log; restart the fault script and RNG."""
        self._requests = 0
        self._ok = 0
        self._duplicates = 0
        self._max_in_flight = self._in_flight
        self._by_status: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._peak_all = _Window()
        self._peak_sites: dict[str, _Window] = {}
        self._peak_tokens: dict[str, _Window] = {}
        self._answered: set[tuple[Any, ...]] = set()
        self.request_log = []
        self._restart_faults()

    def _restart_faults(self) -> None:
        self._fault_rng = random.Random(self.config.faults.seed)
        self._query_index = 0

    def _revision(self, site: str, day: date) -> int:
        r = self._revisions
        return r[(None, None)] + r[(site, None)] + r[(None, day)] + r[(site, day)]

    def _rows_per_day(self, site: str, search_type: str, day: date) -> int:
        rows = self.config.rows_per_day
        return int(rows(site, search_type, day) if callable(rows) else rows)

    def _slice(self, site: str, query: _Query) -> pl.DataFrame:
        """The exposed rows of the slice ``query`` names, from a small LRU cache."""
        config = self.config
        spec = _SliceSpec(config.seed, site, query.search_type, query.dimensions,
                          query.filters, query.day, self._revision(site, query.day),
                          self._rows_per_day(site, query.search_type, query.day), config.row_cap)
        frame = self._cache.get(spec)
        if frame is not None:
            self._cache.move_to_end(spec)
            return frame
        frame = _build_slice(spec)
        self._cache[spec] = frame
        self._cached_rows += frame.height
        while len(self._cache) > _CACHE_SLICES or (
                self._cached_rows > _CACHE_ROWS and len(self._cache) > 1):
            self._cached_rows -= self._cache.popitem(last=False)[1].height
        return frame

    # request handling ------------------------------------------------------------------------

    def _token_id(self, request: web.Request) -> str | None:
        """``token#N`` for an accepted bearer token, else ``None`` (the token is never kept).

        A token the OAuth side issued is its principal's id while it lives (quota is per user)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        state, principal = self.oauth.lookup(token)
        if state is not TokenState.UNKNOWN:
            return principal if state is TokenState.VALID else None
        if self.config.tokens is not None and token not in self.config.tokens:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        return self._token_ids.setdefault(digest, f"token#{len(self._token_ids) + 1}")

    def _arrive(self, now: float, site: str, token_id: str | None) -> bool:
        """Count an arrival in the stats and quota windows; return whether it is over quota."""
        window_s, over = self.config.window_s, False
        self._peak_all.add(now, window_s)
        self._peak_sites.setdefault(site, _Window()).add(now, window_s)
        if token_id is not None:
            self._peak_tokens.setdefault(token_id, _Window()).add(now, window_s)
            for key in (f"site:{site}", f"token:{token_id}"):
                if self._quota.setdefault(key, _Window()).add(now, window_s) > (
                        self.config.quota_qpm):
                    over = True
        return over

    def _draw_fault(self) -> str | None:
        """This request's fault: the script's entry for its index, else a seeded draw."""
        self._query_index += 1
        faults = self.config.faults
        draw, edge = self._fault_rng.random(), 0.0
        chosen = None
        for kind, rate in faults.rates.items():
            edge += rate
            if draw < edge:
                chosen = kind
                break
        return faults.script.get(self._query_index, chosen)

    def _latency(self) -> float:
        config = self.config
        if config.latency_s <= 0:
            return 0.0
        spread = config.latency_s * config.latency_jitter
        return self._latency_rng.uniform(config.latency_s - spread, config.latency_s + spread)

    def _error(self, failure: _ApiFailure) -> web.Response:
        """Google's error answer (``WWW-Authenticate`` on 401, ``Retry-After`` on 429 if set)."""
        headers = {}
        if failure.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
        if failure.status == 429 and self.config.faults.retry_after_s is not None:
            headers["Retry-After"] = f"{self.config.faults.retry_after_s:g}"
        return web.json_response(_error_body(failure), status=failure.status, headers=headers)

    async def _handle_query(self, request: web.Request) -> web.StreamResponse:
        record = RequestRecord(arrived=time.monotonic(), site=request.match_info["site"])
        self._requests += 1
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._answer_query(request, record)
        finally:
            self._in_flight -= 1
            record.finished = time.monotonic()
            self.request_log.append(record)
            if record.status is not None:
                self._by_status[str(record.status)] += 1
            if record.fault is not None:
                self._faults[record.fault] += 1

    async def _answer_query(self, request: web.Request, record: RequestRecord
                            ) -> web.StreamResponse:
        """Draw the fault, wait the latency (and a stall), then answer.

        A reset or error-kind fault answers first; otherwise 401, 429 over quota, 403/404 for the
        site, 400 for the body, else the page (cut by "truncate", replaced by "invalid_json").
        """
        site = record.site
        record.token_id = self._token_id(request)
        over_quota = self._arrive(record.arrived, site, record.token_id)
        fault = record.fault = self._draw_fault()
        delay = self._latency() + (self.config.faults.stall_s if fault == "stall" else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        if fault not in (None, "stall", "truncate", "invalid_json"):
            failure = _fault_failure(fault, site)
            record.status = failure.status
            return self._error(failure)
        response, served = await self._normal_answer(request, record, over_quota)
        if fault == "truncate":
            return await self._truncated(request, response)
        if fault == "invalid_json":
            record.status = 200
            return web.Response(status=200, content_type="application/json",
                                text='{"rows":[{"keys":["<html><body>Backend Error</body>')
        if served is not None:
            self._ok += 1
            if (site, served) in self._answered:
                self._duplicates += 1
            self._answered.add((site, served))
        return response

    async def _normal_answer(self, request: web.Request, record: RequestRecord,
                             over_quota: bool) -> tuple[web.Response, _Query | None]:
        """The answer without faults: an error, or 200 with the page (then also the query)."""
        site, config = record.site, self.config
        try:
            if record.token_id is None:
                raise _unauthenticated()
            if over_quota:
                raise _fault_failure("429", site)
            if site in config.forbidden_sites or not self._readable(record.token_id, site):
                raise _fault_failure("403_permission", site)
            if (config.sites is not None and site not in config.sites) or not (
                    _SAFE_SITE.match(site)):
                raise _fault_failure("404", site)
            self._sites_seen.setdefault(site)
            try:
                body = await request.json()
            except ValueError:
                raise _ApiFailure(400, "parseError", "Invalid JSON payload received.") from None
            query = _parse_query(body)
        except _ApiFailure as failure:
            record.status = failure.status
            return self._error(failure), None
        page = self._slice(site, query).slice(query.start_row, query.row_limit)
        record.day, record.start_row, record.row_limit = query.day, query.start_row, (
            query.row_limit)
        record.status, record.rows = 200, page.height
        response = web.Response(text=_response_body(page, query),
                                content_type="application/json", charset="UTF-8")
        return response, query

    async def _truncated(self, request: web.Request, full: web.Response) -> web.StreamResponse:
        """Send the status, headers and the real Content-Length, half the body, then hang up."""
        body = full.body if isinstance(full.body, bytes) else b""
        response = web.StreamResponse(status=full.status)
        response.content_type = "application/json"
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()  # close() flushes what was written; abort() would not
        return response

    def _readable(self, token_id: str, site: str) -> bool:
        return token_id not in self.oauth.principals or self.oauth.can_read(token_id, site)

    async def _handle_site(self, request: web.Request) -> web.Response:
        """``sites.get``: the caller's permission on one property, else 403 / 404."""
        token_id, site = self._token_id(request), request.match_info["site"]
        if token_id is None:
            return self._error(_unauthenticated())
        level = self.oauth.permission(token_id, site)
        if site in self.config.forbidden_sites or level is None:
            return self._error(_fault_failure("403_permission", site))
        if (self.config.sites is not None and site not in self.config.sites) or not (
                _SAFE_SITE.match(site)):
            return self._error(_fault_failure("404", site))
        return web.json_response({"siteUrl": site, "permissionLevel": level})

    async def _handle_sites(self, request: web.Request) -> web.Response:
        token_id = self._token_id(request)
        if token_id is None:
            return self._error(_unauthenticated())
        listed = self.oauth.site_entries(token_id)
        if listed is not None:
            return web.json_response({"siteEntry": listed} if listed else {})
        config = self.config
        sites = sorted(config.sites) if config.sites is not None else list(self._sites_seen)
        entries = [{"siteUrl": s, "permissionLevel": "siteOwner"} for s in sites
                   if s not in config.forbidden_sites]
        entries += [{"siteUrl": s, "permissionLevel": "siteUnverifiedUser"}
                    for s in sorted(config.forbidden_sites)]
        return web.json_response({"siteEntry": entries} if entries else {})

    # control endpoints for a simulator in another process ------------------------------------

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _handle_revise(self, request: web.Request) -> web.Response:
        try:
            day = request.query.get("day")
            self.revise(request.query.get("site"), date.fromisoformat(day) if day else None)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _handle_truth(self, request: web.Request) -> web.Response:
        """``/_sim/truth?site=&day=&type=&dimensions=a,b&filters=<JSON list>``: ground truth."""
        q = request.query
        try:
            dims = q.get("dimensions", "date,query,page")
            frame = self.ground_truth(
                q["site"], date.fromisoformat(q["day"]), search_type=q.get("type", "web"),
                dimensions=[d for d in dims.split(",") if d],
                filters=json.loads(q.get("filters", "[]")),
            )
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": f"bad truth request: {exc}"}, status=400)
        return web.Response(text='{"rows":' + frame.write_json() + "}",
                            content_type="application/json")


async def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run a simulator until cancelled, announcing its URL on one line."""
    async with Simulator(config, host=host, port=port) as sim:
        print(f"gsckit simulator listening on {sim.base_url}", flush=True)
        await asyncio.Event().wait()

