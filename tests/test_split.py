"""Splitting capped days, as pure functions: partitions, the country choice, the exact merge.

The simulator's truths stand in for the API here (no HTTP): every partition's answer is what
the simulator would send for it, capped. The days are a tenth of the target's size with a cap a
tenth of Google's (15,000 keys a day against 5,000 rows), which keeps the proportions and the
test fast; the engine tests run the real sizes.
"""

from __future__ import annotations

from collections import deque
from datetime import date

import polars as pl
import pytest

from gsckit import Filter
from gsckit.planner import Slice
from gsckit.rows import dedupe, merge
from gsckit.sim import SimConfig, Simulator
from gsckit.split import (
    MAX_COUNTRIES,
    REMAINDER_TARGET,
    WHOLE_DAY,
    Partition,
    SplitPlan,
    by_country,
    by_device,
    can_split,
    choose_countries,
    country_request,
    next_level,
)

SITE = "sc-domain:example.com"
DAY = date(2026, 3, 2)
DIMS = ("date", "query", "page")
KEYS = ["query", "page"]


def piece(filters: tuple[Filter, ...] = (), dimensions: tuple[str, ...] = DIMS) -> Slice:
    return Slice(SITE, "web", dimensions, filters, "final", DAY)


def answer(sim: Simulator, request: Slice, *, capped: bool = True) -> pl.DataFrame:
    truth = sim.ground_truth if capped else sim.uncapped_truth
    return truth(SITE, request.day, dimensions=request.dimensions, filters=request.filters)


def drive(sim: Simulator, day: Slice, cap: int) -> tuple[SplitPlan, pl.DataFrame, int, int]:
    """Run a split the way the engine does, with the simulator's answers; return the plan, the
    merged rows, the repeats dropped and the requests the split needed (one per answer)."""
    plan = SplitPlan(day, answer(sim, day), cap)
    steps = deque([plan.begin()])
    requests = 0
    while steps:
        step = steps.popleft()
        for partition in step.partitions:
            requests += 1
            steps.append(plan.arrived(partition, answer(sim, partition.request(day))))
        for partition in step.countries:
            requests += 1
            steps.append(plan.countries(partition, answer(sim, country_request(day, partition))))
    assert plan.done
    merged, dropped = merge(plan.parts)
    return plan, merged, dropped, requests


def by_key(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(KEYS)


def assert_same_rows(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Same keys with the same clicks, impressions and CTR; positions equal to rounding (a
    position weighted back from a rounded average is off by an ulp or so)."""
    got, want = by_key(got), by_key(want.select(got.columns))
    exact = [c for c in got.columns if c != "position"]
    assert got.select(exact).equals(want.select(exact))
    assert ((got["position"] - want["position"]).abs() < 1e-9).all()


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(SimConfig(all_final=True, rows_per_day=15_000, row_cap=5_000,
                               anonymized_share=0.2))


def test_a_capped_day_splits_by_device_then_country_and_recovers_every_key(sim):
    day = piece()
    plan, merged, dropped, requests = drive(sim, day, cap=5_000)
    everything = answer(sim, day, capped=False)
    unsplit = answer(sim, day)
    assert unsplit.height == 5_000 and everything.height == 15_000
    # recall: keys and the clicks attributable to a query
    keys = merged.join(everything, on=KEYS, how="semi").height
    assert keys == merged.height, "the merge invented keys"
    assert keys / everything.height >= 0.90
    assert merged["clicks"].sum() / everything["clicks"].sum() >= 0.99
    # exactness: every merged key has the true clicks and impressions, position to rounding
    joined = merged.join(everything, on=KEYS, suffix="_true")
    assert joined.height == merged.height
    assert (joined["clicks"] == joined["clicks_true"]).all()
    assert (joined["impressions"] == joined["impressions_true"]).all()
    assert (joined["ctr"] == joined["clicks_true"] / joined["impressions_true"]).all()
    assert ((joined["position"] - joined["position_true"]).abs() < 1e-9).all()
    assert merged.select(pl.struct(KEYS).is_duplicated().any()).item() is False
    assert dropped == 0
    # the outcome is measured against the unsplit answer
    outcome = plan.outcome(merged)
    assert outcome.unsplit_rows == 5_000
    assert outcome.gained_rows == merged.height - 5_000 > 0
    assert outcome.gained_clicks == merged["clicks"].sum() - unsplit["clicks"].sum() > 0
    assert not outcome.gained_nothing
    assert outcome.partitions == len(plan.parts)
    # 3 devices, then a country request and its partitions for each capped device
    capped_devices = sum(answer(sim, p.request(day)).height >= 5_000 for p in by_device())
    assert capped_devices >= 1
    assert requests == 3 + capped_devices + (len(plan.parts) - (3 - capped_devices))


def test_filters_after_the_cap_make_a_split_gain_nothing():
    late = Simulator(SimConfig(all_final=True, rows_per_day=15_000, row_cap=5_000,
                               filters_before_cap=False))
    day = piece()
    plan, merged, _, _ = drive(late, day, cap=5_000)
    unsplit = answer(late, day)
    outcome = plan.outcome(merged)
    assert outcome.gained_rows == 0 and outcome.gained_clicks == 0
    assert outcome.gained_nothing
    assert_same_rows(merged, unsplit)


def test_the_levels_cover_their_parent_exactly(sim):
    """Device partitions, and a device's country partitions with its remainder, add up to their
    parent key by key (uncapped: this is about the filters, not the cap)."""
    day = piece()
    whole = answer(sim, day, capped=False)
    devices = by_device()
    merged, _ = merge([answer(sim, p.request(day), capped=False) for p in devices])
    assert_same_rows(merged, whole)

    mobile = devices[1]
    countries = answer(sim, country_request(day, mobile))
    parts = by_country(mobile, countries["country"].head(4).to_list())
    assert [p.level for p in parts] == ["country"] * 4 + ["rest"]
    merged, _ = merge([answer(sim, p.request(day), capped=False) for p in parts])
    want = answer(sim, mobile.request(day), capped=False)
    assert_same_rows(merged, want)


def test_the_remainder_is_one_and_group_with_the_users_filters():
    user = Filter("page", "contains", "/blog/")
    day = piece((user,))
    mobile = by_device()[1]
    rest = by_country(mobile, ["usa", "gbr", "can"])[-1]
    body = rest.request(day).body(0, 25_000)
    assert body["dimensionFilterGroups"] == [{"groupType": "and", "filters": [
        user.to_api(),
        {"dimension": "device", "operator": "equals", "expression": "MOBILE"},
        {"dimension": "country", "operator": "notEquals", "expression": "USA"},
        {"dimension": "country", "operator": "notEquals", "expression": "GBR"},
        {"dimension": "country", "operator": "notEquals", "expression": "CAN"}]}]
    assert rest.label == "MOBILE/rest of 3"
    assert rest.request(day).key == day.key.replace(
        day.filters_key, rest.request(day).filters_key)
    grouped = country_request(day, mobile)
    assert grouped.dimensions == ("country",) and grouped.filters == (user, *mobile.filters)


def test_what_can_still_be_split():
    assert next_level(piece(), WHOLE_DAY) == "device"
    mobile = by_device()[1]
    assert next_level(piece(), mobile) == "country"
    assert next_level(piece(), by_country(mobile, ["usa"])[0]) is None
    assert next_level(piece(), by_country(mobile, ["usa"])[1]) is None
    # the user's own filters already hold a dimension to one value: skip that level
    on_mobile = piece((Filter("device", "equals", "MOBILE"),))
    assert next_level(on_mobile, WHOLE_DAY) == "country"
    both = piece((Filter("device", "equals", "MOBILE"), Filter("country", "equals", "usa")))
    assert not can_split(both) and can_split(on_mobile)
    # a device filter that excludes one device leaves the device split possible
    assert next_level(piece((Filter("device", "notEquals", "TABLET"),)), WHOLE_DAY) == "device"


def countries_frame(impressions: list[int]) -> pl.DataFrame:
    names = [f"c{i:02d}" for i in range(len(impressions))]
    return pl.DataFrame({"country": names, "clicks": [0] * len(names),
                         "impressions": impressions})


def test_the_fewest_countries_that_leave_the_remainder_under_target():
    cap = 1_000
    # total 10,000 impressions of which the capped detail showed 2,000: about 5,000 rows
    frame = countries_frame([4_000, 2_000, 1_500, 1_000, 800, 400, 200, 100])
    chosen = choose_countries(frame, 2_000, cap)
    estimate = cap * 10_000 / 2_000
    shares = [4_000, 2_000, 1_500, 1_000, 800, 400, 200, 100]
    left = [estimate * (1 - sum(shares[:k]) / 10_000) for k in range(1, 9)]
    want = next(k for k, rows in enumerate(left, 1) if rows <= REMAINDER_TARGET * cap)
    assert len(chosen) == want
    assert chosen == ["c00", "c01", "c02", "c03", "c04", "c05"][:want]
    assert left[want - 2] > REMAINDER_TARGET * cap  # one fewer would not do

    # a partition barely over the cap needs one country; a huge one stops at the maximum
    assert len(choose_countries(frame, 10_000, cap)) == 1
    many = countries_frame([1_000] * 60)
    assert len(choose_countries(many, 100, cap)) == MAX_COUNTRIES
    # ranked by impressions whatever the answer's order; ties by name
    shuffled = countries_frame([5, 50, 50, 500]).reverse()
    assert choose_countries(shuffled, 1, cap=1)[:3] == ["c03", "c01", "c02"]
    assert choose_countries(countries_frame([]), 100, cap) == []


def test_merge_keeps_one_copy_of_a_repeat_and_adds_up_different_parts():
    desktop = pl.DataFrame({"query": ["a", "b", "b"], "page": ["/x", "/y", "/y"],
                            "clicks": [3, 1, 1], "impressions": [10, 4, 4],
                            "ctr": [0.3, 0.25, 0.25], "position": [2.0, 5.0, 5.0]})
    mobile = pl.DataFrame({"query": ["a", "c"], "page": ["/x", "/z"], "clicks": [1, 0],
                           "impressions": [30, 7], "ctr": [1 / 30, 0.0],
                           "position": [6.0, 9.5]})
    merged, dropped = merge([desktop, mobile])
    assert dropped == 1  # b on /y repeated across a page boundary of one part
    rows = {(r["query"], r["page"]): r for r in merged.iter_rows(named=True)}
    assert set(rows) == {("a", "/x"), ("b", "/y"), ("c", "/z")}
    a = rows[("a", "/x")]
    assert (a["clicks"], a["impressions"]) == (4, 40)
    assert a["ctr"] == 4 / 40
    assert a["position"] == (2.0 * 10 + 6.0 * 30) / 40  # 5.0, weighted by impressions
    assert (rows[("b", "/y")]["clicks"], rows[("b", "/y")]["impressions"]) == (1, 4)
    assert rows[("c", "/z")]["position"] == 9.5
    assert merged.columns == desktop.columns
    assert dedupe(merged)[1] == 0


def test_merge_of_rows_without_a_position_and_of_date_only_rows():
    discover = [pl.DataFrame({"page": ["/x"], "clicks": [2], "impressions": [5],
                              "ctr": [0.4], "position": [None]},
                             schema_overrides={"position": pl.Float64}),
                pl.DataFrame({"page": ["/x"], "clicks": [1], "impressions": [5],
                              "ctr": [0.2], "position": [None]},
                             schema_overrides={"position": pl.Float64})]
    merged, _ = merge(discover)
    assert merged.row(0, named=True) == {"page": "/x", "clicks": 3, "impressions": 10,
                                         "ctr": 0.3, "position": None}
    totals = [pl.DataFrame({"clicks": [2], "impressions": [4], "ctr": [0.5],
                            "position": [3.0]}),
              pl.DataFrame({"clicks": [1], "impressions": [12], "ctr": [1 / 12],
                            "position": [7.0]})]
    merged, _ = merge(totals)
    assert merged.row(0, named=True) == {"clicks": 3, "impressions": 16, "ctr": 3 / 16,
                                         "position": (3.0 * 4 + 7.0 * 12) / 16}
    with pytest.raises(ValueError):
        merge([])


def test_a_partition_that_stays_capped_is_kept_and_counted():
    """Every country partition reaches a cap of 10 rows: nothing below country is tried."""
    tiny = Simulator(SimConfig(all_final=True, rows_per_day=2_000, row_cap=10))
    day = piece()
    plan, merged, _, _ = drive(tiny, day, cap=10)
    assert plan.capped_partitions > 0
    assert all(p.height <= 10 for p in plan.parts)
    outcome = plan.outcome(merged)
    assert outcome.capped_partitions == plan.capped_partitions
    assert outcome.rows == merged.height > 10


def test_partition_labels():
    mobile = by_device()[1]
    assert WHOLE_DAY.label == "day"
    assert mobile.label == "MOBILE"
    assert by_country(mobile, ["usa"])[0].label == "MOBILE/USA"
    assert Partition().request(piece()) == piece()
