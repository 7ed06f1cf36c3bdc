"""What an analysis reads: the database, the site, one stored stream, and the date range.

Rows of several dimension sets and search types live in one ``search_analytics`` table (the
``dimensions`` and ``search_type`` columns tell them apart). Summing across two of them counts
the same clicks twice, so every analysis reads exactly one *stream*: one (site, search type,
dimension set) without filters. :func:`resolve` picks it and the range from the ledger, through
the store's reader, before any analysis SQL runs; bad arguments fail here with one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import polars as pl

from ..errors import ConfigError
from ..parse import DIMENSION_COLUMNS
from ..planner import SEARCH_TYPES, check_day
from ..store import Database

DEFAULT_DAYS = 28
FINAL = "final"  # the ledger's data state for Google's final figures
# dimension sets an analysis never reads for site figures: hourly rows repeat the days' rows,
# and searchAppearance rows are not additive (Google counts a result once per appearance)
_SKIPPED = frozenset({"hour", "searchAppearance"})
_COLUMN_OF = {"date": "date", **DIMENSION_COLUMNS}

DateLike = date | str
DatabaseLike = Database | str | os.PathLike[str]


@dataclass(frozen=True)
class Scope:
    """One resolved stream of one site, and the range an analysis covers (inclusive)."""

    db: Database
    site: str
    search_type: str
    dimensions: str
    start: date
    end: date
    days: pl.DataFrame  # the stream's ledger: one row per committed day (date, data_state)

    @property
    def length(self) -> int:
        """Days in the range, committed or not."""
        return (self.end - self.start).days + 1

    def where(self, first: date, last: date) -> tuple[str, list[Any]]:
        """The predicate selecting this stream's rows from ``first`` to ``last``, and its
        parameters. ``date`` comes first: it is what prunes the table's row groups."""
        return ("date BETWEEN ? AND ? AND site = ? AND search_type = ? AND dimensions = ? "
                "AND filters = ''", [first, last, self.site, self.search_type, self.dimensions])

    def committed(self, first: date, last: date) -> list[date]:
        """Committed days of the stream from ``first`` to ``last``, in order."""
        return self.days.filter(pl.col("date").is_between(first, last))["date"].to_list()

    def sql(self, query: str, params: Sequence[Any]) -> pl.DataFrame:
        """Run one analysis query through the store's read-only reader."""
        return self.db.sql(query, list(params))


def database(db: DatabaseLike) -> Database:
    """A :class:`Database` from a ``Database`` or a path."""
    if isinstance(db, Database):
        return db
    if isinstance(db, (str, os.PathLike)):
        return Database(db)
    raise ConfigError(f"db must be a gsckit.Database or a path, not {type(db).__name__}")


def check_choice(value: object, allowed: Iterable[str], what: str) -> str:
    """``value`` if it is one of ``allowed``, else a one-line :class:`ConfigError`."""
    options = tuple(allowed)
    if isinstance(value, str) and value in options:
        return value
    raise ConfigError(f"unknown {what} {value!r}; choose from {', '.join(options)}")


def check_range(start: DateLike | None, end: DateLike | None, what: str = ""
                ) -> tuple[date | None, date | None]:
    """Parse an optional ``(start, end)`` pair; a reversed pair is refused."""
    first = None if start is None else check_day(start, f"{what}start".strip())
    last = None if end is None else check_day(end, f"{what}end".strip())
    if first and last and first > last:
        raise ConfigError(f"{what}start {first} is after {what}end {last}".strip())
    return first, last


def column(dimension: str) -> str:
    """The table column holding an API dimension (``searchAppearance`` -> search_appearance)."""
    return _COLUMN_OF[dimension]


def _dims(key: str) -> frozenset[str]:
    return frozenset(key.split(",")) - {"date"}


def resolve(db: DatabaseLike, site: str, needs: Iterable[str], *, start: DateLike | None = None,
            end: DateLike | None = None, search_type: str = "web",
            dimensions: str | Sequence[str] | None = None,
            default_days: int = DEFAULT_DAYS) -> Scope:
    """Pick the stream and range for an analysis that groups by the dimensions in ``needs``.

    Every row carries its day (one request per day), so ``date`` is always available. Among the
    unfiltered dimension sets of ``site`` and ``search_type`` that contain ``needs`` (hourly and
    searchAppearance sets excluded), the one with the fewest dimensions wins: the date-only totals
    for site-wide figures, ``date,query`` before ``date,query,page`` for queries. Ties go to the
    set with more committed days. ``dimensions`` forces a stored set.

    The default range is the last ``default_days`` days ending at the stream's newest complete
    day, where complete means committed with Google's final data (``data_state`` final in the
    ledger); a stream with no final day ends at its newest committed day. Only ``start`` given:
    through that newest complete day; only ``end`` given: ``default_days`` days ending there.
    """
    reader = database(db)
    if not isinstance(site, str) or not site:
        raise ConfigError("site must be a property such as 'sc-domain:example.com'")
    search_type = check_choice(search_type, SEARCH_TYPES, "search type")
    first, last = check_range(start, end)
    needed = frozenset(needs)
    ledger = reader.days(site)
    if ledger.height == 0:
        sites = sorted(set(reader.status()["site"].to_list()))
        known = ", ".join(repr(s) for s in sites) or "none yet"
        raise ConfigError(f"site {site!r} has no committed days in {str(reader.path)!r}; "
                          f"sites in it: {known}")
    ledger = ledger.filter(pl.col("search_type") == search_type, pl.col("filters") == "")
    if ledger.height == 0:
        raise ConfigError(f"site {site!r} has no unfiltered {search_type!r} days in "
                          f"{str(reader.path)!r}")
    streams = (ledger.group_by("dimensions").agg(pl.len().alias("days"))
               .with_columns(size=pl.col("dimensions").str.count_matches(",") + 1))
    stored = streams["dimensions"].to_list()
    if dimensions is not None:
        key = dimensions if isinstance(dimensions, str) else ",".join(dimensions)
        if key not in stored:
            raise ConfigError(f"no stored {search_type!r} rows of {site!r} with dimensions "
                              f"{key!r}; stored: {', '.join(sorted(stored))}")
        if not needed <= _dims(key):
            raise ConfigError(f"dimensions {key!r} lack {', '.join(sorted(needed - _dims(key)))}"
                              " that this analysis groups by")
    else:
        usable = [k for k in stored if needed <= _dims(k) and not _dims(k) & (_SKIPPED - needed)]
        if not usable:
            raise ConfigError(
                f"no stored {search_type!r} rows of {site!r} group by "
                f"{', '.join(sorted(needed))}; stored dimension sets: {', '.join(sorted(stored))}"
                f" (backfill with dimensions including {', '.join(sorted(needed))})")
        ranked = streams.filter(pl.col("dimensions").is_in(usable)).sort(
            ["size", "days", "dimensions"], descending=[False, True, False])
        key = ranked["dimensions"][0]
    days = (ledger.filter(pl.col("dimensions") == key).select("date", "data_state")
            .sort("date"))
    if last is None:
        final = days.filter(pl.col("data_state") == FINAL)["date"]
        last = (final if final.len() else days["date"]).to_list()[-1]
        if first is not None and first > last:
            raise ConfigError(f"start {first} is after the newest complete day {last} of "
                              f"{site!r} ({key})")
    if first is None:
        first = last - timedelta(days=default_days - 1)
    scope = Scope(reader, site, search_type, key, first, last, days)
    if not scope.committed(first, last):
        span = days["date"].to_list()
        raise ConfigError(f"no committed {search_type!r} days of {site!r} ({key}) from {first} "
                          f"to {last}; it has {span[0]} to {span[-1]}")
    return scope
