"""The single writer of a gsckit file: atomic day commits that readers can interleave with.

A day slice is swapped in whole: one transaction deletes the slice's old rows, inserts the new
ones and records the slice in ``gsckit_ledger`` (``INSERT OR REPLACE``). Rows therefore exist
exactly when their ledger entry does, a re-fetch replaces (never duplicates, never leaves stale
rows), and a crash loses at most uncommitted days.

The same transaction reads the day's ledger entry first and applies the rule that protects
Google's final data (:func:`outcome`): final rows are never replaced by fresh ones, and rows are
never replaced by an empty answer; such an answer is *kept* out, whatever planned it.

The writer keeps its DuckDB connection between commits, and lends the file to readers (see
:mod:`.locks`) right after a commit when one asks, or when it has been idle for a while; it takes
the file back before its next commit. Inside this process, readers use a read-only cursor on the
writer's connection instead and never wait. The store knows nothing of HTTP; its methods run on
one writer thread at a time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from ..config import check_size, check_writable
from ..errors import CommitError, GsckitError, StoreError
from ..planner import ROW_CAP, Slice
from ..rows import dedupe
from ..split import RETRY_AFTER_DAYS, SplitOutcome
from . import schema
from .access import check_path, connect, in_utc
from .days import LedgerDay, Stream, completed, read_days
from .locks import Timeout, WriterSide
from .schema import (
    COMPLETENESS,
    DETAIL,
    FINAL,
    FRESH,
    LEDGER,
    LEDGER_COLUMNS,
    ROW_COLUMNS,
    ROWS,
    STATES,
    TOTALS,
)

# DuckDB's row-group size. A transaction that inserts this many rows has them written straight
# to the file, and the checkpoint then merges the short row groups each such commit leaves
# behind, leaving 40-45% of the file as free blocks (measured: 72 vs 37 bytes a row). Keeping
# every transaction below it sends rows through the WAL instead, which costs the same CPU.
ROW_GROUP = 122_880
# the default 16 MB WAL checkpoints every few days of rows (1.29-1.54 us/row to commit,
# measured); 64 MB costs 1.07 like 256 MB, and keeps the checkpoint that DuckDB runs when the
# writer lends the file or closes short
WAL_CHECKPOINT = "64MB"
# the writer keeps the file at least this long after taking it back before it lends it again:
# a lend costs about two days' commit time (DuckDB replays the WAL on reopen), so a reader
# polling every half second would otherwise double the writer's cost (benchmarks/readers.py)
LEND_AFTER_S = 1.0
# seconds without a commit after which the writer lends the file even if nobody asked (other
# DuckDB clients do not know the lock protocol)
IDLE_RELEASE_S = 10.0

_WRITERS: dict[Path, Store] = {}  # the open writer of each file in this process, for readers
_WRITERS_LOCK = threading.Lock()
_CAUSES = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES)
_TOTALS_KEY = ("site", "search_type", "filters", "date")
_TOTALS_COLUMNS = (*_TOTALS_KEY, "data_state", "clicks", "impressions", "ctr", "position")
_TYPES: dict[str, pl.DataType] = {"hour": pl.Datetime("us", "UTC"), "clicks": pl.Int64(),
                                  "impressions": pl.Int64(), "ctr": pl.Float64(),
                                  "position": pl.Float64()}


# what a commit did to a day (see outcome()); "kept" wrote nothing
NEW, REFRESHED, PROMOTED, REPLACED, KEPT = "new", "refreshed", "promoted", "replaced", "kept"
# why a day was fetched: absent from the ledger, fresh, a final day's one re-check, or forced
MISSING, RECHECK, FORCE = "missing", "recheck", "force"


@dataclass(frozen=True)
class Commit:
    """What one slice commit wrote: ``rows`` stored, in-slice ``duplicates`` dropped, the day's
    ``state`` now and the ``outcome`` (``new``, ``refreshed``, ``promoted``, ``replaced`` or
    ``kept``: the answer was refused and the day is unchanged)."""

    rows: int
    duplicates: int
    state: str = FINAL
    outcome: str = NEW


@dataclass(frozen=True)
class DayRecord:
    """How a day about to be fetched will be recorded: its ``state`` (``final`` or ``fresh``),
    why it is fetched, the marker Google sent and Google's newest final day (see :class:`Staged`).
    """

    state: str
    reason: str = MISSING
    first_incomplete: str | None = None
    newest_final: date | None = None


@dataclass(frozen=True)
class Staged:
    """A complete day slice waiting to be committed: its pages concatenated.

    ``state`` is what the day will be recorded as (``final`` or ``fresh``; default: ``final``
    for a ``final`` request, else ``fresh``); ``reason`` why it was fetched (``missing``,
    ``fresh``, ``recheck``, ``force``); ``first_incomplete`` the marker Google sent for a fresh
    day and ``newest_final`` Google's newest final day when it was fetched (``None``: unknown).
    ``capped``: rows past the API's daily cap are missing from ``frame`` (default: the frame
    reached :data:`~gsckit.planner.ROW_CAP` rows). ``split``: what splitting the day into
    partitions did (``frame`` is then their merged rows); ``split_note``: why a capped day was
    not split.
    """

    piece: Slice
    frame: pl.DataFrame
    pages: int
    requests: int
    state: str | None = None
    reason: str = MISSING
    first_incomplete: str | None = None
    newest_final: date | None = None
    capped: bool | None = None
    split: SplitOutcome | None = None
    split_note: str = ""

    @property
    def day_state(self) -> str:
        if self.state is not None:
            return self.state
        return FINAL if self.piece.data_state == FINAL else FRESH

    def detail(self, frame: pl.DataFrame) -> list[Any]:
        """The ``gsckit_detail`` values (after ``slice_id``) for the stored rows ``frame``."""
        clicks, impressions = frame.select(pl.col("clicks").sum(),
                                           pl.col("impressions").sum()).row(0)
        split = self.split
        capped = self.capped if self.capped is not None else frame.height >= ROW_CAP
        if split is None:
            return [clicks, impressions, capped, 0, 0, None, None, None, 0, self.split_note]
        return [clicks, impressions, capped, split.partitions, split.capped_partitions,
                split.unsplit_rows, split.unsplit_clicks, split.unsplit_impressions,
                split.requests, self.split_note]


def outcome(old_state: str | None, old_rows: int, new_state: str, new_rows: int) -> str:
    """What committing an answer does to a day already in the ledger (the one rule).

    Final rows are never replaced by fresh ones, and rows are never replaced by an empty answer
    (a final day's rows could be lost for good, a fresh day's replaced by nothing): both are
    ``kept``. Otherwise the day is ``new``, ``refreshed`` (fresh again), ``promoted`` (fresh to
    final) or ``replaced`` (final again: a re-check or a forced re-fetch).
    """
    if old_state is None:
        return NEW
    if (old_state == FINAL and new_state != FINAL) or (old_rows > 0 and new_rows == 0):
        return KEPT
    if old_state == FINAL:
        return REPLACED
    return PROMOTED if new_state == FINAL else REFRESHED


def _chunks(prepared: list[tuple[Staged, pl.DataFrame, int]]
            ) -> Iterator[list[tuple[Staged, pl.DataFrame, int]]]:
    """Consecutive days whose rows stay below one row group per transaction."""
    chunk: list[tuple[Staged, pl.DataFrame, int]] = []
    rows = 0
    for entry in prepared:
        if chunk and rows + entry[1].height >= ROW_GROUP:
            yield chunk
            chunk, rows = [], 0
        chunk.append(entry)
        rows += entry[1].height
    if chunk:
        yield chunk


def cause_of(exc: BaseException) -> str:
    """The operating-system reason inside a DuckDB error, in words, else its first line."""
    text = str(exc)
    for code in _CAUSES:
        reason = os.strerror(code)
        if reason in text:
            return reason
    return text.splitlines()[0] if text else type(exc).__name__


def local_writer(path: Path) -> Store | None:
    """The open writer of ``path`` in this process, if any."""
    with _WRITERS_LOCK:
        return _WRITERS.get(path.resolve())


class Store:
    """The single writer of one gsckit DuckDB file.

    ``wait``: seconds to wait for a process that holds the file without taking part in gsckit's
    lock protocol (gsckit readers are always waited for: they finish). ``kind`` names this
    writer to readers and to a second writer ("backfill", "sync").
    """

    def __init__(self, path: str | os.PathLike[str], *, memory_limit: str = "128MB",
                 wait: float = 5.0, kind: str = "backfill") -> None:
        self._memory_limit = check_size(memory_limit)
        self.path = Path(path)
        check_path(self.path)
        check_writable(self.path, "database")
        self.wait = wait
        self._mutex = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._locks = WriterSide(self.path, kind)
        self._locks.claim()
        self._last_write = self._taken_at = time.monotonic()
        self._next_id = 1
        try:
            self._open()
            con = self._connection()
            try:
                schema.upgrade(con, str(self.path))
                [row] = con.execute(f"SELECT coalesce(max(slice_id), 0) + 1 FROM {LEDGER}"
                                    ).fetchall()
            except duckdb.Error as exc:
                raise StoreError(f"database {str(self.path)!r} is not usable: "
                                 f"{cause_of(exc)}") from None
            self._next_id = int(row[0])
        except BaseException:
            self._shut(checkpoint=False)
            raise
        self._protect()
        with _WRITERS_LOCK:
            _WRITERS[self.path.resolve()] = self

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the connection and the file's lock -----------------------------------------------

    def _open(self, readers_deadline: float = float("inf")) -> None:
        """Take the file back from readers (waited for, by default as long as they read) and
        connect."""
        self._locks.take(deadline=readers_deadline)
        try:
            con = connect(self.path, read_only=False, deadline=time.monotonic() + self.wait,
                          waited=self.wait)
            try:
                con.execute(f"SET memory_limit = '{self._memory_limit}'")
                con.execute(f"SET wal_autocheckpoint = '{WAL_CHECKPOINT}'")
            except duckdb.Error as exc:
                con.close()
                raise StoreError(f"database {str(self.path)!r} is not usable: "
                                 f"{cause_of(exc)}") from None
        except BaseException:
            self._locks.lend()
            raise
        with self._mutex:
            self._con = con
        self._taken_at = time.monotonic()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._open()
        assert self._con is not None
        return self._con

    def _release(self, checkpoint: bool = True) -> None:
        """Close the connection and lend the file.

        Without ``checkpoint`` the WAL stays beside the file (readers and the next open replay
        it): a checkpoint per lend would cost as much and leave the file fragmented (36 vs 42
        bytes a row after a lend per day, measured).
        """
        # under the mutex: a read in this process waits for the connection to close and the
        # file to be lent, then reads the file, instead of finding it held half-way
        with self._mutex:
            con, self._con = self._con, None
            if con is None:
                return
            # a failed checkpoint leaves the WAL, which the next open replays
            with contextlib.suppress(duckdb.Error):
                con.execute("CHECKPOINT" if checkpoint
                            else "PRAGMA disable_checkpoint_on_shutdown")
            with contextlib.suppress(duckdb.Error):
                con.close()
            self._protect()
            self._locks.lend()

    def _shut(self, checkpoint: bool) -> None:
        self._release(checkpoint)
        with _WRITERS_LOCK:
            if _WRITERS.get(self.path.resolve()) is self:
                del _WRITERS[self.path.resolve()]
        self._locks.close()

    def close(self) -> None:
        """Checkpoint (fold the WAL into the file), close, and let every reader in."""
        if self._con is None and self.path.with_name(self.path.name + ".wal").exists():
            # lent without a checkpoint at the end of the run: fold the WAL in if the file can
            # be had soon; otherwise the next open replays it, which is just as safe
            with contextlib.suppress(GsckitError, Timeout, duckdb.Error):
                self._open(readers_deadline=time.monotonic() + self.wait)
        self._shut(checkpoint=True)

    def idle(self) -> None:
        """Called on the writer thread while no day is ready: lend the file if it is wanted."""
        if self._con is None:
            return
        if time.monotonic() - self._last_write > IDLE_RELEASE_S:
            self._release()
        else:
            self._lend_if_wanted()

    def _lend_if_wanted(self) -> None:
        if time.monotonic() - self._taken_at >= LEND_AFTER_S and self._locks.wanted():
            self._release(checkpoint=False)

    @contextlib.contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only cursor on the writer's connection, or None while the file is lent."""
        # holding the mutex while reading stops the writer from closing the instance under us;
        # without a connection it is let go at once, so a fallback read never blocks the writer
        self._mutex.acquire()
        if self._con is None:
            self._mutex.release()
            yield None
            return
        try:
            cursor = in_utc(self._con.cursor())
            try:
                cursor.execute("BEGIN TRANSACTION READ ONLY")
                yield cursor
            finally:
                cursor.close()
        finally:
            self._mutex.release()

    # --- writing --------------------------------------------------------------------------

    def completed(self, slices: Iterable[Slice]) -> set[str]:
        """Keys of ``slices`` committed with Google's final data (fresh days are not complete)."""
        return completed(self._connection(), slices)

    def days(self, streams: Iterable[Stream], start: date | None = None
             ) -> dict[Stream, dict[date, LedgerDay]]:
        """The ledger's days of ``streams`` (from ``start``), with their states."""
        return read_days(self._connection(), streams, start)

    def completeness(self, slices: Iterable[Slice]) -> pl.DataFrame:
        """The ``completeness`` rows of the committed days among ``slices``."""
        keys = [s.key for s in slices]
        return pl.DataFrame(self._connection().sql(
            f"SELECT c.* FROM {COMPLETENESS} AS c JOIN {LEDGER} AS l USING (site, search_type, "
            "dimensions, filters, date) WHERE l.slice_key IN (SELECT unnest(?::VARCHAR[])) "
            "ORDER BY site, search_type, dimensions, filters, date", params=[keys]))

    def final_totals(self, keys: Iterable[tuple[str, str, str]]
                     ) -> dict[tuple[str, str, str], set[date]]:
        """The days of each (site, search type, filters) whose final totals are recorded."""
        return final_totals(self._connection(), keys)

    def split_stops(self, streams: Iterable[tuple[str, str, str, str]]
                    ) -> dict[tuple[str, str, str, str], tuple[date, int]]:
        """Streams whose latest split gained nothing (see :func:`split_stops`)."""
        return split_stops(self._connection(), streams)

    def commit_slice(self, piece: Slice, frame: pl.DataFrame, *, pages: int, requests: int,
                     run_id: str) -> Commit:
        """Replace ``piece``'s rows with ``frame`` and record it in the ledger, atomically."""
        return self.commit_slices([Staged(piece, frame, pages, requests)], run_id=run_id)[0]

    def commit_slices(self, staged: Sequence[Staged], *, run_id: str) -> list[Commit]:
        """Replace several slices and record them in the ledger.

        Each day is all-or-nothing with its ledger entry; consecutive days share a transaction
        while their rows stay below a row group. On failure raises :class:`CommitError`, whose
        ``committed`` lists the days of ``staged`` that were saved before it.
        """
        fetched_at = datetime.now(UTC)
        prepared = [self._prepare(item) for item in staged]
        results: list[Commit] = []
        for chunk in _chunks(prepared):
            try:
                results += self._commit_chunk(chunk, fetched_at, run_id)
            except duckdb.Error as exc:
                raise self._failure(exc, chunk, results) from None
        self._last_write = time.monotonic()
        self._protect()
        self._lend_if_wanted()
        return results

    def commit_totals(self, totals: pl.DataFrame, *, run_id: str) -> int:
        """Record Google's daily totals, in one transaction; return the days written.

        ``totals`` has one row per (site, search_type, filters, date) with ``data_state``,
        ``clicks``, ``impressions``, ``ctr`` and ``position``. A day's totals replace what was
        recorded for it, except that final figures are never replaced by fresh ones.
        """
        if totals.height == 0:
            return 0
        frame = totals.select(*_TOTALS_COLUMNS).with_columns(
            pl.lit(datetime.now(UTC)).alias("fetched_at"), pl.lit(run_id).alias("run_id"))
        con = self._connection()
        key = " AND ".join(f"t.{c} = n.{c}" for c in _TOTALS_KEY)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE gsckit_new_totals AS "
                        f"SELECT * FROM {TOTALS} LIMIT 0")
            con.from_arrow(frame.__arrow_c_stream__()).insert_into("gsckit_new_totals")
            con.execute(f"DELETE FROM {TOTALS} AS t USING gsckit_new_totals AS n WHERE {key} "
                        "AND NOT (t.data_state = 'final' AND n.data_state <> 'final')")
            [(written,)] = con.execute(
                f"INSERT INTO {TOTALS} SELECT n.* FROM gsckit_new_totals AS n WHERE NOT "
                f"EXISTS (SELECT 1 FROM {TOTALS} AS t WHERE {key})").fetchall()
            con.execute("DROP TABLE gsckit_new_totals")
            con.execute("COMMIT")
        except duckdb.Error as exc:
            self._rollback(con)
            raise StoreError(f"cannot record the daily totals in {str(self.path)!r}: "
                             f"{cause_of(exc)}") from None
        except BaseException:
            self._rollback(con)
            raise
        self._last_write = time.monotonic()
        self._protect()
        return int(written)

    def _prepare(self, item: Staged) -> tuple[Staged, pl.DataFrame, int]:
        """De-duplicate a day and shape its rows for ``gsckit_rows``, before any transaction."""
        if item.day_state not in STATES:
            raise StoreError(f"cannot store {item.piece.key}: unknown day state "
                             f"{item.day_state!r}")
        try:
            frame, duplicates = dedupe(item.frame)
            return item, _row_frame(frame), duplicates
        except pl.exceptions.PolarsError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"cannot store the rows of {item.piece.key}: {first}") from None

    def _commit_chunk(self, chunk: list[tuple[Staged, pl.DataFrame, int]],
                      fetched_at: datetime, run_id: str) -> list[Commit]:
        con = self._connection()
        con.execute("BEGIN TRANSACTION")
        results = []
        try:
            next_id = self._next_id
            for item, frame, duplicates in chunk:
                piece, state = item.piece, item.day_state
                # read inside the transaction: the rule holds whatever planned this commit
                found = con.execute(f"SELECT slice_id, data_state, rows FROM {LEDGER} "
                                    "WHERE slice_key = ?", [piece.key]).fetchall()
                old_state, old_rows = (found[0][1], int(found[0][2])) if found else (None, 0)
                done = outcome(old_state, old_rows, state, frame.height)
                if done == KEPT:
                    if item.reason == RECHECK:  # asked once: a later sync does not ask again
                        con.execute(f"UPDATE {LEDGER} SET rechecked = true WHERE slice_key = ?",
                                    [piece.key])
                    results.append(Commit(0, duplicates, old_state or state, KEPT))
                    continue
                if not found:
                    slice_id, next_id = next_id, next_id + 1
                else:
                    slice_id = int(found[0][0])
                    con.execute(f"DELETE FROM {ROWS} WHERE slice_id = ?", [slice_id])
                if frame.height:
                    rows = frame.with_columns(pl.lit(slice_id, dtype=pl.Int32()).alias("slice_id"))
                    con.from_arrow(rows.__arrow_c_stream__()).insert_into(ROWS)
                con.execute(
                    f"INSERT OR REPLACE INTO {LEDGER} VALUES ({', '.join('?' * LEDGER_COLUMNS)})",
                    [piece.key, piece.site, piece.search_type, piece.dimensions_key,
                     piece.filters_key, piece.day, state, frame.height, item.pages,
                     item.requests, duplicates, fetched_at, run_id, slice_id, piece.data_state,
                     item.first_incomplete if state == FRESH else None, item.newest_final,
                     item.reason == RECHECK])
                con.execute(f"INSERT OR REPLACE INTO {DETAIL} VALUES ({', '.join('?' * 11)})",
                            [slice_id, *item.detail(frame)])
                results.append(Commit(frame.height, duplicates, state, done))
            con.execute("COMMIT")
        except BaseException:
            self._rollback(con)
            raise
        self._next_id = next_id
        return results

    def _rollback(self, con: duckdb.DuckDBPyConnection) -> None:
        """Undo an open transaction; a failed COMMIT has none left, an invalidated file neither.

        Either way the error that matters is the one that made the commit fail, so this never
        raises.
        """
        try:
            con.execute("ROLLBACK")
        except duckdb.FatalException:
            self._release(checkpoint=False)
        except duckdb.Error:
            pass

    def _failure(self, exc: duckdb.Error, chunk: list[tuple[Staged, pl.DataFrame, int]],
                 committed: list[Commit]) -> CommitError:
        days = [item.piece for item, _, _ in chunk]
        span = days[0].day.isoformat() if len(days) == 1 else (
            f"{days[0].day.isoformat()}..{days[-1].day.isoformat()}")
        what = f"{len(days)} day(s) of {days[0].site} ({span})"
        if isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc):
            self._release(checkpoint=False)
            hint = "DuckDB invalidated the open database; the next run reopens the file"
        else:
            hint = "nothing of those days was written"
        return CommitError(f"{cause_of(exc)} while committing {what} to {str(self.path)!r}; "
                           f"{hint}", committed=tuple(committed))

    def _protect(self) -> None:
        """DuckDB creates the WAL with the default umask; keep it as private as the file."""
        wal = self.path.with_name(self.path.name + ".wal")
        with contextlib.suppress(OSError):
            if wal.exists():
                wal.chmod(0o600)


def _row_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The page columns in ``gsckit_rows`` order: the slice id, absent columns as NULL, and
    ``ctr`` only where the view could not compute it back from clicks and impressions."""
    present = set(frame.columns)
    exprs: list[pl.Expr] = [pl.lit(0, dtype=pl.Int32()).alias("slice_id")]  # set per commit
    for col in ROW_COLUMNS:
        if col == "ctr":
            derived = pl.col("ctr") == pl.col("clicks") / pl.col("impressions")
            exprs.append(pl.when(derived).then(None).otherwise(pl.col("ctr")).alias("ctr"))
        elif col in present:
            exprs.append(pl.col(col))
        else:
            exprs.append(pl.lit(None, dtype=_TYPES.get(col, pl.String())).alias(col))
    return frame.select(exprs)


def split_stops(con: Any, streams: Iterable[tuple[str, str, str, str]]
                ) -> dict[tuple[str, str, str, str], tuple[date, int]]:
    """The streams of ``streams`` whose latest split day gained nothing, fetched less than
    :data:`~gsckit.split.RETRY_AFTER_DAYS` days ago: stream -> (that day, its partitions)."""
    wanted = set(streams)
    if not wanted:
        return {}
    rows = con.execute(
        f"SELECT site, search_type, dimensions, filters, date, partitions FROM ("
        f"SELECT l.site, l.search_type, l.dimensions, l.filters, l.date, l.fetched_at, "
        f"d.partitions, l.rows - d.unsplit_rows AS gained_rows, "
        f"d.clicks - d.unsplit_clicks AS gained_clicks, row_number() OVER (PARTITION BY "
        f"l.site, l.search_type, l.dimensions, l.filters ORDER BY l.fetched_at DESC, "
        f"l.date DESC) AS latest FROM {LEDGER} AS l JOIN {DETAIL} AS d USING (slice_id) "
        f"WHERE d.partitions > 0) WHERE latest = 1 AND gained_rows <= 0 AND gained_clicks <= 0 "
        f"AND fetched_at >= now() - INTERVAL {RETRY_AFTER_DAYS} DAY").fetchall()
    return {(site, kind, dims, filters): (day, int(parts))
            for site, kind, dims, filters, day, parts in rows
            if (site, kind, dims, filters) in wanted}


def final_totals(con: Any, keys: Iterable[tuple[str, str, str]]
                 ) -> dict[tuple[str, str, str], set[date]]:
    """The days of each (site, search type, filters) of ``keys`` whose final daily totals are
    recorded (none in a file older than the totals table)."""
    wanted = [list(key) for key in set(keys)]
    if not wanted or schema.version(con) < 4:
        return {}
    found: dict[tuple[str, str, str], set[date]] = {}
    rows = con.execute(
        f"SELECT site, search_type, filters, date FROM {TOTALS} WHERE data_state = 'final' "
        "AND [site, search_type, filters] IN (SELECT unnest(?::VARCHAR[][]))", [wanted]).fetchall()
    for site, search_type, filters, day in rows:
        found.setdefault((site, search_type, filters), set()).add(day)
    return found
