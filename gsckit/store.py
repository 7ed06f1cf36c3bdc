"""The DuckDB file: the ``search_analytics`` table, the slice ledger, and atomic day commits.

A day slice is swapped in whole: one transaction deletes the slice's old rows, inserts the new
ones and records the slice in ``gsckit_ledger`` (``INSERT OR REPLACE``). Rows therefore exist
exactly when their ledger entry does, a re-fetch replaces (never duplicates, never leaves stale
rows), and a crash loses at most uncommitted days. The store knows nothing of HTTP; it is used from
one writer thread at a time.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from .config import check_size, check_writable
from .errors import ConfigError, DatabaseLocked, StoreError
from .parse import METRICS
from .planner import Slice

if TYPE_CHECKING:
    from .export import ExportReport

TABLE = "search_analytics"
LEDGER = "gsckit_ledger"
SCHEMA_VERSION = "1"
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    site VARCHAR NOT NULL,
    search_type VARCHAR NOT NULL,
    dimensions VARCHAR NOT NULL,
    filters VARCHAR NOT NULL,
    date DATE NOT NULL,
    hour TIMESTAMPTZ,
    query VARCHAR,
    page VARCHAR,
    country VARCHAR,
    device VARCHAR,
    search_appearance VARCHAR,
    clicks BIGINT NOT NULL,
    impressions BIGINT NOT NULL,
    ctr DOUBLE NOT NULL,
    position DOUBLE NOT NULL,
    data_state VARCHAR NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {LEDGER} (
    slice_key VARCHAR PRIMARY KEY,
    site VARCHAR NOT NULL,
    search_type VARCHAR NOT NULL,
    dimensions VARCHAR NOT NULL,
    filters VARCHAR NOT NULL,
    date DATE NOT NULL,
    data_state VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    pages INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS gsckit_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
"""
_COLUMNS = ("site", "search_type", "dimensions", "filters", "date", "hour", "query", "page",
            "country", "device", "search_appearance", "clicks", "impressions", "ctr", "position",
            "data_state", "fetched_at")
_WRITING: set[Path] = set()  # files a Store of this process is writing (DuckDB shares the lock)
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")


@dataclass(frozen=True)
class Commit:
    """What one slice commit wrote."""

    rows: int
    duplicates: int


@dataclass(frozen=True)
class Staged:
    """A complete day slice waiting to be committed: its pages concatenated."""

    piece: Slice
    frame: pl.DataFrame
    pages: int
    requests: int


def _dedupe(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop rows repeating a key (ties can shift between pages); DuckDB would keep one silently."""
    keys = [c for c in frame.columns if c not in METRICS]
    if not keys or frame.height < 2:
        return frame, 0
    if not frame.select(pl.struct(keys).is_duplicated().any()).item():
        return frame, 0
    unique = frame.unique(subset=keys, keep="first", maintain_order=True)
    return unique, frame.height - unique.height


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    old = os.umask(0o077)
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc)
        match = _LOCK_HOLDER.search(text)
        if match:
            raise DatabaseLocked(
                f"database {str(path)!r} is locked by another process ({match.group(1)}, "
                f"PID {match.group(2)}); close that notebook kernel or wait for its run to end"
            ) from None
        if "Could not set lock" in text:
            raise DatabaseLocked(f"database {str(path)!r} is locked by another process") from None
        if "not a valid DuckDB database file" in text:
            raise ConfigError(f"{str(path)!r} is not a DuckDB database file; choose another "
                              "--db path") from None
        raise StoreError(f"cannot open database {str(path)!r}: {text.splitlines()[0]}") from None
    except duckdb.Error as exc:
        raise StoreError(f"cannot open database {str(path)!r}: {str(exc).splitlines()[0]}"
                         ) from None
    finally:
        os.umask(old)


def _completed(con: duckdb.DuckDBPyConnection, slices: Iterable[Slice]) -> set[str]:
    wanted = {s.key: s.data_state for s in slices}
    if not wanted:
        return set()
    rows = con.execute(
        f"SELECT slice_key, data_state FROM {LEDGER} WHERE slice_key IN "
        "(SELECT unnest(?::VARCHAR[]))", [list(wanted)]).fetchall()
    # final data is never replaced by fresher-but-partial data; "all" is upgraded to "final"
    return {key for key, state in rows if state == "final" or state == wanted[key]}


class Store:
    """The single writer of one gsckit DuckDB file."""

    def __init__(self, path: str | os.PathLike[str], *, memory_limit: str = "128MB") -> None:
        memory_limit = check_size(memory_limit)
        self.path = Path(path)
        check_writable(self.path, "database")
        self._key = self.path.resolve()
        if self._key in _WRITING:
            raise DatabaseLocked(f"database {str(self.path)!r} is already being written by "
                                 "another backfill in this process; wait for it to finish")
        self._con = _connect(self.path, read_only=False)
        _WRITING.add(self._key)
        try:
            self._con.execute(f"SET memory_limit = '{memory_limit}'")
            # the default 16 MB WAL checkpoints every few days of rows (1.29-1.54 us/row to
            # commit, measured); 64 MB costs 1.07 like 256 MB, and keeps the checkpoint that
            # DuckDB always runs on close (also after a halt) short
            self._con.execute("SET wal_autocheckpoint = '64MB'")
            self._con.execute(_DDL)
            self._con.execute("INSERT OR IGNORE INTO gsckit_meta VALUES ('schema_version', ?)",
                              [SCHEMA_VERSION])
        except duckdb.Error as exc:
            self._con.close()
            _WRITING.discard(self._key)
            raise StoreError(f"database {str(self.path)!r} is not usable: {exc}") from None
        self._protect()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Checkpoint (fold the WAL into the file) and close."""
        # a failed final checkpoint leaves the WAL, which the next open replays
        with contextlib.suppress(duckdb.Error):
            self._con.execute("CHECKPOINT")
        self._con.close()
        _WRITING.discard(self._key)

    def completed(self, slices: Iterable[Slice]) -> set[str]:
        """Keys of ``slices`` already committed with the requested (or final) data state."""
        return _completed(self._con, slices)

    def commit_slice(self, piece: Slice, frame: pl.DataFrame, *, pages: int, requests: int,
                     run_id: str) -> Commit:
        """Replace ``piece``'s rows with ``frame`` and record it in the ledger, atomically."""
        return self.commit_slices([Staged(piece, frame, pages, requests)], run_id=run_id)[0]

    def commit_slices(self, staged: Sequence[Staged], *, run_id: str) -> list[Commit]:
        """Replace several slices and record them in the ledger, in one transaction.

        Grouping days when several are ready makes the writer cheaper per row exactly when it
        has fallen behind; each day is still all-or-nothing with its ledger entry.
        """
        fetched_at = datetime.now(UTC)
        prepared = [(item, *_dedupe(item.frame)) for item in staged]
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            for item, frame, duplicates in prepared:
                piece = item.piece
                rows = self._table_rows(piece, frame, fetched_at)
                where = [piece.site, piece.search_type, piece.dimensions_key, piece.filters_key,
                         piece.day]
                con.execute(
                    f"DELETE FROM {TABLE} WHERE site = ? AND search_type = ? AND dimensions = ? "
                    "AND filters = ? AND date = ?", where)
                if rows.height:
                    con.from_arrow(rows.__arrow_c_stream__()).insert_into(TABLE)
                con.execute(
                    f"INSERT OR REPLACE INTO {LEDGER} VALUES ({', '.join('?' * 13)})",
                    [piece.key, *where, piece.data_state, rows.height, item.pages, item.requests,
                     duplicates, fetched_at, run_id])
            con.execute("COMMIT")
        except BaseException as exc:
            con.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                keys = ", ".join(item.piece.key for item in staged)
                raise StoreError(f"commit of {keys} failed: {exc}") from None
            raise
        self._protect()
        return [Commit(rows=frame.height, duplicates=dups) for _, frame, dups in prepared]

    def _table_rows(self, piece: Slice, frame: pl.DataFrame, fetched_at: datetime
                    ) -> pl.DataFrame:
        present = set(frame.columns)
        consts: dict[str, Any] = {
            "site": piece.site, "search_type": piece.search_type,
            "dimensions": piece.dimensions_key, "filters": piece.filters_key, "date": piece.day,
            "data_state": piece.data_state, "fetched_at": fetched_at,
        }
        types: dict[str, pl.DataType] = {"date": pl.Date(), "hour": pl.Datetime("us", "UTC"),
                                         "fetched_at": pl.Datetime("us", "UTC")}
        exprs = []
        for col in _COLUMNS:
            if col in present:
                exprs.append(pl.col(col))
            elif col in consts:
                exprs.append(pl.lit(consts[col], dtype=types.get(col, pl.String())).alias(col))
            else:
                exprs.append(pl.lit(None, dtype=types.get(col, pl.String())).alias(col))
        return frame.select(exprs)

    def _protect(self) -> None:
        """DuckDB creates the WAL with the default umask; keep it as private as the file."""
        wal = self.path.with_name(self.path.name + ".wal")
        if wal.exists():
            wal.chmod(0o600)


class Database:
    """Read access to a gsckit DuckDB file: polars frames, SQL and the completion status.

    Every call opens and closes its own connection, so an idle notebook never holds the file lock
    that a scheduled backfill needs.
    """

    def __init__(self, path: str | os.PathLike[str] = "gsc.duckdb") -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"database {str(self.path)!r} does not exist; run a backfill first")

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run any SQL against the file and return the result as a polars DataFrame."""
        con = _connect(self.path, read_only=False)
        try:
            return pl.DataFrame(con.sql(query, params=list(params) if params else None))
        except duckdb.Error as exc:
            raise StoreError(str(exc).splitlines()[0]) from None
        finally:
            con.close()

    def frame(self, site: str | None = None, *, start: date | str | None = None,
              end: date | str | None = None, search_type: str | None = None,
              dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
        """Rows of ``search_analytics``, optionally narrowed to a site, a date range, a search
        type and a dimension set; ordered by date then clicks."""
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
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.sql(f"SELECT * FROM {TABLE}{clause} ORDER BY date, clicks DESC, query, page",
                        params)

    def status(self) -> pl.DataFrame:
        """One row per stream: complete days, first and last day, days missing in between,
        rows, last fetch."""
        return self.sql(
            f"SELECT site, search_type, dimensions, filters, data_state, count(*) AS days, "
            f"min(date) AS first_day, max(date) AS last_day, "
            f"date_diff('day', min(date), max(date)) + 1 - count(*) AS gaps, "
            f"sum(rows)::BIGINT AS rows, "
            f"max(fetched_at) AS last_fetched FROM {LEDGER} "
            f"GROUP BY ALL ORDER BY site, search_type, dimensions, filters, data_state")

    def completed(self, slices: Iterable[Slice]) -> set[str]:
        """Keys of ``slices`` already committed (same rule as the writer uses to skip days)."""
        con = _connect(self.path, read_only=False)
        try:
            return _completed(con, slices)
        except duckdb.CatalogException:
            return set()  # a DuckDB file that gsckit never wrote
        finally:
            con.close()

    def pages_per_day(self) -> dict[tuple[str, str, str, str], float]:
        """Average pages a committed day needed, per stream: the basis of request estimates."""
        frame = self.sql(f"SELECT site, search_type, dimensions, filters, avg(pages) AS pages "
                         f"FROM {LEDGER} GROUP BY ALL")
        return {(r[0], r[1], r[2], r[3]): float(r[4]) for r in frame.iter_rows()}

    def days(self, site: str | None = None) -> pl.DataFrame:
        """The ledger: one row per committed day slice."""
        clause, params = ("", []) if site is None else (" WHERE site = ?", [site])
        return self.sql(f"SELECT * FROM {LEDGER}{clause} ORDER BY site, date", params)

    def export_parquet(self, to: str | os.PathLike[str], *,
                       partition_by: str | Sequence[str] = ("site", "month"),
                       full: bool = False) -> ExportReport:
        """Write the rows as Hive-partitioned Parquet under ``to``, rewriting only partitions
        whose days changed since the last export (see :mod:`gsckit.export`)."""
        from .export import export_parquet

        return export_parquet(self, to, partition_by=partition_by, full=full)
