"""The public entry points: ``backfill_async`` / ``sync_async`` (await them) and ``backfill`` /
``sync`` (call them anywhere), and their dry runs ``preview`` / ``preview_sync``.

Everything that can be wrong with the input is checked here, in order, before the first request:
the query, the engine settings, the credentials, then the database lock. The run then learns
Google's newest final day where it matters and decides every day (:mod:`gsckit.dayplan`) before
its first page request. ``backfill`` runs the coroutine with ``asyncio.run`` when no loop is
running (scripts, the CLI) and, inside a notebook's running loop, through nest-asyncio2,
cancelling the run cleanly if the cell is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from . import auth
from .auth.pool import CredentialPool
from .client import Client, limiter_keys, shared_limiter
from .completeness import Completeness
from .config import EngineConfig, check_writable
from .coordinator import Engine, Report
from .dayplan import Scope, plan_run, preview_streams, totals_requests
from .errors import ConfigError, GsckitError, RunHalted
from .events import AuditLog, Emitter, Listener
from .planner import (
    HOURLY_DAYS,
    Filter,
    Query,
    Slice,
    earliest_day,
    make_query,
    pacific_today,
    plan,
)
from .sites import preflight as check_access
from .split import SPLIT_MODES, SplitPolicy, gained_nothing, stream_name
from .store import FORCE, FRESH, MISSING, RECHECK, Database, Store

T = TypeVar("T")
DEFAULT_LOOKBACK_DAYS = 4
MAX_LOOKBACK_DAYS = 90
_REASONS = (MISSING, FRESH, RECHECK, FORCE)


def _spans(days: Iterable[date]) -> list[str]:
    """Consecutive days as ``first..last`` spans (a lone day as itself)."""
    spans: list[list[date]] = []
    for day in sorted(days):
        if spans and day - spans[-1][1] == timedelta(days=1):
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return [str(a) if a == b else f"{a}..{b}" for a, b in spans]


@dataclass(frozen=True)
class Preview:
    """What a backfill or a sync would do, computed without sending or writing anything.

    ``slices`` days considered, ``skipped`` already complete, ``todo`` to fetch, of which
    ``missing``, ``fresh`` (fetched again; promoted when final), ``recheck`` and ``forced``;
    ``not_final_yet`` days a ``final`` run would leave alone; ``requests`` the estimate
    (``probes`` included: one per site and search type when recent days are concerned; and one
    request per site, search type and filters for the daily totals its days lack) and
    ``min_seconds`` at the rate limit. ``newest_final`` is the newest final day assumed:
    ``estimated`` from the ledger and the date (a dry run asks Google nothing), or the day
    before the probe's window for ranges that need no probe. ``streams`` lists, per stream,
    the days of each reason as ``first..last`` spans.
    """

    slices: int
    skipped: int
    todo: int
    requests: int
    min_seconds: float
    sites: int
    missing: int = 0
    fresh: int = 0
    recheck: int = 0
    forced: int = 0
    not_final_yet: int = 0
    probes: int = 0
    newest_final: str | None = None
    estimated: bool = False
    streams: tuple[dict[str, Any], ...] = field(default=())
    split_requests: int = 0

    def summary(self) -> str:
        minutes = self.min_seconds / 60
        reasons = ", ".join(f"{count} {what}" for count, what in (
            (self.missing, "missing"), (self.fresh, "fresh"), (self.recheck, "re-check"),
            (self.forced, "forced")) if count)
        split = (f" ({self.split_requests} of them to split capped days, from the ledger's "
                 "history)"
                 if self.split_requests else "")
        text = (f"{self.slices} days planned over {self.sites} site(s): {self.skipped} already "
                f"complete, {self.todo} to fetch{f' ({reasons})' if reasons else ''}"
                f"{f', {self.not_final_yet} not final yet' if self.not_final_yet else ''}; "
                f"about {self.requests} requests"
                f"{f' ({self.probes} to ask for the newest final day)' if self.probes else ''}"
                f"{split}"
                f", at least {minutes:.1f} min at the rate limit")
        if self.estimated:
            text += (f"\nGoogle's newest final day taken as {self.newest_final}, estimated from "
                     "the ledger and the date: a dry run asks Google nothing (a run asks first)")
        for stream in self.streams:
            parts = [f"{what} {' '.join(stream[what])}" for what in (*_REASONS, "not_final_yet")
                     if stream.get(what)]
            if parts:
                text += (f"\n  {stream['site']} {stream['search_type']}: "
                         f"{'; '.join(parts).replace('_', ' ')}")
        return text


def _preview(scope: Scope, db: str | os.PathLike[str], config: EngineConfig | None,
             split: str) -> Preview:
    cfg = config or EngineConfig()
    check_split(split)
    database = Database(db, wait=cfg.db_wait_s) if Path(db).exists() else None
    previews = preview_streams(scope, database)
    splits = ({} if database is None or split != "auto" else
              database.split_requests_per_day({stream for _, _, stream in scope.streams()}))
    split_requests = 0.0
    counts = dict.fromkeys(_REASONS, 0)
    requests = 0.0
    streams = []
    newest: list[date] = []
    for item in previews:
        plan = item.plan
        by_reason: dict[str, list[date]] = {}
        for task in plan.fetch:
            by_reason.setdefault(task.reason, []).append(task.day)
            counts[task.reason] += 1
        requests += item.pages_per_day * len(plan.fetch)
        split_requests += splits.get(item.stream, 0.0) * len(plan.fetch)
        streams.append({"site": item.site, "search_type": item.search_type,
                        **{reason: _spans(days) for reason, days in by_reason.items()},
                        "not_final_yet": _spans(plan.not_final_yet)})
        if plan.freshness is not None and item.probe:
            newest.append(plan.freshness.newest_final)
    probes = len({(p.site, p.search_type) for p in previews if p.probe})
    totals = len(totals_requests(scope, [(p.site, p.search_type, p.stream, p.plan)
                                         for p in previews],
                                 database.final_totals if database is not None
                                 else lambda keys: {}))
    todo = sum(counts.values())
    skipped = sum(len(p.plan.complete) for p in previews)
    not_final = sum(len(p.plan.not_final_yet) for p in previews)
    total = round(requests) + round(split_requests) + probes + totals
    # one credential carries every request, so its window is the binding limit
    min_seconds = total * cfg.qpm_window_s / cfg.qpm
    return Preview(slices=todo + skipped + not_final, skipped=skipped, todo=todo,
                   requests=total, min_seconds=round(min_seconds, 1),
                   sites=len(scope.query.sites), missing=counts[MISSING], fresh=counts[FRESH],
                   recheck=counts[RECHECK], forced=counts[FORCE], not_final_yet=not_final,
                   probes=probes, newest_final=str(min(newest)) if newest else None,
                   estimated=probes > 0, streams=tuple(streams),
                   split_requests=round(split_requests))


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
    the rate limit. Sends nothing and writes nothing; needs no credentials. Google's newest final
    day is estimated from the ledger and the date (see :class:`Preview`)."""
    today = today or pacific_today()
    query = make_query(site, start, end, dimensions=dimensions, search_type=search_type,
                       data_state=data_state, filters=filters, today=today)
    return _preview(Scope(query, today, force=force), db, config, split)


def sync_scope(site: str | Iterable[str], start: date | str | None,
                dimensions: str | Iterable[str] | None, search_type: str | Iterable[str],
                data_state: str, filters: Iterable[Filter | str], lookback_days: int,
                today: date | None) -> Scope:
    """Validate a sync's arguments: its query runs from the horizon (or ``start``) to today."""
    today = today or pacific_today()
    if isinstance(data_state, str) and data_state.lower() not in ("all", "final", "hourly_all"):
        raise ConfigError(f"unknown data_state {data_state!r} for a sync; choose from all, "
                          "final (hourly_all with the hour dimension)")
    if (not isinstance(lookback_days, int) or isinstance(lookback_days, bool)
            or not 0 <= lookback_days <= MAX_LOOKBACK_DAYS):
        raise ConfigError(f"lookback_days must be a whole number 0..{MAX_LOOKBACK_DAYS}, got "
                          f"{lookback_days!r}")
    query = make_query(site, today if start is None else start, today, dimensions=dimensions,
                       search_type=search_type, data_state=data_state, filters=filters,
                       today=today)
    if start is None:
        horizon = (today - timedelta(days=HOURLY_DAYS) if query.data_state == "hourly_all"
                   else earliest_day(today))
        query = dataclasses.replace(query, start=horizon)
    return Scope(query, today, sync=True, explicit_start=start is not None,
                 lookback_days=lookback_days)


def preview_sync(
    site: str | Iterable[str],
    *,
    start: date | str | None = None,
    dimensions: str | Iterable[str] | None = None,
    search_type: str | Iterable[str] = "web",
    data_state: str = "all",
    filters: Iterable[Filter | str] = (),
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    db: str | os.PathLike[str] = "gsc.duckdb",
    config: EngineConfig | None = None,
    split: str = "auto",
    today: date | None = None,
) -> Preview:
    """A dry run of :func:`sync_async` with the same arguments: what it would fetch and why
    (missing, fresh, re-check). Sends nothing, so Google's newest final day is estimated from
    the ledger and the date; writes nothing; needs no credentials."""
    scope = sync_scope(site, start, dimensions, search_type, data_state, filters,
                        lookback_days, today)
    return _preview(scope, db, config, split)


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

    Days already committed with final data are skipped (``force=True`` re-fetches them); fresh
    days are fetched again. When the range reaches the last 10 days, one request per site and
    search type first asks Google for its newest final day: a day after it is never recorded as
    final (with ``data_state="final"`` it is counted as not final yet and left alone; with
    ``"all"`` it is committed as fresh, and replaced by its final figures by a later run). A day
    whose answer reaches the API's 50,000-row cap is fetched again in partitions (by device,
    then by country) and stored as their merged rows, unless ``split="off"``; the report's
    ``completeness`` says what that recovered. ``credentials`` may be a list of files: a pool
    whose per-user quotas add up. Unless ``preflight=False``, one ``sites.list`` per credential
    checks every site is readable before anything is written. Returns a :class:`Report`; raises
    :class:`ConfigError` for bad input (nothing sent, nothing written) and :class:`RunHalted`
    when an unrecoverable error stopped the run (completed days are kept).
    """
    today = today or pacific_today()
    query = make_query(site, start, end, dimensions=dimensions, search_type=search_type,
                       data_state=data_state, filters=filters, today=today)
    return await _execute(
        Scope(query, today, force=force), db=db, token=token, credentials=credentials,
        impersonate=impersonate, preflight=preflight, config=config,
        max_concurrency=max_concurrency, qpm=qpm, qpm_window_s=qpm_window_s,
        base_url=base_url, audit_log=audit_log, progress=progress, listeners=listeners,
        split=split, kind="backfill")


async def sync_async(
    site: str | Iterable[str],
    *,
    start: date | str | None = None,
    dimensions: str | Iterable[str] | None = None,
    search_type: str | Iterable[str] = "web",
    data_state: str = "all",
    filters: Iterable[Filter | str] = (),
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
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
    split: str = "auto",
    today: date | None = None,
) -> Report:
    """Bring ``db`` up to date for ``site``: the incremental job for cron or a scheduled notebook.

    Per stream (site and search type): one request asks Google for its newest final day and
    newest day with data; then every missing day is fetched, from ``start`` (default: the day
    after the stream's last final day; for a new stream, 16 months back) through the newest day
    with data; every fresh day is fetched again (and promoted when Google calls it final); and
    each final day among the newest ``lookback_days`` final days is fetched once more, in the
    first sync after Google's newest final day moved past the one known when it was fetched.
    With ``data_state="final"`` days that are not final yet are left alone. Two syncs in a row
    send only what fresh days need; on an all-final database, only the probe. Takes every other
    argument of :func:`backfill_async` and returns the same :class:`Report`.
    """
    scope = sync_scope(site, start, dimensions, search_type, data_state, filters,
                        lookback_days, today)
    return await _execute(
        scope, db=db, token=token, credentials=credentials, impersonate=impersonate,
        preflight=preflight, config=config, max_concurrency=max_concurrency, qpm=qpm,
        qpm_window_s=qpm_window_s, base_url=base_url, audit_log=audit_log, progress=progress,
        listeners=listeners, split=split, kind="sync")


async def _execute(
    scope: Scope, *, db: str | os.PathLike[str],
    token: str | auth.TokenSource | auth.Credentials | None,
    credentials: auth.FileArg | Iterable[auth.FileArg] | None, impersonate: str | None,
    preflight: bool, config: EngineConfig | None, max_concurrency: int | None,
    qpm: int | None, qpm_window_s: float | None, base_url: str | None,
    audit_log: str | os.PathLike[str] | None, progress: bool | str,
    listeners: Iterable[Listener], split: str, kind: str,
) -> Report:
    """Check the settings, credentials and database, then run the engine on ``scope``."""
    query: Query = scope.query
    shortcuts = (("max_concurrency", max_concurrency), ("qpm", qpm),
                 ("qpm_window_s", qpm_window_s), ("base_url", base_url))
    overrides: dict[str, Any] = {k: v for k, v in shortcuts if v is not None}
    cfg = dataclasses.replace(config or EngineConfig(), **overrides)
    check_split(split)
    members = auth.resolve_all(token, credentials, impersonate=impersonate)
    if audit_log is not None:  # before the store, which creates the database file
        check_writable(audit_log, "audit log")
    # the pre-flight: an unreadable site is bad input, refused before the database exists
    access = await check_access(query.sites, members, cfg.base_url) if preflight else None
    keys = [key for site in query.sites for creds in members
            for key in limiter_keys(site, creds)]
    emitter = Emitter(listeners)
    closers: list[Any] = []
    with shared_limiter(cfg, keys) as limiter:
        store = Store(db, memory_limit=cfg.db_memory_limit, wait=cfg.db_wait_s, kind=kind)
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
            streams = {stream for _, _, stream in scope.streams()}
            policy = split_policy(store, split, streams)
            days = plan(query)
            async with Client(cfg, pool, limiter, emitter) as client:
                engine = Engine(config=cfg, client=client, store=store, emit=emitter,
                                prepare=partial(plan_run, scope, client=client, store=store,
                                                emit=emitter), split=policy)
                try:
                    report = await engine.run()
                except RunHalted as exc:
                    raise RunHalted(exc.cause, _measured(exc.report, store, days)) from None
                return _measured(report, store, days)
        finally:
            for closer in closers:
                closer.close()
            store.close()


def split_policy(store: Store, split: str, streams: set[tuple[str, str, str, str]]
                 ) -> SplitPolicy:
    """The run's :class:`SplitPolicy`: ``split``, with the streams whose last split gained
    nothing (in the ledger) already stopped."""
    if split != "auto":
        return SplitPolicy(split)
    stops = store.split_stops(streams)
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


def sync(*args: Any, **kwargs: Any) -> Report:
    """Blocking :func:`sync_async` (same arguments), usable in scripts and notebooks."""
    return run_sync(sync_async(*args, **kwargs))


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
