"""The data model: the fine rows a (site, search type, day) holds, and their figures.

A fine row is one (query, page, country, device) with the hour and search appearance it belongs
to, plus clicks, impressions and ``sumpos`` (position x impressions, exact in binary because
positions are multiples of 1/64). Every answer is an aggregate of fine rows, so any two groupings
of a day reconcile exactly. Anonymized traffic is fine rows without a query.

What makes the figures recognisable: a site keeps the same queries from day to day (popular ones
always, the tail churns), clicks follow a Zipf curve by query rank with a weekly rhythm, a gentle
trend and day-to-day noise; CTR falls with position (brand queries rank first and click more, a
few queries underperform); a few queries have several competing pages; pages live in folders;
and one drop or spike is planted per block of days. Everything is a pure function of the
:class:`DaySpec` (for a given polars version, whose hash it uses), generated columnar, so the
same day always has the same rows.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import polars as pl

from .clock import DayState
from .keys import COUNTRIES, DEVICES, QUERY_SPACE, SEARCH_APPEARANCES, SLOTS, is_brand, page_id

U32 = 1 << 32
ANONYMIZED_BASE = 1 << 40
"""Fine-row ids of anonymized rows start here (named rows are ``key id * 32 + combo``)."""
_MAX_COMBOS = 24
# A key near the end of the day's ranks gets about 40 impressions; rank r gets
# 40 * (last_rank / r) ** 0.75: so a day over the cap still has clicks past its top 50,000 rows.
_TAIL_IMPRESSIONS = 40.0
_ZIPF = 0.75
_TYPE_SCALE = {"web": 1.0, "image": 0.35, "video": 0.12, "news": 0.08, "discover": 0.6,
               "googleNews": 0.1}
_WEEKDAY = (1.04, 1.06, 1.05, 1.02, 0.95, 0.80, 0.86)  # Monday first: weekends are quieter
_TREND_EPOCH = date(2025, 1, 1).toordinal()
_TREND_PER_YEAR = 0.15
_ANOMALY_FACTOR = {"drop": 0.45, "spike": 1.9}
# Rankings move: each query's days fall in blocks of _SHIFT_DAYS (its own phase), and in each
# block _SHIFTED percent of the queries below the top 16 (brand excluded) rank differently:
# half of them gained (position x 0.5), half lost (x 1.9). So two periods have real movers.
_SHIFT_DAYS = 56
_SHIFTED = 6
_GAINED, _LOST = 0.5, 1.9
_STEADY_RANKS = 16
# Per slot: (presence, share of the query's impressions) for ordinary and cannibalized queries.
_PRESENCE = ((0.9, 0.95), (0.12, 0.97), (0.05, 0.9), (0.03, 0.1))
_SHARE = ((1.0, 0.5), (0.08, 0.35), (0.05, 0.25), (0.03, 0.03))
_DEVICE_WEIGHT = {"MOBILE": 0.58, "DESKTOP": 0.37, "TABLET": 0.05}
_HOME_SHARE = 0.42
_HOURLY = (0.5, 0.35, 0.25, 0.2, 0.2, 0.3, 0.55, 0.9, 1.2, 1.35, 1.4, 1.45, 1.5, 1.45, 1.4,
           1.35, 1.3, 1.3, 1.35, 1.45, 1.4, 1.2, 0.95, 0.7)
_APPEARANCE_WEIGHT = (9, 3, 6, 4, 3, 3, 2, 1)  # of 100 pages; the other 69 have no appearance


def _pairs() -> tuple[pl.Series, pl.Series]:
    """(country, device) index pairs from most to least common."""
    tail = [(k + 1) ** -1.1 for k in range(len(COUNTRIES) - 1)]
    country = [_HOME_SHARE] + [(1 - _HOME_SHARE) * w / sum(tail) for w in tail]
    ranked = sorted(((country[c] * _DEVICE_WEIGHT[d], c, k) for c in range(len(COUNTRIES))
                     for k, d in enumerate(DEVICES)), key=lambda t: (-t[0], t[1], t[2]))
    return (pl.Series([c for _, c, _ in ranked], dtype=pl.Int8),
            pl.Series([k for _, _, k in ranked], dtype=pl.Int8))


_PAIR_COUNTRY, _PAIR_DEVICE = _pairs()
_COMBO_WEIGHT = pl.Series([(j + 1) ** -1.3 for j in range(_MAX_COMBOS)])
_COMBO_NORM = pl.Series([0.0] + [sum((j + 1) ** -1.3 for j in range(c))
                                 for c in range(1, _MAX_COMBOS + 1)])
_HOUR_STEPS = 4096
_HOUR_TABLE = pl.Series([
    sum(sum(_HOURLY[: h + 1]) / sum(_HOURLY) <= k / _HOUR_STEPS for h in range(23))
    for k in range(_HOUR_STEPS)], dtype=pl.Int8)
_APPEARANCE_TABLE = pl.Series(
    [None] * (100 - sum(_APPEARANCE_WEIGHT))
    + [k for k, w in enumerate(_APPEARANCE_WEIGHT) for _ in range(w)], dtype=pl.Int8)
assert len(SEARCH_APPEARANCES) == len(_APPEARANCE_WEIGHT)

SCHEMA = {"fid": pl.Int64, "qr": pl.Int32, "page": pl.Int32, "country": pl.Int8,
          "device": pl.Int8, "appearance": pl.Int8, "hour": pl.Int8, "clicks": pl.Int64,
          "impressions": pl.Int64, "sumpos": pl.Float64}
"""Columns of a fine-row frame; ``qr`` (query rank) is null for anonymized rows."""


def salt(*parts: object) -> int:
    """A 32-bit salt derived from ``parts``."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def hashed(x: pl.Expr, key: int) -> pl.Expr:
    """A salted 64-bit hash of integers (polars' own: fast, stable for a given polars version)."""
    return x.cast(pl.Int64).hash(seed=key)


def unit(x: pl.Expr, key: int) -> pl.Expr:
    """A salted uniform float in [0, 1) per integer."""
    return (hashed(x, key) % U32) / float(U32)


@dataclass(frozen=True)
class DaySpec:
    """Everything the final fine rows of one (site, search type, day) depend on (a cache key)."""

    seed: int
    site: str
    search_type: str
    day: date
    revision: int
    keys: int
    anonymized_share: float
    anomaly_every_days: int


@dataclass(frozen=True)
class Anomaly:
    """A planted drop or spike: every figure of ``day`` multiplied by ``factor``."""

    day: date
    kind: str
    factor: float


def planted_anomalies(seed: int, site: str, search_type: str, start: date, end: date,
                      every_days: int) -> list[Anomaly]:
    """The anomalies planted between ``start`` and ``end``: one per block of ``every_days``."""
    if every_days <= 0 or start > end:
        return []
    found = []
    for block in range(start.toordinal() // every_days, end.toordinal() // every_days + 1):
        offset = salt(seed, site, search_type, "anomaly", block) % every_days
        day = date.fromordinal(block * every_days + offset)
        if start <= day <= end:
            kind = ("drop", "spike")[salt(seed, site, search_type, "kind", block) % 2]
            found.append(Anomaly(day, kind, _ANOMALY_FACTOR[kind]))
    return found


def day_factor(spec: DaySpec) -> float:
    """How busy the day is: search type, trend, weekday, noise and any planted anomaly."""
    day = spec.day
    trend = math.exp(_TREND_PER_YEAR * (day.toordinal() - _TREND_EPOCH) / 365.25)
    noise = 1.0 + 0.12 * (salt(spec.seed, spec.site, spec.search_type, day, "noise") / U32 - 0.5)
    factor = _TYPE_SCALE[spec.search_type] * trend * _WEEKDAY[day.weekday()] * noise
    for anomaly in planted_anomalies(spec.seed, spec.site, spec.search_type, day, day,
                                     spec.anomaly_every_days):
        factor *= anomaly.factor
    return factor


def _by_slot(slot: pl.Expr, cannibal: pl.Expr, table: tuple[tuple[float, float], ...]
             ) -> pl.Expr:
    """A per-slot value from ``table``, the contested one for cannibalized queries."""
    flat = pl.Series([value for pair in table for value in pair])
    return pl.lit(flat).gather(slot * 2 + cannibal.cast(pl.Int64))


def _cannibal(rank: pl.Expr, stream: int) -> pl.Expr:
    """Queries with several pages competing for them: 15% of the top 200, 3% down to 20,000."""
    draw = hashed(rank, stream + 1) % 100
    return (rank > 0) & (((rank < 200) & (draw < 15)) | ((rank < 20_000) & (draw < 3)))


_TABLE_START = 1 << 16


@lru_cache(maxsize=16)
def stream_keys(seed: int, site: str, search_type: str, size: int) -> pl.DataFrame:
    """What every (query rank, slot) key id below ``size`` is in a stream, whatever the day:
    its page, how likely it is to appear on a day, its share of the query's impressions, its
    base position and CTR factor, and the draws that spread it over (country, device) pairs."""
    stream = salt(seed, site, search_type)
    key, rank, slot = pl.col("id"), pl.col("r"), pl.col("slot")
    brand, cannibal, u_rival = pl.col("brand"), pl.col("cannibal"), unit(key, stream + 4)
    u_rank = unit(rank, stream + 3)
    under = ~brand & (hashed(rank, stream + 2) % 50 == 0)
    rival = pl.when(cannibal).then(0.5 + 3.0 * u_rival).otherwise(
        2.0 + 12.0 * u_rival)  # competing pages rank close to the main one
    base = pl.when(brand).then(1.0 + 0.4 * u_rank).otherwise(1.5 + 30.0 * u_rank.pow(1.4))
    # how a query's results attract clicks beyond their position (titles, snippets, SERP
    # features): a spread of about +-35% (a sum of three uniforms), so CTR against position is
    # a cloud around the curve rather than a line
    spread = (unit(rank, stream + 15) + unit(rank, stream + 16) + unit(rank, stream + 17) - 1.5)
    return pl.DataFrame({"id": pl.arange(0, size, eager=True, dtype=pl.Int64)}).with_columns(
        r=(key // SLOTS).cast(pl.Int32), slot=(key % SLOTS).cast(pl.Int32),
    ).with_columns(
        brand=is_brand(rank),
        cannibal=_cannibal(rank, stream),
    ).select(
        "id", "r", "slot",
        page=page_id(rank, slot, site),
        presence=_by_slot(slot, cannibal, _PRESENCE),
        always=(rank < 64) & (slot == 0),
        share=_by_slot(slot, cannibal, _SHARE) * pl.when(rank == 0).then(6.0).otherwise(1.0),
        position=base + pl.when(slot > 0).then(rival).otherwise(0.0),
        appeal=pl.when(brand).then(1.8).otherwise(1.0) * pl.when(under).then(0.3).otherwise(1.0)
        * (0.7 * spread).exp(),
        steady=brand | (rank < _STEADY_RANKS),
        u_combos=unit(key, stream + 6),
        first=_first_pair(unit(key, stream + 7)),
    )


def present_keys(spec: DaySpec) -> pl.DataFrame:
    """The day's first ``spec.keys`` present keys with their stream attributes, in id order
    (prefix-stable: more keys a day never reorder the first ones).

    Slot 0 of the top 64 queries is always there; other keys come and go from day to day. A
    revision removes about 8% of the keys, so later ones move up to keep the count.
    """
    daily = salt(spec.seed, spec.site, spec.search_type, spec.day)
    key = pl.col("id")
    keep = (unit(key, daily) < pl.col("presence")) | pl.col("always")
    if spec.revision:
        keep = keep & (hashed(key, salt(daily, "revision", spec.revision)) % 100 >= 8)
    limit, found, start = QUERY_SPACE * SLOTS, 0, 0
    chunks: list[pl.DataFrame] = []
    while found < spec.keys and start < limit:
        end = min(limit, start + max(4096, int((spec.keys - found) * 3.9) + 1024))
        size = _TABLE_START
        while size < end:
            size *= 2
        table = stream_keys(spec.seed, spec.site, spec.search_type, min(size, limit))
        chunk = table.slice(start, end - start).filter(keep)
        chunks.append(chunk)
        found += chunk.height
        start = end
    return pl.concat(chunks).head(spec.keys)


def final_rows(spec: DaySpec) -> pl.DataFrame:
    """The day's fine rows once final (named rows, then anonymized ones)."""
    if spec.keys <= 0:
        return pl.DataFrame(schema=SCHEMA)
    stream = salt(spec.seed, spec.site, spec.search_type)
    daily = salt(spec.seed, spec.site, spec.search_type, spec.day, spec.revision)
    tail = _TAIL_IMPRESSIONS * day_factor(spec)
    ranks = spec.keys / 1.1 + 8  # about the day's last query rank
    key, rank = pl.col("id"), pl.col("r")
    frame = present_keys(spec).with_columns(
        demand=tail * (ranks / (rank + 8)).pow(_ZIPF) * pl.col("share")
        * (0.7 + 0.6 * unit(key, daily + 1)),
        position=pl.col("position") * (0.94 + 0.12 * unit(key, daily + 5))
        * _ranking(rank, pl.col("steady"), stream, spec.day),
    ).with_columns(
        ctr=0.30 * pl.col("position").pow(-1.25) * pl.col("appeal"),
        combos=(1 + ((pl.col("demand") / 40).sqrt() * pl.col("u_combos")).floor()
                .clip(0, _MAX_COMBOS - 1)).cast(pl.Int64),
    )
    frame = frame.with_columns(j=pl.int_ranges(0, "combos")).explode("j")
    fid = pl.col("fid")
    pair = (pl.col("first") + pl.col("j")) % _PAIR_COUNTRY.len()
    frame = frame.with_columns(fid=key * 32 + pl.col("j")).with_columns(
        country=pl.lit(_PAIR_COUNTRY).gather(pair),
        device=pl.lit(_PAIR_DEVICE).gather(pair),
        impressions=(pl.col("demand") * pl.lit(_COMBO_WEIGHT).gather(pl.col("j"))
                     / pl.lit(_COMBO_NORM).gather(pl.col("combos"))
                     + unit(fid, daily + 8)).floor().cast(pl.Int64).clip(1),
        pos=((pl.col("position") * (0.9 + 0.2 * unit(fid, stream + 9))).clip(1.0, 100.0) * 64
             ).round() / 64,
        rate=(pl.col("ctr") * (0.85 + 0.3 * unit(fid, daily + 10))).clip(0.0, 0.95),
        u_clicks=unit(fid, daily + 11),
    )
    named = frame.select(
        "fid",
        qr=rank,
        page="page",
        country="country",
        device="device",
        appearance=_appearance(pl.col("page"), stream),
        hour=_hour(unit(fid, daily + 12)),
        clicks=pl.min_horizontal(
            "impressions", (pl.col("impressions") * pl.col("rate") + pl.col("u_clicks")).floor()
            .cast(pl.Int64)),
        impressions="impressions",
        sumpos=pl.col("pos") * pl.col("impressions"),
    )
    if spec.anonymized_share <= 0:
        return named
    return pl.concat([named, _anonymized(named, spec, stream, daily)])


def _ranking(rank: pl.Expr, steady: pl.Expr, stream: int, day: date) -> pl.Expr:
    """A query's position multiplier on ``day``: 1, or its block's gain or loss."""
    block = ((hashed(rank, stream + 13) % _SHIFT_DAYS).cast(pl.Int64) + day.toordinal()
             ) // _SHIFT_DAYS
    draw = hashed(rank.cast(pl.Int64) * 65_536 + block % 65_536, stream + 14) % 100
    moved = (pl.when(draw < _SHIFTED // 2).then(_GAINED).when(draw < _SHIFTED).then(_LOST)
             .otherwise(1.0))
    return pl.when(steady).then(1.0).otherwise(moved)


def _first_pair(u: pl.Expr) -> pl.Expr:
    """The most common (country, device) pair of a key: usually a top one, rarely any other."""
    return (_PAIR_COUNTRY.len() * u.pow(4)).floor().cast(pl.Int64)


def _hour(u: pl.Expr) -> pl.Expr:
    """Hours of the day drawn from a diurnal curve (quiet nights, busy afternoons)."""
    return pl.lit(_HOUR_TABLE).gather((u * _HOUR_STEPS).floor().cast(pl.Int64))


def _appearance(page: pl.Expr, stream: int) -> pl.Expr:
    """The search appearance a page's results have (most have none)."""
    return pl.lit(_APPEARANCE_TABLE).gather(hashed(page, stream + 13) % 100)


def _anonymized(named: pl.DataFrame, spec: DaySpec, stream: int, daily: int) -> pl.DataFrame:
    """Rows of anonymized queries: ``anonymized_share`` of all clicks, spread over the pages."""
    share = spec.anonymized_share
    target = share / (1.0 - share) * float(named["clicks"].sum())
    count = max(1, spec.keys // 4)
    fid = pl.col("fid")
    frame = pl.DataFrame({"fid": pl.arange(ANONYMIZED_BASE, ANONYMIZED_BASE + count,
                                           eager=True, dtype=pl.Int64)})
    frame = frame.with_columns(weight=unit(fid, daily + 20).pow(3))
    total_weight = float(frame["weight"].sum()) or 1.0
    pair = _first_pair(unit(fid, daily + 25))
    frame = frame.with_columns(
        clicks=(target * pl.col("weight") / total_weight + unit(fid, daily + 21)).floor()
        .cast(pl.Int64),
        page=pl.lit(named["page"]).gather(
            (unit(fid, daily + 24) * named.height).floor().cast(pl.Int64)),
        country=pl.lit(_PAIR_COUNTRY).gather(pair),
        device=pl.lit(_PAIR_DEVICE).gather(pair),
        pos=((5.0 + 35.0 * unit(fid, daily + 26)) * 64).round() / 64,
    ).with_columns(
        impressions=(pl.col("clicks") / (0.01 + 0.07 * unit(fid, daily + 22))
                     + 1 + 4 * unit(fid, daily + 23)).floor().cast(pl.Int64),
    )
    return frame.select(
        "fid",
        qr=pl.lit(None, dtype=pl.Int32),
        page="page",
        country="country",
        device="device",
        appearance=_appearance(pl.col("page"), stream),
        hour=_hour(unit(fid, daily + 27)),
        clicks="clicks",
        impressions="impressions",
        sumpos=pl.col("pos") * pl.col("impressions"),
    )


def fresh_rows(final: pl.DataFrame, state: DayState, daily: int) -> pl.DataFrame:
    """What a day that is not final yet shows: fewer rows, lower figures, only begun hours.

    Each row keeps a fixed share of its final figures scaled by the day's completeness (rounded
    with a fixed per-row offset, so small counts are not all lost), so figures only rise as the
    day ages and equal the final ones once it is final.
    """
    fraction = state.completeness * (0.88 + 0.12 * unit(pl.col("fid"), daily + 30))
    offset = unit(pl.col("fid"), daily + 31)
    impressions = (pl.col("impressions") * fraction + offset).floor().cast(pl.Int64)
    clicks = (pl.col("clicks") * fraction + offset).floor().cast(pl.Int64)
    return final.filter(pl.col("hour") < state.hours).with_columns(
        sumpos=pl.col("sumpos") / pl.col("impressions") * impressions,
        clicks=pl.min_horizontal(impressions, clicks),
        impressions=impressions,
    ).filter(pl.col("impressions") >= 1)
