"""Faults: every retryable kind is retried with nothing lost; unrecoverable ones halt fast."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time

import pytest

import gsckit
import gsckit.client
from gsckit import EngineConfig, RetryPolicy, RunHalted, Timeouts
from gsckit.cli import _summary
from gsckit.sim import Faults

from .conftest import SITE, TOKEN, assert_matches_truth, day_range, duplicate_keys, run

FAST_RETRY = RetryPolicy(max_attempts=8, base_s=0.01, max_backoff_s=0.05, quota_pause_s=0.2)


def fast(**changes):
    changes.setdefault("retry", FAST_RETRY)
    return EngineConfig(timeouts=Timeouts(total=5, connect=2, sock_read=0.5), **changes)


@pytest.mark.parametrize("kind", ["429", "403_rate", "500", "503", "reset", "truncate",
                                  "invalid_json", "stall"])
async def test_each_retryable_fault_is_retried_with_nothing_lost(make_sim, db, kind):
    sim = await make_sim(rows_per_day=30_000,
                         faults=Faults(seed=7, rates={kind: 0.3}, stall_s=2.0))
    days = day_range(30, 6)
    events = []
    # a scaled rate window: each 429 slows the rate down, and recovery is per window
    report = await run(sim, db, days[0], days[-1], config=fast(qpm_window_s=0.2),
                       listeners=[events.append])
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


async def test_the_load_quota_pauses_the_site_once_then_it_resumes(make_sim, db):
    # three requests in flight together all meet the load quota: one pause, not a stop
    sim = await make_sim(rows_per_day=10, latency_s=0.05,
                         faults=Faults(script={1: "403_quota", 2: "403_quota", 3: "403_quota"}))
    days = day_range(20, 6)
    events = []
    started = time.perf_counter()
    report = await run(sim, db, days[0], days[-1],
                       config=fast(max_concurrency=4, qpm_window_s=0.1),
                       listeners=[events.append])
    assert report.ok and report.stopped == 0
    pauses = [e for e in events if e.kind == "pause"]
    assert len(pauses) == 1 and pauses[0].data["site"] == SITE
    assert [e.data["site"] for e in events if e.kind == "resume"] == [SITE]
    assert not [e for e in events if e.kind == "retry"], "the load quota is not retried in place"
    assert time.perf_counter() - started >= 0.2
    log = sorted(sim.request_log, key=lambda r: r.arrived)
    paused_at = min(r.finished for r in log if r.fault == "403_quota")
    assert not [r for r in log if paused_at + 0.02 < r.arrived < paused_at + 0.18], (
        "a request of the paused site was sent during the pause")
    # after the pause one request probes the site; the rest wait for its answer
    probe, following = [r for r in log if r.arrived > paused_at + 0.18][:2]
    assert following.arrived >= probe.finished
    # the day that was in flight kept its page: nothing fetched twice
    assert sim.stats()["duplicates"] == 0
    assert_matches_truth(db, sim, days)


async def test_a_load_quota_that_persists_stops_the_site_and_a_rerun_resumes(make_sim, db):
    sim = await make_sim(rows_per_day=10, faults=Faults(rates={"403_quota": 1.0}))
    days = day_range(20, 3)
    report = await run(sim, db, days[0], days[-1], config=fast())
    assert not report.ok and not report.halted
    assert (report.done, report.stopped) == (0, 3)
    assert "long-term" in report.stopped_sites[SITE]
    assert sim.stats()["requests"] == 2  # the first pauses the site; the next, after it, stops it
    sim.configure(faults=Faults())
    again = await run(sim, db, days[0], days[-1], config=fast())
    assert again.ok and again.done == 3
    assert_matches_truth(db, sim, days)


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
async def test_unrecoverable_error_halts_every_worker_fast(make_sim, db, kind, error,
                                                          monkeypatch):
    sim = await make_sim(rows_per_day=30_000, latency_s=0.3,
                         faults=Faults(script={12: kind}))
    days = day_range(40, 30)
    # the client's own clock of every HTTP attempt and of the halt: the server's arrival times
    # lag behind the client's sends on a loaded machine, so they cannot tell "after the halt"
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    halts: list[float] = []
    original = gsckit.client.Client._attempt

    async def recorded(self, *args, **kwargs):
        attempts.append(loop.time())
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(gsckit.client.Client, "_attempt", recorded)

    def on_halt(event):
        if event.kind == "halt":
            halts.append(loop.time())

    with pytest.raises(RunHalted) as info:
        await run(sim, db, days[0], days[-1], max_concurrency=8, listeners=[on_halt])
    halted = info.value
    assert isinstance(halted.cause, error)
    assert SITE in str(halted) and "re-run" in str(halted)
    report = halted.report
    assert report.halted and report.halt_s < 1.0
    assert halts and attempts
    assert not [t for t in attempts if t > halts[0]], "a request started after the halt"
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
    policy = RetryPolicy(base_s=0.01, max_backoff_s=0.02, quota_pause_s=30)
    events = []
    started = time.perf_counter()
    with pytest.raises(RunHalted) as info:
        await run(sim, db, days[0], days[-1], site=[SITE, "sc-domain:b.example"],
                  config=EngineConfig(max_concurrency=4, retry=policy),
                  listeners=[events.append])
    assert [e.kind for e in events].count("pause") == 1
    assert time.perf_counter() - started < 10
    assert info.value.report.halt_s < 1.0


# --- the two kinds of quota error --------------------------------------------------------------


def arrivals_per_window(log, window_s: float, since: float) -> int:
    """Most requests the server saw arrive in any window of ``window_s`` after ``since``."""
    times = sorted(r.arrived for r in log if r.arrived >= since)
    best = first = 0
    for last, t in enumerate(times):
        while times[first] <= t - window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


async def test_a_server_quota_below_qpm_slows_the_engine_down_under_it(make_sim, db):
    # scaled time: the server allows 8 per 1 s window, gsckit was told 16
    sim = await make_sim(rows_per_day=10, window_s=1.0, quota_qpm=8)
    days = day_range(80, 40)
    events = []
    report = await run(sim, db, days[0], days[-1], config=fast(max_concurrency=8, qpm=16,
                                                              qpm_window_s=1.0),
                       listeners=[events.append])
    stats = sim.stats()
    assert report.ok and report.done == 40 and not report.halted
    assert stats["rate_limited"] > 0, "the server never said 429: the test proves nothing"
    assert report.rate_limited == stats["rate_limited"]
    assert not [e for e in events if e.kind == "pause"], "a rate limit is not a load quota"
    slowdowns = [e for e in events if e.kind == "slowdown"]
    assert slowdowns and min(e.data["limit"] for e in slowdowns) < 8
    assert_matches_truth(db, sim, days)
    assert duplicate_keys(db) == 0
    # settled: over the second half, the server sees at most its limit (and one probe above it,
    # which AIMD needs to find the limit again) and says 429 once at most
    log = sorted(sim.request_log, key=lambda r: r.arrived)
    half = log[len(log) // 2].arrived
    late = [r for r in log if r.arrived >= half]
    assert arrivals_per_window(log, 1.0, half) <= 8 + 1
    assert sum(r.status == 429 for r in late) <= 1
    rate = len(late) / (late[-1].arrived - half)
    assert 0.4 * 8 <= rate <= 8  # under the limit, yet not starved


async def test_one_site_on_load_quota_does_not_slow_the_other(make_sim, db, tmp_path):
    stuck = "sc-domain:stuck.example"
    sim = await make_sim(rows_per_day=10, latency_s=0.05, load_quota_sites=frozenset({stuck}))
    days = day_range(60, 40)
    config = fast(max_concurrency=4, qpm_window_s=0.1,
                  retry=dataclasses.replace(FAST_RETRY, quota_pause_s=3.0))
    alone = await run(sim, tmp_path / "alone.duckdb", days[0], days[-1], config=config)
    assert alone.ok

    sim.reset_stats()
    events = []
    started = time.monotonic()
    report = await run(sim, db, days[0], days[-1], config=config, site=[SITE, stuck],
                       listeners=[lambda e: events.append((time.monotonic() - started, e))])
    assert not report.ok and not report.halted
    assert (report.done, report.stopped, report.failed) == (40, 40, 0)
    assert list(report.stopped_sites) == [stuck]
    assert "load quota" in report.stopped_sites[stuck]
    assert f"stopped {stuck}" in report.summary()
    assert _summary(report)["stopped_sites"] == {stuck: report.stopped_sites[stuck]}
    # the healthy site finished at its own speed, long before the stuck site's pause ended
    other_done = max(t for t, e in events if e.kind == "slice_done")
    assert other_done < 1.5 * alone.wall_s + 0.5 < 3.0
    [(paused_at, pause)] = [(t, e) for t, e in events if e.kind == "pause"]
    assert pause.data["site"] == stuck
    [(stopped_at, stop)] = [(t, e) for t, e in events if e.kind == "site_stopped"]
    assert stopped_at >= paused_at + 3.0 and stop.data["site"] == stuck
    # once paused, the stuck site sent one request: when the pause was over
    sent = [t - e.data["latency_ms"] / 1000 for t, e in events
            if e.kind == "request" and e.data["site"] == stuck]
    [after] = [t for t in sent if t > paused_at]
    assert after >= paused_at + 2.9
    assert_matches_truth(db, sim, days)
    assert gsckit.open(db).frame(site=stuck).height == 0


# --- every failure ends in a report ------------------------------------------------------------


def broken(calls_before: int, original):
    """``original``, except that call number ``calls_before + 1`` raises ZeroDivisionError."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == calls_before + 1:
            return 1 / 0
        return original(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("where", ["worker", "writer"])
async def test_an_unexpected_exception_halts_with_a_report_and_the_traceback(
        make_sim, db, tmp_path, monkeypatch, where):
    # a bug, injected where it would surface: in parsing a page (a worker) or in a commit
    import gsckit.client
    import gsckit.store

    if where == "worker":
        monkeypatch.setattr(gsckit.client, "parse_page", broken(5, gsckit.client.parse_page))
    else:
        monkeypatch.setattr(gsckit.store.Store, "commit_slices",
                            broken(2, gsckit.store.Store.commit_slices))
    sim = await make_sim(rows_per_day=10, latency_s=0.01)
    days = day_range(30, 12)
    audit = tmp_path / "audit.jsonl"
    with pytest.raises(RunHalted) as info:
        await run(sim, db, days[0], days[-1], config=fast(max_concurrency=2), audit_log=audit)
    halted = info.value
    assert isinstance(halted.cause, gsckit.InternalError)
    assert f"internal error in the {where}: ZeroDivisionError" in str(halted)
    assert isinstance(halted.cause.__cause__, ZeroDivisionError)
    assert halted.report.halted and halted.exit_code == 1
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    [halt] = [r for r in records if r["event"] == "halt"]
    assert "ZeroDivisionError" in halt["traceback"] and "Traceback" in halt["traceback"]
    assert records[-1]["event"] == "run_end" and records[-1]["halted"]
    committed = gsckit.open(db).days()
    assert committed.height == halted.report.done
    monkeypatch.undo()
    resumed = await run(sim, db, days[0], days[-1], config=fast())
    assert resumed.ok and resumed.skipped == halted.report.done
    assert_matches_truth(db, sim, days)


async def test_an_audit_log_that_cannot_be_written_halts_before_any_request(make_sim, db):
    sim = await make_sim(rows_per_day=10)
    days = day_range(30, 3)
    with pytest.raises(RunHalted) as info:
        await run(sim, db, days[0], days[-1], audit_log="/dev/full")
    assert isinstance(info.value.cause, gsckit.AuditLogError)
    assert "No space left on device" in str(info.value)
    assert sim.stats()["requests"] == 0


async def test_an_audit_log_that_breaks_mid_run_halts_the_run(make_sim, db, tmp_path):
    # the audit log is a pipe whose reader goes away after 25 lines: writes fail with EPIPE
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    lines: list[str] = []

    def reader() -> None:
        with open(fifo, encoding="utf-8") as pipe:
            for line in pipe:
                lines.append(line)
                if len(lines) == 25:
                    return

    thread = threading.Thread(target=reader)
    thread.start()
    sim = await make_sim(rows_per_day=10, latency_s=0.01)
    days = day_range(40, 30)
    with pytest.raises(RunHalted) as info:
        await run(sim, db, days[0], days[-1], config=fast(max_concurrency=2), audit_log=fifo)
    thread.join(10)
    assert isinstance(info.value.cause, gsckit.AuditLogError)
    assert "Broken pipe" in str(info.value)
    report = info.value.report
    assert report.halted and 0 < report.requests < 30
    assert gsckit.open(db).days().height == report.done
    resumed = await run(sim, db, days[0], days[-1])
    assert resumed.ok and resumed.done + report.done == 30


async def test_a_broken_display_listener_is_detached_with_one_warning(make_sim, db):
    sim = await make_sim(rows_per_day=10)
    days = day_range(30, 5)
    calls = []

    def display(event):
        calls.append(event.kind)
        raise KeyError("a display bug")

    with pytest.warns(RuntimeWarning, match="was detached") as warned:
        report = await run(sim, db, days[0], days[-1], listeners=[display])
    assert report.ok and report.done == 5
    assert len(warned) == 1 and calls == ["run_start"]
