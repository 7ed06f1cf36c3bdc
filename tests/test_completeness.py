"""Every day measured against Google's totals: the store's side (the completeness view, daily
totals and their data-state rule, older files), then the engine's (totals fetched with a
backfill, capped days split, the gain measured, splitting stopped when it gains nothing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

import gsckit
from gsckit.split import SplitOutcome
from gsckit.store import SCHEMA_VERSION, Staged, Store

from .conftest import (
    SITE,
    TOKEN,
    assert_matches_truth,
    day_range,
    days_ago,
    duplicate_keys,
    run,
    stored,
)
from .test_resume import ledger_consistent
from .test_store import _v1_file, page, piece


def totals_frame(rows: list[tuple[date, str, int, int, float]], *, site: str = SITE,
                 filters: str = "") -> pl.DataFrame:
    """Daily totals as the engine hands them to the store: (date, state, clicks, impressions,
    position)."""
    return pl.DataFrame({
        "site": [site] * len(rows), "search_type": ["web"] * len(rows),
        "filters": [filters] * len(rows), "date": [r[0] for r in rows],
        "data_state": [r[1] for r in rows], "clicks": [r[2] for r in rows],
        "impressions": [r[3] for r in rows], "ctr": [r[2] / r[3] for r in rows],
        "position": [r[4] for r in rows]},
        schema_overrides={"clicks": pl.Int64, "impressions": pl.Int64, "date": pl.Date})


def view(db, **narrow) -> dict[date, dict]:
    frame = gsckit.open(db).completeness(**narrow)
    return {row["date"]: row for row in frame.iter_rows(named=True)}


def test_the_completeness_view_against_hand_computed_figures(db):
    plain, capped, split, untotalled = (date(2026, 3, d) for d in (2, 3, 4, 5))
    with Store(db) as store:
        # 3 rows: clicks 100 + 99 + 98 = 297, impressions 1005 + 995 + 985 = 2985
        store.commit_slices([Staged(piece(plain), page(["a", "b", "c"]), 1, 1)], run_id="r")
        store.commit_slices([Staged(piece(capped), page(["d", "e"], clicks=[7, 5]), 2, 3,
                                    capped=True, split_note="splitting is off")], run_id="r")
        outcome = SplitOutcome(unsplit_rows=1, unsplit_clicks=9, unsplit_impressions=95,
                               rows=4, clicks=12, impressions=130, partitions=5,
                               capped_partitions=1, requests=9)
        store.commit_slices([Staged(piece(split), page(["f", "g", "h", "i"],
                                                         clicks=[6, 3, 2, 1]), 7, 12,
                                    capped=True, split=outcome)], run_id="r")
        store.commit_slices([Staged(piece(untotalled), page(["j"]), 1, 1)], run_id="r")
        written = store.commit_totals(totals_frame([
            (plain, "final", 400, 4_000, 3.25), (capped, "final", 24, 240, 5.0),
            (split, "final", 12, 150, 4.0)]), run_id="r")
    assert written == 3
    days = view(db)
    assert set(days) == {plain, capped, split, untotalled}

    row = days[plain]
    assert (row["rows"], row["pages"], row["requests"]) == (3, 1, 1)
    assert (row["detail_clicks"], row["detail_impressions"]) == (297, 2_985)
    assert (row["total_clicks"], row["total_impressions"]) == (400, 4_000)
    assert row["total_ctr"] == 0.1 and row["total_position"] == 3.25
    assert row["hidden_clicks_share"] == pytest.approx(103 / 400)
    assert row["hidden_impressions_share"] == pytest.approx(1_015 / 4_000)
    assert (row["capped"], row["split"], row["partitions"]) == (False, False, 0)
    assert row["gained_rows"] is None and row["totals_data_state"] == "final"

    row = days[capped]  # clicks 7 + 5 of 24: half hidden
    assert row["capped"] and not row["split"] and row["split_note"] == "splitting is off"
    assert row["hidden_clicks_share"] == pytest.approx(0.5)
    assert (row["pages"], row["requests"]) == (2, 3)

    row = days[split]  # 6 + 3 + 2 + 1 = 12 clicks: nothing hidden
    assert row["split"] and row["capped"] and row["partitions"] == 5
    assert row["capped_partitions"] == 1 and row["split_requests"] == 9
    assert (row["unsplit_rows"], row["unsplit_clicks"]) == (1, 9)
    assert (row["gained_rows"], row["gained_clicks"]) == (3, 3)
    assert row["hidden_clicks_share"] == 0.0

    row = days[untotalled]
    assert row["total_clicks"] is None and row["hidden_clicks_share"] is None
    assert row["detail_clicks"] == 100

    # narrowing works like Database.frame
    assert set(view(db, start=capped, end=split)) == {capped, split}
    assert view(db, site="sc-domain:other.example") == {}
    assert set(view(db, dimensions=("date", "query", "page"), search_type="web")) == set(days)
    # the view is plain SQL too
    sql = gsckit.open(db).sql("SELECT count(*) AS n FROM completeness WHERE capped")
    assert sql["n"].item() == 2


def test_final_totals_are_never_replaced_by_fresh_ones(db):
    old, new = date(2026, 3, 2), date(2026, 3, 3)
    with Store(db) as store:
        store.commit_totals(totals_frame([(old, "final", 50, 500, 2.0),
                                          (new, "all", 10, 100, 3.0)]), run_id="r1")
        store.commit_totals(totals_frame([(old, "all", 1, 2, 9.0),
                                          (new, "all", 20, 200, 3.5)]), run_id="r2")
        first = gsckit.open(db).sql("SELECT * FROM daily_totals ORDER BY date")
        assert first["clicks"].to_list() == [50, 20]
        assert first["run_id"].to_list() == ["r1", "r2"]
        store.commit_totals(totals_frame([(new, "final", 30, 300, 3.25)]), run_id="r3")
        store.commit_totals(totals_frame([]).clear(), run_id="r4")
    totals = gsckit.open(db).sql("SELECT * FROM daily_totals ORDER BY date")
    assert totals["clicks"].to_list() == [50, 30]
    assert totals["data_state"].to_list() == ["final", "final"]
    assert totals.height == 2  # one row a day, whatever was recorded before


def test_an_older_file_reads_its_completeness_and_the_upgrade_keeps_it(db):
    _v1_file(db)
    before = gsckit.open(db).completeness()
    assert before.height == 3
    # ordered by stream: the other site first
    assert before["detail_clicks"].to_list() == [100 + 99, 100 + 99 + 98, 100]
    assert before["total_clicks"].to_list() == [None] * 3
    assert not before["capped"].any()
    Store(db).close()
    after = gsckit.open(db).completeness()
    assert gsckit.open(db).sql("SELECT value FROM gsckit_meta").item() == str(SCHEMA_VERSION)
    assert after.equals(before)


def test_the_summary_line_and_the_completeness_command(db, capsys):
    from gsckit.cli import main
    from gsckit.completeness import Completeness

    test_the_completeness_view_against_hand_computed_figures(db)
    summary = Completeness.of(gsckit.open(db).completeness())
    # capped: the day that was not split, and the split day with a partition still capped;
    # hidden: (400 - 297) + (24 - 12) + (12 - 12) of 400 + 24 + 12 clicks
    assert summary.line() == ("2 of 4 days capped (1 split: +3 rows, +33.3% clicks, 9.0 extra "
                              "requests a day); 26.4% of clicks not attributable to a query")
    assert summary.hidden_clicks_share == pytest.approx(115 / 436)
    assert summary.to_dict()["split_gained_rows"] == 3

    assert main(["completeness", "--db", str(db), "--json", "--start", "2026-03-03"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["date"] for line in out] == ["2026-03-03", "2026-03-04",
                                                          "2026-03-05"]
    assert main(["completeness", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{SITE} web (date,query,page): 2 of 4 days capped")
    assert "2026-03-05" in text
    assert main(["completeness", "--db", str(db), "--start", "2026-02-30"]) == 2
    assert "start date" in capsys.readouterr().err
    assert main(["completeness", "--db", str(db.parent / "missing.duckdb")]) == 2


# --- the engine: capped days split, measured, stopped -----------------------------------------

QP = ["query", "page"]


def stored_day(db, day: date) -> pl.DataFrame:
    return stored(db, SITE, day).sort(QP)


def assert_equals_every_key(db, sim, day: date, *, share: float = 1.0) -> pl.DataFrame:
    """The stored day against every (query, page) key the simulator has (uncapped): at least
    ``share`` of the keys, each with its true clicks, impressions and CTR (positions to
    rounding), no key invented, none twice."""
    every = sim.uncapped_truth(SITE, day).sort(QP)
    got = stored_day(db, day)
    assert got.select(pl.struct(QP).is_duplicated().any()).item() is False
    joined = got.join(every, on=QP, how="left", suffix="_true")
    assert joined["clicks_true"].null_count() == 0, "a stored key the simulator does not have"
    assert (joined["clicks"] == joined["clicks_true"]).all()
    assert (joined["impressions"] == joined["impressions_true"]).all()
    assert (joined["ctr"] == joined["clicks_true"] / joined["impressions_true"]).all()
    assert ((joined["position"] - joined["position_true"]).abs() < 1e-9).all()
    assert got.height >= share * every.height, (got.height, every.height)
    return every


def assert_stored_as(db, day: date, want: pl.DataFrame) -> None:
    """The stored day holds exactly ``want``'s rows (positions to rounding: a split day's are
    weighted back from its partitions')."""
    got, want = stored_day(db, day), want.sort(QP)
    exact = [c for c in got.columns if c != "position"]
    assert got.select(exact).equals(want.select(exact))
    assert ((got["position"] - want["position"]).abs() < 1e-9).all()


def kinds(sim) -> dict[str, int]:
    """The simulator's requests by kind: ``pages`` of the stream's own answers, ``partitions``
    (filtered), ``countries`` (grouped by country) and ``date`` (grouped by date alone: daily
    totals, Google's newest-final-day probe)."""
    found = {"pages": 0, "partitions": 0, "countries": 0, "date": 0}
    for record in sim.request_log:
        if record.dimensions == ("country",):
            found["countries"] += 1
        elif record.dimensions == ("date",):
            found["date"] += 1
        elif record.filters:
            found["partitions"] += 1
        else:
            found["pages"] += 1
    return found


async def test_runs_record_googles_daily_totals_fresh_then_final(make_sim, db):
    """A sync on Google's timing: one date-only request records every day's totals (fresh ones
    as fresh), the view's hidden share is the simulator's anonymized share, a later sync asks
    only for the days whose totals are not final yet and replaces them with final ones."""
    sim = await make_sim(all_final=False, rows_per_day=200, anonymized_share=0.3)
    start = sim.today - timedelta(days=8)
    report = await gsckit.sync_async(SITE, start=start, db=db, token=TOKEN,
                                     base_url=sim.base_url, progress=False, today=sim.today)
    newest = sim.newest_final_day()
    assert report.ok and report.totals_requests == 1
    totals = [r for r in sim.request_log if r.dimensions == ("date",) and r.row_limit == 25_000]
    assert [(r.day, r.end_day, r.data_state) for r in totals] == [(start, sim.today, "all")]
    rows = view(db)
    assert sorted(rows) == [start + timedelta(days=n) for n in range(9)]
    for day, row in rows.items():
        truth = sim.totals(SITE, day, data_state="all")
        assert (row["total_clicks"], row["total_impressions"]) == (truth.clicks,
                                                                  truth.impressions)
        assert row["totals_data_state"] == ("final" if day <= newest else "fresh")
        assert row["hidden_clicks_share"] == pytest.approx(truth.hidden_clicks_share,
                                                           abs=0.005)
    assert report.completeness is not None
    assert report.completeness.query_total_clicks == sum(r["total_clicks"] for r in rows.values())

    fresh = [newest + timedelta(days=n) for n in range(1, (sim.today - newest).days + 1)]
    sim.advance(days=4)
    sim.reset_stats()
    again = await gsckit.sync_async(SITE, start=start, db=db, token=TOKEN,
                                    base_url=sim.base_url, progress=False, lookback_days=0,
                                    today=sim.today)
    totals = [r for r in sim.request_log if r.dimensions == ("date",) and r.row_limit == 25_000]
    assert [(r.day, r.end_day) for r in totals] == [(newest + timedelta(days=1), sim.today)]
    assert again.ok and again.promoted == len(fresh) > 0
    rows = view(db)
    for day in fresh:
        truth = sim.totals(SITE, day, data_state="final")
        assert rows[day]["totals_data_state"] == "final"
        assert rows[day]["total_clicks"] == truth.clicks
        assert rows[day]["detail_clicks"] == truth.query_clicks  # 200 keys: no cap
    # every committed day has final or fresh totals, and a dry run expects no totals request
    # for final ones
    ahead = gsckit.preview_sync(SITE, start=start, db=db, lookback_days=0, today=sim.today)
    assert ahead.requests == ahead.probes + ahead.todo + 1


async def test_an_uncapped_day_is_not_split_and_costs_only_its_pages(make_sim, db):
    sim = await make_sim(rows_per_day=30_000)
    [day] = day_range(12, 1)
    report = await run(sim, db, day, day)
    assert report.ok and report.split_days == 0 and report.split_requests == 0
    assert_matches_truth(db, sim, [day])
    requests = kinds(sim)
    assert requests["pages"] == 2 and requests["partitions"] == requests["countries"] == 0
    assert sim.stats()["requests"] == report.requests == 2 + requests["date"]
    [row] = view(db).values()
    assert (row["capped"], row["split"], row["partitions"]) == (False, False, 0)
    assert report.completeness is not None and report.completeness.capped == 0
    assert report.completeness.line().startswith("0 of 1 days capped")


async def test_splitting_recovers_the_keys_past_the_cap_exactly(make_sim, db):
    """The target in a shorter form: one day of 150,000 (query, page) keys, 20% anonymized."""
    sim = await make_sim(rows_per_day=150_000, anonymized_share=0.2)
    [day] = day_range(15, 1)
    report = await run(sim, db, day, day, max_concurrency=4)
    assert report.ok and report.split_days == 1
    every = assert_equals_every_key(db, sim, day, share=0.90)
    got = stored_day(db, day)
    assert got["clicks"].sum() >= 0.99 * every["clicks"].sum()
    assert duplicate_keys(db) == 0
    unsplit = sim.ground_truth(SITE, day)
    [row] = view(db).values()
    assert row["split"] and row["partitions"] >= 3 + 2  # devices, then a country level
    assert row["unsplit_rows"] == unsplit.height == 50_000
    assert row["gained_rows"] == got.height - 50_000
    assert row["gained_clicks"] == got["clicks"].sum() - unsplit["clicks"].sum()
    assert row["capped"] == (row["capped_partitions"] > 0)
    requests = kinds(sim)
    assert row["split_requests"] == requests["partitions"] + requests["countries"]
    assert report.split_requests == row["split_requests"]
    assert row["pages"] == 2 and requests["pages"] == 2, "the page past the cap is not asked"
    assert report.completeness.split == 1 and report.completeness.gained_rows > 0


async def test_filters_applied_after_the_cap_stop_splitting(make_sim, db):
    sim = await make_sim(rows_per_day=60_000, filters_before_cap=False)
    days = day_range(20, 3)
    report = await run(sim, db, days[0], days[-1], max_concurrency=1)
    assert report.ok and report.split_days == 1
    for day in days:  # what the cap lets through, nothing more
        assert_stored_as(db, day, sim.ground_truth(SITE, day))
    rows = view(db)
    first, *later = (rows[d] for d in days)
    assert first["split"] and first["gained_rows"] == 0 and first["gained_clicks"] == 0
    assert first["capped"], "a split that gained nothing leaves the cap's cut"
    assert all(r["capped"] and not r["split"] for r in later)
    assert all(r["split_note"].startswith("splitting stopped for") for r in later)
    summary = report.summary()
    assert f"splitting stopped for {SITE} web (date,query,page) after {days[0]}" in summary
    assert "applies filters after its row cap" in summary
    assert "3 of 3 days capped" in summary

    # the next run knows from the ledger: no split at all, and the report says why
    sim.reset_stats()
    more = day_range(16, 2)
    again = await run(sim, db, more[0], more[-1])
    assert again.split_days == 0 and kinds(sim)["partitions"] == 0
    assert "splitting stopped for" in again.summary()
    assert all(view(db)[d]["split_note"].startswith("splitting stopped") for d in more)
    # and a dry run expects no split cost for that stream
    dry = gsckit.preview(SITE, str(days_ago(14)), str(days_ago(13)), db=db)
    assert dry.split_requests == 0


async def test_a_dry_run_estimates_the_split_cost_from_the_ledger(make_sim, db):
    sim = await make_sim(rows_per_day=60_000)
    days = day_range(20, 2)
    report = await run(sim, db, days[0], days[-1])
    per_day = report.split_requests / 2
    assert report.split_days == 2 and per_day > 0
    ahead = gsckit.preview(SITE, str(days_ago(18)), str(days_ago(14)), db=db)
    assert ahead.todo == 5 and ahead.split_requests == round(5 * per_day)
    assert f"{ahead.split_requests} of them to split capped days" in ahead.summary()
    assert gsckit.preview(SITE, str(days_ago(18)), str(days_ago(14)), db=db,
                          split="off").split_requests == 0
    with pytest.raises(gsckit.ConfigError, match="split must be one of auto, off"):
        gsckit.preview(SITE, str(days_ago(18)), str(days_ago(14)), db=db, split="yes")


@pytest.mark.parametrize("workers", [1, 16])
async def test_split_days_keep_the_page_bound_without_deadlock(make_sim, db, workers):
    """Two unpersisted pages for days that each split into several partitions."""
    sim = await make_sim(rows_per_day=60_000)
    days = day_range(20, 3)
    config = gsckit.EngineConfig(max_concurrency=workers, max_unpersisted_pages=2)
    report = await asyncio.wait_for(run(sim, db, days[0], days[-1], config=config), 120)
    assert report.ok and report.split_days == 3
    for day in days:
        assert_equals_every_key(db, sim, day)
    # the bound, plus the pages the oldest day in progress holds (a split day holds its
    # own two pages and its partitions' until its commit)
    assert report.max_unpersisted_pages <= 2 + max(view(db)[d]["split_requests"] + 2
                                                   for d in days)
    assert duplicate_keys(db) == 0


def partition_answered(events) -> bool:
    """Whether a day being split (not committed yet) has had a request answered since."""
    done = {e["day"] for e in events("slice_done")}
    started = [e for e in events("split") if e["day"] not in done]
    return any(e["day"] == s["day"] and e["ts"] > s["ts"] for s in started
               for e in events("request"))


def test_a_crash_during_a_split_day_then_a_rerun_equals_the_truth(thread_sim, tmp_path):
    """SIGKILL a real `gsckit backfill` while a day is being split: nothing of that day is
    committed, and the re-run fetches only the days not committed, to every key."""
    sim = thread_sim(rows_per_day=60_000, latency_s=0.08)
    days = day_range(30, 3)
    db, audit = tmp_path / "gsc.duckdb", tmp_path / "audit.jsonl"

    def backfill(log: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "gsckit", "backfill", SITE, "--start", str(days[0]),
             "--end", str(days[-1]), "--db", str(db), "--base-url", sim.base_url,
             "--audit-log", str(log), "--concurrency", "2", "--no-progress", "--json"],
            env={**os.environ, "GSC_ACCESS_TOKEN": TOKEN}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)

    def events(kind: str) -> list[dict]:
        lines = audit.read_text().splitlines() if audit.exists() else []
        return [json.loads(line) for line in lines if f'"event":"{kind}"' in line]

    proc = backfill(audit)
    deadline = time.monotonic() + 60
    # wait until a day is being split and a partition has answered
    while proc.poll() is None and not partition_answered(events):
        assert time.monotonic() < deadline, "no split started"
        time.sleep(0.01)
    splitting = {e["day"] for e in events("split")} - {e["day"] for e in events("slice_done")}
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert splitting, "the kill came after the split day was committed"
    survived = ledger_consistent(db) if db.exists() else 0
    assert survived < len(days)

    rerun = backfill(tmp_path / "audit2.jsonl")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["skipped"] == survived
    assert summary["done"] == len(days) - survived, "only the uncommitted days are fetched"
    assert summary["split_days"] == len(days) - survived
    assert ledger_consistent(db) == len(days)
    assert duplicate_keys(db) == 0
    for day in days:
        sim.do(assert_equals_every_key, db, sim.sim, day)
