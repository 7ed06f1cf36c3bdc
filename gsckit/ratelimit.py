"""A sliding-window rate limiter: at most ``limit`` units in ANY window of ``window_s``, per key.

Search Console allows 1,200 queries per minute per site and per user (credential), and a leaky
bucket sized to that quota admits close to twice as many in one minute (``AsyncLimiter(1200, 60)``
let 2,399 through), so gsckit schedules requests instead. Each :meth:`SlidingWindowLimiter.acquire`
reserves one instant that suits every key it names (a site and its credential): no earlier than
the previous reservation of each key plus the pacing interval ``window_s / limit``, and late enough
that no key has more than ``limit`` units in the window ending there. Reservations are made in call
order, so waiters are served first-in first-out; a cancelled waiter gives its reservation back.
The pacing schedule may run up to ``CATCH_UP_SLOTS`` intervals behind the clock: slots that went
unused a moment ago, while every worker was waiting for an answer, are made up at once, so a
closed group of workers with variable latency keeps the whole pace (16 workers at 800 ms ± 50%
reached 93-96% of 960/min without it, 100% with it); the window check is unchanged.
Admission uses the window widened by ``slack_s`` so that the server, which sees each request a
little later and with jitter, still never counts more than ``limit`` in its own window. A waiter
that wakes is checked once more against the times earlier grants actually happened, so a busy
event loop that wakes one waiter late cannot squeeze a later one into the same window either. A
window ending at ``t`` is the half-open interval ``(t - window, t]``.

When the server answers "rate limit exceeded" anyway (another program shares the quota, or the
project's quota is lower than configured), :meth:`SlidingWindowLimiter.slow_down` lowers the limit
of the keys concerned, multiplicatively (to ``decrease`` times what the key was actually granted
in the last window, or its limit if that is lower), and each whole window without another
slow-down gives back ``increase`` units, until the configured limit is reached again: additive
increase, multiplicative decrease. Pending reservations are spaced out at the lowered pace, and
the check on waking uses each key's limit of the moment, so "at most the limit in ANY window"
keeps holding at the lowered limit. A slow-down is answered once: a request that was granted
before the last slow-down of a key (``since``) does not lower that key again.

Standard library only, and no asyncio object is created outside ``acquire``, so a limiter may be
built anywhere and used by any event loop; its bookkeeping is guarded by a lock, so backfills
running on different event loops (threads) of one process can share one limiter.
"""

from __future__ import annotations

import asyncio
import math
import operator
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable

__all__ = ["SlidingWindowLimiter"]

CATCH_UP_SLOTS = 4
"""Pacing slots that went unused (no request was ready) and may still be made up at once."""


class _Slot:
    """``units`` at time ``t``: a reservation, shared by the deques of all its keys (removed by
    identity on cancel), or a grant at the time it happened. ``pace``: the reservation's place
    on the pacing schedule, up to the catch-up allowance before ``t`` (a slot missed while no
    one asked may be made up)."""

    __slots__ = ("pace", "t", "units")

    def __init__(self, t: float, units: int, pace: float | None = None) -> None:
        self.t = t
        self.units = units
        self.pace = t if pace is None else pace


class _KeyState:
    """Per-key bookkeeping: reservations (the schedule), actual grants over the admission window
    (the check on waking) and over ``window_s`` (for :meth:`SlidingWindowLimiter.peak`), and the
    lowered limit after a slow-down (``cut`` units at ``cut_at``; 0 when not lowered)."""

    __slots__ = ("cut", "cut_at", "first", "granted", "grants", "peak", "recent",
                 "recent_units", "reserved", "slots")

    def __init__(self) -> None:
        self.slots: deque[_Slot] = deque()
        self.reserved = 0
        self.recent: deque[_Slot] = deque()
        self.recent_units = 0
        self.grants: deque[_Slot] = deque()
        self.granted = 0
        self.peak = 0
        self.cut = 0
        self.cut_at = -math.inf
        self.first = math.inf


class SlidingWindowLimiter:
    """At most ``limit`` units in any ``window_s`` window per key; paced, FIFO, cancellable.

    ``slack_s`` (default ``min(1.0, 0.1 * window_s)``, 1 s at 60 s) widens the admission window;
    ``decrease`` (default 0.5) is the factor of a slow-down and ``increase`` (default
    ``max(1, limit // 20)``) the units a lowered key gets back per whole window without one;
    ``clock`` and ``sleep`` must agree (``sleep(d)`` lets at least ``d`` pass on ``clock``) and
    are injectable for tests. Every key serves its reservations in call order, so a request held
    back by one key (a full site) also holds back later requests that share another of its keys
    (the credential) until its reserved time. When the event loop wakes a waiter late, the
    waiters whose windows it now reaches wait a little longer than planned (if the lag exceeds the
    pacing interval, one may overtake another) rather than exceed the limit. Usage::

        limiter = SlidingWindowLimiter(960, 60.0)
        await limiter.acquire(("site:sc-domain:example.com", "cred:1"))
    """

    __slots__ = (
        "_admission",
        "_catch_up",
        "_clock",
        "_decrease",
        "_increase",
        "_interval",
        "_keys",
        "_limit",
        "_lock",
        "_slack",
        "_sleep",
        "_window",
    )

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        *,
        slack_s: float | None = None,
        decrease: float = 0.5,
        increase: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        limit = operator.index(limit)
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not (window_s > 0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
        slack = min(1.0, 0.1 * window_s) if slack_s is None else slack_s
        if not (slack >= 0 and math.isfinite(slack)):
            raise ValueError(f"slack_s must be a non-negative number of seconds, got {slack_s!r}")
        if not 0.0 < decrease < 1.0:
            raise ValueError(f"decrease must be between 0 and 1 (exclusive), got {decrease!r}")
        increase = max(1, limit // 20) if increase is None else operator.index(increase)
        if increase < 1:
            raise ValueError(f"increase must be at least 1, got {increase}")
        self._limit = limit
        self._window = float(window_s)
        self._slack = float(slack)
        self._admission = self._window + self._slack
        self._interval = self._window / limit
        self._catch_up = CATCH_UP_SLOTS * self._interval
        self._clock = clock
        self._sleep = sleep
        self._decrease = float(decrease)
        self._increase = increase
        self._keys: dict[Hashable, _KeyState] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(limit={self._limit}, window_s={self._window}, "
            f"slack_s={self._slack})"
        )

    @property
    def limit(self) -> int:
        """Most units any key may be granted in one window."""
        return self._limit

    @property
    def window_s(self) -> float:
        """Length of the window the limit applies to, in seconds."""
        return self._window

    @property
    def slack_s(self) -> float:
        """Extra seconds added to the window when admitting, to absorb arrival jitter."""
        return self._slack

    @property
    def interval_s(self) -> float:
        """``window_s / limit``: the even pacing interval between single units of one key."""
        return self._interval

    def now(self) -> float:
        """The limiter's clock: pass a grant's time as ``since`` to :meth:`slow_down`."""
        return self._clock()

    def limit_of(self, key: Hashable) -> int:
        """The limit ``key`` has now: ``limit``, or less for a while after a slow-down."""
        with self._lock:
            state = self._keys.get(key)
            return self._limit if state is None else self._limit_at(state, self._clock())

    def slow_down(self, keys: Iterable[Hashable], *, since: float | None = None) -> bool:
        """Lower the limit of ``keys`` after the server said their rate is too high.

        Each key's new limit is ``decrease`` times the smaller of its current limit and the units
        it was granted in the last window (extrapolated to a whole window for a key first granted
        less than a window ago), at least 1; its pending reservations are spaced out at the new
        pace. A key lowered at or after ``since`` (the time the failed request was
        granted, from :meth:`now`) is left alone: that slow-down already answered the request.
        Returns whether any key was lowered.
        """
        with self._lock:
            states = self._states(keys)
            now = self._clock()
            lowered = False
            for state in states:
                if since is not None and since <= state.cut_at:
                    continue
                current = self._limit_at(state, now)
                self._trim_grants(state, now)
                # what the key sends per window; a key younger than a window is extrapolated
                span = now - state.first
                sent = state.granted * self._window / max(span, self._interval) if (
                    span < self._window) else state.granted
                base = min(current, sent) if state.granted else current
                state.cut = max(1, min(current - 1, math.floor(base * self._decrease)))
                state.cut_at = now
                self._respace(state, now)
                lowered = True
            return lowered

    async def acquire(self, keys: Iterable[Hashable], units: int = 1) -> float:
        """Reserve ``units`` for all ``keys`` at one instant, sleep until then, return the wait.

        Raises ``ValueError`` if ``units`` is not in ``1..limit`` or ``keys`` is empty, and
        ``TypeError`` if ``keys`` is a single string. If the wait is cancelled (or ``sleep``
        fails), the reservation is removed from every key before the exception propagates.
        """
        units = operator.index(units)
        if not 1 <= units <= self._limit:
            raise ValueError(f"units must be 1..{self._limit}, got {units}")
        with self._lock:
            states = self._states(keys)
            start = self._clock()
            slot = self._reserve(states, units, start)
        wake_at = slot.t
        try:
            while True:
                while (delay := wake_at - self._clock()) > 0:
                    await self._sleep(delay)
                with self._lock:
                    now = self._clock()
                    # a slow-down may have moved the reservation later while this waiter slept
                    wake_at = max(slot.t, self._recheck(states, units, now))
                    if wake_at <= now:
                        self._record_grant(states, units, now)
                        break
                    if wake_at > slot.t:
                        # a lowered key's window is still full of grants made at the old pace:
                        # the reservations behind this one keep the lowered pace after it
                        slot.t = slot.pace = wake_at
                        for state in states:
                            if state.cut:
                                self._respace(state, now)
        except BaseException:
            with self._lock:
                self._release(states, slot)
            raise
        return now - start

    def used(self, key: Hashable, now: float | None = None) -> int:
        """Units reserved for ``key`` in the window ``(now - window_s, now]`` (``now``: the clock).

        Reservations in the future are not counted until their time; cancelled ones never are.
        """
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                return 0
            end = self._clock() if now is None else now
            start = end - self._window
            return sum(slot.units for slot in state.slots if start < slot.t <= end)

    def peak(self, key: Hashable) -> int:
        """Largest number of units granted to ``key`` in any window of ``window_s`` so far.

        Measured over the times ``acquire`` returned, not the reserved times.
        """
        state = self._keys.get(key)
        return 0 if state is None else state.peak

    def _states(self, keys: Iterable[Hashable]) -> list[_KeyState]:
        """The state of each distinct key, created on first use."""
        if isinstance(keys, str | bytes):
            raise TypeError("keys must be an iterable of keys, e.g. ('site:...', 'cred:...')")
        unique = dict.fromkeys(keys)
        if not unique:
            raise ValueError("acquire needs at least one key")
        states: list[_KeyState] = []
        for key in unique:
            state = self._keys.get(key)
            if state is None:
                state = self._keys[key] = _KeyState()
            states.append(state)
        return states

    def _limit_at(self, state: _KeyState, now: float) -> int:
        """The key's limit at ``now``: its cut plus ``increase`` per whole window since."""
        limit = self._projected(state, now)
        if limit >= self._limit:
            state.cut = 0
        return limit

    def _projected(self, state: _KeyState, t: float) -> int:
        """The key's limit at ``t`` (now or later) if no other slow-down comes first."""
        if not state.cut:
            return self._limit
        return min(self._limit, state.cut + self._increase * int((t - state.cut_at)
                                                                 // self._window))

    def _respace(self, state: _KeyState, now: float) -> None:
        """Move the key's future reservations later so they follow its lowered pace.

        Each follows the one before by ``window_s`` over the limit at its own time: spaced at
        the pace of the cut alone, a deep cut (to 1) would hold every pending reservation one
        window apart long after the limit had recovered, and a new cut before they drain would
        keep the key at that pace for good (measured: 1 request a window for minutes).
        """
        last = state.recent[-1] if state.recent else None
        earliest = now if last is None else max(
            now, last.t + self._window / self._limit_at(state, now) * last.units)
        for slot in state.slots:
            if slot.t <= now:
                continue
            slot.t = slot.pace = max(slot.t, earliest)
            earliest = slot.t + self._window / self._projected(state, slot.t) * slot.units

    def _reserve(self, states: list[_KeyState], units: int, now: float) -> _Slot:
        """Record ``units`` at the earliest instant that every key admits, and return the slot."""
        horizon = now - self._admission
        t, pace = now, -math.inf
        for state in states:
            slots = state.slots
            while slots and slots[0].t <= horizon:
                state.reserved -= slots.popleft().units
            if not slots:
                continue
            last = slots[-1]
            self._limit_at(state, now)
            # behind reservations in the future, the limit of their time (it may have recovered)
            limit = max(units, self._projected(state, max(now, last.t)))
            pace = max(pace, last.pace + self._window / limit * last.units)
            if state.reserved + units > limit:
                t = max(t, self._free_after(slots, state.reserved, units, limit))
        # the pacing schedule may run up to the catch-up allowance behind now: slots that went
        # unused a moment ago (no request was ready) are made up; the window check still holds
        pace = now if pace == -math.inf else max(pace, now - self._catch_up)
        held = t > max(now, pace)  # the window, not the pace, sets the time: no lag after it
        t = max(t, pace)
        slot = _Slot(t, units, t if held else pace)
        for state in states:
            state.slots.append(slot)
            state.reserved += units
        return slot

    def _recheck(self, states: list[_KeyState], units: int, now: float) -> float:
        """Earliest time from ``now`` at which granting keeps every key within ``limit`` over the
        times earlier grants actually happened (later than reserved if the event loop ran late)."""
        horizon = now - self._admission
        t = now
        for state in states:
            recent = state.recent
            while recent and recent[0].t <= horizon:
                state.recent_units -= recent.popleft().units
            # a key lowered below ``units`` admits them into an empty window only
            limit = max(units, self._limit_at(state, now))
            if state.recent_units + units > limit:
                t = max(t, self._free_after(recent, state.recent_units, units, limit))
        return t

    def _free_after(self, entries: deque[_Slot], total: int, units: int, limit: int) -> float:
        """When ``entries`` (oldest first, ``total`` units) make room for ``units`` under ``limit``.

        That is when the newest entry that does not fit beside ``units`` has left the admission
        window; the walk starts from whichever end is shorter. The result ``t`` satisfies
        ``t - (window_s + slack_s) >= entry.t`` exactly in floating point, so the half-open
        window ending at ``t`` no longer holds that entry.
        """
        room = limit - units
        if total - room <= room:
            oldest = iter(entries)
            entry = next(oldest)
            drop = total - room - entry.units
            while drop > 0:
                entry = next(oldest)
                drop -= entry.units
        else:
            newest = reversed(entries)
            entry = next(newest)
            keep = room - entry.units
            while keep >= 0:
                entry = next(newest)
                keep -= entry.units
        t = entry.t + self._admission
        while t - self._admission < entry.t:
            t = math.nextafter(t, math.inf)
        return t

    @staticmethod
    def _release(states: list[_KeyState], slot: _Slot) -> None:
        """Remove a reservation that will not be used from every key that still holds it."""
        for state in states:
            try:
                state.slots.remove(slot)
            except ValueError:
                continue  # already pruned: the waiter overslept a whole window
            state.reserved -= slot.units

    def _trim_grants(self, state: _KeyState, now: float) -> None:
        """Forget grants that have left the window ``(now - window_s, now]``."""
        grants, horizon = state.grants, now - self._window
        while grants and grants[0].t <= horizon:
            state.granted -= grants.popleft().units

    def _record_grant(self, states: list[_KeyState], units: int, at: float) -> None:
        """Log a grant at ``at`` for each key and update its peak over windows of ``window_s``."""
        for state in states:
            self._trim_grants(state, at)
            state.first = min(state.first, at)
            grants = state.grants
            grant = _Slot(at, units)
            state.recent.append(grant)
            state.recent_units += units
            grants.append(grant)
            state.granted += units
            state.peak = max(state.peak, state.granted)
