"""Faults: every retryable kind is retried with nothing lost; unrecoverable ones halt fast."""

from __future__ import annotations

import time

import pytest

import gsckit
from gsckit import EngineConfig, RetryPolicy, RunHalted, Timeouts
from gsckit.sim import Faults

from .conftest import SITE, TOKEN, assert_matches_truth, day_range, duplicate_keys, run

FAST_RETRY = RetryPolicy(max_attempts=8, base_s=0.01, max_backoff_s=0.05, quota_pause_after=3,
                         quota_pause_s=0.2)


def fast(**changes):
    return EngineConfig(retry=FAST_RETRY, timeouts=Timeouts(total=5, connect=2, sock_read=0.5),
                        **changes)


@pytest.mark.parametrize("kind", ["429", "403_quota", "403_rate", "500", "503", "reset",
                                  "truncate", "invalid_json", "stall"])
async def test_each_retryable_fault_is_retried_with_nothing_lost(make_sim, db, kind):
    sim = await make_sim(rows_per_day=30_000,
                         faults=Faults(seed=7, rates={kind: 0.3}, stall_s=2.0))
    days = day_range(30, 6)
    events = []
    report = await run(sim, db, days[0], days[-1], config=fast(), listeners=[events.append])
    stats = sim.stats()
    assert stats["faults"].get(kind, 0) > 0, "the simulator injected no fault"
    assert report.ok and report.failed == 0
    assert report.retries >= stats["faults"][kind] > 0
    assert any(e.kind == "retry" for e in events)
    assert_matches_truth(db, sim, days)
    assert duplicate_keys(db) == 0


async def test_retry_after_header_is_honoured(make_sim, db):
    sim = await make_sim(rows_per_day=10, faults=Faults(script={1: "429"}, retry_after_s=0.4))
    [day] = day_range(5, 1)
    events = []
    await run(sim, db, day, day, config=fast(), listeners=[events.append])
    [retry] = [e for e in events if e.kind == "retry"]
    assert retry.data["delay_s"] == pytest.approx(0.05)  # capped by max_backoff_s
    events.clear()
    sim = await make_sim(rows_per_day=10, faults=Faults(script={1: "429"}, retry_after_s=0.4))
    policy = RetryPolicy(base_s=0.01, max_backoff_s=5.0)
    await run(sim, db, day, day, config=EngineConfig(retry=policy), force=True,
              listeners=[events.append])
    [retry] = [e for e in events if e.kind == "retry"]
    assert retry.data["delay_s"] == pytest.approx(0.4)


async def test_persistent_quota_errors_pause_the_site_then_resume(make_sim, db):
    sim = await make_sim(rows_per_day=10,
                         faults=Faults(script={1: "403_quota", 2: "403_quota", 3: "403_quota"}))
    days = day_range(20, 3)
    events = []
    started = time.perf_counter()
    report = await run(sim, db, days[0], days[-1], config=fast(max_concurrency=1),
                       listeners=[events.append])
    assert report.ok
    pauses = [e for e in events if e.kind == "pause"]
    assert len(pauses) == 1 and pauses[0].data["site"] == SITE
    assert time.perf_counter() - started >= 0.2
    assert_matches_truth(db, sim, days)


async def test_quota_that_outlasts_the_pause_halts_resumably(make_sim, db):
    sim = await make_sim(rows_per_day=10, faults=Faults(rates={"403_quota": 1.0}))
    [day] = day_range(20, 1)
    with pytest.raises(RunHalted, match="long-term load quota"):
        await run(sim, db, day, day, config=fast())
    sim.configure(faults=Faults())
    report = await run(sim, db, day, day, config=fast())
    assert report.done == 1


async def test_exhausted_retries_fail_the_day_and_a_rerun_completes_it(make_sim, db):
    sim = await make_sim(rows_per_day=10, faults=Faults(rates={"503": 1.0}))
    days = day_range(20, 2)
    policy = RetryPolicy(max_attempts=2, base_s=0.01, max_backoff_s=0.02)
    report = await run(sim, db, days[0], days[-1], config=EngineConfig(retry=policy))
    assert (report.failed, report.done, report.ok) == (2, 0, False)
    assert len(report.failures) == 2
    sim.configure(faults=Faults())
    again = await run(sim, db, days[0], days[-1], config=EngineConfig(retry=policy))
    assert again.ok and again.done == 2
    assert_matches_truth(db, sim, days)


async def test_expired_token_is_refreshed_once(make_sim, db):
    sim = await make_sim(rows_per_day=10, tokens=frozenset({"fresh-token"}))
    calls = []

    def source():
        calls.append(1)
        return "stale-token" if len(calls) == 1 else "fresh-token"

    [day] = day_range(5, 1)
    # no pre-flight: its sites.list would meet the stale token first
    report = await run(sim, db, day, day, token=source, preflight=False)
    assert report.ok and len(calls) == 2
    assert sim.stats()["by_status"].get("401") == 1


async def test_a_token_rejected_twice_halts(make_sim, db):
    sim = await make_sim(rows_per_day=10, tokens=frozenset({"other"}))
    [day] = day_range(5, 1)
    with pytest.raises(RunHalted, match="401") as info:
        await run(sim, db, day, day, preflight=False)  # the engine's 401, not the pre-flight's
    assert TOKEN not in str(info.value)
    assert sim.stats()["requests"] == 2


@pytest.mark.parametrize("kind, error", [("403_permission", gsckit.PermissionDenied),
                                         ("404", gsckit.SiteNotFound),
                                         ("400", gsckit.BadRequest)])
async def test_unrecoverable_error_halts_every_worker_fast(make_sim, db, kind, error):
    sim = await make_sim(rows_per_day=30_000, latency_s=0.3,
                         faults=Faults(script={12: kind}))
    days = day_range(40, 30)
    with pytest.raises(RunHalted) as info:
        await run(sim, db, days[0], days[-1], max_concurrency=8)
    halted = info.value
    assert isinstance(halted.cause, error)
    assert SITE in str(halted) and "re-run" in str(halted)
    report = halted.report
    assert report.halted and report.halt_s < 1.0
    log = sim.request_log
    fault_at = next(r.finished for r in log if r.fault == kind)
    assert not [r for r in log if r.arrived > fault_at + 0.05], "a request started after halt"
    committed = gsckit.open(db).days()
    assert committed.height == report.done
    assert_matches_truth(db, sim, list(committed["date"]))
    sim.configure(faults=Faults())
    resumed = await run(sim, db, days[0], days[-1])
    assert resumed.ok and resumed.skipped == report.done
    assert_matches_truth(db, sim, days)


async def test_halt_cancels_waits_in_backoff_and_quota_pause(make_sim, db):
    # site A sleeps in a 30 s quota pause while site B's workers go on; B's 403 must stop the
    # run at once, pause included
    sim = await make_sim(rows_per_day=10, latency_s=0.05,
                         faults=Faults(script={1: "403_quota", 9: "403_permission"}))
    days = day_range(40, 20)
    policy = RetryPolicy(base_s=0.01, max_backoff_s=0.02, quota_pause_after=1, quota_pause_s=30)
    events = []
    started = time.perf_counter()
    with pytest.raises(RunHalted) as info:
        await run(sim, db, days[0], days[-1], site=[SITE, "sc-domain:b.example"],
                  config=EngineConfig(max_concurrency=4, retry=policy),
                  listeners=[events.append])
    assert [e.kind for e in events].count("pause") == 1
    assert time.perf_counter() - started < 10
    assert info.value.report.halt_s < 1.0
