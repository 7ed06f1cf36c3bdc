"""Google's daily totals of a stream: one request grouped by date alone, for a whole range.

A request grouped by ``date`` only, with the stream's site, search type, filters and data
state, answers one row per day with data: the day's clicks, impressions, CTR and position as
Google totals them, anonymized queries and rows past the daily cap included. So one request
covers every day a run touches (a 16-month range is 486 rows, one page), and the stored rows of
each day can be measured against it (the ``completeness`` view).

Totals follow the rows' rules: a day up to Google's newest final day is recorded as ``final``,
a later one as ``fresh`` and asked again by later runs until it is final; final totals are never
replaced by fresh ones (the store enforces it). A final day without a row in the answer had no
data: its totals are recorded as zeros.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import polars as pl

from .errors import TransportError
from .parse import answer_rows
from .planner import Filter, Slice

TotalsKey = tuple[str, str, str]
"""(site, search type, filters key): the streams that share daily totals (dimensions aside)."""

_SCHEMA: dict[str, pl.DataType] = {"date": pl.Date(), "clicks": pl.Int64(),
                                   "impressions": pl.Int64(), "ctr": pl.Float64(),
                                   "position": pl.Float64()}
ROW_LIMIT = 25_000  # far more days than Search Console keeps: one page


def totals_key(piece: Slice) -> TotalsKey:
    """The daily totals a day slice is measured against."""
    return (piece.site, piece.search_type, piece.filters_key)


@dataclass(frozen=True)
class TotalsRequest:
    """The date-only request for one :data:`TotalsKey` over ``start`` to ``end``, sent with
    ``data_state``; days up to ``newest_final`` are recorded as final, later ones as fresh."""

    site: str
    search_type: str
    filters: tuple[Filter, ...]
    data_state: str
    start: date
    end: date
    newest_final: date

    @property
    def key(self) -> TotalsKey:
        return totals_key(Slice(self.site, self.search_type, ("date",), self.filters,
                                self.data_state, self.start))

    def body(self) -> dict[str, Any]:
        """The JSON request body."""
        body = Slice(self.site, self.search_type, ("date",), self.filters, self.data_state,
                     self.start).body(0, ROW_LIMIT)
        body["endDate"] = self.end.isoformat()
        return body

    def rows(self, answer: pl.DataFrame) -> pl.DataFrame:
        """``daily_totals`` rows from the parsed answer: every day it has, each final or fresh,
        and zeros for final days of the range it has not (no data that day)."""
        days = [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]
        final_days = pl.DataFrame({"date": [d for d in days if d <= self.newest_final]},
                                  schema={"date": pl.Date()})
        quiet = final_days.join(answer, on="date", how="anti").with_columns(
            clicks=pl.lit(0, pl.Int64), impressions=pl.lit(0, pl.Int64),
            ctr=pl.lit(None, pl.Float64), position=pl.lit(None, pl.Float64))
        inside = answer.filter(pl.col("date").is_between(self.start, self.end))
        frame = pl.concat([inside, quiet], how="vertical").sort("date")
        site, search_type, filters = self.key
        return frame.with_columns(
            site=pl.lit(site), search_type=pl.lit(search_type), filters=pl.lit(filters),
            data_state=pl.when(pl.col("date") <= self.newest_final).then(pl.lit("final"))
            .otherwise(pl.lit("fresh")))


def parse_totals(body: bytes) -> pl.DataFrame:
    """A date-grouped answer as ``date``, ``clicks``, ``impressions``, ``ctr``, ``position``
    (no position for Discover and Google News); no per-row Python."""
    flat = answer_rows(body)
    if flat is None:
        return pl.DataFrame(schema=_SCHEMA)
    try:
        return flat.select(
            pl.col("keys").list.get(0).str.slice(0, 10).str.to_date("%Y-%m-%d").alias("date"),
            pl.col("clicks").round().cast(pl.Int64), pl.col("impressions").round().cast(pl.Int64),
            pl.col("ctr"), pl.col("position"))
    except pl.exceptions.PolarsError:
        raise TransportError("the totals answer has rows without a date key") from None


def requests_for(days: Mapping[TotalsKey, Iterable[tuple[date, date]]],
                 filters: Mapping[TotalsKey, tuple[Filter, ...]],
                 recorded: Mapping[TotalsKey, set[date]], *, fresh_state: str = "all"
                 ) -> list[TotalsRequest]:
    """One request per totals key: the days of ``days`` (each with Google's newest final day
    when it was planned) whose final totals are not ``recorded`` yet, from the first to the last.

    Sent with ``final`` when every such day is final, else with ``fresh_state`` (``all``), which
    answers final days with their final figures and newer days with fresh ones.
    """
    found = []
    for key, planned in days.items():
        needed = sorted({(day, newest) for day, newest in planned
                         if day not in recorded.get(key, set())})
        if not needed:
            continue
        newest_final = max(newest for _, newest in needed)
        first, last = needed[0][0], needed[-1][0]
        state = "final" if last <= newest_final else fresh_state
        site, search_type, _ = key
        found.append(TotalsRequest(site, search_type, filters[key], state, first, last,
                                   newest_final))
    return found
