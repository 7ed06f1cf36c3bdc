"""The engine against the simulator over loopback: paging, idempotency, bounds and quota."""

from __future__ import annotations

import asyncio

import pytest

import gsckit
from gsckit import EngineConfig

from .conftest import (
    SITE,
    assert_matches_truth,
    day_range,
    duplicate_keys,
    run,
    stored,
    table_snapshot,
)

# rows the property has that day -> (rows exposed, requests needed: a full page asks for the next)
PAGING = {
    0: (0, 1),
    1: (1, 1),
    24_999: (24_999, 1),
    25_000: (25_000, 2),
    25_001: (25_001, 2),
    50_000: (50_000, 3),
    61_234: (50_000, 3),
}


@pytest.mark.parametrize("rows", list(PAGING))
async def test_paging_is_exact_at_page_and_cap_boundaries(make_sim, db, rows):
    sim = await make_sim(rows_per_day=rows)
    [day] = day_range(10, 1)
    # paging as such: a capped day is kept as it is (splitting is tested in test_completeness)
    report = await run(sim, db, day, day, split="off")
    exposed, requests = PAGING[rows]
    assert assert_matches_truth(db, sim, [day]) == exposed
    assert report.rows == exposed and report.done == 1
    stats = sim.stats()
    # the pages, then one date-only request for the day's totals
    assert report.totals_requests == 1
    assert stats["requests"] == requests + 1 == report.requests
    assert stats["duplicates"] == 0 and duplicate_keys(db) == 0


async def test_rerun_sends_no_request_and_changes_nothing(make_sim, db):
    sim = await make_sim(rows_per_day=3_000)
    days = day_range(20, 6)
    first = await run(sim, db, days[0], days[-1])
    assert first.done == 6 and first.skipped == 0
    before = table_snapshot(db)
    sim.reset_stats()
    second = await run(sim, db, days[0], days[-1])
    assert (second.done, second.skipped, second.requests) == (0, 6, 0)
    assert sim.stats()["requests"] == 0
    assert table_snapshot(db).equals(before)


async def test_extending_the_range_fetches_only_the_new_days(make_sim, db):
    sim = await make_sim(rows_per_day=500)
    days = day_range(20, 8)
    await run(sim, db, days[0], days[3])
    report = await run(sim, db, days[0], days[-1])
    assert (report.skipped, report.done) == (4, 4)
    assert_matches_truth(db, sim, days)


async def test_sequential_mode_gives_the_same_table_as_eight_workers(make_sim, tmp_path):
    sim = await make_sim(rows_per_day=lambda site, t, day: 20_000 + day.toordinal() % 9 * 4_000,
                         latency_s=0.01)
    days = day_range(30, 8)
    # days over the cap are kept capped, as the ground truth is (splitting: test_completeness)
    one = await run(sim, tmp_path / "one.duckdb", days[0], days[-1], max_concurrency=1,
                    split="off")
    eight = await run(sim, tmp_path / "eight.duckdb", days[0], days[-1], max_concurrency=8,
                      split="off")
    assert one.ok and eight.ok and one.rows == eight.rows > 0
    assert table_snapshot(tmp_path / "one.duckdb").equals(table_snapshot(tmp_path / "eight.duckdb"))
    assert_matches_truth(tmp_path / "one.duckdb", sim, days)


async def test_upstream_revision_leaves_no_stale_rows(make_sim, db):
    sim = await make_sim(rows_per_day=2_000)
    [day] = day_range(12, 1)
    await run(sim, db, day, day)
    old_keys = set(stored(db, SITE, day)["query"])
    sim.revise(day=day)
    report = await run(sim, db, day, day, force=True)
    assert report.done == 1
    assert_matches_truth(db, sim, [day])
    new_keys = set(stored(db, SITE, day)["query"])
    assert old_keys - new_keys, "the revision should have removed some keys"
    assert duplicate_keys(db) == 0


@pytest.mark.parametrize("workers", [1, 16, 256])
async def test_page_bound_queue_bound_and_no_deadlock_at_any_concurrency(make_sim, db, workers):
    # 1 to 4 pages a day (row_limit 1,000); two unpersisted pages for up to 256 workers
    sim = await make_sim(rows_per_day=lambda site, t, day: day.toordinal() % 4 * 1_000 + 500,
                         latency_s=0.002)
    days = day_range(60, 24)
    config = EngineConfig(max_concurrency=workers, max_unpersisted_pages=2, queue_size=4,
                          row_limit=1_000)
    report = await run(sim, db, days[0], days[-1], config=config)
    assert report.ok and report.done == 24
    # the bound, plus the pages of the oldest day (at most 4), which may always go on
    assert 2 <= report.max_unpersisted_pages <= 2 + 3
    assert report.max_queue <= 4
    assert sim.stats()["max_in_flight"] <= 2 + 3
    assert_matches_truth(db, sim, days)


async def test_prefetch_asks_for_both_pages_of_big_days_without_waste(make_sim, db):
    sim = await make_sim(rows_per_day=40_000, latency_s=0.02)
    days = day_range(40, 16)
    report = await run(sim, db, days[0], days[-1], max_concurrency=1)
    assert report.requests == 2 * 16 + 1 == sim.stats()["requests"]  # and the daily totals
    assert_matches_truth(db, sim, days)


async def test_server_never_sees_more_than_the_target_in_any_window(make_sim, db):
    # scaled time: 12 requests per 1.5 s window stands for 960 per minute
    sim = await make_sim(rows_per_day=10, window_s=1.5, quota_qpm=12)
    days = day_range(60, 40)
    report = await run(sim, db, days[0], days[-1], max_concurrency=16, qpm=12,
                       qpm_window_s=1.5, site=[SITE, "sc-domain:other.example"])
    stats = sim.stats()
    assert report.ok and report.requests == 80 + 2  # and each site's daily totals
    assert stats["rate_limited"] == 0
    assert stats["peak_window"] <= 12
    assert max(stats["peak_window_by_token"].values()) <= 12
    # the limiter binds: 82 requests at 8 per second take about 6.8 s
    assert report.wall_s > 82 / 8 * 0.8


async def test_search_types_and_dimension_sets_are_separate_streams(make_sim, db):
    sim = await make_sim(rows_per_day=700)
    [day] = day_range(9, 1)
    await run(sim, db, day, day, search_type="web,image")
    await run(sim, db, day, day, dimensions="country,device")
    frame = gsckit.open(db).frame()
    small = sim.ground_truth(SITE, day, dimensions=("country", "device")).height
    assert 0 < small < 700, "country x device has fewer combinations than the day has rows"
    assert sorted(frame.group_by("search_type", "dimensions").len().rows()) == [
        ("image", "date,query,page", 700), ("web", "country,device", small),
        ("web", "date,query,page", 700)]
    assert_matches_truth(db, sim, [day], dimensions=("country", "device"))
    assert duplicate_keys(db) == 0


async def test_a_second_backfill_on_the_same_file_in_one_process_is_refused(make_sim, db):
    sim = await make_sim(rows_per_day=10, latency_s=0.2)
    days = day_range(20, 3)
    first = asyncio.create_task(run(sim, db, days[0], days[-1]))
    await asyncio.sleep(0.1)
    with pytest.raises(gsckit.DatabaseLocked, match="another backfill in this process"):
        await run(sim, db, days[0], days[-1])
    assert (await first).done == 3
    assert (await run(sim, db, days[0], days[-1])).skipped == 3


async def test_two_backfills_with_one_credential_share_its_quota(make_sim, tmp_path):
    # two notebook cells at once: same token, different sites and files; scaled window
    sim = await make_sim(rows_per_day=10, window_s=1.0, quota_qpm=100)
    days = day_range(40, 10)
    first, second = await asyncio.gather(
        run(sim, tmp_path / "a.duckdb", days[0], days[-1], qpm=4, qpm_window_s=1.0),
        run(sim, tmp_path / "b.duckdb", days[0], days[-1], qpm=4, qpm_window_s=1.0,
            site="sc-domain:other.example"))
    assert first.ok and second.ok and first.requests + second.requests == 20 + 2  # + totals
    [token_peak] = sim.stats()["peak_window_by_token"].values()
    assert token_peak <= 4  # each alone may send 4 per window; together, still 4
    assert max(first.wall_s, second.wall_s) > 22 / 4 * 0.8


async def test_a_second_backfill_with_other_rate_settings_on_a_shared_key_is_refused(
        make_sim, tmp_path):
    sim = await make_sim(rows_per_day=10, latency_s=0.2)
    days = day_range(20, 3)
    running = asyncio.create_task(run(sim, tmp_path / "a.duckdb", days[0], days[-1]))
    await asyncio.sleep(0.1)
    with pytest.raises(gsckit.ConfigError, match="other rate settings"):
        await run(sim, tmp_path / "b.duckdb", days[0], days[-1], qpm=500)
    assert not (tmp_path / "b.duckdb").exists()
    assert (await running).ok
    assert (await run(sim, tmp_path / "b.duckdb", days[0], days[-1], qpm=500)).ok
