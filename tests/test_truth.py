"""Truth over time: day states that match Google, fresh days promoted to final, and sync.

Every test runs the engine against the simulator over loopback on Google's timing
(``all_final=False``), with its clock pinned at noon four days behind ours (so the days it asks
for never lie after our today) and moved by the test. Request counts come from the simulator's
own request log; probes are its multi-day requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time as clock
from collections import Counter
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

import gsckit
from gsckit import EngineConfig, RetryPolicy, RunHalted
from gsckit.freshness import PROBE_ROW_LIMIT, Freshness, estimate, parse_probe, plan_stream
from gsckit.planner import Slice, earliest_day, pacific_today
from gsckit.sim import Faults
from gsckit.store import LedgerDay, Store

from .conftest import SITE, TOKEN, days_ago, duplicate_keys, stored, table_snapshot
from .test_resume import ledger_consistent

NOW = datetime.combine(days_ago(4), time(12))  # the simulated noon, four days behind ours
GOOGLE = {"all_final": False, "now": NOW, "rows_per_day": 120}


def probe_requests(sim) -> list:
    """The requests for Google's newest final day (grouped by date or hour, 1,000 rows)."""
    return [r for r in sim.request_log if r.row_limit == PROBE_ROW_LIMIT]


def totals_requests(sim) -> list:
    """The requests for the daily totals (grouped by date alone, a full page)."""
    return [r for r in sim.request_log
            if r.dimensions == ("date",) and r.row_limit != PROBE_ROW_LIMIT]


def data_requests(sim) -> Counter:
    """Successful page requests per day (neither probes nor totals)."""
    other = {id(r) for r in (*probe_requests(sim), *totals_requests(sim))}
    return Counter(r.day for r in sim.request_log
                   if id(r) not in other and r.day == r.end_day and r.status == 200)


def ledger(db: Path) -> pl.DataFrame:
    return gsckit.open(db).days().sort("date")


def holds(db: Path, sim, day: date, data_state: str = "final", **kw) -> bool:
    """Whether the stored rows of ``day`` equal what the API exposes now at ``data_state``."""
    want = sim.ground_truth(SITE, day, data_state=data_state, **kw)
    got = stored(db, SITE, day, **kw)
    return got.height > 0 and got.equals(want.sort(want.columns))


def holds_final(db: Path, sim, day: date) -> bool:
    want = sim.final_truth(SITE, day)
    return stored(db, SITE, day).equals(want.sort(want.columns))


async def backfill(sim, db: Path, start: date, end: date, **kw) -> gsckit.Report:
    return await gsckit.backfill_async(SITE, start, end, db=db, token=TOKEN,
                                       base_url=sim.base_url, progress=False, **kw)


async def sync(sim, db: Path, **kw) -> gsckit.Report:
    return await gsckit.sync_async(SITE, db=db, token=TOKEN, base_url=sim.base_url,
                                   progress=False, **kw)


def span(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- the probe ------------------------------------------------------------------------------

@pytest.mark.parametrize("names", [("firstIncompleteDate", "firstIncompleteHour"),
                                   ("first_incomplete_date", "first_incomplete_hour")])
def test_the_probe_reads_both_spellings_of_the_metadata(names):
    start = date(2026, 3, 10)
    days = [{"keys": [str(start + timedelta(days=n))], "clicks": 5} for n in range(10)]
    body = json.dumps({"rows": days, "metadata": {names[0]: "2026-03-17"}}).encode()
    fresh = parse_probe(body, start=start, hourly=False)
    assert (fresh.newest_final, fresh.newest_data, fresh.first_incomplete) == (
        date(2026, 3, 16), date(2026, 3, 19), "2026-03-17")
    hours = [{"keys": [f"2026-03-{d}T{h:02d}:00:00-07:00"]} for d in (18, 19) for h in range(24)]
    marker = "2026-03-19T05:00:00-07:00"
    body = json.dumps({"rows": hours, "metadata": {names[1]: marker}}).encode()
    fresh = parse_probe(body, start=start, hourly=True)
    # the first incomplete hour's Pacific day is not final; the day before is
    assert (fresh.newest_final, fresh.newest_data, fresh.first_incomplete) == (
        date(2026, 3, 18), date(2026, 3, 19), marker)
    # no marker: every day with data is final; no data at all: every day before the window
    body = json.dumps({"rows": days[:6]}).encode()
    assert parse_probe(body, start=start, hourly=False).newest_final == date(2026, 3, 15)
    assert parse_probe(b"{}", start=start, hourly=False).newest_final == date(2026, 3, 9)
    with pytest.raises(gsckit.TransportError):
        parse_probe(b'{"rows": [{"keys": ["soon"]}]}', start=start, hourly=False)


def test_one_place_decides_what_each_day_needs():
    day = date(2026, 3, 1)
    fresh = Freshness(newest_final=day + timedelta(days=5), newest_data=day + timedelta(days=8),
                      first_incomplete=str(day + timedelta(days=6)))
    ledger = {day: LedgerDay("final", 9, 1, day + timedelta(days=4), False),
              day + timedelta(days=1): LedgerDay("fresh", 9, 1, day, False),
              day + timedelta(days=5): LedgerDay("final", 9, 1, day + timedelta(days=5), False),
              day + timedelta(days=7): LedgerDay("fresh", 9, 1, day, False)}
    plan = plan_stream(ledger, fresh, start=day, end=day + timedelta(days=8), data_state="final")
    assert [(t.day.day, t.reason, t.state, t.data_state) for t in plan.fetch] == [
        (2, "fresh", "final", "final"), (3, "missing", "final", "final"),
        (4, "missing", "final", "final"), (5, "missing", "final", "final")]
    assert [d.day for d in plan.complete] == [1, 6]
    assert [d.day for d in plan.not_final_yet] == [7, 8, 9]
    plan = plan_stream(ledger, fresh, start=day + timedelta(days=6), end=day + timedelta(days=8),
                       data_state="all", lookback_days=4, every_fresh_day=True)
    assert [(t.day.day, t.reason, t.state) for t in plan.fetch] == [
        (2, "fresh", "final"), (7, "missing", "fresh"), (8, "fresh", "fresh"),
        (9, "missing", "fresh")]
    # a day 1 fetched when Google's newest final day was day 5 is outside the look-back; the
    # final day 6 was fetched with today's knowledge: neither is re-checked
    assert [d.day for d in plan.complete] == [6]
    # a dry run's guess moves the recorded newest final day on by the days since, within the lag
    fetched = datetime(2026, 3, 20, 9)
    known = [LedgerDay("final", 1, 1, date(2026, 3, 16), False, fetched)]
    assert estimate(date(2026, 3, 21), known).newest_final == date(2026, 3, 17)
    assert estimate(date(2026, 3, 30), known).newest_final == date(2026, 3, 26)
    assert estimate(date(2026, 3, 30), []).newest_final == date(2026, 3, 27)


# --- the three failures the issue reproduced -----------------------------------------------

async def test_a_final_backfill_over_fresh_days_commits_them_only_once_final(make_sim, db,
                                                                            tmp_path):
    sim = await make_sim(**GOOGLE)
    days = span(sim.today - timedelta(days=6), sim.today)
    audit = tmp_path / "audit.jsonl"
    report = await backfill(sim, db, days[0], days[-1], audit_log=audit)
    newest = sim.newest_final_day()
    assert report.ok and (report.done, report.final_days, report.not_final_yet) == (4, 4, 3)
    assert report.probes == 1 and len(probe_requests(sim)) == 1
    # the daily totals of the days committed, all final: one request for final data
    [totals] = totals_requests(sim)
    assert report.totals_requests == 1 and totals.data_state == "final"
    assert (totals.day, totals.end_day) == (days[0], newest)
    assert max(data_requests(sim)) == newest, "nothing is asked for a day that is not final"
    assert ledger(db)["date"].to_list() == [d for d in days if d <= newest]
    sim.advance(days=3)
    again = await backfill(sim, db, days[0], days[-1], audit_log=audit)
    assert (again.done, again.final_days, again.skipped, again.not_final_yet) == (3, 3, 4, 0)
    assert ledger(db)["data_state"].to_list() == ["final"] * 7
    assert all(holds_final(db, sim, day) for day in days)
    sim.reset_stats()
    assert (await backfill(sim, db, days[0], days[-1])).requests == 0, (
        "a finished backfill asks nothing, not even for the newest final day")
    assert not sim.request_log
    # no day was ever recorded as final with fewer rows than its final truth
    done = [json.loads(line) for line in audit.read_text().splitlines()
            if '"slice_done"' in line]
    assert len(done) == 7
    for event in done:
        day = date.fromisoformat(event["day"])
        assert event["state"] == "final" and event["rows"] == sim.final_truth(SITE, day).height


async def test_all_days_are_fresh_and_fetched_again_until_promoted(make_sim, db):
    sim = await make_sim(**GOOGLE)
    days = span(sim.today - timedelta(days=4), sim.today)
    report = await backfill(sim, db, days[0], days[-1], data_state="all")
    assert (report.final_days, report.fresh_days) == (2, 3)
    fresh = days[2:]
    assert ledger(db)["data_state"].to_list() == ["final"] * 2 + ["fresh"] * 3
    assert all(holds(db, sim, day, "all") for day in days)
    entry = ledger(db).row(4, named=True)
    assert (entry["requested"], entry["first_incomplete"], entry["newest_final"]) == (
        "all", str(fresh[0]), days[1])
    sim.advance(days=1)
    sim.reset_stats()
    report = await backfill(sim, db, days[0], days[-1], data_state="all")
    assert data_requests(sim) == Counter(fresh), "only the fresh days are fetched again"
    assert (report.promoted, report.fresh_days, report.skipped) == (1, 2, 2)
    assert all(holds(db, sim, day, "all") for day in days), "they hold the newer fresh data"
    sim.advance(days=3)
    report = await backfill(sim, db, days[0], days[-1], data_state="all")
    assert report.promoted == 2
    assert all(holds_final(db, sim, day) for day in days)
    assert duplicate_keys(db) == 0


async def test_a_final_run_made_too_early_leaves_fresh_rows_alone(make_sim, db):
    sim = await make_sim(**GOOGLE)
    days = span(sim.today - timedelta(days=2), sim.today)
    await backfill(sim, db, days[0], days[-1], data_state="all")
    before = table_snapshot(db)
    sim.reset_stats()
    report = await backfill(sim, db, days[0], days[-1])
    assert report.ok and (report.done, report.not_final_yet) == (0, 3)
    assert not data_requests(sim)
    assert table_snapshot(db).equals(before)
    assert ledger(db)["data_state"].to_list() == ["fresh"] * 3


# --- sync -----------------------------------------------------------------------------------

async def test_sync_across_time(make_sim, db):
    sim = await make_sim(**GOOGLE)
    start = sim.today - timedelta(days=6)
    first = await sync(sim, db, start=start)
    fresh = span(sim.newest_final_day() + timedelta(days=1), sim.today)
    assert (first.final_days, first.fresh_days, first.requests, first.probes) == (4, 3, 9, 1)
    assert first.totals_requests == len(totals_requests(sim)) == 1
    assert all(holds(db, sim, day, "all") for day in span(start, sim.today))
    assert ledger(db).filter(pl.col("data_state") == "fresh")["date"].to_list() == fresh

    sim.advance(days=1)
    sim.reset_stats()
    report = await sync(sim, db, start=start, lookback_days=0)
    assert data_requests(sim) == Counter([*fresh, sim.today]), (
        "only the fresh days are fetched again (and the new day)")
    # the totals of the days without final totals: the fresh ones and the new one
    assert (report.promoted, report.fresh_days, report.requests) == (1, 3, 6)
    [totals] = totals_requests(sim)
    assert (totals.day, totals.end_day, totals.data_state) == (fresh[0], sim.today, "all")
    assert all(holds(db, sim, day, "all") for day in span(start, sim.today))

    sim.advance(days=3)
    sim.reset_stats()
    report = await sync(sim, db, start=start)
    assert max(data_requests(sim).values()) == 1
    assert report.promoted == 3
    final = span(start, sim.newest_final_day())
    assert ledger(db).filter(pl.col("data_state") == "final")["date"].to_list() == final
    assert all(holds_final(db, sim, day) for day in final)

    # everything final is settled: a sync for final data asks only for the newest final day
    sim.reset_stats()
    report = await sync(sim, db, start=start, data_state="final")
    assert (report.requests, report.probes, report.done, report.not_final_yet) == (1, 1, 0, 3)
    assert len(probe_requests(sim)) == 1 and not data_requests(sim)
    assert not totals_requests(sim), "every final day's totals are final already"
    # and one for fresh data too asks only what its fresh days need
    report = await sync(sim, db, start=start)
    fresh = span(sim.newest_final_day() + timedelta(days=1), sim.today)
    assert data_requests(sim) == Counter(fresh)
    assert (report.requests, report.fresh_days, report.skipped) == (5, 3, len(final))
    assert duplicate_keys(db) == 0


async def test_the_look_back_rechecks_each_recent_final_day_once(make_sim, db):
    sim = await make_sim(**GOOGLE)
    start = sim.today - timedelta(days=8)
    f0 = sim.newest_final_day()
    await backfill(sim, db, start, sim.today)
    sim.advance(days=1)
    sim.reset_stats()
    report = await sync(sim, db, start=start, data_state="final")  # the look-back: 4 days
    # final days among the newest 4 that Google had moved past since: asked once more
    rechecked = span(f0 - timedelta(days=2), f0)
    assert data_requests(sim) == Counter([*rechecked, f0 + timedelta(days=1)])
    # and the totals of the one day without final totals
    assert report.final_days == 4 and report.requests == 6
    [totals] = totals_requests(sim)
    assert (totals.day, totals.end_day) == (f0 + timedelta(days=1),) * 2
    entries = ledger(db)
    assert entries.filter(pl.col("rechecked"))["date"].to_list() == rechecked
    sim.reset_stats()
    assert (await sync(sim, db, start=start, data_state="final")).requests == 1
    sim.advance(days=1)
    sim.reset_stats()
    await sync(sim, db, start=start, data_state="final")
    # the day added last time is re-checked now; those re-checked already are not
    assert data_requests(sim) == Counter([f0 + timedelta(days=1), f0 + timedelta(days=2)])
    assert all(holds_final(db, sim, day) for day in span(start, f0 + timedelta(days=2)))


async def test_a_sync_on_an_all_final_database_sends_only_the_probe(make_sim, db):
    sim = await make_sim(rows_per_day=50)  # every day final, as Google's old data
    start = days_ago(8)
    await backfill(sim, db, start, pacific_today())
    sim.reset_stats()
    report = await sync(sim, db, start=start)
    assert report.ok and (report.requests, report.probes, report.done) == (1, 1, 0)
    [probe] = sim.request_log
    assert (probe.day, probe.end_day, probe.data_state) == (
        pacific_today() - timedelta(days=9), pacific_today(), "all")


async def test_camel_and_snake_metadata_give_the_same_result(make_sim, tmp_path):
    snapshots = []
    for style in ("camel", "snake"):
        sim = await make_sim(**GOOGLE, metadata_style=style)
        db = tmp_path / f"{style}.duckdb"
        await sync(sim, db, start=sim.today - timedelta(days=5))
        snapshots.append((ledger(db).select("date", "data_state", "rows", "first_incomplete",
                                            "newest_final"), table_snapshot(db)))
        marker = sim.newest_final_day() + timedelta(days=1)
    (camel_days, camel_rows), (snake_days, snake_rows) = snapshots
    assert camel_days.equals(snake_days) and camel_rows.equals(snake_rows)
    assert camel_days["data_state"].to_list() == ["final"] * 3 + ["fresh"] * 3
    assert camel_days["first_incomplete"].to_list() == [None] * 3 + [str(marker)] * 3


async def test_a_lag_longer_than_the_probe_window_asks_the_window_before(make_sim, db):
    sim = await make_sim(**GOOGLE, final_lag_days=12)
    newest = sim.newest_final_day()
    report = await backfill(sim, db, newest - timedelta(days=2), sim.today)
    assert (report.final_days, report.not_final_yet, report.probes) == (3, 12, 2)
    assert ledger(db)["date"].to_list() == span(newest - timedelta(days=2), newest)


async def test_a_failed_probe_fails_only_the_days_it_had_to_decide(make_sim, db):
    sim = await make_sim(**GOOGLE, faults=Faults(script={1: "503"}))
    start = days_ago(13)
    config = EngineConfig(retry=RetryPolicy(max_attempts=1))
    report = await backfill(sim, db, start, sim.today, config=config)
    # days older than the probe's window are final anyway; the others could not be decided
    assert (report.done, report.failed) == (4, 6) and not report.ok
    assert all("probe failed" in failure for failure in report.failures)
    assert ledger(db)["date"].to_list() == span(start, days_ago(10))


async def test_a_probe_refused_for_permission_halts_before_anything_is_written(make_sim, db):
    sim = await make_sim(**GOOGLE, faults=Faults(script={1: "403_permission"}))
    with pytest.raises(RunHalted, match="sufficient permission") as caught:
        await sync(sim, db, start=sim.today, preflight=False)
    assert caught.value.report.requests == 1 and caught.value.report.done == 0
    assert gsckit.open(db).days().height == 0


async def test_a_load_quota_that_persists_at_the_probe_stops_the_site(make_sim, db):
    sim = await make_sim(**GOOGLE, load_quota_sites=frozenset({SITE}))
    config = EngineConfig(retry=RetryPolicy(quota_pause_s=0.05))
    report = await sync(sim, db, start=sim.today - timedelta(days=2), config=config)
    # paused once, asked once more after the pause, then stopped: nothing fetched or written
    assert len(sim.request_log) == 2 and set(report.stopped_sites) == {SITE}
    assert not report.ok and report.done == 0 and report.stopped > 0
    assert report.slices == report.stopped
    assert gsckit.open(db).days().height == 0


# --- hourly ---------------------------------------------------------------------------------

def hourly(db: Path, day: date) -> pl.DataFrame:
    frame = gsckit.open(db).frame(SITE, start=day, end=day, dimensions="hour")
    return frame.select("hour", "clicks", "impressions", "ctr", "position").sort(
        "hour", "clicks", "impressions", "ctr", "position")


def hourly_truth(sim, day: date) -> pl.DataFrame:
    frame = sim.ground_truth(SITE, day, data_state="hourly_all", dimensions=("hour",))
    parsed = frame.with_columns(pl.col("hour").str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%z", time_unit="us", time_zone="UTC"))
    return parsed.sort(parsed.columns)


async def test_an_hourly_sync_promotes_its_days_across_a_clock_move(make_sim, db):
    sim = await make_sim(**GOOGLE)
    start = sim.today - timedelta(days=4)
    report = await sync(sim, db, start=start, dimensions="hour", data_state="hourly_all")
    assert (report.final_days, report.fresh_days) == (2, 3)
    entries = ledger(db)
    first_fresh = sim.newest_final_day() + timedelta(days=1)
    assert entries["requested"].unique().to_list() == ["hourly_all"]
    [marker] = entries.filter(pl.col("data_state") == "fresh")["first_incomplete"].unique()
    assert marker.startswith(f"{first_fresh}T00:00:00-0"), "the hour Google sent, in Pacific"
    for day in span(start, sim.today):
        assert hourly(db, day).equals(hourly_truth(sim, day))
    hours = gsckit.open(db).frame(start=start, end=start)["hour"]
    assert hours.dtype == pl.Datetime("us", "UTC")
    pacific = hours.dt.convert_time_zone("America/Los_Angeles")
    assert pacific.min().hour == 0 and pacific.dt.date().unique().to_list() == [start]
    sim.advance(days=3)
    report = await sync(sim, db, start=start, dimensions="hour", data_state="hourly_all",
                        lookback_days=0)
    assert report.promoted == 3
    for day in span(start, sim.newest_final_day()):
        assert sim.is_final(day) and hourly(db, day).equals(hourly_truth(sim, day))


# --- crashes --------------------------------------------------------------------------------

def sync_process(sim, db: Path, audit: Path, start: date) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gsckit", "sync", SITE, "--start", str(start),
           "--search-type", "web,image", "--db", str(db), "--base-url", sim.base_url,
           "--audit-log", str(audit), "--concurrency", "1", "--no-progress", "--json"]
    env = {**os.environ, "GSC_ACCESS_TOKEN": TOKEN}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def promotions(audit: Path) -> int:
    if not audit.exists():
        return 0
    return audit.read_text().count('"outcome":"promoted"')


def test_sigkill_during_a_promotion_then_rerun_loses_and_doubles_nothing(thread_sim, tmp_path):
    sim = thread_sim(all_final=False, now=NOW, rows_per_day=8_000, latency_s=0.15)
    db = tmp_path / "gsc.duckdb"
    today = sim.do(lambda: sim.sim.today)
    start = today - timedelta(days=4)
    first = sync_process(sim, db, tmp_path / "first.jsonl", start)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()
    sim.do(sim.sim.advance, days=3)
    audit = tmp_path / "audit.jsonl"
    proc = sync_process(sim, db, audit, start)
    deadline = clock.monotonic() + 60
    while promotions(audit) < 1 and proc.poll() is None:
        assert clock.monotonic() < deadline, "the sync never promoted a day"
        clock.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, "the sync ended before it could be killed"
    assert ledger_consistent(db) >= 10 and duplicate_keys(db) == 0
    rerun = sync_process(sim, db, tmp_path / "rerun.jsonl", start)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    newest, today = sim.do(lambda: (sim.sim.newest_final_day(), sim.sim.today))
    assert ledger_consistent(db) == 2 * len(span(start, today)), "no day lost"
    assert duplicate_keys(db) == 0, "no day doubled"
    with duckdb.connect(str(db), read_only=True) as con:
        states = dict(con.execute("SELECT data_state, count(*) FROM gsckit_ledger "
                                  "GROUP BY ALL").fetchall())
    assert states == {"final": 2 * len(span(start, newest)), "fresh": 6}

    def check() -> None:
        for search_type in ("web", "image"):
            for day in span(start, newest):
                want = sim.sim.final_truth(SITE, day, search_type=search_type)
                got = stored(db, SITE, day, search_type=search_type)
                assert got.equals(want.sort(want.columns)), (search_type, day)

    sim.do(check)


# --- the command line -------------------------------------------------------------------------

def cli(capsys, *args) -> tuple[int, str, str]:
    from gsckit.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sync_command_json_and_status(thread_sim, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GSC_ACCESS_TOKEN", TOKEN)
    sim = thread_sim(**GOOGLE)
    db = tmp_path / "gsc.duckdb"
    start = sim.do(lambda: sim.sim.today) - timedelta(days=5)
    code, out, err = cli(capsys, "sync", SITE, "--start", start, "--db", db, "--base-url",
                         sim.base_url, "--no-progress", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert {k: summary[k] for k in ("done", "final_days", "fresh_days", "promoted",
                                    "not_final_yet", "probes", "requests")} == {
        "done": 6, "final_days": 3, "fresh_days": 3, "promoted": 0, "not_final_yet": 0,
        "probes": 1, "requests": 8}
    code, out, err = cli(capsys, "sync", SITE, "--start", start, "--db", db, "--base-url",
                         sim.base_url, "--no-progress", "--data-state", "final", "--json")
    assert code == 0 and json.loads(out)["not_final_yet"] == 3
    code, out, err = cli(capsys, "status", "--db", db, "--json")
    row = json.loads(out)
    assert (row["days"], row["final_days"], row["fresh_days"], row["gaps"]) == (6, 3, 3, 0)
    assert row["newest_final_day"] == str(start + timedelta(days=2))
    code, out, err = cli(capsys, "sync", SITE, "--lookback-days", "-1", "--db", db)
    assert code == 2 and "lookback_days" in err


def test_a_sync_dry_run_says_what_and_why_and_sends_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GSC_ACCESS_TOKEN", raising=False)
    today = pacific_today()
    db = tmp_path / "gsc.duckdb"
    with Store(db) as store:
        for n in range(10, 2, -1):
            day = today - timedelta(days=n)
            state = "final" if n >= 5 else "fresh"
            store.commit_slices([gsckit.store.Staged(
                Slice(SITE, "web", ("date", "query", "page"), (), "all", day),
                pl.DataFrame({"query": ["q"], "page": ["p"], "clicks": [1], "impressions": [2],
                              "ctr": [0.5], "position": [1.0]}), 1, 1, state=state,
                newest_final=today - timedelta(days=5))], run_id="earlier")
    other = "sc-domain:other.example"
    code, out, err = cli(capsys, "sync", SITE, other, "--db", db, "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert (plan["estimated"], plan["newest_final"], plan["probes"]) == (
        True, str(today - timedelta(days=5)), 2)
    mine, theirs = plan["streams"]
    # from the day after the last final day: fresh days again, then the missing ones
    assert mine["fresh"] == [f"{today - timedelta(days=4)}..{today - timedelta(days=3)}"]
    assert mine["missing"] == [f"{today - timedelta(days=2)}..{today}"]
    # a new stream starts 16 months back
    assert theirs["missing"] == [f"{earliest_day(today)}..{today}"]
    code, out, err = cli(capsys, "sync", SITE, "--db", db, "--dry-run")
    assert code == 0 and "estimated from the ledger and the date" in out
    assert "asks Google nothing" in out and f"fresh {today - timedelta(days=4)}" in out
