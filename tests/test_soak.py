"""Long soak runs, excluded from ``make test``; run them with ``make soak``."""

from __future__ import annotations

import random
import signal
import time

import pytest

from gsckit import EngineConfig, RetryPolicy, Timeouts
from gsckit.sim import Faults

from .conftest import SITE, assert_matches_truth, day_range, duplicate_keys, run
from .test_resume import DAYS, committed_slices, ledger_consistent, start_backfill

MIXED = {"429": 0.02, "403_quota": 0.01, "403_rate": 0.01, "500": 0.02, "503": 0.02,
         "reset": 0.02, "truncate": 0.02, "invalid_json": 0.02, "stall": 0.01}


@pytest.mark.soak
async def test_fault_campaign_of_two_thousand_requests_loses_nothing(make_sim, db):
    sim = await make_sim(rows_per_day=lambda site, t, day: 20_000 + day.toordinal() % 7 * 5_000,
                         faults=Faults(seed=11, rates=MIXED, stall_s=4.0))
    sites = [SITE, "https://www.example.org/"]
    days = day_range(200, 160)
    policy = RetryPolicy(max_attempts=10, base_s=0.01, max_backoff_s=0.1, quota_pause_s=0.5)
    # qpm 1,200 per 1-s window: scaled time, so that the limiter does not bind
    config = EngineConfig(max_concurrency=16, qpm=1_200, qpm_window_s=1.0, retry=policy,
                          timeouts=Timeouts(total=20, connect=2, sock_read=2.0))
    # a random 403 quotaExceeded after a site's pause is a load quota that persists: the site
    # stops and a re-run resumes it, as a scheduler would
    done = retries = 0
    for _ in range(20):
        report = await run(sim, db, days[0], days[-1], site=sites,
                           search_type="web,image,video", config=config)
        done += report.done
        retries += report.retries
        if report.ok:
            break
    stats = sim.stats()
    assert stats["requests"] >= 2_000
    assert sum(stats["faults"].values()) >= 200 and set(stats["faults"]) == set(MIXED)
    assert report.ok and done == 2 * 3 * 160
    assert duplicate_keys(db) == 0
    # the server may see a page twice only when the client gave up on it (timeout) and retried
    assert stats["duplicates"] <= retries, (stats["duplicates"], retries)
    for site in sites:
        assert_matches_truth(db, sim, days[::20], site=site)


@pytest.mark.soak
def test_ten_sigkills_then_a_clean_finish(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=30_000, latency_s=0.15)
    db = tmp_path / "gsc.duckdb"
    rng = random.Random(5)
    for kill in range(10):
        audit = tmp_path / f"audit{kill}.jsonl"
        proc = start_backfill(sim, db, audit)
        target = rng.randint(1, 3)
        deadline = time.monotonic() + 60
        while committed_slices(audit) < target and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        ledger_consistent(db)
        assert duplicate_keys(db) == 0
    final = start_backfill(sim, db, tmp_path / "final.jsonl")
    _, err = final.communicate(timeout=180)
    assert final.returncode == 0, err.decode()
    assert ledger_consistent(db) == len(DAYS)
    sim.do(assert_matches_truth, db, sim.sim, DAYS)
