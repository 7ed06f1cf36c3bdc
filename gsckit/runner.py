"""The public entry points: ``backfill_async`` (await it) and ``backfill`` (call it anywhere).

Everything that can be wrong with the input is checked here, in order, before the first request:
the query, the engine settings, the credentials, then the database lock. ``backfill`` runs the
coroutine with ``asyncio.run`` when no loop is running (scripts, the CLI) and, inside a notebook's
running loop, through nest-asyncio2, cancelling the run cleanly if the cell is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from . import auth
from .auth.pool import CredentialPool
from .client import Client, limiter_keys, shared_limiter
from .completeness import Completeness
from .config import EngineConfig, check_writable
from .coordinator import Engine, Report
from .errors import ConfigError, GsckitError, RunHalted
from .events import AuditLog, Emitter, Listener
from .planner import Filter, Slice, make_query, plan
from .sites import preflight as check_access
from .split import SPLIT_MODES, SplitPolicy, gained_nothing, stream_name
from .store import Database, Store

T = TypeVar("T")


@dataclass(frozen=True)
class Preview:
    """What a backfill would do, computed without sending or writing anything."""

    slices: int
    skipped: int
    todo: int
    requests: int
    min_seconds: float
    sites: int
    split_requests: int = 0

    def summary(self) -> str:
        minutes = self.min_seconds / 60
        split = (f" ({self.split_requests} of them to split capped days, from the ledger's "
                 "history)" if self.split_requests else "")
        return (f"{self.slices} days planned over {self.sites} site(s): {self.skipped} already "
                f"complete, {self.todo} to fetch; about {self.requests} requests{split}, at "
                f"least {minutes:.1f} min at the rate limit")


def preview(
    site: str | Iterable[str],
    start: date | str,
    end: date | str,
    *,
    dimensions: str | Iterable[str] | None = None,
    search_type: str | Iterable[str] = "web",
    data_state: str = "final",
    filters: Iterable[Filter | str] = (),
    db: str | os.PathLike[str] = "gsc.duckdb",
    config: EngineConfig | None = None,
    force: bool = False,
    split: str = "auto",
    today: date | None = None,
) -> Preview:
    """A dry run of :func:`backfill_async` with the same arguments: validate, read the ledger,
    and estimate requests (pages per day from each stream's history, else one; with
    ``split="auto"`` plus what splitting capped days cost per day in that history) and time at
    the rate limit. Sends nothing and writes nothing; needs no credentials."""
    query = make_query(site, start, end, dimensions=dimensions, search_type=search_type,
                       data_state=data_state, filters=filters, today=today)
    cfg = config or EngineConfig()
    check_split(split)
    slices = plan(query)
    done: set[str] = set()
    history: dict[tuple[str, str, str, str], float] = {}
    splits: dict[tuple[str, str, str, str], float] = {}
    if Path(db).exists():
        database = Database(db, wait=cfg.db_wait_s)
        done = set() if force else database.completed(slices)
        history = database.pages_per_day()
        if split == "auto":
            splits = database.split_requests_per_day({s.stream for s in slices})
    todo = [s for s in slices if s.key not in done]
    split_requests = round(sum(splits.get(s.stream, 0.0) for s in todo))
    requests = round(sum(history.get(s.stream, 1.0) for s in todo)) + split_requests
    # one credential carries every request, so its window is the binding limit
    min_seconds = requests * cfg.qpm_window_s / cfg.qpm
    return Preview(slices=len(slices), skipped=len(slices) - len(todo), todo=len(todo),
                   requests=requests, min_seconds=round(min_seconds, 1), sites=len(query.sites),
                   split_requests=split_requests)


def check_split(split: object) -> str:
    """Return ``split`` if it is ``auto`` or ``off``, else raise :class:`ConfigError`."""
    if split not in SPLIT_MODES:
        raise ConfigError(f"split must be one of {', '.join(SPLIT_MODES)}, got {split!r}")
    return str(split)


async def backfill_async(
    site: str | Iterable[str],
    start: date | str,
    end: date | str,
    *,
    dimensions: str | Iterable[str] | None = None,
    search_type: str | Iterable[str] = "web",
    data_state: str = "final",
    filters: Iterable[Filter | str] = (),
    db: str | os.PathLike[str] = "gsc.duckdb",
    token: str | auth.TokenSource | auth.Credentials | None = None,
    credentials: auth.FileArg | Iterable[auth.FileArg] | None = None,
    impersonate: str | None = None,
    preflight: bool = True,
    config: EngineConfig | None = None,
    max_concurrency: int | None = None,
    qpm: int | None = None,
    qpm_window_s: float | None = None,
    base_url: str | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    progress: bool | str = "auto",
    listeners: Iterable[Listener] = (),
    force: bool = False,
    split: str = "auto",
    today: date | None = None,
) -> Report:
    """Backfill Search Analytics data for ``site`` from ``start`` to ``end`` into ``db``.

    Days already committed are skipped (``force=True`` re-fetches them). A day whose answer
    reaches the API's 50,000-row cap is fetched again in partitions (by device, then by
    country) and stored as their merged rows, unless ``split="off"``; the report's
    ``completeness`` says what that recovered. ``credentials`` may
    be a list of files: a pool whose per-user quotas add up. Unless ``preflight=False``, one
    ``sites.list`` per credential checks every site is readable before anything is written.
    Returns a
    :class:`Report`; raises :class:`ConfigError` for bad input (nothing sent, nothing written) and
    :class:`RunHalted` when an unrecoverable error stopped the run (completed days are kept).
    """
    query = make_query(site, start, end, dimensions=dimensions, search_type=search_type,
                       data_state=data_state, filters=filters, today=today)
    shortcuts = (("max_concurrency", max_concurrency), ("qpm", qpm),
                 ("qpm_window_s", qpm_window_s), ("base_url", base_url))
    overrides: dict[str, Any] = {k: v for k, v in shortcuts if v is not None}
    cfg = dataclasses.replace(config or EngineConfig(), **overrides)
    check_split(split)
    members = auth.resolve_all(token, credentials, impersonate=impersonate)
    if audit_log is not None:  # before the store, which creates the database file
        check_writable(audit_log, "audit log")
    slices = plan(query)
    # the pre-flight: an unreadable site is bad input, refused before the database exists
    access = await check_access(query.sites, members, cfg.base_url) if preflight else None
    keys = [key for site in query.sites for creds in members
            for key in limiter_keys(site, creds)]
    emitter = Emitter(listeners)
    closers: list[Any] = []
    with shared_limiter(cfg, keys) as limiter:
        store = Store(db, memory_limit=cfg.db_memory_limit, wait=cfg.db_wait_s)
        try:
            if audit_log is not None:
                log = AuditLog(audit_log)
                closers.append(log)
                emitter.add(log, critical=True)
            display = _progress(progress)
            if display is not None:
                closers.append(display)
                emitter.add(display)
            if progress is not False and progress != "off":  # a person is watching
                for creds in members:
                    print(f"gsckit: credentials: {creds.source}", file=sys.stderr)
            pool = CredentialPool(members, access.serving if access else None, emitter)
            done = set() if force else store.completed(slices)
            todo = [s for s in slices if s.key not in done]
            policy = split_policy(store, split, slices)
            async with Client(cfg, pool, limiter, emitter) as client:
                engine = Engine(todo, config=cfg, client=client, store=store, emit=emitter,
                                skipped=len(slices) - len(todo), split=policy)
                try:
                    report = await engine.run()
                except RunHalted as exc:
                    raise RunHalted(exc.cause, _measured(exc.report, store, slices)) from None
                return _measured(report, store, slices)
        finally:
            for closer in closers:
                closer.close()
            store.close()


def split_policy(store: Store, split: str, slices: Iterable[Slice]) -> SplitPolicy:
    """The run's :class:`SplitPolicy`: ``split``, with the streams whose last split gained
    nothing (in the ledger) already stopped."""
    if split != "auto":
        return SplitPolicy(split)
    stops = store.split_stops({s.stream for s in slices})
    return SplitPolicy(split, {stream: gained_nothing(stream_name(stream), day, parts)
                               for stream, (day, parts) in stops.items()})


def _measured(report: Report, store: Store, slices: Sequence[Slice]) -> Report:
    """``report`` with the completeness of the run's days (committed before or now)."""
    try:
        frame = store.completeness(slices)
    except (GsckitError, duckdb.Error):
        return report  # the file failed the run already; the report says why
    return dataclasses.replace(report, completeness=Completeness.of(frame, report.split_notes))


def backfill(*args: Any, **kwargs: Any) -> Report:
    """Blocking :func:`backfill_async` (same arguments), usable in scripts and notebooks."""
    return run_sync(backfill_async(*args, **kwargs))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, inside a running loop or not."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import nest_asyncio2

    nest_asyncio2.apply(loop)
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        # a kernel interrupt lands here: cancel the engine so no worker lingers on the loop
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
        raise


def _progress(progress: bool | str) -> Any:
    if progress is False or progress == "off":
        return None
    from .progress import Progress

    if progress == "auto":
        return Progress.auto()
    return Progress()
