"""The public surface: exports, the sync entry point in and out of a running loop, frames."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import polars as pl

import gsckit

from .conftest import SITE, TOKEN, day_range


def test_all_is_sorted_complete_and_reports_the_gsckit_module():
    public = {n for n in dir(gsckit) if not n.startswith("_")} - {
        "annotations", "auth", "cli", "cli_connect", "client", "config", "coordinator", "errors",
        "events", "jobs", "dayplan", "freshness",
        "parse", "planner", "progress", "ratelimit", "runner", "store", "version",
        "PackageNotFoundError", "sim", "signals", "export", "completeness", "rows", "split",
        "totals"}
    assert gsckit.__all__ == sorted(gsckit.__all__)
    assert set(gsckit.__all__) - {"__version__"} == public
    for name in gsckit.__all__:
        obj = getattr(gsckit, name)
        if isinstance(obj, type):
            assert obj.__module__ == "gsckit", name


def test_every_error_is_a_gsckit_error_with_an_exit_code():
    for name in gsckit.__all__:
        obj = getattr(gsckit, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, gsckit.GsckitError), name
            assert obj.exit_code in (1, 2, 75)
    assert gsckit.ConfigError.exit_code == 2
    assert gsckit.DatabaseLocked.exit_code == 75  # EX_TEMPFAIL: contention is temporary
    assert issubclass(gsckit.ConfigError, ValueError)


def test_sync_backfill_without_a_loop_and_frames(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=1_500)
    days = day_range(15, 3)
    db = tmp_path / "gsc.duckdb"
    report = gsckit.backfill(SITE, days[0], days[-1], db=db, token=TOKEN,
                             base_url=sim.base_url, progress=False)
    assert report.ok and report.rows == 4_500
    json.dumps(report.to_dict())
    frame = gsckit.open(db).frame(site=SITE, start=days[1], end=days[1])
    assert isinstance(frame, pl.DataFrame) and frame.height == 1_500
    assert frame.schema["date"] == pl.Date and frame.schema["clicks"] == pl.Int64
    assert frame["search_appearance"].null_count() == 1_500
    assert frame["clicks"].to_list() == sorted(frame["clicks"].to_list(), reverse=True)
    status = gsckit.open(db).status()
    assert status.row(0, named=True)["days"] == 3


def test_sync_backfill_inside_a_running_loop(thread_sim, tmp_path):
    # a notebook cell: a loop is already running, so the plain call goes through nest-asyncio2
    sim = thread_sim(rows_per_day=100)
    days = day_range(15, 2)
    script = textwrap.dedent(f"""
        import asyncio, gsckit
        async def cell():
            report = gsckit.backfill({SITE!r}, {str(days[0])!r}, {str(days[1])!r},
                                     db={str(tmp_path / 'nb.duckdb')!r}, token={TOKEN!r},
                                     base_url={sim.base_url!r}, progress=False)
            await asyncio.sleep(0)
            print(report.done, report.rows, len(asyncio.all_tasks()))
        asyncio.run(cell())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "200", "1"], "no task may outlive the run"


def test_status_counts_days_and_gaps(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=50)
    days = day_range(30, 6)
    db = tmp_path / "gsc.duckdb"
    for first, last in ((days[0], days[1]), (days[4], days[5])):
        gsckit.backfill(SITE, first, last, db=db, token=TOKEN, base_url=sim.base_url,
                        progress=False)
    row = gsckit.open(db).status().row(0, named=True)
    assert (row["days"], row["gaps"], row["rows"]) == (4, 2, 200)
    assert (row["first_day"], row["last_day"]) == (days[0], days[5])


def test_interrupting_the_plain_call_in_a_running_loop_leaves_no_worker(thread_sim, tmp_path):
    # Ctrl-C in a notebook cell that used the plain call: the engine must be cancelled (no
    # zombie worker resuming on the next cell), committed days kept, and a re-run completes
    sim = thread_sim(rows_per_day=30_000, latency_s=0.2)
    days = day_range(40, 30)
    db = tmp_path / "nb.duckdb"
    script = textwrap.dedent(f"""
        import asyncio, os, signal, sys, gsckit
        async def cell():
            loop = asyncio.get_running_loop()
            def interrupt_after_first_day(event):
                # a loaded machine may take seconds to commit the first day: wait for it
                if event.kind == "slice_done" and not fired:
                    fired.append(1)
                    loop.call_later(0.2, os.kill, os.getpid(), signal.SIGINT)
            fired = []
            try:
                gsckit.backfill({SITE!r}, {str(days[0])!r}, {str(days[-1])!r}, db={str(db)!r},
                                token={TOKEN!r}, base_url={sim.base_url!r}, progress=False,
                                listeners=[interrupt_after_first_day])
            except KeyboardInterrupt:
                await asyncio.sleep(0.5)
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                print("interrupted", len(others))
        # like ipykernel: a plain loop, so SIGINT raises KeyboardInterrupt where the loop is
        asyncio.new_event_loop().run_until_complete(cell())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["interrupted", "0"]
    sim.do(sim.sim.reset_stats)
    kept = gsckit.open(db).days().height
    assert 0 < kept < 30
    report = gsckit.backfill(SITE, days[0], days[-1], db=db, token=TOKEN, base_url=sim.base_url,
                             progress=False)
    assert report.ok and report.skipped == kept and report.done == 30 - kept


def test_preview_estimates_from_history_and_sends_nothing(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=30_000)
    days = day_range(40, 10)
    db = tmp_path / "gsc.duckdb"
    fresh = gsckit.preview(SITE, days[0], days[-1], db=db)
    assert (fresh.todo, fresh.skipped, fresh.requests) == (10, 0, 10 + 1)  # + daily totals
    assert not db.exists()
    gsckit.backfill(SITE, days[0], days[3], db=db, token=TOKEN, base_url=sim.base_url,
                    progress=False)
    sim.do(sim.sim.reset_stats)
    plan = gsckit.preview(SITE, days[0], days[-1], db=db, config=gsckit.EngineConfig(qpm=60))
    assert (plan.slices, plan.skipped, plan.todo) == (10, 4, 6)
    assert plan.requests == 12 + 1, "30,000-row days took two pages each; then the totals"
    assert plan.min_seconds == 13.0
    assert sim.stats()["requests"] == 0
    report = gsckit.backfill(SITE, days[0], days[-1], db=db, token=TOKEN,
                             base_url=sim.base_url, progress=False)
    assert report.requests == plan.requests
