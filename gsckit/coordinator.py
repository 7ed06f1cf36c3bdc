"""The engine: feeder → bounded batch queue → N workers → one writer, under a halt switch.

A batch is one page request (slice, startRow). The feeder takes an "unpersisted" permit before a
slice's first batch enters the queue and the writer gives it back after the slice's commit, so at
most ``max_unpersisted`` days are fetched-but-not-committed, and every queued batch can run without
waiting for anything but the rate limiter: no deadlock at any ``max_concurrency``. A full page
queues the next startRow (ahead of new days); a short or empty page ends the day, whose pages are
committed together by the writer thread. Workers check the halt switch before and after every HTTP
call; an unrecoverable error cancels every task (in-flight requests, limiter waits, backoffs,
pauses) through the TaskGroup and nothing partial is committed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from .client import Client, Emit
from .config import EngineConfig
from .errors import CommitError, GsckitError, RunHalted, StoreError
from .planner import Slice
from .store import Commit, Staged, Store

_CONTINUE, _NEW = 0, 1
# DuckDB's row-group size: the writer hands ready days to the store in groups up to it (and
# never waits for more to arrive); the store commits them in transactions below it
_GROUP_ROWS = 122_880
# how often an idle writer asks the store whether a reader is waiting for the file
_IDLE_CHECK_S = 0.05


@dataclass(frozen=True)
class Report:
    """What a backfill did. ``ok`` is true when every planned day is committed."""

    run_id: str
    slices: int
    skipped: int
    done: int
    failed: int
    rows: int
    requests: int
    retries: int
    duplicates: int
    wall_s: float
    peak_qpm: int
    max_queue: int
    max_unpersisted: int
    halted: bool
    error: str | None = None
    halt_s: float | None = None
    failures: tuple[str, ...] = ()
    credentials: tuple[str, ...] = ()  # what happened to pooled credentials (lost, moved)

    @property
    def ok(self) -> bool:
        return not self.halted and self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = list(self.failures)
        data["credentials"] = list(self.credentials)
        return data

    def summary(self) -> str:
        """A one-paragraph human summary."""
        state = "halted" if self.halted else ("complete" if self.ok else "incomplete")
        text = (f"{state}: {self.done} days committed, {self.skipped} already done, "
                f"{self.failed} failed; {self.rows:,} rows from {self.requests} requests "
                f"({self.retries} retries) in {self.wall_s:.1f} s; peak {self.peak_qpm} "
                f"requests in any rate window")
        if self.error:
            text += f"\n{self.error}"
        for note in self.credentials:
            text += f"\ncredentials: {note}"
        return text


@dataclass
class _SliceState:
    piece: Slice
    pages: dict[int, pl.DataFrame] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)
    end: int | None = None
    requests: int = 0
    rows: int = 0
    closed: bool = False

    def complete(self, row_limit: int) -> bool:
        if self.end is None:
            return False
        return all(s in self.pages for s in range(0, self.end + 1, row_limit))


class _Halt(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.at = time.perf_counter()


class Engine:
    """Runs a list of slices to completion (or halt) with one client and one store."""

    def __init__(self, slices: Sequence[Slice], *, config: EngineConfig, client: Client,
                 store: Store, emit: Emit, skipped: int = 0, run_id: str | None = None) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._emit = emit
        self._slices = list(dict.fromkeys(slices))
        self._skipped = skipped
        self._queue: asyncio.PriorityQueue[tuple[int, int, str, int]] = asyncio.PriorityQueue(
            maxsize=config.queue_size)
        self._permits = asyncio.Semaphore(config.max_unpersisted)
        self._commits: asyncio.Queue[_SliceState] = asyncio.Queue()
        self._states: dict[str, _SliceState] = {}
        self._multi_page: dict[tuple[str, ...], bool] = {}
        self._seq = itertools.count()
        self._remaining = len(self._slices)
        self._all_done = asyncio.Event()
        self._halted = asyncio.Event()
        self._unpersisted = 0
        self.max_queue = 0
        self.max_unpersisted = 0
        self._done = self._failed = self._rows = self._duplicates = 0
        self._failures: list[str] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._committing: tuple[list[_SliceState], Future[list[Commit]]] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gsckit-writer")

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def unpersisted(self) -> int:
        return self._unpersisted

    async def run(self) -> Report:
        """Fetch and commit every slice; raise :class:`RunHalted` on an unrecoverable error."""
        started = time.perf_counter()
        self._emit("run_start", run_id=self.run_id, slices=len(self._slices) + self._skipped,
                   skipped=self._skipped, todo=len(self._slices),
                   max_concurrency=self.config.max_concurrency, qpm=self.config.qpm,
                   qpm_window_s=self.config.qpm_window_s)
        halt: _Halt | None = None
        halt_s: float | None = None
        try:
            async with asyncio.TaskGroup() as group:
                helpers = [group.create_task(self._feed()), group.create_task(self._write()),
                           group.create_task(self._tick())]
                workers = [group.create_task(self._work())
                           for _ in range(self.config.max_concurrency)]
                if not self._slices:
                    self._all_done.set()
                await self._all_done.wait()
                for task in (*workers, *helpers):
                    task.cancel()
        except* _Halt as group_error:
            first = group_error.exceptions[0]
            assert isinstance(first, _Halt)
            halt, halt_s = first, time.perf_counter() - first.at
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
            self._settle_commit()
            for timer in self._timers:
                timer.cancel()
        self._emit_qpm()
        report = Report(
            run_id=self.run_id, slices=len(self._slices) + self._skipped, skipped=self._skipped,
            done=self._done, failed=self._failed, rows=self._rows,
            requests=self.client.meter.total, retries=self.client.retries,
            duplicates=self._duplicates, wall_s=round(time.perf_counter() - started, 3),
            peak_qpm=self.client.meter.peak, max_queue=self.max_queue,
            max_unpersisted=self.max_unpersisted, halted=halt is not None,
            error=str(halt.cause) if halt else None,
            halt_s=round(halt_s, 4) if halt_s is not None else None,
            failures=tuple(self._failures), credentials=tuple(self.client.pool.notes))
        self._emit("run_end", **report.to_dict())
        if halt is not None:
            raise RunHalted(halt.cause, report)
        return report

    async def _feed(self) -> None:
        row_limit = self.config.row_limit
        for piece in self._slices:
            await self._permits.acquire()
            self._unpersisted += 1
            self.max_unpersisted = max(self.max_unpersisted, self._unpersisted)
            state = _SliceState(piece)
            self._states[piece.key] = state
            await self._enqueue(state, 0, _NEW)
            if self.config.prefetch and self._multi_page.get(piece.stream):
                await self._enqueue(state, row_limit, _NEW)

    async def _enqueue(self, state: _SliceState, start_row: int, priority: int) -> None:
        if start_row in state.queued:
            return
        state.queued.add(start_row)
        await self._queue.put((priority, next(self._seq), state.piece.key, start_row))
        self.max_queue = max(self.max_queue, self._queue.qsize())

    async def _work(self) -> None:
        while True:
            _, _, key, start_row = await self._queue.get()
            state = self._states.get(key)
            if state is None or state.closed or (state.end is not None and start_row > state.end):
                continue
            if self._halted.is_set():
                return
            if self._park(state, start_row):
                continue
            try:
                page = await self.client.fetch_page(state.piece, start_row)
            except GsckitError as exc:
                if getattr(exc, "retryable", False):
                    self._fail(state, start_row, exc)
                    continue
                self._halted.set()
                self._emit("halt", site=state.piece.site, day=state.piece.day, error=str(exc))
                raise _Halt(exc) from None
            if self._halted.is_set():
                return
            state.requests += page.attempts
            await self._on_page(state, start_row, page.frame)

    def _park(self, state: _SliceState, start_row: int) -> bool:
        """Set a paused site's batch aside until the pause ends, so workers serve other sites."""
        loop = asyncio.get_running_loop()
        resume = self.client.paused_until(state.piece.site)
        if resume <= loop.time():
            return False
        item = (_CONTINUE, next(self._seq), state.piece.key, start_row)
        self._timers.append(loop.call_at(resume, self._queue.put_nowait, item))
        return True

    async def _on_page(self, state: _SliceState, start_row: int, frame: pl.DataFrame) -> None:
        if state.closed:
            return
        state.pages[start_row] = frame
        state.rows += frame.height
        row_limit = self.config.row_limit
        if frame.height >= row_limit:
            await self._enqueue(state, start_row + row_limit, _CONTINUE)
        else:
            state.end = start_row if state.end is None else min(state.end, start_row)
        if state.complete(row_limit):
            state.closed = True
            self._multi_page[state.piece.stream] = bool(state.end)
            await self._commits.put(state)

    def _fail(self, state: _SliceState, start_row: int, error: BaseException) -> None:
        if state.closed or (state.end is not None and start_row > state.end):
            return
        state.closed = True
        self._failed += 1
        self._failures.append(f"{state.piece.key}: {error}")
        self._emit("slice_failed", site=state.piece.site, day=state.piece.day,
                   search_type=state.piece.search_type, error=str(error))
        self._release(state)

    def _release(self, state: _SliceState) -> None:
        self._states.pop(state.piece.key, None)
        self._unpersisted -= 1
        self._permits.release()
        self._remaining -= 1
        if self._remaining == 0:
            self._all_done.set()

    async def _write(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._commits.get(), _IDLE_CHECK_S)
            except TimeoutError:
                # the store lends the file to a waiting reader while no day is ready
                await asyncio.wrap_future(self._pool.submit(self.store.idle))
                continue
            group = [first]
            rows = group[0].rows
            while rows < _GROUP_ROWS and not self._commits.empty():
                group.append(self._commits.get_nowait())
                rows += group[-1].rows
            future = self._pool.submit(self._commit, group)
            self._committing = (group, future)
            try:
                results = await asyncio.wrap_future(future)
            except StoreError as exc:
                saved = exc.committed if isinstance(exc, CommitError) else ()
                for state, result in zip(group, saved, strict=False):
                    self._account(state, result)  # days saved before the failing one
                self._halted.set()
                raise _Halt(exc) from None
            self._committing = None
            for state, result in zip(group, results, strict=True):
                self._account(state, result)

    def _settle_commit(self) -> None:
        """Count a commit the writer thread finished while the run was being stopped."""
        if self._committing is None:
            return
        group, future = self._committing
        self._committing = None
        if future.done() and not future.cancelled() and future.exception() is None:
            for state, result in zip(group, future.result(), strict=True):
                self._account(state, result)

    def _account(self, state: _SliceState, result: Commit) -> None:
        self._done += 1
        self._rows += result.rows
        self._duplicates += result.duplicates
        piece = state.piece
        self._emit("slice_done", site=piece.site, day=piece.day, search_type=piece.search_type,
                   rows=result.rows, pages=len(state.pages), requests=state.requests,
                   duplicates=result.duplicates)
        self._release(state)

    def _commit(self, group: list[_SliceState]) -> list[Commit]:
        staged = []
        for state in group:
            assert state.end is not None
            frames = [state.pages[s] for s in sorted(state.pages) if s <= state.end]
            frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
            staged.append(Staged(state.piece, frame, len(frames), state.requests))
        return self.store.commit_slices(staged, run_id=self.run_id)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.qpm_report_s)
            self._emit_qpm()

    def _emit_qpm(self) -> None:
        now = asyncio.get_running_loop().time()
        in_window = self.client.meter.current(now)
        self._emit("qpm", qpm=round(self.client.meter.rate(now), 1), in_window=in_window,
                   peak=self.client.meter.peak,
                   target=self.config.qpm, window_s=self.config.qpm_window_s,
                   queue=self._queue.qsize(), unpersisted=self._unpersisted,
                   done=self._done, failed=self._failed, todo=len(self._slices))
