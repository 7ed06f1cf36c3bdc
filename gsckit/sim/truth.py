"""What the simulated properties hold at the simulated now, and what any request exposes.

The server answers every query through :meth:`Dataset.answer`, and every truth a test compares
against goes through the same method, so a truth is exactly what the API would send: after
filters and the cap, at the data state asked for, at the simulated now. Fine rows, per-day
answers and whole answers are kept in small LRU caches so paging through a day costs one
generation.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

import polars as pl

from .api import RESTRICTED_TYPES, Request, metadata_keys
from .clock import FINAL, NONE, DayState, SimClock, day_state, first_fresh_day, hourly_available
from .config import SimConfig
from .grouping import View, as_text, day_answer, empty_answer, range_answer, selected
from .keys import hour_keys
from .model import DaySpec, final_rows, fresh_rows, salt

_FINE_ROWS = 1_500_000
_DAY_ANSWER_ROWS = 1_000_000
_ANSWER_ROWS = 600_000
_SUMS = 50_000
_SUMS_SCHEMA = {"clicks": pl.Int64, "impressions": pl.Int64, "sumpos": pl.Float64,
                "query_clicks": pl.Int64, "query_impressions": pl.Int64}


class _Lru:
    """Frames by key, least recently used dropped first once the rows held pass a bound."""

    def __init__(self, max_rows: int) -> None:
        self._frames: OrderedDict[Hashable, pl.DataFrame] = OrderedDict()
        self._rows = 0
        self._max_rows = max_rows

    def get(self, key: Hashable, make: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        frame = self._frames.get(key)
        if frame is not None:
            self._frames.move_to_end(key)
            return frame
        frame = make()
        self._frames[key] = frame
        self._rows += frame.height
        while self._rows > self._max_rows and len(self._frames) > 1:
            self._rows -= self._frames.popitem(last=False)[1].height
        return frame


@dataclass(frozen=True)
class Totals:
    """A slice's true totals, anonymized traffic included (what a date-only request sums to).

    ``query_*`` is the traffic attributable to a query (what groupings with ``query`` can ever
    add up to); ``anonymized_*`` the rest. ``position`` is ``None`` for Discover and Google News.
    """

    clicks: int
    impressions: int
    ctr: float
    position: float | None
    query_clicks: int
    query_impressions: int
    anonymized_clicks: int
    anonymized_impressions: int

    @property
    def hidden_clicks_share(self) -> float:
        """The share of clicks no query-grouped answer can show (0 when there are none)."""
        return self.anonymized_clicks / self.clicks if self.clicks else 0.0


class Dataset:
    """The data behind a :class:`~gsckit.sim.Simulator`: fine rows per day, answers and truths."""

    def __init__(self, config: SimConfig, clock: SimClock) -> None:
        self.config = config
        self.clock = clock
        self._revisions: Counter[tuple[str | None, date | None]] = Counter()
        self._fine = _Lru(_FINE_ROWS)
        self._day_answers = _Lru(_DAY_ANSWER_ROWS)
        self._answers = _Lru(_ANSWER_ROWS)
        self._sums: OrderedDict[tuple[DaySpec, DayState], tuple[Any, ...]] = OrderedDict()
        self.lock = threading.RLock()  # the server answers off its event loop, in threads

    # time ------------------------------------------------------------------------------------

    def state(self, day: date, now: datetime | None = None) -> DayState:
        """What ``day`` holds at ``now`` (default: the simulated now)."""
        config = self.config
        return day_state(day, now or self.clock.now(), final_lag_days=config.final_lag_days,
                         all_final=config.all_final)

    def revise(self, site: str | None, day: date | None) -> None:
        """Count one upstream revision for a site and/or day (``None`` matches every one)."""
        self._revisions[(site, day)] += 1

    def _revision(self, site: str, day: date) -> int:
        r = self._revisions
        return r[(None, None)] + r[(site, None)] + r[(None, day)] + r[(site, day)]

    # fine rows -------------------------------------------------------------------------------

    def spec(self, site: str, search_type: str, day: date) -> DaySpec:
        """What the final rows of a day depend on."""
        config = self.config
        keys = config.rows_per_day
        return DaySpec(config.seed, site, search_type, day, self._revision(site, day),
                       int(keys(site, search_type, day) if callable(keys) else keys),
                       config.anonymized_share, config.anomaly_every_days)

    def fine(self, site: str, search_type: str, day: date, state: DayState) -> pl.DataFrame:
        """The fine rows of a day in ``state`` (empty when the day has no data)."""
        with self.lock:
            return self._fine_rows(self.spec(site, search_type, day), state)

    def _fine_rows(self, spec: DaySpec, state: DayState) -> pl.DataFrame:
        final = self._fine.get(spec, lambda: self._summed(spec, FINAL, final_rows(spec)))
        if state.kind == "final":
            return final
        if state.kind == "none":
            return final.clear()
        daily = salt(spec.seed, spec.site, spec.search_type, spec.day, spec.revision, "fresh")
        return self._fine.get((spec, state), lambda: self._summed(
            spec, state, fresh_rows(final, state, daily)))

    def _summed(self, spec: DaySpec, state: DayState, rows: pl.DataFrame) -> pl.DataFrame:
        """Keep a day's unfiltered totals whenever its rows are made, so date-only answers over
        long ranges cost nothing for days already generated; return ``rows``."""
        named = pl.col("qr").is_not_null()
        sums = rows.select(
            pl.col("clicks").sum(), pl.col("impressions").sum(), pl.col("sumpos").sum(),
            pl.col("clicks").filter(named).sum().alias("query_clicks"),
            pl.col("impressions").filter(named).sum().alias("query_impressions"))
        self._sums[(spec, state)] = sums.row(0)
        while len(self._sums) > _SUMS:
            self._sums.popitem(last=False)
        return rows

    def _day_sums(self, spec: DaySpec, state: DayState) -> pl.DataFrame:
        """A day's unfiltered totals as one row, from the sums kept or by making its rows."""
        if (spec, state) not in self._sums:
            self._summed(spec, state, self._fine_rows(spec, state))
        return pl.DataFrame([self._sums[(spec, state)]], schema=_SUMS_SCHEMA, orient="row")

    # answers ---------------------------------------------------------------------------------

    def view(self, request: Request, *, capped: bool = True) -> View:
        """How ``request`` looks at fine rows under the current settings."""
        config = self.config
        return View(request.dimensions, request.filters, config.row_cap if capped else None,
                    config.filters_before_cap, config.anonymized_dropped_by)

    def day_states(self, request: Request, *, final: bool = False
                   ) -> list[tuple[date, DayState]]:
        """Each day of the request's range that contributes rows, with its state.

        ``dataState=final`` only sees final days; ``all`` and ``hourly_all`` also fresh ones;
        grouping by ``hour`` only sees the hourly window. ``final=True`` treats every day with
        data as final (the final truth, whatever the clock says).
        """
        now = self.clock.now()
        found = []
        day = request.start
        while day <= request.end:
            state = self.state(day, now)
            if final and state.kind != "none":
                state = FINAL
            if state.kind == "fresh" and request.data_state == "final":
                state = NONE
            if "hour" in request.dimensions and not hourly_available(
                    day, now.date(), self.config.hourly_days):
                state = NONE
            if state.kind != "none":
                found.append((day, state))
            day += timedelta(days=1)
        return found

    def answer(self, site: str, request: Request, *, capped: bool = True, final: bool = False
               ) -> pl.DataFrame:
        """Every row the API exposes for ``request`` (ignoring startRow/rowLimit), as text."""
        with self.lock:
            return self._answer_locked(site, request, capped, final)

    def _answer_locked(self, site: str, request: Request, capped: bool, final: bool
                       ) -> pl.DataFrame:
        view = self.view(request, capped=capped)
        position = request.search_type not in RESTRICTED_TYPES
        specs = self.version(site, request, final=final)
        if not specs:
            return empty_answer(view, position=position)
        key = (site, view, specs, position)
        return self._answers.get(key, lambda: self._answer(site, view, specs, position))

    def version(self, site: str, request: Request, *, final: bool = False
                ) -> tuple[tuple[DaySpec, DayState], ...]:
        """What an answer to ``request`` depends on: each contributing day's spec and state (two
        answers with the same version are identical)."""
        return tuple((self.spec(site, request.search_type, day), state)
                     for day, state in self.day_states(request, final=final))

    def _answer(self, site: str, view: View, specs: Sequence[tuple[DaySpec, DayState]],
                position: bool) -> pl.DataFrame:
        days = []
        for spec, state in specs:
            frame = self._day_answers.get((spec, state, view), partial(
                self._day_answer, site, view, spec, state))
            if frame.height:
                days.append((spec.day, frame))
        if not days:
            return empty_answer(view, position=position)
        return as_text(range_answer(days, view), view, site, position=position)

    def _day_answer(self, site: str, view: View, spec: DaySpec, state: DayState
                    ) -> pl.DataFrame:
        if not view.keys and not view.filters:
            sums = self._day_sums(spec, state)
            return sums.select("clicks", "impressions", "sumpos").filter(
                pl.col("impressions") > 0)
        return day_answer(self._fine_rows(spec, state), view, site)

    def metadata(self, request: Request) -> dict[str, str]:
        """The ``metadata`` object of an answer: the first incomplete date (``all`` grouped by
        date) or hour (``hourly_all`` grouped by hour) when the range holds fresh data."""
        config = self.config
        now = self.clock.now()
        first = first_fresh_day(now, final_lag_days=config.final_lag_days,
                                all_final=config.all_final)
        if first is None or request.end < first or request.start > now.date():
            return {}
        first = max(first, request.start)
        date_key, hour_key = metadata_keys(config.metadata_style)
        if request.data_state == "all" and "date" in request.dimensions:
            return {date_key: first.isoformat()}
        if request.data_state == "hourly_all" and "hour" in request.dimensions:
            return {hour_key: hour_keys(first)[0]}
        return {}

    def totals(self, site: str, request: Request, *, final: bool = False) -> Totals:
        """The true totals of the request's slice (its filters, data state and range)."""
        with self.lock:
            view = self.view(request._replace(dimensions=()), capped=False)
            named = pl.col("qr").is_not_null()
            sums = [pl.col("clicks").sum(), pl.col("impressions").sum(), pl.col("sumpos").sum(),
                    pl.col("clicks").filter(named).sum().alias("query_clicks"),
                    pl.col("impressions").filter(named).sum().alias("query_impressions")]
            parts = []
            for day, state in self.day_states(request, final=final):
                spec = self.spec(site, request.search_type, day)
                if view.filters:
                    parts.append(selected(self._fine_rows(spec, state), view, site).select(sums))
                else:
                    parts.append(self._day_sums(spec, state))
        total = pl.concat(parts).sum() if parts else pl.DataFrame(
            {name: [0] for name in ("clicks", "impressions", "sumpos", "query_clicks",
                                    "query_impressions")})
        clicks, impressions = int(total["clicks"][0]), int(total["impressions"][0])
        query_clicks, query_impressions = (int(total["query_clicks"][0]),
                                           int(total["query_impressions"][0]))
        position = None
        if request.search_type not in RESTRICTED_TYPES and impressions:
            position = float(total["sumpos"][0]) / impressions
        return Totals(clicks, impressions, clicks / impressions if impressions else 0.0,
                      position, query_clicks, query_impressions, clicks - query_clicks,
                      impressions - query_impressions)

    def summary(self) -> dict[str, Any]:
        """The clock and the data states it implies (JSON-serialisable)."""
        config, now = self.config, self.clock.now()
        first = first_fresh_day(now, final_lag_days=config.final_lag_days,
                                all_final=config.all_final)
        newest = now.date() if first is None else first - timedelta(days=1)
        return {"now": now.isoformat(), "today": now.date().isoformat(),
                "running": self.clock.running, "newest_final_day": newest.isoformat(),
                "first_fresh_day": None if first is None else first.isoformat(),
                "final_lag_days": config.final_lag_days, "all_final": config.all_final}
