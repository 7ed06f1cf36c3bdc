"""The data model: rows as a pure function of (seed, site, search type, dimensions, filters, day,
revision), generated columnar with polars."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import date
from typing import Any, NamedTuple

import polars as pl

from .api import _METRICS, _Filter
from .keys import (
    _CARDINALITY,
    _SNAKE,
    COUNTRIES,
    DEVICES,
    SEARCH_APPEARANCES,
    _hour_keys,
    _pages,
    _queries,
    _site_root,
)

# How strongly low indices (popular values) dominate when keys are sampled: index = card * u**skew.
_SKEW = {"query": 2.0, "page": 1.6, "country": 3.0, "device": 1.5, "searchAppearance": 1.5}
_ENUMERATE_UP_TO = 200_000
_U32 = 1 << 32
_NEGATED = {"notEquals": "equals", "notContains": "contains", "excludingRegex": "includingRegex"}


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

