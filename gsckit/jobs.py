"""Background jobs: a backfill that keeps going while the notebook (or the script) does other work.

``job = gsckit.start(...)`` takes :func:`gsckit.backfill`'s arguments (``gsckit.start_sync(...)``
:func:`gsckit.sync`'s), checks them at once (bad input raises right there, before anything is
sent or written) and returns a :class:`Job`. The
engine runs on an event loop of its own in a background thread, so it keeps going whatever the
caller does next: a notebook cell that awaits, a cell that blocks in a DuckDB query, a script's
own loop or a script with no loop at all. Reads in the same process see every committed day while
it runs (the store serves them from the writer's own connection).

Where its display goes: in a notebook the progress bar, the QPM gauge and a status line are shown
by ``start`` itself, in the cell that called it, and updated in place from the job's thread (a
widget update is not tied to a cell). In a terminal the bar goes to stderr, as a backfill's.

At interpreter exit a job still running is cancelled (a commit in progress finishes, nothing
partial is written) and one line on stderr says so: a script that wants the whole run waits
with ``job.result()``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import inspect
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from concurrent import futures
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from . import auth
from .config import EngineConfig, check_writable
from .coordinator import Report
from .errors import DatabaseLocked, RunHalted
from .events import Event
from .planner import make_query
from .progress import Progress, in_notebook
from .runner import backfill_async, check_split, run_sync, sync_async, sync_scope
from .store.access import check_path
from .store.locks import current_writer

EXIT_WAIT_S = 60.0  # how long interpreter exit waits for a cancelled job's commit to finish
_RUNNING: set[Job] = set()
_RUNNING_LOCK = threading.Lock()


@dataclass(frozen=True)
class JobProgress:
    """What a background job has done so far, from the engine's events (a snapshot)."""

    state: str  # "starting", "running", "done", "failed" or "cancelled"
    days: int | None  # days to fetch (None until the run has read the ledger)
    skipped: int  # days already committed before the run
    done: int  # days committed by this run
    failed: int
    rows: int
    requests: int
    retries: int
    qpm: float  # requests per minute at the last report (every ``qpm_report_s``)
    peak_qpm: int  # most requests in any rate window so far
    elapsed_s: float

    @property
    def fraction(self) -> float | None:
        """Share of the days to fetch that are settled (committed or failed), if known."""
        if self.days is None:
            return None
        return 1.0 if self.days == 0 else (self.done + self.failed) / self.days


class _Tracker:
    """Counts the engine's events for :attr:`Job.progress` (called on the job's thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.days: int | None = None
        self.skipped = self.done = self.failed = self.rows = 0
        self.requests = self.retries = self.peak = 0
        self.qpm = 0.0

    def __call__(self, event: Event) -> None:
        data = event.data
        with self._lock:
            if event.kind == "run_start":
                self.days, self.skipped = int(data["todo"]), int(data["skipped"])
            elif event.kind == "slice_done":
                self.done += 1
                self.rows += int(data["rows"])
            elif event.kind == "slice_failed":
                self.failed += 1
            elif event.kind == "request":
                self.requests += 1
            elif event.kind == "retry":
                self.retries += 1
            elif event.kind == "qpm":
                self.qpm = float(data["qpm"])
                self.peak = max(self.peak, int(data["peak"]))

    def snapshot(self, state: str, elapsed_s: float) -> JobProgress:
        with self._lock:
            return JobProgress(state=state, days=self.days, skipped=self.skipped,
                               done=self.done, failed=self.failed, rows=self.rows,
                               requests=self.requests, retries=self.retries, qpm=self.qpm,
                               peak_qpm=self.peak, elapsed_s=round(elapsed_s, 3))


class _Display:
    """A job's display: the engine's progress bar and gauge and, in a notebook, a status line
    under them. Built and shown by ``start`` in the caller's cell, updated from the job."""

    def __init__(self, progress: Progress, qpm: int) -> None:
        self.progress = progress
        self._status: Any = None
        if progress.notebook:
            progress.show(qpm)
            try:
                import ipywidgets as widgets
                from IPython.display import display
            except ImportError:
                return
            self._status = widgets.HTML(value="running in the background; the notebook stays "
                                              "usable (<code>job.cancel()</code> stops it)")
            display(self._status)

    def __call__(self, event: Event) -> None:
        self.progress(event)

    def finish(self, text: str) -> None:
        self.progress.close()
        if self._status is not None:
            self._status.value = _html(text)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _html(text: str) -> str:
    return "<br>".join(escape(line) for line in text.splitlines())


class Job:
    """A backfill (or another engine run) going on in a background thread.

    ``done()``, ``running()``, ``cancelled()``; ``cancel()`` stops it (a commit in progress
    finishes, nothing partial is written, and a re-run resumes); ``await job`` and
    ``job.result(timeout)`` give its :class:`Report` or raise its error (``RunHalted``, ...)
    or :class:`concurrent.futures.CancelledError`; ``exception()``; ``report`` (also set for a
    halted run); ``progress`` (a :class:`JobProgress`). Made by :func:`start`.
    """

    def __init__(self, run: Callable[[], Coroutine[Any, Any, Report]], *, what: str,
                 tracker: _Tracker, display: _Display | None) -> None:
        self.what = what
        self._run = run
        self._tracker = tracker
        self._display = display
        self._future: Future[Report] = Future()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Report] | None = None
        self._cancel_asked = False
        self._state = "starting"
        self._report: Report | None = None
        self._error: BaseException | None = None
        self._started = time.monotonic()
        self._ended: float | None = None
        # not run in a copy of the caller's context: in a kernel, the job's messages then belong
        # to whichever cell is running, as a frontend or nbclient expects of late updates
        self._thread = threading.Thread(target=self._main, daemon=True, name="gsckit-job")
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        self._thread.start()

    # --- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            with asyncio.Runner() as runner:
                report = runner.run(self._body())
        except (asyncio.CancelledError, CancelledError):
            self._finish("cancelled", None, None)
        except BaseException as exc:  # the job's outcome: raised again by result()
            halted = exc.report if isinstance(exc, RunHalted) else None
            self._finish("failed", halted, exc)
        else:
            self._finish("done", report, None)

    async def _body(self) -> Report:
        with self._lock:
            if self._cancel_asked:
                raise asyncio.CancelledError
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()  # type: ignore[assignment]
            self._state = "running"
        return await self._run()

    def _finish(self, state: str, report: Report | None, error: BaseException | None) -> None:
        with self._lock:
            self._state, self._report, self._error = state, report, error
            self._ended = time.monotonic()
            self._loop = self._task = None
        if self._display is not None:
            with contextlib.suppress(Exception):  # a broken display must not lose the outcome
                self._display.finish(self.summary())
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        if state == "cancelled":
            self._future.cancel()
            self._future.set_running_or_notify_cancel()  # wakes futures.wait() too
        elif error is not None:
            self._future.set_exception(error)
        else:
            assert report is not None
            self._future.set_result(report)

    # --- the handle ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the job to stop; ``False`` if it had already finished. Returns at once: the
        job ends when in-flight requests are cut and a commit in progress has finished."""
        with self._lock:
            if self._future.done() or self._state in ("done", "failed", "cancelled"):
                return False
            self._cancel_asked = True
            if self._loop is not None and self._task is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self._task.cancel)
        return True

    def done(self) -> bool:
        """True once the job has finished: completed, failed or cancelled."""
        return self._future.done()

    def running(self) -> bool:
        return not self._future.done()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The job's error (``None`` if it completed), waiting like :meth:`result`."""
        self.wait(timeout)
        return self._future.exception(timeout=0)

    def result(self, timeout: float | None = None) -> Report:
        """Wait for the job and return its :class:`Report`, or raise its error.

        Raises :class:`concurrent.futures.CancelledError` if it was cancelled and
        ``TimeoutError`` if it is still running after ``timeout`` seconds. Called in a running
        loop (a notebook cell), the loop keeps running while it waits, so a simulator or
        anything else on it still answers; ``await job`` is the nicer form there.
        """
        self.wait(timeout)
        return self._future.result(timeout=0)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job finishes or ``timeout`` seconds pass; true if it has finished."""
        if self._future.done():
            return True
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            futures.wait([self._future], timeout)
            return self._future.done()
        with contextlib.suppress(TimeoutError):
            run_sync(asyncio.wait_for(self._settled(), timeout))
        return self._future.done()

    def __await__(self) -> Generator[Any, None, Report]:
        return self._outcome().__await__()

    async def _outcome(self) -> Report:
        await self._settled()
        return self._future.result(timeout=0)

    async def _settled(self) -> None:
        """Wait, without blocking the awaiting loop, until the job has finished; cancelling
        this wait leaves the job running."""
        if self._future.done():
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def settle() -> None:
            if not waiter.done():
                waiter.set_result(None)

        def wake(_: Future[Report]) -> None:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(settle)

        self._future.add_done_callback(wake)
        await waiter

    @property
    def report(self) -> Report | None:
        """The run's :class:`Report` once it has completed or halted; ``None`` before, and for a
        cancelled run or one that never started (bad credentials at the pre-flight)."""
        return self._report

    @property
    def progress(self) -> JobProgress:
        """What the job has done so far."""
        with self._lock:
            state, ended = self._state, self._ended
        elapsed = (ended or time.monotonic()) - self._started
        return self._tracker.snapshot(state, elapsed)

    def summary(self) -> str:
        """One line on where the job stands (its report's summary once it has one)."""
        figures = self.progress
        if self._report is not None:
            return self._report.summary()
        days = "?" if figures.days is None else f"{figures.days:,}"
        counts = (f"{figures.done:,} of {days} days committed, {figures.failed:,} failed, "
                  f"{figures.rows:,} rows from {figures.requests:,} requests")
        if figures.state == "cancelled":
            return (f"cancelled after {figures.elapsed_s:.1f} s: {counts}; completed days are "
                    "saved, re-run to resume")
        if figures.state == "failed":
            return f"failed: {_first_line(self._error)}" if self._error else "failed"
        return f"{figures.state}: {counts}, {figures.elapsed_s:.1f} s so far"

    def __repr__(self) -> str:
        return f"<gsckit.Job {self.what}: {self.summary().splitlines()[0]}>"


def start(*args: Any, **kwargs: Any) -> Job:
    """Start a backfill in the background and return its :class:`Job` at once.

    Takes :func:`gsckit.backfill`'s arguments. The query, the settings, the credentials and
    the database are checked here (a :class:`ConfigError` or :class:`DatabaseLocked` is raised
    in the caller, before anything is sent or written); the pre-flight and the run happen in
    the job.
    """
    bound = inspect.signature(backfill_async).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = bound.arguments
    query = make_query(arguments["site"], arguments["start"], arguments["end"],
                       dimensions=arguments["dimensions"],
                       search_type=arguments["search_type"],
                       data_state=arguments["data_state"], filters=arguments["filters"],
                       today=arguments["today"])
    # the checked values go on, so a horizon warning is given once, here, and iterables are
    # not consumed twice
    arguments.update(site=list(query.sites), start=query.start, end=query.end,
                     dimensions=list(query.dimensions), search_type=list(query.search_types),
                     data_state=query.data_state, filters=list(query.filters))
    qpm = _check_run(arguments)
    what = f"backfill of {_sites(query.sites)} {query.start}..{query.end}"
    return launch(backfill_async, arguments, what=what, qpm=qpm)


start.__signature__ = inspect.signature(backfill_async).replace(  # type: ignore[attr-defined]
    return_annotation="Job")


def start_sync(*args: Any, **kwargs: Any) -> Job:
    """Start a sync in the background and return its :class:`Job` at once.

    Takes :func:`gsckit.sync`'s arguments, checked here as :func:`start` checks a backfill's.
    """
    bound = inspect.signature(sync_async).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = bound.arguments
    scope = sync_scope(arguments["site"], arguments["start"], arguments["dimensions"],
                       arguments["search_type"], arguments["data_state"],
                       arguments["filters"], arguments["lookback_days"], arguments["today"])
    query = scope.query
    arguments.update(site=list(query.sites), dimensions=list(query.dimensions),
                     search_type=list(query.search_types), data_state=query.data_state,
                     filters=list(query.filters))
    qpm = _check_run(arguments)
    what = f"sync of {_sites(query.sites)}"
    return launch(sync_async, arguments, what=what, qpm=qpm)


start_sync.__signature__ = inspect.signature(sync_async).replace(  # type: ignore[attr-defined]
    return_annotation="Job")


def _check_run(arguments: dict[str, Any]) -> int:
    """Check a run's settings, split mode, credentials, audit log and database in the caller;
    say which credentials it uses; return its rate limit (per minute)."""
    shortcuts = ("max_concurrency", "qpm", "qpm_window_s", "base_url")
    overrides = {name: arguments[name] for name in shortcuts if arguments[name] is not None}
    config = dataclasses.replace(arguments["config"] or EngineConfig(), **overrides)
    check_split(arguments["split"])
    credentials = arguments["credentials"]
    if credentials is not None and not isinstance(credentials, str | Path):
        arguments["credentials"] = credentials = list(credentials)
    members = auth.resolve_all(arguments["token"], credentials,
                               impersonate=arguments["impersonate"])
    if arguments["audit_log"] is not None:
        check_writable(arguments["audit_log"], "audit log")
    check_writer(Path(arguments["db"]))
    progress = arguments["progress"]
    if progress is not False and progress != "off":  # a person is watching
        for creds in members:
            print(f"gsckit: credentials: {creds.source}", file=sys.stderr)
    return config.qpm


def _sites(sites: tuple[str, ...]) -> str:
    return sites[0] + (f" and {len(sites) - 1} more" if len(sites) > 1 else "")


def check_writer(db: Path) -> None:
    """Refuse, before a job starts, a database path that cannot be written or that another
    gsckit run (another job, a backfill in another process) is writing."""
    check_path(db)
    check_writable(db, "database")
    holder = current_writer(db)
    if holder is not None:
        raise DatabaseLocked(f"database {str(db)!r} is being written by {holder.describe()}; "
                             "wait for it to finish (or cancel that job), then start again")


def launch(fn: Callable[..., Coroutine[Any, Any, Report]], arguments: dict[str, Any], *,
           what: str, qpm: int) -> Job:
    """Run ``fn(**arguments)`` as a :class:`Job`: any engine coroutine that takes
    ``progress`` and ``listeners`` (the job shows its own display and counts the events)."""
    tracker = _Tracker()
    display = _make_display(arguments.get("progress", "auto"), qpm)
    listeners = [tracker, *([display] if display else []), *arguments.get("listeners", ())]
    run_arguments = {**arguments, "progress": False, "listeners": listeners}
    return Job(lambda: fn(**run_arguments), what=what, tracker=tracker, display=display)


def _make_display(progress: bool | str, qpm: int) -> _Display | None:
    if progress is False or progress == "off":
        return None
    if progress == "auto" and not (in_notebook() or sys.stderr.isatty()):
        return None
    return _Display(Progress(), qpm)


@atexit.register
def _cancel_at_exit() -> None:
    """Cancel jobs still running when the interpreter exits, and wait for their commits."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for job in running:
        if job.cancel():
            print(f"gsckit: {job.what} was still running at exit: cancelled; completed days "
                  "are saved, re-run to resume", file=sys.stderr)
    for job in running:
        job._thread.join(EXIT_WAIT_S)
