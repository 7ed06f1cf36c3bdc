"""Background jobs: ``gsckit.start`` returns at once, in a script with or without a loop; reads
see committed days while it runs; cancelling commits nothing partial and a re-run resumes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import textwrap
import time

import duckdb
import pytest

import gsckit
import gsckit.explore as ex

from .conftest import SITE, TOKEN, assert_matches_truth, day_range, duplicate_keys


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    yield
    for job in list(gsckit.jobs._RUNNING):
        job.cancel()
        job.wait(60)


def ledger_agrees_with_rows(db) -> int:
    """Every committed day has exactly its ledger's rows (never half a day); returns days."""
    frame = gsckit.open(db).sql(
        "SELECT l.date, l.rows, count(r.date) AS stored FROM gsckit_ledger l "
        "LEFT JOIN search_analytics r USING (site, search_type, dimensions, filters, date) "
        "GROUP BY ALL")
    assert (frame["rows"] == frame["stored"]).all(), frame
    return frame.height


def wait_for(predicate, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_start_without_a_loop_returns_at_once_and_reads_see_committed_days(thread_sim,
                                                                            tmp_path):
    sim = thread_sim(rows_per_day=500, latency_s=0.05)
    days = day_range(30, 16)
    db = tmp_path / "gsc.duckdb"
    job = gsckit.start(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url,
                       max_concurrency=1, progress=False)
    assert not job.done() and job.report is None  # 16 round trips of 50 ms cannot be over
    seen = []
    wait_for(lambda: job.progress.done >= 3 or job.done())
    while not job.done():
        # a read in the same process while the job writes: whole days, never half of one
        seen.append(ledger_agrees_with_rows(db))
        time.sleep(0.05)
    report = job.result(timeout=60)
    assert report.ok and report.done == 16 and report.rows == 16 * 500
    assert seen and seen == sorted(seen) and seen[0] >= 3
    assert job.report is report and job.exception() is None and not job.cancelled()
    figures = job.progress
    assert (figures.state, figures.days, figures.done, figures.rows, figures.requests) == (
        "done", 16, 16, report.rows, report.requests)
    assert figures.fraction == 1.0
    assert "complete: 16 days committed" in repr(job)
    assert assert_matches_truth(db, sim.sim, days) == 16 * 500
    assert duplicate_keys(db) == 0


async def test_start_in_a_running_loop_is_awaitable_and_explore_reads_during_it(make_sim,
                                                                                tmp_path):
    # a script's own loop (or a notebook's): the job runs on its own loop, the caller awaits
    sim = await make_sim(rows_per_day=400, latency_s=0.03)
    days = day_range(60, 40)
    db = tmp_path / "gsc.duckdb"
    job = gsckit.start(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url,
                       max_concurrency=2, progress=False)
    while job.progress.done < 10:  # noqa: ASYNC110 (the job's figures, polled as a user would)
        await asyncio.sleep(0.02)
    with pytest.warns(ex.CompletenessWarning, match="not in the database"):
        frame = ex.overview(db, SITE)  # an analysis of the days committed so far
    assert frame["days"].sum() >= 10
    waiting = asyncio.ensure_future(job._settled())
    waiting.cancel()  # giving up on waiting must not cancel the job
    await asyncio.sleep(0)
    report = await job
    assert report.ok and report.done == 40 and not job.cancelled()
    assert ledger_agrees_with_rows(db) == 40
    assert ex.completeness_warnings(db, SITE, start=days[0], end=days[-1]) == []
    clicks = gsckit.open(db).sql("SELECT sum(clicks) AS c FROM search_analytics")["c"][0]
    assert ex.page_groups(db, SITE, start=days[0], end=days[-1])["clicks"].sum() == clicks


def test_cancel_commits_nothing_partial_and_a_rerun_resumes(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=800, latency_s=0.1)
    days = day_range(50, 30)
    db = tmp_path / "gsc.duckdb"
    job = gsckit.start(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url,
                       max_concurrency=2, progress=False)
    wait_for(lambda: job.progress.done >= 2)
    assert job.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(timeout=60)
    assert job.cancelled() and job.done() and job.report is None
    assert not job.cancel(), "a finished job cannot be cancelled again"
    assert "cancelled after" in repr(job) and "re-run to resume" in job.summary()
    kept = ledger_agrees_with_rows(db)
    assert 2 <= kept < 30 and job.progress.done == kept
    sim.do(sim.sim.reset_stats)
    again = gsckit.start(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url,
                         progress=False)  # the file is free again: the cancelled job let go
    report = again.result(timeout=60)
    assert report.ok and report.skipped == kept and report.done == 30 - kept
    assert sim.stats()["requests"] == 30 - kept + 1  # and the daily totals of the 30 days
    assert_matches_truth(db, sim.sim, days)


def test_bad_input_and_a_busy_database_fail_in_the_caller(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=300, latency_s=0.1)
    days = day_range(30, 10)
    db = tmp_path / "gsc.duckdb"
    with pytest.raises(gsckit.ConfigError, match=r"start .* is after end"):
        gsckit.start(SITE, days[5], days[0], db=db, token=TOKEN, base_url=sim.base_url)
    with pytest.raises(gsckit.ConfigError, match="dimension"):
        gsckit.start(SITE, days[0], days[5], db=db, dimensions="date,nope", token=TOKEN)
    with pytest.raises(gsckit.ConfigError, match="base_url"):
        gsckit.start(SITE, days[0], days[5], db=db, token=TOKEN, base_url="https://evil.test/")
    with pytest.raises(gsckit.ConfigError, match="audit log"):
        gsckit.start(SITE, days[0], days[5], db=db, token=TOKEN, audit_log=tmp_path / "no/x")
    with pytest.raises(TypeError):
        gsckit.start(SITE, days[0], days[5], db=db, token=TOKEN, bogus=1)
    assert not db.exists() and sim.stats()["requests"] == 0
    first = gsckit.start(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url,
                         max_concurrency=1, progress=False)
    wait_for(lambda: first.progress.days is not None)  # the run has opened the database
    try:
        with pytest.raises(gsckit.DatabaseLocked, match="written by another backfill in this"):
            gsckit.start(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url)
    finally:
        first.cancel()
        first.wait(60)


def test_a_halted_job_keeps_its_report_and_raises_its_error(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=200, forbidden_sites={SITE})
    days = day_range(30, 6)
    db = tmp_path / "gsc.duckdb"
    job = gsckit.start(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url,
                       preflight=False, progress=False)
    assert job.wait(60)
    error = job.exception()
    assert isinstance(error, gsckit.RunHalted)
    assert job.report is error.report and job.report.halted
    with pytest.raises(gsckit.RunHalted):
        job.result()
    assert repr(job).startswith(f"<gsckit.Job backfill of {SITE}") and "halted" in repr(job)


def test_a_script_that_exits_while_its_job_runs_cancels_it_cleanly(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=800, latency_s=0.1)
    days = day_range(50, 30)
    db = tmp_path / "gsc.duckdb"
    script = textwrap.dedent(f"""
        import time, gsckit
        job = gsckit.start({SITE!r}, {str(days[0])!r}, {str(days[-1])!r}, db={str(db)!r},
                           token={TOKEN!r}, base_url={sim.base_url!r}, max_concurrency=2,
                           progress=False)
        while job.progress.done < 2:
            time.sleep(0.02)
        print("leaving", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["leaving"]
    assert "was still running at exit: cancelled" in out.stderr
    assert "re-run to resume" in out.stderr
    kept = ledger_agrees_with_rows(db)
    assert 2 <= kept < 30
    with duckdb.connect(str(db), read_only=True):
        pass  # nobody holds the file any more


def test_start_sync_runs_a_sync_in_the_background_with_its_checks_in_the_caller(thread_sim,
                                                                                tmp_path):
    sim = thread_sim(rows_per_day=300)
    db = tmp_path / "gsc.duckdb"
    start = day_range(12, 1)[0]
    with pytest.raises(gsckit.ConfigError, match="lookback_days"):
        gsckit.start_sync(SITE, start=start, db=db, token=TOKEN, lookback_days=-1)
    with pytest.raises(gsckit.ConfigError, match="split"):
        gsckit.start_sync(SITE, start=start, db=db, token=TOKEN, split="sometimes")
    with pytest.raises(gsckit.ConfigError, match="data_state"):
        gsckit.start_sync(SITE, start=start, db=db, token=TOKEN, data_state="hourly")
    assert not db.exists() and sim.stats()["requests"] == 0
    job = gsckit.start_sync([SITE], start=start, db=db, token=TOKEN, base_url=sim.base_url,
                            progress=False)
    assert "sync of sc-domain:example.com" in repr(job)
    report = job.result(timeout=60)
    today = gsckit.planner.pacific_today()
    days = (today - start).days + 1
    assert report.ok and report.done == ledger_agrees_with_rows(db) == days
    assert report.probes == 1 and report.totals_requests == 1
    assert duplicate_keys(db) == 0
    again = gsckit.start_sync(SITE, start=start, db=db, token=TOKEN, base_url=sim.base_url,
                              progress=False).result(timeout=60)
    assert again.ok and again.done == 0 and again.skipped == days
