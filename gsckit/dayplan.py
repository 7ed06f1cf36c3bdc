"""Before the first page request: learn what is final, read the ledger, decide every day's fetch.

One probe per (site, search type) asks Google for its newest final day (see
:mod:`gsckit.freshness`), through the run's client: the same limiter, retries and halt rules as
every page, counted in the report. A backfill asks nothing when its range ends before the
probe's 10-day window (those days are final) or its days in the window are final in the ledger
already (a re-run of a finished backfill sends no request). Then :func:`decide` applies
:func:`gsckit.freshness.plan_stream` to every stream, the same way for a run (:func:`plan_run`)
and for a dry run, which asks nothing and estimates instead (:func:`preview_streams`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial

from .client import Client, Emit, QuotaExhausted, SitePaused
from .coordinator import RunPlan
from .errors import GsckitError
from .freshness import (
    Freshness,
    StreamPlan,
    estimate,
    parse_probe,
    plan_stream,
    probe_body,
    probe_window,
    settled_through,
    sync_start,
)
from .planner import Filter, Query, Slice, earliest_day
from .store import FRESH, Database, LedgerDay, Store, Stream
from .store.writer import DayRecord
from .totals import TotalsKey, TotalsRequest, requests_for

Ledgers = Mapping[Stream, Mapping[date, LedgerDay]]


@dataclass(frozen=True)
class Scope:
    """How a run reads its query: a ``backfill`` fetches ``query.start`` to ``query.end``; a
    ``sync`` fetches each stream from ``query.start`` (when ``explicit_start``, else the day
    after its last final day) through the newest day with data, every fresh day, and re-checks
    final days within ``lookback_days`` once."""

    query: Query
    today: date
    sync: bool = False
    explicit_start: bool = True
    lookback_days: int = 0
    force: bool = False

    @property
    def hourly(self) -> bool:
        return self.query.data_state == "hourly_all"

    def streams(self) -> list[tuple[str, str, Stream]]:
        """(site, search type, stream key) of every stream, sites interleaved."""
        q = self.query
        first = Slice(q.sites[0], q.search_types[0], q.dimensions, q.filters, q.data_state,
                      q.start)
        return [(site, search_type, (site, search_type, first.dimensions_key, first.filters_key))
                for site in q.sites for search_type in q.search_types]

    def needs_probe(self, ledger: Mapping[date, LedgerDay]) -> bool:
        """Whether a stream must ask Google: a sync always does (it needs the newest day with
        data); a backfill only when a day of its range in the probe's window may be fetched
        (not yet final in ``ledger``, or forced), so re-running a finished backfill sends
        nothing."""
        if self.sync or self.hourly:
            return True
        first = max(self.query.start, settled_through(self.today) + timedelta(days=1))
        days = (first + timedelta(days=n) for n in range((self.query.end - first).days + 1))
        return any(self.force or day not in ledger or not ledger[day].final for day in days)


def decide(scope: Scope, ledgers: Ledgers,
           freshness: Mapping[tuple[str, str], Freshness | None]
           ) -> list[tuple[str, str, Stream, StreamPlan]]:
    """Every stream's :class:`StreamPlan`, from its ledger days and Google's freshness (``None``:
    unknown, the probe failed)."""
    decided = []
    settled = settled_through(scope.today)
    for site, search_type, stream in scope.streams():
        ledger = ledgers.get(stream, {})
        fresh = freshness.get((site, search_type))
        start, end = scope.query.start, scope.query.end
        if scope.sync:
            if not scope.explicit_start:
                start = sync_start(ledger, scope.query.start)
            if fresh is None:
                end = scope.today
            elif scope.query.data_state == "final":
                end = fresh.newest_final
            else:
                end = fresh.data_through
        plan = plan_stream(ledger, fresh, start=start, end=end,
                           data_state=scope.query.data_state, force=scope.force,
                           lookback_days=scope.lookback_days, every_fresh_day=scope.sync,
                           settled=settled)
        decided.append((site, search_type, stream, plan))
    return decided


def run_plan(scope: Scope, decided: Sequence[tuple[str, str, Stream, StreamPlan]], *,
             errors: Mapping[tuple[str, str], str] | None = None,
             stopped: Mapping[str, str] | None = None, probes: int = 0,
             totals: Callable[[], Sequence[TotalsRequest]] | None = None) -> RunPlan:
    """The engine's :class:`RunPlan`: slices oldest day first with sites interleaved, how each
    day is recorded, and the days skipped, not final yet, failed or stopped."""
    q = scope.query
    errors, stopped = errors or {}, stopped or {}
    order = {(site, search_type): n for n, (site, search_type, _) in enumerate(scope.streams())}
    tasks = []
    skipped = not_final = stopped_days = 0
    failures: list[str] = []
    settled = settled_through(scope.today)
    for site, search_type, stream, plan in decided:
        if site in stopped:
            stopped_days += len(plan.fetch) + len(plan.unknown)
            continue
        skipped += len(plan.complete)
        not_final += len(plan.not_final_yet)
        error = errors.get((site, search_type), "")
        failures += [f"{'|'.join(stream)}|{day}: Google's newest final day is unknown (the probe "
                     f"failed: {error})" for day in plan.unknown]
        newest = plan.freshness.newest_final if plan.freshness else settled
        marker = plan.freshness.first_incomplete if plan.freshness else None
        for task in plan.fetch:
            piece = Slice(site, search_type, q.dimensions, q.filters, task.data_state, task.day)
            record = DayRecord(task.state, task.reason, marker if task.state == FRESH else None,
                               newest)
            tasks.append((task.day, order[(site, search_type)], piece, record))
    tasks.sort(key=lambda item: (item[0], item[1]))
    return RunPlan([piece for _, _, piece, _ in tasks],
                   {piece.key: record for _, _, piece, record in tasks}, skipped=skipped,
                   not_final_yet=not_final, failures=failures, stopped_sites=dict(stopped),
                   stopped=stopped_days, probes=probes, totals=totals)


async def _probe(client: Client, site: str, search_type: str, scope: Scope, emit: Emit
                 ) -> Freshness:
    """Ask Google for a (site, search type)'s freshness; wait out a load-quota pause.

    When Google's first incomplete day is the first day asked about, the days before may not be
    final either: the window before is asked too (daily data only: hourly data covers 10 days).
    """
    loop = asyncio.get_running_loop()
    oldest = earliest_day(scope.today)

    async def ask(end: date) -> Freshness:
        start = probe_window(end)[0]
        body = probe_body(search_type, end, hourly=scope.hourly)
        parse = partial(parse_probe, start=start, hourly=scope.hourly)
        while True:
            try:
                fresh, _ = await client.send(site, body, parse, day=start,
                                             search_type=search_type, kind="probe")
                return fresh
            except SitePaused as paused:
                await asyncio.sleep(max(0.0, paused.until - loop.time()))

    fresh = await ask(scope.today)
    start = probe_window(scope.today)[0]
    while not scope.hourly and fresh.behind(start) and start > oldest:
        fresh = fresh.before(await ask(start - timedelta(days=1)))
        start = probe_window(start - timedelta(days=1))[0]
    emit("freshness", site=site, search_type=search_type, newest_final=fresh.newest_final,
         newest_data=fresh.newest_data, first_incomplete=fresh.first_incomplete)
    return fresh


async def plan_run(scope: Scope, *, client: Client, store: Store, emit: Emit) -> RunPlan:
    """Read the ledger, probe every (site, search type) that needs it, and decide the run and
    how its daily totals are chosen at its end (:func:`totals_requests`).

    A probe that fails after its retries leaves its recent days unknown (failed: a re-run
    retries them); a load quota that persists stops the site; any other error halts the run.
    """
    freshness: dict[tuple[str, str], Freshness | None] = {}
    errors: dict[tuple[str, str], str] = {}
    stopped: dict[str, str] = {}
    fatal: list[GsckitError] = []
    before = client.meter.total
    ledgers = store.days([stream for _, _, stream in scope.streams()])
    pairs = list(dict.fromkeys((site, st) for site, st, stream in scope.streams()
                               if scope.needs_probe(ledgers.get(stream, {}))))
    for site, search_type, _ in scope.streams():
        if (site, search_type) not in pairs:
            freshness[(site, search_type)] = Freshness.settled(scope.today)

    async def one(site: str, search_type: str) -> None:
        try:
            freshness[(site, search_type)] = await _probe(client, site, search_type, scope, emit)
        except QuotaExhausted as exc:
            stopped[site] = str(exc)
            emit("site_stopped", site=site, error=str(exc), days=0)
        except GsckitError as exc:
            if not getattr(exc, "retryable", False):
                fatal.append(exc)  # raised below, as the run's halt
                return
            freshness[(site, search_type)] = None
            errors[(site, search_type)] = str(exc)
            emit("freshness", site=site, search_type=search_type, error=str(exc))

    async with asyncio.TaskGroup() as group:
        for site, search_type in pairs:
            group.create_task(one(site, search_type))
    if fatal:
        raise fatal[0]
    decided = decide(scope, ledgers, freshness)
    return run_plan(scope, decided, errors=errors, stopped=stopped,
                    probes=client.meter.total - before,
                    totals=partial(totals_requests, scope, decided, store.final_totals,
                                   store.days, stopped))


def totals_requests(scope: Scope, decided: Sequence[tuple[str, str, Stream, StreamPlan]],
                    recorded: Callable[[Iterable[TotalsKey]], Mapping[TotalsKey, set[date]]],
                    committed: Callable[[list[Stream]], Mapping[Stream, Mapping[date, object]]]
                    | None = None, stopped: Mapping[str, str] | None = None
                    ) -> list[TotalsRequest]:
    """The date-only requests for a run's daily totals: one per (site, search type, filters)
    over the days it fetches or has committed whose final totals are not ``recorded`` yet; with
    ``committed`` (the ledger at the end of the run), only days that are committed. Streams
    whose freshness is unknown (a failed probe) or whose site stopped are left out."""
    wanted = [(site, search_type, stream, plan) for site, search_type, stream, plan in decided
              if plan.freshness is not None and site not in (stopped or {})]
    ledger = committed([stream for _, _, stream, _ in wanted]) if committed else None
    days: dict[TotalsKey, list[tuple[date, date]]] = {}
    filters: dict[TotalsKey, tuple[Filter, ...]] = {}
    for site, search_type, stream, plan in wanted:
        assert plan.freshness is not None
        key: TotalsKey = (site, search_type, stream[3])
        newest = plan.freshness.newest_final
        filters[key] = scope.query.filters
        candidates = (*[t.day for t in plan.fetch], *plan.complete)
        days.setdefault(key, []).extend(
            (day, newest) for day in candidates
            if ledger is None or day in ledger.get(stream, {}))
    return requests_for(days, filters, recorded(days))


@dataclass(frozen=True)
class StreamPreview:
    """What a dry run expects of one stream: its plan (with the freshness it assumed: estimated
    when ``probe``, since a run would ask Google) and its pages per day so far."""

    site: str
    search_type: str
    plan: StreamPlan
    pages_per_day: float
    probe: bool
    stream: Stream


def preview_streams(scope: Scope, database: Database | None) -> list[StreamPreview]:
    """The dry run's decision: the same as a run's, with Google's freshness estimated from the
    ledger and the date instead of asked (a dry run sends nothing)."""
    streams = scope.streams()
    ledgers: Ledgers = {}
    history: dict[Stream, float] = {}
    if database is not None:
        ledgers = database.ledger_days([stream for _, _, stream in streams])
        history = {key: pages for key, pages in database.pages_per_day().items()}
    freshness: dict[tuple[str, str], Freshness | None] = {}
    for site, search_type, stream in streams:
        ledger = ledgers.get(stream, {})
        freshness[(site, search_type)] = (estimate(scope.today, ledger.values())
                                          if scope.needs_probe(ledger)
                                          else Freshness.settled(scope.today))
    return [StreamPreview(site, search_type, plan, history.get(stream, 1.0),
                          scope.needs_probe(ledgers.get(stream, {})), stream)
            for site, search_type, stream, plan in decide(scope, ledgers, freshness)]

