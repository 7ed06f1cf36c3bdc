"""Read access to a gsckit file that never blocks, and is never blocked for long by, a backfill.

Inside the process that is writing the file, a read is a read-only transaction on a cursor of the
writer's own DuckDB connection: it sees every committed day and waits for nothing. Anywhere else
a read takes the reader's side of the lock protocol (:mod:`.locks`), so the writer lends the file
after its current commit, and opens the file read-only; only past ``wait`` seconds does it give up
with a one-line :class:`DatabaseLocked` naming the holder. Every read is read-only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import polars as pl

from ..errors import ConfigError, StoreError
from ..planner import Slice
from . import schema
from .access import busy, check_path, connect, holder, in_utc
from .days import LedgerDay, Stream, completed, read_days
from .locks import Timeout, current_writer, reader_pass
from .schema import FINAL, FRESH, LEDGER, TABLE
from .writer import final_totals, local_writer, split_stops

if TYPE_CHECKING:
    from ..export import ExportReport

T = TypeVar("T")
DEFAULT_WAIT_S = 5.0
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def plain_numbers(frame: pl.DataFrame) -> pl.DataFrame:
    """Decimal and 128-bit integer columns (DuckDB's ``SUM`` of integers) as Int64 or Float64."""
    casts = []
    for name, dtype in frame.schema.items():
        whole = dtype == pl.Int128 or (isinstance(dtype, pl.Decimal) and dtype.scale == 0)
        if whole:
            try:
                casts.append(frame.get_column(name).cast(pl.Int64, strict=True))
                continue
            except pl.exceptions.InvalidOperationError:
                pass  # beyond 64 bits: a float keeps the magnitude
        if whole or isinstance(dtype, pl.Decimal):
            casts.append(frame.get_column(name).cast(pl.Float64))
    return frame.with_columns(casts) if casts else frame


def _where(site: str | None, start: date | str | None, end: date | str | None,
           search_type: str | None, dimensions: str | Sequence[str] | None
           ) -> tuple[str, list[Any]]:
    """A WHERE clause (or '') and its parameters narrowing a stream's columns and dates."""
    where, params = [], []
    for column, value in (("site", site), ("search_type", search_type)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if dimensions is not None:
        where.append("dimensions = ?")
        params.append(dimensions if isinstance(dimensions, str) else ",".join(dimensions))
    if start is not None:
        where.append("date >= ?::DATE")
        params.append(str(start))
    if end is not None:
        where.append("date <= ?::DATE")
        params.append(str(end))
    return (f" WHERE {' AND '.join(where)}" if where else ""), params


def _check_read_only(query: str) -> None:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise StoreError(str(exc).splitlines()[0]) from None
    for statement in statements:
        if statement.type not in _READ_ONLY:
            kind = statement.type.name
            raise StoreError(f"Database.sql runs read-only queries (SELECT, EXPLAIN), not "
                             f"{kind}: the file is written only by a backfill")


class Database:
    """Read access to a gsckit DuckDB file: polars frames, SQL and the completion status.

    ``wait``: seconds a read may wait while another process is writing the file (it gets the
    file between two commits, usually well within a second); past it, :class:`DatabaseLocked`.
    Opening checks the file once (unless a gsckit backfill is writing it, which checked it), so
    a path that is not a gsckit database fails here.
    """

    def __init__(self, path: str | os.PathLike[str] = "gsc.duckdb", *,
                 wait: float = DEFAULT_WAIT_S) -> None:
        self.path = Path(path)
        check_path(self.path)
        if not self.path.exists():
            raise ConfigError(f"database {str(self.path)!r} does not exist; run a backfill first")
        if not isinstance(wait, int | float) or wait < 0:
            raise ConfigError(f"wait must be a number of seconds >= 0, got {wait!r}")
        self.wait = float(wait)
        # a file a gsckit writer holds has been checked by it; asking for it here would only
        # cost a lend, and the first query a second one
        if current_writer(self.path) is None:
            self._read(lambda con: None)

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    def _read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` in a read-only view of the committed data."""
        store = local_writer(self.path)
        if store is not None:
            with store.reading() as cursor:
                if cursor is not None:
                    return self._call(fn, cursor)
        deadline = time.monotonic() + self.wait
        try:
            with reader_pass(self.path, deadline):
                con = in_utc(connect(self.path, read_only=True, deadline=deadline,
                                     waited=self.wait))
                try:
                    if schema.check_readable(con, str(self.path)) == "empty":
                        return self._empty(fn)
                    return self._call(fn, con)
                finally:
                    con.close()
        except Timeout:
            raise busy(self.path, self.wait, holder(self.path)) from None

    def _empty(self, fn: Callable[[Any], T]) -> T:
        """A DuckDB file with no tables yet reads like a gsckit file with no days."""
        con = duckdb.connect(":memory:")
        try:
            schema.memory_surface(con)
            return self._call(fn, con)
        finally:
            con.close()

    @staticmethod
    def _call(fn: Callable[[Any], T], con: Any) -> T:
        try:
            return fn(con)
        except duckdb.Error as exc:
            raise StoreError(str(exc).splitlines()[0]) from None

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a read-only query (SELECT, EXPLAIN) and return a polars DataFrame.

        Aggregates come back as plain numbers: ``SUM`` of integers as Int64 (Float64 beyond 64
        bits), decimals as Float64. Anything that would write is refused in one line.
        """
        _check_read_only(query)
        args = list(params) if params else None
        frame = self._read(lambda con: pl.DataFrame(con.sql(query, params=args)))
        return plain_numbers(frame)

    def frame(self, site: str | None = None, *, start: date | str | None = None,
              end: date | str | None = None, search_type: str | None = None,
              dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
        """Rows of ``search_analytics``, optionally narrowed to a site, a date range, a search
        type and a dimension set; ordered by date then clicks."""
        clause, params = _where(site, start, end, search_type, dimensions)
        return self.sql(f"SELECT * FROM {TABLE}{clause} ORDER BY date, clicks DESC, query, page",
                        params)

    def completeness(self, site: str | None = None, *, start: date | str | None = None,
                     end: date | str | None = None, search_type: str | None = None,
                     dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
        """How complete each committed day is: one row per stream and day (the ``completeness``
        view), optionally narrowed like :meth:`frame`; ordered by stream, then date.

        Columns: the stream (``site``, ``search_type``, ``dimensions``, ``filters``), ``date``,
        ``data_state``; ``rows``, ``pages``, ``requests``; ``detail_clicks`` and
        ``detail_impressions`` (the sums of the stored rows) against Google's daily totals
        (``total_clicks``, ``total_impressions``, ``total_ctr``, ``total_position``,
        ``totals_data_state``; null until recorded); ``hidden_clicks_share`` and
        ``hidden_impressions_share`` (1 - detail / total); ``capped`` (rows past the API's
        50,000-row cap are missing: an answer stored for the day reached it); ``split``,
        ``partitions``, ``capped_partitions`` (the day was fetched in parts, and how many of
        them still reached the cap); ``unsplit_rows``, ``unsplit_clicks``, ``gained_rows``,
        ``gained_clicks`` (the day's own capped answer, and what splitting added to it);
        ``split_requests``; ``split_note`` (why a capped day was not split).
        """
        clause, params = _where(site, start, end, search_type, dimensions)
        order = " ORDER BY site, search_type, dimensions, filters, date"

        def read(con: Any) -> pl.DataFrame:
            body = schema.completeness_sql(schema.version(con))
            return pl.DataFrame(con.sql(f"SELECT * FROM ({body}){clause}{order}",
                                        params=params or None))

        return plain_numbers(self._read(read))

    def status(self) -> pl.DataFrame:
        """One row per stream: committed days, how many hold Google's final data and how many
        fresh (partial) data, first and last day, the newest final day, days missing in
        between, rows, last fetch, and the newest final day Google reported at the last fetch."""
        return self._read(lambda con: plain_numbers(pl.DataFrame(con.sql(
            f"SELECT site, search_type, dimensions, filters, count(*) AS days, "
            f"count(*) FILTER (WHERE state = '{FINAL}') AS final_days, "
            f"count(*) FILTER (WHERE state = '{FRESH}') AS fresh_days, "
            f"min(date) AS first_day, max(date) AS last_day, "
            f"max(date) FILTER (WHERE state = '{FINAL}') AS newest_final_day, "
            f"date_diff('day', min(date), max(date)) + 1 - count(*) AS gaps, "
            f"sum(rows)::BIGINT AS rows, max(fetched_at) AS last_fetched, "
            f"max(newest_final) AS google_final_through FROM {schema.days_source(con)} "
            f"GROUP BY ALL ORDER BY site, search_type, dimensions, filters"))))

    def completed(self, slices: Iterable[Slice]) -> set[str]:
        """Keys of ``slices`` already committed (same rule as the writer uses to skip days)."""
        wanted = list(slices)
        return self._read(lambda con: completed(con, wanted))

    def ledger_days(self, streams: Iterable[Stream], start: date | None = None
                    ) -> dict[Stream, dict[date, LedgerDay]]:
        """The committed days of ``streams`` (site, search type, dimensions key, filters key),
        each with its state: what planning and the dry run read."""
        wanted = list(streams)
        return self._read(lambda con: read_days(con, wanted, start))

    def pages_per_day(self) -> dict[tuple[str, str, str, str], float]:
        """Average pages a committed day needed, per stream: the basis of request estimates."""
        frame = self.sql(f"SELECT site, search_type, dimensions, filters, avg(pages) AS pages "
                         f"FROM {LEDGER} GROUP BY ALL")
        return {(r[0], r[1], r[2], r[3]): float(r[4]) for r in frame.iter_rows()}

    def final_totals(self, keys: Iterable[tuple[str, str, str]]
                     ) -> dict[tuple[str, str, str], set[date]]:
        """The days of each (site, search type, filters) whose final daily totals are recorded
        (what a run does not ask for again)."""
        wanted = set(keys)
        return self._read(lambda con: final_totals(con, wanted))

    def split_requests_per_day(self, streams: Iterable[tuple[str, str, str, str]]
                               ) -> dict[tuple[str, str, str, str], float]:
        """What splitting capped days cost per committed day, per stream of ``streams`` (the
        basis of a dry run's estimate): 0 for a stream whose last split gained nothing."""
        wanted = set(streams)

        def read(con: Any) -> dict[tuple[str, str, str, str], float]:
            if schema.version(con) < 4:
                return {}
            stopped = split_stops(con, wanted)
            rows = con.execute(
                f"SELECT l.site, l.search_type, l.dimensions, l.filters, "
                f"avg(coalesce(d.split_requests, 0)) FROM {LEDGER} AS l LEFT JOIN "
                f"{schema.DETAIL} AS d USING (slice_id) GROUP BY ALL").fetchall()
            return {(r[0], r[1], r[2], r[3]): float(r[4]) for r in rows
                    if (r[0], r[1], r[2], r[3]) in wanted
                    and (r[0], r[1], r[2], r[3]) not in stopped}

        return self._read(read)

    def days(self, site: str | None = None) -> pl.DataFrame:
        """The ledger: one row per committed day slice."""
        clause, params = ("", []) if site is None else (" WHERE site = ?", [site])
        return self.sql(f"SELECT * FROM {LEDGER}{clause} ORDER BY site, date", params)

    def export_parquet(self, to: str | os.PathLike[str], *,
                       partition_by: str | Sequence[str] = ("site", "month"),
                       full: bool = False) -> ExportReport:
        """Write the rows as Hive-partitioned Parquet under ``to``, rewriting only partitions
        whose days changed since the last export (see :mod:`gsckit.export`)."""
        from ..export import export_parquet

        return export_parquet(self, to, partition_by=partition_by, full=full)
