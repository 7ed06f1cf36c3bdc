"""Tests for gsckit.ratelimit: the sliding-window guarantee, pacing, FIFO, keys and cancellation.

Almost every test runs on :class:`VirtualTime`, which parks each sleeping task and, once every task
is parked, jumps the clock to the earliest deadline; hours of schedule run exactly in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from typing import Any

import pytest

from gsckit.ratelimit import CATCH_UP_SLOTS, SlidingWindowLimiter

Grant = tuple[float, int]


class VirtualTime:
    """A virtual clock with an injectable ``sleep`` and a driver that steps the earliest sleeper.

    ``lateness()`` (default 0) is added to every sleep, as a busy event loop wakes timers late.
    """

    def __init__(self, start: float = 0.0, lateness: Callable[[], float] = lambda: 0.0) -> None:
        self.now = start
        self._lateness = lateness
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._parked = 0
        self._alive = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self.now + delay + self._lateness()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        self._parked += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                self._parked -= 1
            raise

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a task whose only waits are on this clock."""
        task = asyncio.ensure_future(coro)
        self._alive += 1
        task.add_done_callback(self._finished)
        return task

    def _finished(self, _task: asyncio.Task[Any]) -> None:
        self._alive -= 1

    async def settle(self) -> None:
        """Let every spawned task run until it is parked on the clock or done."""
        for _ in range(1000):
            await asyncio.sleep(0)
            if self._parked == self._alive:
                return
        raise AssertionError("a task is waiting on something other than the virtual clock")

    def _wake_next(self) -> bool:
        while self._sleepers:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self.now = max(self.now, deadline)
            self._parked -= 1
            future.set_result(None)
            return True
        return False

    async def advance(self, to: float) -> None:
        """Run every sleeper due by ``to`` in deadline order, then set the clock to ``to``."""
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= to:
            self._wake_next()
            await self.settle()
        self.now = max(self.now, to)

    async def run_all(self) -> None:
        """Run until every spawned task is done."""
        await self.settle()
        while self._alive:
            assert self._wake_next(), "tasks are alive but none is sleeping"
            await self.settle()


def max_in_window(grants: Sequence[Grant], window: float) -> int:
    """Most units whose times fit in one closed window ``[a, a + window]`` (stricter than the
    limiter's half-open windows)."""
    ordered = sorted(grants)
    best = total = first = 0
    for t, units in ordered:
        total += units
        while ordered[first][0] < t - window:
            total -= ordered[first][1]
            first += 1
        best = max(best, total)
    return best


async def saturate(
    limiter: SlidingWindowLimiter,
    vt: VirtualTime,
    key_sets: Sequence[tuple[Hashable, ...]],
    span: float,
    units: int = 1,
) -> dict[Hashable, list[Grant]]:
    """One worker per key set, all starting at once, acquiring in a loop for ``span`` seconds."""
    end = vt.now + span
    grants: dict[Hashable, list[Grant]] = {}

    async def worker(keys: tuple[Hashable, ...]) -> None:
        while vt.now < end:
            await limiter.acquire(keys, units)
            for key in keys:
                grants.setdefault(key, []).append((vt.now, units))

    for keys in key_sets:
        vt.spawn(worker(keys))
    await vt.run_all()
    return grants


def test_max_in_window_counts_closed_windows() -> None:
    assert max_in_window([(0.0, 1), (30.0, 1), (60.0, 1), (60.5, 1)], 60.0) == 3
    assert max_in_window([(0.0, 5), (61.0, 5), (90.0, 2)], 60.0) == 7


@pytest.mark.parametrize("units", [1, 5])
async def test_4000_tasks_never_exceed_limit_in_any_window_and_keep_throughput(units: int) -> None:
    vt = VirtualTime(start=12_345.678)
    limiter = SlidingWindowLimiter(960, 60.0, clock=vt.clock, sleep=vt.sleep)
    start = vt.now
    grants = (await saturate(limiter, vt, [("cred:1",)] * 4000, 600.0, units))["cred:1"]

    assert max_in_window(grants, 60.0) == 960
    assert max_in_window(grants, 60.999) == 960  # the admission window is 61 s (1 s slack)
    assert limiter.peak("cred:1") == 960
    in_span = sum(u for t, u in grants if t < start + 600.0)
    assert in_span >= 0.95 * 960 * 10
    assert sum(u for _, u in grants) == in_span + 4000 * units  # each worker's last grant


@pytest.mark.parametrize("workers", [1, 8])
async def test_a_few_busy_workers_keep_the_guarantee_and_the_throughput(workers: int) -> None:
    vt = VirtualTime(start=777.777)
    limiter = SlidingWindowLimiter(960, 60.0, clock=vt.clock, sleep=vt.sleep)
    start = vt.now
    grants = (await saturate(limiter, vt, [("cred:1",)] * workers, 600.0))["cred:1"]

    assert max_in_window(grants, 60.999) == 960
    assert limiter.peak("cred:1") == 960
    assert sum(u for t, u in grants if t < start + 600.0) >= 0.95 * 960 * 10


async def test_slack_keeps_jittered_arrivals_within_the_limit() -> None:
    jitter = random.Random(7)
    peaks: dict[float, tuple[int, int]] = {}
    for slack in (1.0, 0.0):
        vt = VirtualTime(start=16_300.1)  # grants cross 2**14, where t + 60 - 60 != t
        limiter = SlidingWindowLimiter(960, 60.0, slack_s=slack, clock=vt.clock, sleep=vt.sleep)
        grants = (await saturate(limiter, vt, [("cred:1",)] * 1000, 300.0))["cred:1"]
        arrivals = [(t + jitter.uniform(0.0, 0.5), u) for t, u in grants]
        peaks[slack] = (limiter.peak("cred:1"), max_in_window(arrivals, 60.0))

    assert peaks[1.0][0] == 960
    assert peaks[1.0][1] <= 960
    assert peaks[0.0][0] == 960  # exact over grant times (half-open windows) ...
    assert peaks[0.0][1] > 960  # ... but the server, seeing jittered arrivals, would count more


async def test_a_late_event_loop_cannot_push_a_window_over_the_limit() -> None:
    # The engine's scaled quota (12 per 1.5 s, 30 ms slack) on a loop that wakes 1 timer in 10
    # up to 200 ms late: the grant after a late one must wait rather than join its window.
    lag = random.Random(3)
    vt = VirtualTime(lateness=lambda: lag.uniform(0.0, 0.2) if lag.random() < 0.1 else 0.0)
    limiter = SlidingWindowLimiter(12, 1.5, clock=vt.clock, sleep=vt.sleep)
    grants = (await saturate(limiter, vt, [("cred:1",)] * 16, 150.0))["cred:1"]

    assert max_in_window(grants, 1.529) == 12
    assert limiter.peak("cred:1") == 12
    assert sum(u for t, u in grants if t < 150.0) >= 0.9 * 12 * 100


@pytest.mark.parametrize(("slack", "expected_wait"), [(1.0, 0.5), (0.0, 0.0)])
async def test_admission_window_is_window_plus_slack(slack: float, expected_wait: float) -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(4, 60.0, slack_s=slack, clock=vt.clock, sleep=vt.sleep)
    for _ in range(4):
        vt.spawn(limiter.acquire(["k"]))  # granted at 0, 15, 30, 45
    await vt.advance(60.5)
    late = vt.spawn(limiter.acquire(["k"]))
    await vt.run_all()
    assert late.result() == expected_wait  # the grant at 0 is 60.5 s old: inside 61 s, not 60 s


async def test_sites_sharing_a_credential_and_a_site_shared_by_credentials() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(10, 60.0, clock=vt.clock, sleep=vt.sleep)
    key_sets = (
        [("site:A", "cred:1")] * 30 + [("site:B", "cred:1")] * 30 + [("site:A", "cred:2")] * 30
    )
    grants = await saturate(limiter, vt, key_sets, 600.0)

    for key in ("site:A", "site:B", "cred:1", "cred:2"):
        assert max_in_window(grants[key], 60.0) <= 10, key
        assert limiter.peak(key) <= 10, key
    assert max_in_window(grants["cred:1"], 60.0) == 10
    assert max_in_window(grants["site:A"], 60.0) == 10
    in_span = [t for t, _ in grants["site:A"] if t < 600.0]
    assert len(in_span) >= 0.95 * 10 * 10  # site A is the bottleneck and stays busy


async def test_keys_are_independent() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(10, 60.0, clock=vt.clock, sleep=vt.sleep)
    for _ in range(25):
        vt.spawn(limiter.acquire(("site:B", "cred:2")))
    await vt.advance(1.0)
    assert limiter.used("site:B", now=54.0) == 10  # B's window is full, and booked beyond

    assert await limiter.acquire(("site:A", "cred:1")) == 0.0
    same_credential = vt.spawn(limiter.acquire(("site:A", "cred:2")))
    await vt.run_all()
    assert same_credential.result() == 151.0  # cred:2 is shared: FIFO behind site B's 25
    assert limiter.used("site:A", now=1.0) == 1


async def test_one_reservation_time_for_all_keys() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(2, 60.0, clock=vt.clock, sleep=vt.sleep)
    await limiter.acquire(("site:A", "cred:1"))
    vt.spawn(limiter.acquire(("site:A", "cred:1")))
    await vt.advance(30.0)
    waiter = vt.spawn(limiter.acquire(("site:A", "cred:2")))
    await vt.settle()

    assert limiter.used("cred:2", now=60.9) == 0  # no credential slot held while site A is full
    assert limiter.used("cred:2", now=61.0) == 1
    await vt.run_all()
    assert waiter.result() == 31.0


async def test_pacing_is_even_and_scales_with_batch_size() -> None:
    vt = VirtualTime(start=5_000.0)
    limiter = SlidingWindowLimiter(960, 60.0, clock=vt.clock, sleep=vt.sleep)
    sizes = [1, 4, 1, 9, 2, 1, 7] * 30
    grants: list[Grant] = []

    async def one(units: int) -> None:
        await limiter.acquire(["cred:1"], units)
        grants.append((vt.now, units))

    for units in sizes:
        vt.spawn(one(units))
    await vt.run_all()

    assert limiter.interval_s == 0.0625
    assert grants[0][0] == 5_000.0
    for (t0, u0), (t1, _) in itertools.pairwise(grants):
        assert t1 - t0 >= limiter.interval_s * u0 - 1e-9
    assert grants[-1][0] - grants[0][0] >= limiter.interval_s * (sum(sizes) - sizes[-1]) - 1e-6


async def test_pacing_slots_missed_a_moment_ago_are_made_up_within_the_window() -> None:
    """Workers that were all busy let pacing slots pass; those of the last quarter second are
    made up at once (at most CATCH_UP_SLOTS), so a closed group of workers keeps the pace."""
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(960, 60.0, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []

    async def one() -> None:
        await limiter.acquire(["cred:1"])
        grants.append(vt.now)

    vt.spawn(one())
    await vt.advance(0.2)  # the slots at 0.0625, 0.125 and 0.1875 went unused
    for _ in range(5):
        vt.spawn(one())
    await vt.run_all()
    assert grants == pytest.approx([0.0, 0.2, 0.2, 0.2, 0.25, 0.3125])
    await vt.advance(10.0)  # a long pause: only the last CATCH_UP_SLOTS are made up
    grants.clear()
    for _ in range(CATCH_UP_SLOTS + 3):
        vt.spawn(one())
    await vt.run_all()
    now = grants[0]
    assert grants.count(now) == CATCH_UP_SLOTS + 1
    assert grants[CATCH_UP_SLOTS + 1:] == pytest.approx([now + 0.0625, now + 0.125])


async def test_grants_follow_call_order_for_one_key() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(20, 10.0, clock=vt.clock, sleep=vt.sleep)
    sizes = [12, 1, 20, 3, 1, 1, 17, 2] * 40
    order: list[int] = []

    async def one(index: int, units: int) -> None:
        await limiter.acquire(["k"], units)
        order.append(index)

    for index, units in enumerate(sizes):
        vt.spawn(one(index, units))
    await vt.run_all()
    assert order == list(range(len(sizes)))


async def test_cancelling_the_last_waiter_gives_its_slot_to_the_next_caller() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(4, 60.0, clock=vt.clock, sleep=vt.sleep)
    first, second, third = (vt.spawn(limiter.acquire(["k"])) for _ in range(3))
    await vt.advance(5.0)
    assert limiter.used("k", now=30.0) == 3

    third.cancel()
    await vt.settle()
    assert third.cancelled()
    assert limiter.used("k", now=30.0) == 2
    fourth = vt.spawn(limiter.acquire(["k"]))
    await vt.run_all()
    assert [first.result(), second.result(), fourth.result()] == [0.0, 15.0, 25.0]
    assert limiter.used("k", now=30.0) == 3


async def test_cancelling_a_middle_waiter_frees_window_capacity_on_every_key() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(4, 60.0, slack_s=1.0, clock=vt.clock, sleep=vt.sleep)
    keys = ("site:A", "cred:1")
    tasks = [vt.spawn(limiter.acquire(keys)) for _ in range(4)]  # reserved at 0, 15, 30, 45
    await vt.advance(5.0)

    tasks[1].cancel()
    await vt.settle()
    assert limiter.used("site:A", now=45.0) == 3
    assert limiter.used("cred:1", now=45.0) == 3
    late = vt.spawn(limiter.acquire(keys))
    await vt.run_all()
    assert [tasks[i].result() for i in (0, 2, 3)] == [0.0, 30.0, 45.0]
    assert late.result() == 55.0  # at 60; with the cancelled reservation kept it would be 61


async def test_cancelling_every_waiter_leaves_a_clean_limiter() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(10, 60.0, clock=vt.clock, sleep=vt.sleep)
    tasks = [vt.spawn(limiter.acquire(("site:A", "cred:1"))) for _ in range(100)]
    await vt.advance(15.0)  # three granted: at 0, 6 and 12
    for task in tasks:
        task.cancel()
    await vt.settle()

    assert sum(not task.cancelled() for task in tasks) == 3
    assert limiter.used("cred:1", now=20.0) == 3
    assert limiter.used("cred:1", now=54.0) == 3  # 10 if the cancelled reservations leaked
    assert limiter.used("cred:1", now=500.0) == 0
    fresh = vt.spawn(limiter.acquire(("site:B", "cred:1")))
    await vt.run_all()
    assert fresh.result() == 3.0  # paced after the grant at 12, not after 97 cancelled ones


async def test_a_failing_sleep_releases_the_reservation() -> None:
    async def broken_sleep(delay: float) -> None:
        raise RuntimeError("timer broke")

    now = [0.0]
    limiter = SlidingWindowLimiter(2, 60.0, clock=lambda: now[0], sleep=broken_sleep)
    await limiter.acquire(["k"])
    with pytest.raises(RuntimeError, match="timer broke"):
        await limiter.acquire(["k"])
    assert limiter.used("k", now=30.0) == 1
    now[0] = 30.0
    assert await limiter.acquire(["k"]) == 0.0


async def test_an_early_waking_sleep_is_repeated_until_the_reserved_time() -> None:
    now = [0.0]

    async def hasty_sleep(delay: float) -> None:
        now[0] += max(delay / 2, 1e-6)
        await asyncio.sleep(0)

    limiter = SlidingWindowLimiter(10, 60.0, clock=lambda: now[0], sleep=hasty_sleep)
    waits = [await limiter.acquire(["k"]) for _ in range(3)]
    assert waits[0] == 0.0
    assert waits[1] >= 6.0
    assert now[0] >= 12.0


async def test_a_key_repeated_in_one_call_counts_once() -> None:
    limiter = SlidingWindowLimiter(2, 60.0)
    await limiter.acquire(("k", "k", "cred:1"))
    assert limiter.used("k") == 1
    assert limiter.used("cred:1") == 1


async def test_invalid_arguments_are_rejected() -> None:
    limiter = SlidingWindowLimiter(5, 1.0)
    for units in (0, -1, 6):
        with pytest.raises(ValueError, match=r"units must be 1\.\.5"):
            await limiter.acquire(["k"], units)
    with pytest.raises(ValueError, match="at least one key"):
        await limiter.acquire([])
    with pytest.raises(TypeError, match="iterable of keys"):
        await limiter.acquire("cred:1")
    assert limiter.used("k") == 0
    with pytest.raises(ValueError, match="limit must be at least 1"):
        SlidingWindowLimiter(0)
    for window in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="window_s must be"):
            SlidingWindowLimiter(5, window)
    with pytest.raises(ValueError, match="slack_s must be"):
        SlidingWindowLimiter(5, 1.0, slack_s=-0.1)


def test_defaults_and_repr() -> None:
    limiter = SlidingWindowLimiter(960)
    assert (limiter.limit, limiter.window_s, limiter.slack_s) == (960, 60.0, 1.0)
    assert limiter.interval_s == 0.0625
    assert SlidingWindowLimiter(5, 0.5).slack_s == 0.05
    assert repr(limiter) == "SlidingWindowLimiter(limit=960, window_s=60.0, slack_s=1.0)"


async def test_memory_stays_bounded_over_a_long_run() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(50, 10.0, clock=vt.clock, sleep=vt.sleep)
    state_sizes: list[tuple[int, int]] = []

    async def worker() -> None:
        while vt.now < 1_000.0:
            await limiter.acquire(["k"])
            state = limiter._keys["k"]  # white-box: the deques are what must stay bounded
            state_sizes.append((len(state.slots), len(state.grants)))

    for _ in range(3):
        vt.spawn(worker())
    await vt.run_all()
    assert len(state_sizes) > 4_000
    assert max(slots for slots, _ in state_sizes) <= 50 + 3
    assert max(grants for _, grants in state_sizes) <= 50


def test_usable_from_more_than_one_event_loop() -> None:
    limiter = SlidingWindowLimiter(1, 0.02)  # built with no running loop

    async def twice() -> float:
        return await limiter.acquire(["k"]) + await limiter.acquire(["k"])

    assert asyncio.run(twice()) > 0.015
    assert asyncio.run(twice()) > 0.015


async def test_real_clock_and_asyncio_sleep() -> None:
    # slack 50 ms rather than the default 10 ms: a loaded CI runner can wake a timer that late.
    limiter = SlidingWindowLimiter(5, 0.5, slack_s=0.05)
    grants: list[Grant] = []
    order: list[int] = []

    async def one(index: int) -> None:
        await limiter.acquire(["k"])
        grants.append((time.monotonic(), 1))
        order.append(index)

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(20)))
    elapsed = time.monotonic() - start

    assert order == list(range(20))
    assert max_in_window(grants, 0.5) == 5
    assert limiter.peak("k") == 5
    assert 2.0 <= elapsed < 3.5  # 4 windows of 0.55 s; the last 5 paced 0.1 s apart


# --- slowing down after a 429 (AIMD) -------------------------------------------------------


def counts_at_grants(grants: Sequence[Grant], window: float) -> list[tuple[float, int]]:
    """For each grant time t: the units granted in the half-open window ``(t - window, t]``."""
    ordered = sorted(grants)
    out, total, first = [], 0, 0
    for t, units in ordered:
        total += units
        while ordered[first][0] <= t - window:
            total -= ordered[first][1]
            first += 1
        out.append((t, total))
    return out


async def test_slow_down_lowers_the_limit_and_any_window_keeps_to_it_while_it_recovers() -> None:
    vt = VirtualTime(start=1_000.0)
    limiter = SlidingWindowLimiter(960, 60.0, clock=vt.clock, sleep=vt.sleep)
    grants: list[Grant] = []
    limits: list[tuple[float, int]] = []
    cut_at = 1_000.0 + 150.0
    end = 1_000.0 + 900.0

    async def worker() -> None:
        while vt.now < end:
            await limiter.acquire(["cred:1"])
            grants.append((vt.now, 1))
            limits.append((vt.now, limiter.limit_of("cred:1")))

    async def throttle() -> None:
        await vt.sleep(cut_at - vt.now)
        assert limiter.slow_down(["cred:1"])

    for _ in range(8):
        vt.spawn(worker())
    vt.spawn(throttle())
    await vt.run_all()

    # the cut is half of what the key was granted in the last window, then +48 a window
    granted = sum(u for t, u in grants if cut_at - 60.0 < t <= cut_at)
    assert 900 < granted <= 960
    expected = {k: min(960, granted // 2 + 48 * k) for k in range(13)}
    assert expected[0] < 481 and expected[11] == 960
    seen = {int((t - cut_at) // 60): lim for t, lim in limits if t >= cut_at}
    assert {k: seen[k] for k in range(13)} == expected
    # every grant after the cut keeps the window ending at it within the limit of that moment
    limit_at = dict(limits)
    for t, count in counts_at_grants(grants, 60.0):
        if t >= cut_at:
            assert count <= limit_at[t], (t, count, limit_at[t])
    # and the lowered rate is used, not wasted: each full window gets >= 95% of its limit
    for k in range(1, 10):
        lo = cut_at + 60.0 * k + 1.0
        got = sum(u for t, u in grants if lo < t <= lo + 60.0)
        assert got >= 0.95 * expected[k], (k, got, expected[k])


async def test_pending_reservations_follow_the_lowered_pace() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(60, 60.0, slack_s=0.0, clock=vt.clock, sleep=vt.sleep)
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire(["site:A", "cred:1"])
        times.append(vt.now)

    for _ in range(40):
        vt.spawn(one())  # booked one a second
    await vt.advance(10.5)
    assert len(times) == 11
    limiter.slow_down(["site:A"])
    # half of what it sends per window: 11 in 10.5 s, a key younger than a window, is 62.9 a
    # window, so half of its limit of 60
    assert limiter.limit_of("site:A") == 30
    assert limiter.limit_of("cred:1") == 60  # not named: untouched
    await vt.run_all()
    after = [t for t in times if t > 10.5]
    assert len(after) == 29

    def limit_at(t: float) -> int:  # 30, then + 3 (60 // 20) per whole window since the cut
        return min(60, 30 + 3 * int((t - 10.5) // 60.0))

    # no burst: the booked 1-s pace became the lowered pace, 60 s / the limit of the moment
    for a, b in itertools.pairwise(after):
        assert b - a >= 60.0 / limit_at(a) - 1e-9
    for t, count in counts_at_grants([(t, 1) for t in times], 60.0):
        if t > 10.5:
            assert count <= limit_at(t), (t, count)


async def test_a_deep_cut_recovers_at_the_pace_of_the_limit_not_of_the_cut() -> None:
    # found by the fault campaign (benchmarks/soak.py): after cuts to 1, the 16 pending
    # reservations were spaced a window apart and the key sent 1 request a window for 16 windows
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(960, 60.0, clock=vt.clock, sleep=vt.sleep)
    grants: list[float] = []
    cut_at, end = 120.0, 900.0

    async def worker() -> None:
        while vt.now < end:
            await limiter.acquire(["cred:1"])
            grants.append(vt.now)

    async def throttle() -> None:
        await vt.sleep(cut_at)
        while limiter.limit_of("cred:1") > 1:
            limiter.slow_down(["cred:1"])

    for _ in range(16):
        vt.spawn(worker())
    vt.spawn(throttle())
    await vt.run_all()

    def limit_at(t: float) -> int:  # 1, then + 48 (960 // 20) per whole window since the cut
        return min(960, 1 + 48 * int((t - cut_at) // 60.0))

    for k in range(2, 12):
        lo = cut_at + 60.0 * k
        got = sum(1 for t in grants if lo < t <= lo + 60.0)
        assert got >= 0.9 * limit_at(lo), (k, got, limit_at(lo))
    for t, count in counts_at_grants([(t, 1) for t in grants], 60.0):
        if t > cut_at:
            assert count <= limit_at(t), (t, count)


async def test_a_slow_down_is_answered_once_per_request_generation() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(100, 10.0, clock=vt.clock, sleep=vt.sleep)
    await limiter.acquire(["k"])  # the key is older than a window: no extrapolation
    await vt.advance(20.0)
    for _ in range(40):
        vt.spawn(limiter.acquire(["k"]))
    await vt.advance(23.95)
    before = limiter.now()  # a request granted now, answered 429 later, by many at once
    await vt.advance(4.0)
    assert limiter.slow_down(["k"], since=before)
    first = limiter.limit_of("k")
    assert first == 20  # half of the 40 granted within the last window
    for _ in range(5):  # the other answers to requests sent before the cut change nothing
        assert not limiter.slow_down(["k"], since=before)
    assert limiter.limit_of("k") == first
    after = limiter.now()
    await vt.advance(25.0)
    assert limiter.slow_down(["k"], since=after + 0.5)  # sent after the cut: a new signal
    assert limiter.limit_of("k") == 10
    assert limiter.slow_down(["k"])  # no since: always lowers
    assert limiter.limit_of("k") == 5
    await vt.run_all()


async def test_a_batch_larger_than_a_lowered_limit_waits_for_an_empty_window() -> None:
    vt = VirtualTime()
    limiter = SlidingWindowLimiter(10, 10.0, slack_s=0.0, clock=vt.clock, sleep=vt.sleep)
    await limiter.acquire(["k"], 4)
    for _ in range(4):
        limiter.slow_down(["k"])
    assert limiter.limit_of("k") == 1
    task = vt.spawn(limiter.acquire(["k"], 3))
    await vt.run_all()
    # admitted as if the limit were 3: paced 10/3 s a unit after the 4 units granted at 0, by
    # which time they have left the window
    assert task.result() == pytest.approx(40 / 3)
    assert limiter.peak("k") == 4


def test_slow_down_arguments_are_checked() -> None:
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="decrease must be"):
            SlidingWindowLimiter(10, 1.0, decrease=bad)
    with pytest.raises(ValueError, match="increase must be"):
        SlidingWindowLimiter(10, 1.0, increase=0)
    limiter = SlidingWindowLimiter(10, 1.0)
    assert limiter.limit_of("never-seen") == 10
    with pytest.raises(TypeError, match="iterable of keys"):
        limiter.slow_down("k")
