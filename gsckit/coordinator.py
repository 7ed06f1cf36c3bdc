"""The engine: feeder → bounded batch queue → N workers → one writer, under a halt switch.

A batch is one page request (slice, startRow). Memory is bounded by what it costs, in pages: a
batch holds one *unpersisted page* from the moment it is queued until its day is committed (or
the page is dropped), and the feeder admits a new day (its first page, and its second at once
when the stream needs several) only while fewer than ``max_unpersisted_pages`` are held and no
continuation waits for one. A full page queues the next startRow ahead of new days; a page that
would exceed the bound waits, except the next page of the oldest day in progress, which is
always queued: the days that hold pages can always finish, so no setting of ``max_concurrency``
or of the bound can deadlock. A short or empty page ends the day, whose pages are committed
together by the writer thread.

A day whose answer reaches the API's 50,000-row cap is split (unless ``split`` says not to):
its partitions (:mod:`gsckit.split`) are fetched by child states of the day, each paged like a
day through the same queue, limiter, retries, pauses and page bound; the day keeps the pages of
its own answer and of every partition it keeps until it is committed, once, after all of them
are complete, as their merged rows. What the split gained is measured at the commit, and a
split that gained nothing stops splitting on its stream.

Sites are independent. A load-quota pause parks a site: its requests are set aside (its days in
progress keep the pages they have) and its days not yet started wait, until a timer ends the
pause; no worker sleeps for it, so the workers serve the other sites. Then one request probes
the site; if the load quota answers it again, the quota persists and the site is stopped (its
remaining days are dropped and reported, and the others finish); otherwise everything it set
aside goes on.

Workers check the halt switch before and after every HTTP call; an unrecoverable error cancels
every task (in-flight requests, limiter waits, backoffs) through the TaskGroup and nothing partial
is committed. Any unexpected exception in a worker, the feeder, the writer or a listener ends the
run the same way, as :class:`RunHalted` with an :class:`InternalError` (traceback in the audit
log); an audit log that cannot be written halts the run with :class:`AuditLogError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import polars as pl

from .client import Client, Emit, QuotaExhausted, SitePaused
from .completeness import Completeness
from .config import EngineConfig
from .errors import (
    AuditLogError,
    BadRequest,
    CommitError,
    GsckitError,
    InternalError,
    RunHalted,
    StoreError,
)
from .planner import ROW_CAP, Slice
from .rows import merge
from .split import (
    Partition,
    SplitOutcome,
    SplitPlan,
    SplitPolicy,
    Steps,
    country_request,
    next_level,
)
from .store import FINAL, KEPT, PROMOTED, Commit, Staged, Store
from .store.writer import DayRecord
from .totals import TotalsRequest, parse_totals

_CONTINUE, _NEW = 0, 1
# DuckDB's row-group size: the writer hands ready days to the store in groups up to it (and
# never waits for more to arrive); the store commits them in transactions below it
_GROUP_ROWS = 122_880
# how often an idle writer asks the store whether a reader is waiting for the file
_IDLE_CHECK_S = 0.05


@dataclass(frozen=True)
class Report:
    """What a backfill or a sync did. ``ok`` is true when every planned day is committed.

    ``stopped_sites`` maps each site that stopped (its load quota persisted after a pause) to
    the reason; ``stopped`` counts the days that were not fetched because of it.

    Of the ``done`` days, ``final_days`` were committed with Google's final data (``promoted``
    of them replaced fresh data), ``fresh_days`` with fresh (partial) data, and ``kept`` answers
    were refused by the store (final rows are never replaced by fresh or empty answers).
    ``not_final_yet`` counts the days after Google's newest final day that a ``final`` run left
    alone (nothing asked, nothing written); ``probes`` the requests (of ``requests``) that asked
    Google for its newest final day, ``totals_requests`` those that asked for its daily totals.
    """

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
    max_unpersisted_pages: int
    halted: bool
    error: str | None = None
    halt_s: float | None = None
    failures: tuple[str, ...] = ()
    credentials: tuple[str, ...] = ()  # what happened to pooled credentials (lost, moved)
    stopped: int = 0
    stopped_sites: Mapping[str, str] = field(default_factory=dict)
    rate_limited: int = 0
    fresh_days: int = 0
    final_days: int = 0
    promoted: int = 0
    not_final_yet: int = 0
    kept: int = 0
    probes: int = 0
    totals_requests: int = 0
    split_days: int = 0
    split_requests: int = 0
    split_notes: tuple[str, ...] = ()
    completeness: Completeness | None = None

    @property
    def ok(self) -> bool:
        return not self.halted and self.failed == 0 and self.stopped == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = list(self.failures)
        data["credentials"] = list(self.credentials)
        data["stopped_sites"] = dict(self.stopped_sites)
        data["split_notes"] = list(self.split_notes)
        data["completeness"] = self.completeness.to_dict() if self.completeness else None
        return data

    def summary(self) -> str:
        """A one-paragraph human summary."""
        state = "halted" if self.halted else ("complete" if self.ok else "incomplete")
        promoted = f" ({self.promoted} promoted from fresh)" if self.promoted else ""
        states = [f"{count} {what}" for count, what in (
            (self.final_days, f"final{promoted}"), (self.fresh_days, "fresh"),
            (self.kept, "kept as they were")) if count]
        text = (f"{state}: {self.done} days committed"
                f"{' (' + '; '.join(states) + ')' if states else ''}, {self.skipped} already "
                f"done, {self.failed} failed"
                f"{f', {self.not_final_yet} not final yet' if self.not_final_yet else ''}; "
                f"{self.rows:,} rows from {self.requests} requests ({self.retries} retries) in "
                f"{self.wall_s:.1f} s; peak {self.peak_qpm} requests in any rate window")
        if self.rate_limited:
            text += f"; {self.rate_limited} rate-limit answers slowed the rate down"
        for site, reason in self.stopped_sites.items():
            text += f"\nstopped {site}: {reason}"
        if self.stopped:
            text += f"\n{self.stopped} days of stopped sites were not fetched; re-run later"
        if self.error:
            text += f"\n{self.error}"
        for note in self.credentials:
            text += f"\ncredentials: {note}"
        if self.completeness is not None:
            text += f"\ncompleteness: {self.completeness.line()}"
        else:
            text += "".join(f"\n{note}" for note in self.split_notes)
        return text


@dataclass(frozen=True)
class RunPlan:
    """What a run fetches, decided before its first page request (see :mod:`gsckit.dayplan`).

    ``slices`` in the order to start them; ``records`` how each fetched day is recorded (by slice
    key; a missing key: ``final`` for a ``final`` request, else ``fresh``); ``skipped`` days
    already complete; ``not_final_yet`` days left alone by a ``final`` run; ``failures`` days that
    could not be planned (counted as failed); ``stopped_sites`` and ``stopped`` sites whose load
    quota persisted while planning, and their days; ``probes`` the requests planning sent;
    ``totals`` chooses, from the store, the daily totals to ask for once every day is in.
    """

    slices: Sequence[Slice]
    records: Mapping[str, DayRecord] = field(default_factory=dict)
    skipped: int = 0
    not_final_yet: int = 0
    failures: Sequence[str] = ()
    stopped_sites: Mapping[str, str] = field(default_factory=dict)
    stopped: int = 0
    probes: int = 0
    totals: Callable[[], Sequence[TotalsRequest]] | None = None


@dataclass(eq=False)
class _SliceState:
    """A day in progress: its pages so far. ``spare``: a page kept for its second page while it
    is not known whether it needs one. ``dead`` once dropped (failed, or its site paused or
    stopped): its pages are given back and answers that still arrive for it are ignored.

    A day being split has a ``plan`` and ``children``: one state per partition answer (or
    country grouping) it waits for, each fetching its ``request`` and belonging to its ``day``.
    The day holds ``kept_pages`` (``kept_rows``) of the partitions it keeps until its commit.
    """

    piece: Slice
    order: int
    pages: dict[int, pl.DataFrame] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)
    spare: int = 0
    end: int | None = None
    requests: int = 0
    rows: int = 0
    closed: bool = False
    dead: bool = False
    request: Slice | None = None
    day: _SliceState | None = None
    partition: Partition | None = None
    countries: bool = False
    plan: SplitPlan | None = None
    children: list[_SliceState] = field(default_factory=list)
    kept_pages: int = 0
    kept_rows: int = 0
    ready: bool = False
    split_note: str = ""
    outcome: SplitOutcome | None = None
    merged_repeats: int = 0

    @property
    def fetch(self) -> Slice:
        """What this state's pages ask for: the day, a partition, or a country grouping."""
        return self.request or self.piece

    @property
    def owner(self) -> _SliceState:
        """The day this state's pages belong to (itself, for a day)."""
        return self.day or self

    def wants(self, start_row: int) -> bool:
        """Whether a page at ``start_row`` is still needed."""
        return not (self.closed or self.dead or (self.day is not None and self.day.dead)
                    or (self.end is not None and start_row > self.end))

    def complete(self, row_limit: int) -> bool:
        if self.end is None:
            return False
        return all(s in self.pages for s in range(0, self.end + 1, row_limit))


class _Halt(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.at = time.perf_counter()


def _internal(role: str, exc: BaseException) -> InternalError:
    error = InternalError(f"internal error in the {role}: {type(exc).__name__}: {exc} "
                          "(the traceback is in the audit log)")
    error.__cause__ = exc
    return error


class Engine:
    """Runs a list of slices to completion (or halt) with one client and one store.

    ``prepare``, when given, is awaited first and returns the :class:`RunPlan` (it may send
    requests through the client: they count in the report, and an unrecoverable error halts the
    run like any other); otherwise the plan is ``slices`` with ``skipped`` days already done.
    ``split`` decides which capped days are split into partitions.
    """

    def __init__(self, slices: Sequence[Slice] = (), *, config: EngineConfig, client: Client,
                 store: Store, emit: Emit, skipped: int = 0, run_id: str | None = None,
                 prepare: Callable[[], Awaitable[RunPlan]] | None = None,
                 split: SplitPolicy | None = None) -> None:
        self.config = config
        self.split = split or SplitPolicy()
        self.client = client
        self.store = store
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._emit = emit
        self._prepare = prepare
        self._plan = RunPlan(list(dict.fromkeys(slices)), skipped=skipped)
        self._slices = list(self._plan.slices)
        self._skipped = skipped
        self._queue: asyncio.PriorityQueue[tuple[int, int, _SliceState, int]] = (
            asyncio.PriorityQueue(maxsize=config.queue_size))
        self._ready: deque[_SliceState] = deque()
        self._ready_event = asyncio.Event()
        self._seq = itertools.count()
        # the feeder's work: the plan, days of sites whose pause ended, and paused sites' days
        self._backlog: deque[tuple[int, Slice]] = deque(enumerate(self._slices))
        self._resumed: deque[tuple[int, Slice]] = deque()
        self._deferred: dict[str, list[tuple[int, Slice]]] = {}
        self._parked: dict[str, list[tuple[_SliceState, int]]] = {}
        self._probing: dict[str, str | None] = {}
        self._due: list[str] = []
        self._more = asyncio.Event()
        # days admitted and not yet committed, oldest first
        self._open: dict[str, _SliceState] = {}
        self._multi_page: dict[tuple[str, ...], bool] = {}
        self._budget = config.unpersisted_pages
        self._units = 0
        self._waiting: deque[tuple[_SliceState, int]] = deque()
        self._room = asyncio.Event()
        self._paused: dict[str, asyncio.TimerHandle] = {}
        self._stopped: dict[str, str] = {}
        self._remaining = len(self._slices)
        self._all_done = asyncio.Event()
        self._halted = asyncio.Event()
        self.max_queue = 0
        self.max_unpersisted_pages = 0
        self._done = self._failed = self._stopped_days = self._rows = self._duplicates = 0
        self._fresh = self._final = self._promoted = self._kept = 0
        self._split_days = self._split_requests = self._totals_requests = 0
        self._failures: list[str] = []
        self._committing: tuple[list[_SliceState], Future[list[Commit]]] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gsckit-writer")

    @property
    def _planned_days(self) -> int:
        """Days the run accounts for: to fetch, already done, and those planning failed or
        stopped (days not final yet are counted apart)."""
        return (len(self._slices) + self._skipped + len(self._plan.failures)
                + self._plan.stopped)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def unpersisted_pages(self) -> int:
        """Pages queued, being fetched, or fetched and waiting for their day's commit."""
        return self._units

    async def run(self) -> Report:
        """Fetch and commit every slice; raise :class:`RunHalted` on an unrecoverable error."""
        started = time.perf_counter()
        halt: _Halt | None = None
        halt_s: float | None = None
        try:
            if self._prepare is not None:
                await self._planned(self._prepare)
            self._emit("run_start", run_id=self.run_id, slices=self._planned_days,
                       skipped=self._skipped,
                       todo=len(self._slices), not_final_yet=self._plan.not_final_yet,
                       max_concurrency=self.config.max_concurrency,
                       qpm=self.config.qpm, qpm_window_s=self.config.qpm_window_s)
            async with asyncio.TaskGroup() as group:
                jobs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                    ("feeder", self._feed), ("writer", self._write), ("gauge", self._tick)]
                jobs += [("worker", self._work)] * self.config.max_concurrency
                tasks = [group.create_task(self._guard(role, job)) for role, job in jobs]
                if not self._slices:
                    self._all_done.set()
                await self._all_done.wait()
                for task in tasks:
                    task.cancel()
            await self._record_totals()
        except* _Halt as group_error:
            first = group_error.exceptions[0]
            assert isinstance(first, _Halt)
            halt, halt_s = first, time.perf_counter() - first.at
        except* AuditLogError as group_error:  # the run_start line could not be written
            halt, halt_s = _Halt(group_error.exceptions[0]), 0.0
        except* Exception as group_error:  # cannot happen: every task is guarded
            halt, halt_s = _Halt(_internal("engine", group_error.exceptions[0])), 0.0
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)
            self._settle_commit()
            for timer in self._paused.values():
                timer.cancel()
        try:
            self._emit_qpm()
        except AuditLogError as exc:
            halt = halt or _Halt(exc)
        report = self._report(started, halt, halt_s)
        try:
            self._emit("run_end", **report.to_dict())
        except AuditLogError as exc:
            if halt is None:
                halt = _Halt(exc)
                report = dataclasses.replace(report, halted=True, error=str(exc))
        if halt is not None:
            raise RunHalted(halt.cause, report)
        return report

    def _report(self, started: float, halt: _Halt | None, halt_s: float | None) -> Report:
        return Report(
            run_id=self.run_id, slices=self._planned_days, skipped=self._skipped,
            done=self._done, failed=self._failed, rows=self._rows,
            requests=self.client.meter.total, retries=self.client.retries,
            duplicates=self._duplicates, wall_s=round(time.perf_counter() - started, 3),
            peak_qpm=self.client.meter.peak, max_queue=self.max_queue,
            max_unpersisted_pages=self.max_unpersisted_pages, halted=halt is not None,
            error=str(halt.cause) if halt else None,
            halt_s=round(halt_s, 4) if halt_s is not None else None,
            failures=tuple(self._failures), credentials=tuple(self.client.pool.notes),
            stopped=self._stopped_days, stopped_sites=dict(self._stopped),
            rate_limited=self.client.rate_limited, fresh_days=self._fresh,
            final_days=self._final, promoted=self._promoted,
            not_final_yet=self._plan.not_final_yet, kept=self._kept, probes=self._plan.probes,
            totals_requests=self._totals_requests,
            split_days=self._split_days, split_requests=self._split_requests,
            split_notes=self.split.notes)

    async def _record_totals(self) -> None:
        """Ask for the plan's daily totals, concurrently, and record them. Totals measure the
        rows, they are not data: one that fails after its retries, or whose site is paused or
        stopped for the load quota, is reported and left for a later run; an error that cannot
        be retried halts the run, as it would for a page."""
        if self._plan.totals is None:
            return
        try:
            wanted = await asyncio.wrap_future(self._pool.submit(self._plan.totals))
        except (StoreError, duckdb.Error) as exc:
            self._halted.set()
            raise _Halt(exc if isinstance(exc, StoreError) else StoreError(str(exc))) from None
        before = self.client.meter.total
        try:
            async with asyncio.TaskGroup() as group:
                for request in wanted:
                    if request.site not in self._stopped:
                        group.create_task(self._totals(request))
        finally:
            self._totals_requests = self.client.meter.total - before

    async def _totals(self, request: TotalsRequest) -> None:
        where = {"site": request.site, "search_type": request.search_type,
                 "start": request.start, "end": request.end}
        try:
            answer, _ = await self.client.send(request.site, request.body(), parse_totals,
                                               day=request.start,
                                               search_type=request.search_type, kind="totals")
        except (SitePaused, QuotaExhausted) as exc:
            self._emit("totals", **where, error=str(exc))
            return
        except GsckitError as exc:
            if getattr(exc, "retryable", False):
                self._emit("totals", **where, error=str(exc))
                return
            self._halted.set()
            self._emit("halt", site=request.site, error=str(exc))
            raise _Halt(exc) from None
        rows = request.rows(answer)
        try:
            written = await asyncio.wrap_future(
                self._pool.submit(self.store.commit_totals, rows, run_id=self.run_id))
        except StoreError as exc:
            self._halted.set()
            raise _Halt(exc) from None
        self._emit("totals", **where, days=written)

    async def _planned(self, prepare: Callable[[], Awaitable[RunPlan]]) -> None:
        """Await the plan, then take it on; an error that cannot be retried halts the run."""
        try:
            plan = await prepare()
        except (_Halt, asyncio.CancelledError):
            raise
        except GsckitError as exc:
            self._halted.set()
            with contextlib.suppress(AuditLogError):
                self._emit("halt", error=str(exc))
            raise _Halt(exc) from None
        except Exception as exc:
            self._halted.set()
            error = _internal("planner", exc)
            with contextlib.suppress(AuditLogError):
                self._emit("halt", error=str(error), traceback="".join(
                    traceback.format_exception(exc)))
            raise _Halt(error) from None
        self._plan = plan
        self._slices = list(dict.fromkeys(plan.slices))
        self._skipped = plan.skipped
        self._backlog = deque(enumerate(self._slices))
        self._remaining = len(self._slices)
        self._failed += len(plan.failures)
        self._failures += list(plan.failures)
        self._stopped.update(plan.stopped_sites)
        self._stopped_days += plan.stopped

    async def _guard(self, role: str, job: Callable[[], Awaitable[None]]) -> None:
        """Run one engine task; anything unexpected that escapes it halts the run."""
        try:
            await job()
        except (_Halt, asyncio.CancelledError):
            raise
        except AuditLogError as exc:
            self._halted.set()
            raise _Halt(exc) from None
        except Exception as exc:
            self._halted.set()
            error = _internal(role, exc)
            # the run halts anyway; if the audit log is what failed, there is nowhere to write
            with contextlib.suppress(AuditLogError):
                self._emit("halt", error=str(error), traceback="".join(
                    traceback.format_exception(exc)))
            raise _Halt(error) from None

    # the feeder -------------------------------------------------------------------------------

    async def _feed(self) -> None:
        row_limit = self.config.row_limit
        while True:
            item = self._next_day()
            if item is None:
                self._more.clear()
                await self._more.wait()
                continue
            order, piece = item
            # a day takes two pages at once unless its stream is known to need one: the second
            # is sent (prefetch) when the stream needs several, else kept spare until page 0
            # says whether it is needed, so a day never waits for a page for its second request
            several = self._multi_page.get(piece.stream)
            need = 1 if several is False else 2
            while (self._units + need > self._budget and self._units) or self._waiting:
                self._room.clear()
                await self._room.wait()
            if self._held_back(piece):
                self._set_aside(order, piece)  # the site paused or stopped meanwhile
                continue
            state = self._open[piece.key] = _SliceState(piece, order)
            self._enqueue(state, 0, _NEW)
            if need == 2 and several and self.config.prefetch:
                self._enqueue(state, row_limit, _NEW)
            elif need == 2:
                state.spare = 1
                self._units += 1

    def _next_day(self) -> tuple[int, Slice] | None:
        """The next day to start: resumed days first, then the plan; paused sites' days are
        set aside and stopped sites' days dropped on the way."""
        while self._due:
            self._resume_site(self._due.pop(0))
        while self._resumed or self._backlog:
            order, piece = (self._resumed or self._backlog).popleft()
            if self._held_back(piece):
                self._set_aside(order, piece)
                continue
            return order, piece
        return None

    def _held_back(self, piece: Slice) -> bool:
        """Whether a day may not start now: its site is paused, stopped, or being probed by
        another request."""
        site = piece.site
        return (site in self._paused or site in self._stopped
                or (site in self._probing and self._probing[site] != piece.key))

    def _set_aside(self, order: int, piece: Slice) -> None:
        if piece.site in self._stopped:
            self._stopped_days += 1
            self._finished_one()
        else:
            self._deferred.setdefault(piece.site, []).append((order, piece))

    # the page budget ----------------------------------------------------------------------------

    def _enqueue(self, state: _SliceState, start_row: int, priority: int) -> None:
        """Queue a page; it holds one unpersisted page from now on (its day's spare, if any)."""
        state.queued.add(start_row)
        if state.spare:
            state.spare -= 1
        else:
            self._units += 1
        self.max_unpersisted_pages = max(self.max_unpersisted_pages, self._units)
        self._queue.put_nowait((priority, next(self._seq), state, start_row))
        self.max_queue = max(self.max_queue, self._queue.qsize())

    def _continue(self, state: _SliceState, start_row: int) -> None:
        """Queue a day's next page if a page is free, or the day is the oldest in progress."""
        if start_row in state.queued:
            return
        site = state.piece.site
        if site in self._paused or site in self._probing:
            self._parked.setdefault(site, []).append((state, start_row))
        elif not self._queue.full() and (state.spare or self._units < self._budget
                                         or self._is_oldest(state)):
            self._enqueue(state, start_row, _CONTINUE)
        else:
            self._waiting.append((state, start_row))

    def _is_oldest(self, state: _SliceState) -> bool:
        """Whether ``state`` (or the day it belongs to) is the oldest day in progress among the
        sites that may send."""
        state = state.owner
        for candidate in self._open.values():
            site = candidate.piece.site
            if site not in self._paused and site not in self._probing:
                return candidate is state
        return False

    def _release(self, pages: int) -> None:
        """Give back ``pages``: waiting continuations get them first, then the feeder."""
        self._units -= pages
        if self._waiting:
            kept: deque[tuple[_SliceState, int]] = deque()
            for state, start_row in self._waiting:
                if not state.wants(start_row) or start_row in state.queued:
                    continue
                site = state.piece.site
                if site in self._paused or site in self._probing:
                    self._parked.setdefault(site, []).append((state, start_row))
                elif self._is_oldest(state) and not self._queue.full():
                    self._enqueue(state, start_row, _CONTINUE)
                else:
                    kept.append((state, start_row))
            while (kept and self._units < self._budget
                   and not self._queue.full()):
                state, start_row = kept.popleft()
                self._enqueue(state, start_row, _CONTINUE)
            self._waiting = kept
        if self._units < self._budget and not self._waiting:
            self._room.set()

    # workers ------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            _, _, state, start_row = await self._queue.get()
            if self._halted.is_set():
                return
            site = state.piece.site
            if not state.wants(start_row):
                self._release(1)
                self._probed(site)  # a probe that is no longer needed proves nothing
                continue
            try:
                page = await self.client.fetch_page(state.fetch, start_row)
            except SitePaused as paused:
                self._release(1)
                self._pause_site(site, paused.until)
                self._parked.setdefault(site, []).append((state, start_row))
                continue
            except QuotaExhausted as exc:
                self._release(1)
                self._stop_site(site, exc)
                continue
            except GsckitError as exc:
                if getattr(exc, "retryable", False):
                    self._release(1)
                    self._fail(state, start_row, exc)
                    self._probed(site)
                    continue
                if state.day is not None and isinstance(exc, BadRequest):
                    self._release(1)  # a partition Google refuses: keep the day unsplit
                    self._probed(site)
                    self._abandon_split(state.day, exc)
                    continue
                self._halted.set()
                self._emit("halt", site=state.piece.site, day=state.piece.day, error=str(exc))
                raise _Halt(exc) from None
            if self._halted.is_set():
                return
            self._probed(site)
            state.requests += page.attempts
            self._on_page(state, start_row, page.frame)

    def _on_page(self, state: _SliceState, start_row: int, frame: pl.DataFrame) -> None:
        if not state.wants(start_row):
            self._release(1)
            return
        state.pages[start_row] = frame
        state.rows += frame.height
        row_limit = self.config.row_limit
        following = start_row + row_limit
        if frame.height >= row_limit:
            self._multi_page[state.piece.stream] = True
        if frame.height >= row_limit and not self._split_at_cap(state, following):
            self._continue(state, following)
        else:
            state.end = start_row if state.end is None else min(state.end, start_row)
            if state.spare:
                state.spare = 0
                self._release(1)
        if state.complete(row_limit):
            state.closed = True
            if state.day is not None:
                self._part_answered(state)
                return
            self._multi_page[state.piece.stream] = bool(state.end)
            self._day_answered(state)

    # splitting capped days ----------------------------------------------------------------------

    def _split_at_cap(self, state: _SliceState, start_row: int) -> bool:
        """Whether an answer ends at the cap without asking for the (empty) page past it: it
        reached the cap, and will be split."""
        if start_row < ROW_CAP:
            return False
        if state.day is None:
            return self.split.applies(state.piece)
        return state.partition is not None and not state.countries and next_level(
            state.piece, state.partition) is not None

    def _day_answered(self, day: _SliceState) -> None:
        """A day's own answer is complete: commit it, or split it if it reached the cap."""
        if day.rows >= ROW_CAP:
            if self.split.applies(day.piece):
                frames = [day.pages[s] for s in sorted(day.pages) if s <= (day.end or 0)]
                day.plan = SplitPlan(day.piece, pl.concat(frames, how="vertical",
                                                          rechunk=False))
                self._emit("split", site=day.piece.site, day=day.piece.day,
                           search_type=day.piece.search_type, rows=day.rows)
                self._spawn(day, day.plan.begin())
                return
            day.split_note = self.split.why_not(day.piece)
        self._hand_over(day)

    def _spawn(self, day: _SliceState, steps: Steps) -> None:
        """Start fetching a split day's next partitions (and country groupings); hand the day
        to the writer once nothing is left to fetch."""
        assert day.plan is not None
        wanted = [(p, p.request(day.piece), False) for p in steps.partitions]
        wanted += [(p, country_request(day.piece, p), True) for p in steps.countries]
        for partition, request, countries in wanted:
            child = _SliceState(day.piece, day.order, request=request, day=day,
                                partition=partition, countries=countries)
            day.children.append(child)
            self._continue(child, 0)
        if day.plan.done:
            self._hand_over(day)

    def _part_answered(self, child: _SliceState) -> None:
        """A partition's (or country grouping's) answer is complete: the plan decides whether
        the day keeps its rows or splits it further."""
        day, plan, partition = child.day, child.owner.plan, child.partition
        assert day is not None and plan is not None and partition is not None
        frames = [child.pages[s] for s in sorted(child.pages) if s <= (child.end or 0)]
        frame = pl.concat(frames, how="vertical", rechunk=False) if len(frames) > 1 else (
            frames[0])
        pages = len(child.pages)
        child.pages.clear()
        day.children.remove(child)
        day.requests += child.requests
        plan.requests += child.requests
        if child.countries:
            steps = plan.countries(partition, frame)
            self._release(pages)
        else:
            kept = len(plan.parts)
            steps = plan.arrived(partition, frame)
            if len(plan.parts) > kept:
                day.kept_pages += pages
                day.kept_rows += frame.height
            else:
                self._release(pages)
        self._spawn(day, steps)

    def _abandon_split(self, day: _SliceState, error: GsckitError) -> None:
        """The API refused a partition: the day is committed with its own (capped) answer."""
        if day.dead or day.ready or day.plan is None:
            return
        day.split_note = self.split.refused(day.piece, error)
        self._emit("split_stopped", site=day.piece.site, day=day.piece.day,
                   search_type=day.piece.search_type, note=day.split_note)
        self._forget_split(day)
        self._hand_over(day)

    def _forget_split(self, day: _SliceState) -> None:
        """Drop a day's partitions (the ones held, and the answers still to come)."""
        pages = day.kept_pages + sum(len(child.pages) for child in day.children)
        for child in day.children:
            child.dead = True
            child.pages.clear()
        day.children.clear()
        day.plan = None
        day.kept_pages = day.kept_rows = 0
        self._release(pages)

    def _hand_over(self, day: _SliceState) -> None:
        """Queue a complete day for the writer."""
        day.ready = True
        self._ready.append(day)
        self._ready_event.set()

    def _drop(self, state: _SliceState) -> None:
        """Forget an unfinished day: its pages (and its partitions') are given back, late
        answers ignored."""
        state = state.owner
        self._forget_split(state)
        state.dead = True
        self._open.pop(state.piece.key, None)
        pages = len(state.pages) + state.spare
        state.pages.clear()
        state.spare = 0
        self._release(pages)

    def _fail(self, state: _SliceState, start_row: int, error: BaseException) -> None:
        if not state.wants(start_row):
            return
        state = state.owner
        self._drop(state)
        self._failed += 1
        self._failures.append(f"{state.piece.key}: {error}")
        self._emit("slice_failed", site=state.piece.site, day=state.piece.day,
                   search_type=state.piece.search_type, error=str(error))
        self._finished_one()

    def _finished_one(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            self._all_done.set()

    # sites: pause and stop ----------------------------------------------------------------------

    def _pause_site(self, site: str, until: float) -> None:
        """Park a site until ``until`` (loop time): its requests wait, and so do its new days."""
        if site in self._paused or site in self._stopped:
            return
        loop = asyncio.get_running_loop()
        self._paused[site] = loop.call_at(until, self._pause_ended, site)

    def _pause_ended(self, site: str) -> None:
        # a timer callback: the feeder (a guarded task) does the work
        self._due.append(site)
        self._more.set()

    def _resume_site(self, site: str) -> None:
        """The pause is over: send one request to see whether the load quota persists."""
        if self._paused.pop(site, None) is None:
            return  # stopped meanwhile
        parked = [(state, row) for state, row in self._parked.pop(site, [])
                  if state.wants(row)]
        self._emit("resume", site=site, parked=len(parked),
                   days=len(self._deferred.get(site, [])))
        if parked:
            self._probing[site] = None
            self._parked[site] = parked[1:]
            self._admit(*parked[0])
        elif self._deferred.get(site):
            order, piece = self._deferred[site].pop(0)
            self._probing[site] = piece.key
            self._resumed.appendleft((order, piece))
        self._more.set()

    def _probed(self, site: str) -> None:
        """A request of a site being probed was answered (not by the load quota): go on."""
        if self._probing.pop(site, "none") == "none":
            return
        for state, row in self._parked.pop(site, []):
            if state.wants(row):
                self._admit(state, row)
        days = self._deferred.pop(site, [])
        self._resumed = deque(sorted([*self._resumed, *days], key=lambda item: item[0]))
        self._more.set()

    def _admit(self, state: _SliceState, start_row: int) -> None:
        """Queue a set-aside page under the page bound (a site's probe goes at once)."""
        if start_row in state.queued:
            state.queued.discard(start_row)  # it was parked, not queued
        if (state.spare or self._units < self._budget
                or self._probing.get(state.piece.site, "none") is None):
            self._enqueue(state, start_row, _CONTINUE)
        else:
            self._waiting.append((state, start_row))

    def _stop_site(self, site: str, error: GsckitError) -> None:
        """Stop a site whose load quota persists; its remaining days are dropped and reported."""
        if site in self._stopped:
            return
        self._stopped[site] = str(error)
        timer = self._paused.pop(site, None)
        if timer is not None:
            timer.cancel()
        self._probing.pop(site, None)
        self._parked.pop(site, None)
        dropped = [s for s in self._open.values() if s.piece.site == site and not s.ready]
        for state in dropped:
            self._drop(state)
        waiting = self._deferred.pop(site, [])
        resumed = [item for item in self._resumed if item[1].site == site]
        self._resumed = deque(item for item in self._resumed if item[1].site != site)
        days = len(dropped) + len(waiting) + len(resumed)
        self._emit("site_stopped", site=site, error=str(error), days=days)
        for _ in range(days):
            self._stopped_days += 1
            self._finished_one()

    # the writer ---------------------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            if not self._ready:
                self._ready_event.clear()
                try:
                    await asyncio.wait_for(self._ready_event.wait(), _IDLE_CHECK_S)
                except TimeoutError:
                    # the store lends the file to a waiting reader while no day is ready
                    await asyncio.wrap_future(self._pool.submit(self.store.idle))
                continue
            group = [self._ready.popleft()]
            rows = group[0].rows + group[0].kept_rows
            while rows < _GROUP_ROWS and self._ready:
                group.append(self._ready.popleft())
                rows += group[-1].rows + group[-1].kept_rows
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
        self._duplicates += result.duplicates + state.merged_repeats
        if result.outcome == KEPT:
            self._kept += 1
        elif result.state == FINAL:
            self._final += 1
            if result.outcome == PROMOTED:
                self._promoted += 1
        else:
            self._fresh += 1
        piece = state.piece
        self._open.pop(piece.key, None)
        pages = len(state.pages)
        state.pages.clear()
        self._release(pages + state.kept_pages)
        outcome = state.outcome
        extra: dict[str, Any] = {}
        if outcome is not None:
            self._split_days += 1
            self._split_requests += outcome.requests
            extra = {"partitions": outcome.partitions, "gained_rows": outcome.gained_rows,
                     "gained_clicks": outcome.gained_clicks, "split_requests": outcome.requests}
        elif state.split_note:
            extra = {"capped": True, "split_note": state.split_note}
        self._emit("slice_done", site=piece.site, day=piece.day, search_type=piece.search_type,
                   rows=result.rows, pages=pages, requests=state.requests,
                   duplicates=result.duplicates, state=result.state, outcome=result.outcome,
                   **extra)
        if outcome is not None:
            note = self.split.measured(piece, outcome)
            if note is not None:
                self._emit("split_stopped", site=piece.site, day=piece.day,
                           search_type=piece.search_type, note=note)
        self._finished_one()

    def _commit(self, group: list[_SliceState]) -> list[Commit]:
        staged = []
        for state in group:
            assert state.end is not None
            frames = [state.pages[s] for s in sorted(state.pages) if s <= state.end]
            pages = len(frames)
            record = self._plan.records.get(state.piece.key)
            recorded: dict[str, Any] = {} if record is None else {
                "state": record.state, "reason": record.reason,
                "first_incomplete": record.first_incomplete, "newest_final": record.newest_final}
            if state.plan is not None:
                # a split day: the merged partitions, measured against its own answer
                frame, state.merged_repeats = merge(state.plan.parts)
                state.outcome = state.plan.outcome(frame)
                # a split that gained nothing shows Google capped before filtering: the rows
                # past the cap are still missing
                capped = state.outcome.capped_partitions > 0 or state.outcome.gained_nothing
                staged.append(Staged(state.piece, frame, pages, state.requests, capped=capped,
                                     split=state.outcome, **recorded))
                continue
            frame = pl.concat(frames, how="vertical", rechunk=False) if len(frames) > 1 else (
                frames[0])
            staged.append(Staged(state.piece, frame, pages, state.requests,
                                 split_note=state.split_note, **recorded))
        return self.store.commit_slices(staged, run_id=self.run_id)

    # the gauge ----------------------------------------------------------------------------------

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
                   queue=self._queue.qsize(), unpersisted_pages=self._units,
                   done=self._done, failed=self._failed, todo=len(self._slices))
