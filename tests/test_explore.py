"""gsckit.explore against hand-computed values on small frames written through the store.

One database for the module: each site in it is built for one analysis, so the expected figures
below can be worked out by hand from the rows (the arithmetic is spelled out in each test).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

import gsckit
import gsckit.explore as ex
from gsckit import ConfigError, Filter, Slice
from gsckit.explore import CompletenessWarning
from gsckit.store import Store

DQP = ("date", "query", "page")
WEIGHTS = "sc-domain:weights.example"
MOVERS = "sc-domain:movers.example"
SHOP = "sc-domain:shop.example"
ANOMALY = "sc-domain:anomaly.example"
RANGES = "sc-domain:ranges.example"
D1 = date(2026, 3, 2)  # a Monday
D2 = D1 + timedelta(days=1)
U = "https://shop.example"


def put(store: Store, site: str, day: date, rows: Sequence[tuple], *,
        dims: Sequence[str] = DQP, search_type: str = "web", state: str = "final",
        filters: tuple[Filter, ...] = ()) -> None:
    """Commit one day slice. Rows are (query, page, clicks, impressions, position) for
    date,query,page; (query, clicks, impressions, position) for date,query; and
    (clicks, impressions, position) for the date-only totals."""
    keys = [d for d in dims if d != "date"]
    columns = [*keys, "clicks", "impressions", "position"]
    frame = pl.DataFrame([list(r) for r in rows], schema=columns, orient="row") if rows else (
        pl.DataFrame(schema=columns))
    frame = frame.with_columns(
        [pl.col(k).cast(pl.String) for k in keys]
        + [pl.col("clicks").cast(pl.Int64), pl.col("impressions").cast(pl.Int64),
           pl.col("position").cast(pl.Float64)]
    ).with_columns(ctr=pl.col("clicks") / pl.col("impressions"))
    piece = Slice(site, search_type, tuple(dims), filters, state, day)
    store.commit_slice(piece, frame.select(*keys, "clicks", "impressions", "ctr", "position"),
                       pages=1, requests=1, run_id="test")


# the shop: (query, page, clicks, impressions, position) on D1 and D2
SHOP_D1 = [
    ("acme shoes", f"{U}/shoes/", 50, 100, 1.0),
    ("acme login", f"{U}/login", 20, 40, 1.0),
    ("acme store", f"{U}/store/?ref=mail", 5, 100, 2.4),
    ("running shoes", f"{U}/shoes/running/a", 6, 300, 9.0),
    ("running shoes", f"{U}/blog/2024/run", 4, 100, 13.0),
    ("trail shoes", f"{U}/shoes/trail", 1, 200, 15.0),
    ("cheap socks", f"{U}/socks/", 9, 100, 3.0),
    ("cheap socks", f"{U}/blog/2024/socks", 1, 100, 25.0),
    ("sock size", f"{U}/socks/", 0, 50, 30.0),
]
SHOP_D2 = [
    ("acme shoes", f"{U}/shoes/", 30, 100, 2.0),
    ("trail shoes", f"{U}/shoes/trail", 1, 200, 17.0),
]


def anomaly_series() -> tuple[list[date], list[int], dict[date, str]]:
    """12 weeks of daily clicks with a weekly rhythm (weekends low), +-3% noise, and three
    planted anomalies in the last four weeks: a spike, a drop, and a Saturday at a weekday's
    level (normal for a Tuesday, so only a weekday-aware band sees it)."""
    base = [1000, 1100, 1050, 1000, 900, 300, 250]  # Monday..Sunday
    first = D1 - timedelta(weeks=11)
    days = [first + timedelta(days=i) for i in range(84)]
    clicks = [round(base[d.weekday()] * (1 + ((i * 37) % 7 - 3) / 100))
              for i, d in enumerate(days)]
    planted = {days[64]: "spike", days[73]: "drop", days[75]: "saturday"}
    assert [d.weekday() for d in planted] == [1, 3, 5]
    for day, kind in planted.items():
        i = days.index(day)
        clicks[i] = {"spike": clicks[i] * 3, "drop": clicks[i] * 3 // 10, "saturday": 1050}[kind]
    return days, clicks, planted


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("explore") / "gsc.duckdb"
    with Store(path) as store:
        # weights: two days, three streams of one site plus noise the analyses must not read
        put(store, WEIGHTS, D1, [("a", "/p1", 4, 40, 3.0), ("b", "/p1", 2, 60, 6.0)])
        put(store, WEIGHTS, D2, [("a", "/p1", 10, 100, 2.0), ("a", "/p2", 0, 50, 8.0),
                                 ("b", "/p1", 5, 50, 4.0)])
        put(store, WEIGHTS, D1, [(9, 150, 4.0)], dims=("date",))
        put(store, WEIGHTS, D2, [(20, 260, 4.5)], dims=("date",))
        put(store, WEIGHTS, D2, [("a", "/p1", 500, 900, 1.0)], search_type="image")
        put(store, WEIGHTS, D2, [("a", "/p1", 700, 900, 1.0)],
            filters=(Filter("page", "contains", "p1"),))
        put(store, "sc-domain:other.example", D2, [("a", "/p1", 900, 900, 1.0)])
        # movers: previous week D1-7..D1-1, current week D1..D1+6; date,query,page and
        # date,query streams that disagree on purpose, to show which one is read
        for offset in range(-7, 7):
            day = D1 + timedelta(days=offset)
            detail, queries = [], []
            if offset == -7:
                detail += [("b", "/b", 12, 100, 5.0), ("c", "/c", 4, 40, 5.0)]
                queries += [("b", 12, 100, 5.0), ("c", 4, 40, 5.0)]
            if offset == 0:
                detail += [("a", "/a", 30, 300, 2.0), ("c", "/c", 10, 40, 3.0)]
                queries += [("a", 30, 300, 2.0), ("c", 10, 40, 3.0)]
            if offset == 3:
                detail += [("d", "/a", 7, 70, 4.0)]
            put(store, MOVERS, day, detail)
            put(store, MOVERS, day, queries, dims=("date", "query"))
        put(store, SHOP, D1, SHOP_D1)
        put(store, SHOP, D2, SHOP_D2)
        days, clicks, _ = anomaly_series()
        for day, value in zip(days, clicks, strict=True):
            put(store, ANOMALY, day, [(value, value * 10, 5.0)], dims=("date",))
        # ranges: 40 final days with day 20 missing, then 3 fresh days
        for i in range(43):
            if i != 19:
                put(store, RANGES, D1 + timedelta(days=i), [(i + 1, 100, 3.0)], dims=("date",),
                    state="final" if i < 40 else "all")
    return path


# --- overview: weighted metrics, the stream it reads, the previous period ----------------------

def test_overview_weights_position_by_impressions_and_reads_one_stream(db):
    frame = ex.overview(db, WEIGHTS, start=D2, end=D2, dimensions="date,query,page")
    row = frame.row(0, named=True)
    assert frame.height == 1 and row["period"] == D2 and row["days"] == 1
    assert row["clicks"] == 10 + 0 + 5 and row["impressions"] == 100 + 50 + 50
    assert row["ctr"] == pytest.approx(15 / 200)
    # Σ(position * impressions) / Σimpressions; the plain mean would be (2 + 8 + 4) / 3 = 4.67
    assert row["position"] == pytest.approx((2 * 100 + 8 * 50 + 4 * 50) / 200)
    # the previous period is the day before, aligned onto D2
    assert row["previous_period"] == D1
    assert row["clicks_previous"] == 6 and row["impressions_previous"] == 100
    assert row["position_previous"] == pytest.approx((3 * 40 + 6 * 60) / 100)
    assert row["clicks_change"] == 15 - 6
    assert row["ctr_change"] == pytest.approx(15 / 200 - 6 / 100)
    assert row["position_change"] == pytest.approx(4.0 - 4.8)


def test_overview_prefers_the_date_totals_and_never_sums_two_streams(db):
    # the totals (which include anonymized queries) win over the detail rows; nothing from
    # the image search type, the filtered stream or another site is added in
    row = ex.overview(db, WEIGHTS, start=D2, end=D2).row(0, named=True)
    assert (row["clicks"], row["impressions"], row["position"]) == (20, 260, 4.5)
    assert row["clicks_previous"] == 9
    with pytest.warns(CompletenessWarning, match="image"):
        image = ex.overview(db, WEIGHTS, start=D2, end=D2, search_type="image")
    assert image["clicks"].to_list() == [500] and image["clicks_previous"].to_list() == [None]


def test_overview_by_week_and_month_aligns_the_previous_days(db):
    week = ex.overview(db, MOVERS, freq="week", start=D1, end=D1 + timedelta(days=6),
                       dimensions="date,query")
    assert week.height == 1
    row = week.row(0, named=True)
    assert (row["period"], row["days"], row["clicks"], row["clicks_previous"]) == (
        D1, 7, 30 + 10, 12 + 4)
    assert row["previous_period"] == D1 - timedelta(days=7)
    # 2026-02-28 to 2026-03-07 against 02-20 to 02-27, day by day: 02-20 falls in February's
    # row, and 02-20..02-22 were never fetched
    with pytest.warns(CompletenessWarning, match="3 of 8 days"):
        month = ex.overview(db, MOVERS, freq="month", start=date(2026, 2, 28),
                            end=date(2026, 3, 7), dimensions="date,query")
    assert month.select("period", "days", "clicks", "clicks_previous").rows() == [
        (date(2026, 2, 1), 1, 0, None), (date(2026, 3, 1), 7, 40, 16)]
    assert month["previous_period"][1] == date(2026, 2, 23)  # its first fetched day


# --- movers: zero-filled, equal-length periods, sorted by |delta| ------------------------------

def test_movers_zero_fill_missing_keys_and_sort_by_absolute_delta(db):
    current = (D1, D1 + timedelta(days=6))
    frame = ex.movers(db, MOVERS, "query", current=current)
    assert frame.columns == ["query", "clicks_current", "clicks_previous", "delta", "delta_pct"]
    # read from the date,query stream (d is only in the date,query,page rows)
    assert frame.rows() == [
        ("a", 30, 0, 30, None),          # new: missing before, counts as 0
        ("b", 0, 12, -12, -100.0),       # lost: missing now, counts as 0
        ("c", 10, 4, 6, 150.0),
    ]


def test_movers_by_page_with_another_metric_and_explicit_previous(db):
    current = (D1, D1 + timedelta(days=6))
    previous = (D1 - timedelta(days=7), D1 - timedelta(days=1))
    frame = ex.movers(db, MOVERS, by="page", current=current, previous=previous,
                      metric="impressions", limit=2)
    # /a: 300 + 70 now, 0 before; /b: 0 now, 100 before; /c: 40 and 40
    assert frame.rows() == [("/a", 370, 0, 370, None), ("/b", 0, 100, -100, -100.0)]
    ctr = ex.movers(db, MOVERS, by="page", current=current, metric="ctr")
    assert ctr.filter(pl.col("page") == "/a").row(0)[1:4] == pytest.approx(
        ((30 + 7) / 370, 0.0, (30 + 7) / 370))
    position = ex.movers(db, MOVERS, by="query", current=current, metric="position")
    # a position has no zero: a key missing from one period keeps NULL there
    assert position.filter(pl.col("query") == "c").row(0)[1:4] == pytest.approx((3.0, 5.0, -2.0))
    assert position.filter(pl.col("query") == "a")["position_previous"].to_list() == [None]


def test_movers_refuse_unequal_or_overlapping_periods(db):
    current = (D1, D1 + timedelta(days=6))
    with pytest.raises(ConfigError, match="as long as current"):
        ex.movers(db, MOVERS, current=current, previous=(D1 - timedelta(days=8), D1))
    with pytest.raises(ConfigError, match="overlaps"):
        ex.movers(db, MOVERS, current=current,
                  previous=(D1 - timedelta(days=3), D1 + timedelta(days=3)))


# --- striking distance, cannibalization, CTR curve, brand, page groups --------------------------

TOP_CTR = (80 + 20 + 5) / (200 + 40 + 100)  # acme shoes (1.5), acme login (1.0), store (2.4)


def test_striking_distance_ranks_by_opportunity_with_the_best_page(db):
    frame = ex.striking_distance(db, SHOP, start=D1, end=D2)
    assert frame.columns == ["query", "best_page", "clicks", "impressions", "ctr", "position",
                             "opportunity"]
    assert frame["query"].to_list() == ["trail shoes", "running shoes", "cheap socks"]
    trail, running, socks = frame.rows(named=True)
    assert (trail["clicks"], trail["impressions"]) == (2, 400)
    assert trail["position"] == pytest.approx((15 * 200 + 17 * 200) / 400)
    assert trail["opportunity"] == pytest.approx(400 * TOP_CTR - 2)
    assert running["best_page"] == f"{U}/shoes/running/a"  # 6 clicks against the blog's 4
    assert running["position"] == pytest.approx((9 * 300 + 13 * 100) / 400)
    assert running["opportunity"] == pytest.approx(400 * TOP_CTR - 10)
    assert socks["best_page"] == f"{U}/socks/"
    assert socks["position"] == pytest.approx((3 * 100 + 25 * 100) / 200)
    assert socks["opportunity"] == pytest.approx(200 * TOP_CTR - 10)
    assert ex.striking_distance(db, SHOP, min_impressions=300, start=D1, end=D2)[
        "query"].to_list() == ["trail shoes", "running shoes"]
    assert ex.striking_distance(db, SHOP, positions=(12, 15), start=D1, end=D2)[
        "query"].to_list() == ["cheap socks"]


def test_cannibalization_shares_of_a_querys_clicks(db):
    frame = ex.cannibalization(db, SHOP, start=D1, end=D2)
    assert frame.select("query", "page", "share", "query_clicks", "competing_pages").rows() == [
        ("cheap socks", f"{U}/socks/", 9 / 10, 10, 2),
        ("cheap socks", f"{U}/blog/2024/socks", 1 / 10, 10, 2),
        ("running shoes", f"{U}/shoes/running/a", 6 / 10, 10, 2),
        ("running shoes", f"{U}/blog/2024/run", 4 / 10, 10, 2),
    ]
    assert ex.cannibalization(db, SHOP, min_share=0.2, start=D1, end=D2)[
        "query"].unique().to_list() == ["running shoes"]
    assert ex.cannibalization(db, SHOP, exclude=["RUNNING"], start=D1, end=D2)[
        "query"].unique().to_list() == ["cheap socks"]


def test_ctr_curve_against_the_sites_own_curve(db):
    frame = ex.ctr_curve(db, SHOP, min_impressions=0, start=D1, end=D2)
    rows = {r["query"]: r for r in frame.rows(named=True)}
    assert "sock size" not in rows  # position 30 is past max_position 20
    # bucket 2 holds acme shoes (1.5 rounds half up) and acme store (2.4)
    bucket2 = (80 + 5) / (200 + 100)
    assert rows["acme shoes"]["bucket"] == rows["acme store"]["bucket"] == 2
    assert rows["acme store"]["site_ctr"] == pytest.approx(bucket2)
    assert rows["acme store"]["missed_clicks"] == pytest.approx(100 * (bucket2 - 5 / 100))
    assert rows["acme shoes"]["missed_clicks"] == pytest.approx(200 * (bucket2 - 80 / 200))
    assert rows["running shoes"]["bucket"] == 10 and rows["trail shoes"]["bucket"] == 16
    assert rows["acme login"]["site_ctr"] == pytest.approx(20 / 40)
    assert frame["query"][0] == "acme store"  # the furthest below the curve comes first
    assert frame["missed_clicks"].to_list() == sorted(frame["missed_clicks"], reverse=True)
    assert ex.ctr_curve(db, SHOP, max_position=2, min_impressions=100, start=D1, end=D2)[
        "query"].to_list() == ["acme store", "acme shoes"]


@pytest.mark.parametrize("pattern", ["^acme", ["ACME"], ("acme shoes", "acme login",
                                                          "acme store")])
def test_brand_split_with_a_regex_or_terms(db, pattern):
    frame = ex.brand_split(db, SHOP, pattern, start=D1, end=D2)
    got = {(r["period"], r["segment"]): r for r in frame.rows(named=True)}
    assert frame.height == 4
    brand1, other1 = got[(D1, "brand")], got[(D1, "non-brand")]
    assert (brand1["clicks"], brand1["impressions"]) == (75, 240)
    assert brand1["position"] == pytest.approx((1 * 100 + 1 * 40 + 2.4 * 100) / 240)
    assert (other1["clicks"], other1["impressions"]) == (21, 850)
    assert other1["position"] == pytest.approx(
        (9 * 300 + 13 * 100 + 15 * 200 + 3 * 100 + 25 * 100 + 30 * 50) / 850)
    assert brand1["clicks_share"] == pytest.approx(75 / 96)
    assert (got[(D2, "brand")]["clicks"], got[(D2, "non-brand")]["clicks"]) == (30, 1)


def test_brand_split_zero_fills_a_segment_without_traffic(db):
    frame = ex.brand_split(db, SHOP, "no such brand", start=D2, end=D2)
    assert frame.select("segment", "clicks", "impressions", "clicks_share").rows() == [
        ("brand", 0, 0, 0.0), ("non-brand", 31, 300, 1.0)]
    assert frame["ctr"][0] is None and frame["position"][0] is None


def test_page_groups_at_depth_1_and_2(db):
    one = ex.page_groups(db, SHOP, depth=1, start=D1, end=D2)
    assert one.select("folder", "pages", "clicks", "impressions").rows() == [
        (f"{U}/shoes/", 3, 50 + 30 + 6 + 2, 200 + 300 + 400),
        (f"{U}/", 1, 20, 40),                       # /login is a page, not a folder
        (f"{U}/socks/", 1, 9, 150),
        (f"{U}/blog/", 2, 5, 200),
        (f"{U}/store/", 1, 5, 100),                 # the query string is dropped
    ]
    assert one["clicks_share"].sum() == pytest.approx(1.0)
    shoes = one.row(0, named=True)
    assert shoes["position"] == pytest.approx(
        (1 * 100 + 2 * 100 + 9 * 300 + 15 * 200 + 17 * 200) / 900)
    two = ex.page_groups(db, SHOP, depth=2, start=D1, end=D2)
    assert dict(two.select("folder", "clicks").rows()) == {
        f"{U}/shoes/": 82, f"{U}/": 20, f"{U}/socks/": 9, f"{U}/shoes/running/": 6,
        f"{U}/blog/2024/": 5, f"{U}/store/": 5}


def test_breakdown_sums_per_key(db):
    frame = ex.breakdown(db, SHOP, by="page", start=D1, end=D2, limit=2)
    assert frame.select("page", "clicks", "impressions").rows() == [
        (f"{U}/shoes/", 80, 200), (f"{U}/login", 20, 40)]
    assert frame["position"][0] == pytest.approx(1.5)
    with pytest.raises(ConfigError, match="group by device, page"):
        ex.breakdown(db, SHOP, by="page", color="device", start=D1, end=D2)


# --- positions that do not exist (Discover, Google News) -----------------------------------------

@pytest.fixture(scope="module")
def discover(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("discover") / "gsc.duckdb"
    with Store(path) as store:
        for day, clicks in ((D1, 10), (D2, 30)):
            put(store, SHOP, day, [(f"{U}/a/1", clicks, 100, None), (f"{U}/b/2", 5, 50, None)],
                dims=("date", "page"), search_type="discover")
    return path


def test_null_positions_stay_null_and_the_rest_adds_up(discover):
    row = ex.overview(discover, SHOP, start=D2, end=D2, search_type="discover").row(0, named=True)
    assert (row["clicks"], row["impressions"], row["ctr"]) == (35, 150, 35 / 150)
    assert row["position"] is None and row["position_change"] is None
    assert row["clicks_change"] == 35 - 15
    groups = ex.page_groups(discover, SHOP, start=D1, end=D2, search_type="discover")
    assert groups.select("folder", "clicks", "position").rows() == [
        (f"{U}/a/", 40, None), (f"{U}/b/", 10, None)]
    moved = ex.movers(discover, SHOP, by="page", current=(D2, D2), metric="position",
                      search_type="discover")
    assert moved["delta"].to_list() == [None, None]
    chart = ex.chart(ex.breakdown(discover, SHOP, by="page", start=D1, end=D2,
                                  search_type="discover"))
    assert ex.render(chart, "svg").lstrip().startswith(b"<svg")


# --- anomalies ------------------------------------------------------------------------------

def test_anomalies_find_the_planted_days_and_only_them(db):
    days, clicks, planted = anomaly_series()
    frame = ex.anomalies(db, ANOMALY)  # the last 28 complete days
    assert frame["date"].to_list() == days[-28:]
    assert frame["clicks"].to_list() == [float(c) for c in clicks[-28:]]
    found = frame.filter("anomaly")
    assert found["date"].to_list() == sorted(planted)
    scores = dict(found.select("date", "score").rows())
    inv = {kind: day for day, kind in planted.items()}
    assert scores[inv["spike"]] > 3 and scores[inv["saturday"]] > 3 and scores[inv["drop"]] < -3
    # the Saturday is ordinary against all days; only its own weekday shows it
    saturday = days.index(inv["saturday"])
    prior = clicks[saturday - 56:saturday]
    assert min(prior) < 1050 < max(prior)
    quiet = frame.filter(~pl.col("anomaly"))
    assert ((quiet["clicks"] >= quiet["lower"]) & (quiet["clicks"] <= quiet["upper"])).all()
    assert (frame["history"] == 8).all()


def test_anomalies_need_history(db):
    days, _, _ = anomaly_series()
    frame = ex.anomalies(db, ANOMALY, start=days[0], end=days[13])
    assert not frame["anomaly"].any()
    assert frame["history"].to_list()[:7] == [0] * 7
    assert frame["history"].to_list()[7:] == [1] * 7


# --- ranges, streams and warnings -------------------------------------------------------------

def test_default_range_is_the_last_28_complete_days(db):
    with pytest.warns(CompletenessWarning) as caught:
        frame = ex.overview(db, RANGES)
    lines = [str(w.message) for w in caught]
    assert len(lines) == 2 and "1 of 28 days" in lines[0]
    assert "16 of 28 days" in lines[1]  # the previous period starts before the first day
    last_final = D1 + timedelta(days=39)
    assert frame["period"].to_list()[-1] == last_final  # the fresh days after it are left out
    assert frame["period"].to_list()[0] == last_final - timedelta(days=27)
    assert frame.height == 28 - 1  # day 20 was never committed
    assert all(str(w.message).startswith(RANGES) for w in caught)
    assert caught[0].filename == __file__  # the warning points at the caller


def test_fresh_days_and_gaps_are_reported(db):
    with pytest.warns(CompletenessWarning, match="3 of 3 days .* fresh data"):
        ex.overview(db, RANGES, start=D1 + timedelta(days=40), end=D1 + timedelta(days=42))
    lines = ex.completeness_warnings(db, RANGES, start=D1, end=D1 + timedelta(days=29))
    assert len(lines) == 1 and "1 of 30 days" in lines[0] and str(D1 + timedelta(19)) in lines[0]
    assert ex.completeness_warnings(db, RANGES, start=D1, end=D1 + timedelta(days=9)) == []


def test_capped_days_and_hidden_share_warn_when_the_store_knows(db):
    class WithCompleteness(gsckit.Database):
        def completeness(self, site, *, start, end):
            return pl.DataFrame({
                "search_type": ["web"] * 2, "dimensions": ["date,query,page"] * 2,
                "date": [D1, D2], "capped": [True, False], "total_clicks": [100, 300],
                "hidden_clicks_share": [0.2, 0.5]})

    lines = ex.completeness_warnings(WithCompleteness(db), SHOP, start=D1, end=D2)
    assert any("1 of 2 days" in line and "50,000-row cap" in line for line in lines)
    hidden = (0.2 * 100 + 0.5 * 300) / 400
    assert any(f"{hidden:.0%} of clicks" in line for line in lines)
    assert ex.completeness_warnings(db, SHOP, start=D1, end=D2) == []


async def test_capped_days_and_hidden_share_warn_after_a_real_backfill(make_sim, tmp_path):
    """The same warnings from what a backfill stored: two capped days (split off) whose rows
    miss the anonymized 40% of clicks (and the rows past the cap), against Google's totals."""
    from .conftest import SITE, day_range, run

    sim = await make_sim(rows_per_day=60_000, anonymized_share=0.4)
    days = day_range(20, 2)
    path = tmp_path / "gsc.duckdb"
    report = await run(sim, path, days[0], days[-1], split="off")
    assert report.ok and report.totals_requests == 1
    lines = ex.completeness_warnings(path, SITE, start=days[0], end=days[-1])
    assert any("2 of 2 days" in line and "50,000-row cap" in line for line in lines), lines
    frame = gsckit.open(path).completeness(SITE)
    hidden = float((frame["hidden_clicks_share"] * frame["total_clicks"]).sum()
                   / frame["total_clicks"].sum())
    assert hidden == pytest.approx(0.4, abs=0.01)  # the rows past the cap had few clicks
    assert any(f"{hidden:.0%} of clicks" in line and "anonymized" in line for line in lines)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex.movers(path, SITE, current=(days[1], days[1]))
    texts = [str(w.message) for w in caught if w.category is CompletenessWarning]
    assert any("50,000-row cap" in text for text in texts), texts
    assert any("hidden from query rows" in text for text in texts), texts


@pytest.mark.parametrize("call, message", [
    (lambda db: ex.overview(db, "sc-domain:nope.example"), "has no committed days .* sites in it"),
    (lambda db: ex.overview(db, SHOP, search_type="video"), "no unfiltered 'video' days"),
    (lambda db: ex.overview(db, SHOP, search_type="pictures"), "unknown search type"),
    (lambda db: ex.overview(db, SHOP, freq="year"), "unknown freq"),
    (lambda db: ex.overview(db, SHOP, start="2026-03-05", end="2026-03-01"), "after"),
    (lambda db: ex.overview(db, SHOP, start="03/01/2026"), "not a valid YYYY-MM-DD"),
    (lambda db: ex.overview(db, SHOP, start="2025-01-01", end="2025-01-31"),
     "no committed 'web' days"),
    (lambda db: ex.overview(db, SHOP, dimensions="date,country"), "no stored 'web' rows"),
    (lambda db: ex.movers(db, SHOP, by="keyword"), "unknown by"),
    (lambda db: ex.movers(db, SHOP, metric="sessions"), "unknown metric"),
    (lambda db: ex.movers(db, SHOP, limit=0), "limit must be"),
    (lambda db: ex.movers(db, SHOP, current="2026-03-01"), "pair of dates"),
    (lambda db: ex.movers(db, SHOP, by="page", dimensions="date,query"), "no stored"),
    (lambda db: ex.brand_split(db, SHOP, ""), "pattern is empty"),
    (lambda db: ex.brand_split(db, SHOP, []), "non-empty list"),
    (lambda db: ex.brand_split(db, SHOP, "acme(?=x)"), "not a valid regex"),
    (lambda db: ex.brand_split(db, SHOP, "acme(", start=D1), "not a valid regex"),
    (lambda db: ex.cannibalization(db, SHOP, min_share=0.7), "min_share must be"),
    (lambda db: ex.cannibalization(db, SHOP, min_share=0), "above 0"),
    (lambda db: ex.striking_distance(db, SHOP, positions=(20, 8)), "low is above high"),
    (lambda db: ex.page_groups(db, SHOP, depth=0), "depth must be"),
    (lambda db: ex.anomalies(db, ANOMALY, weeks=1), "weeks must be"),
    (lambda db: ex.anomalies(db, ANOMALY, k=-1), "k must be"),
    (lambda db: ex.overview(db.parent / "missing.duckdb", SHOP), "does not exist"),
    (lambda db: ex.overview(42, SHOP), "gsckit.Database or a path"),
])
def test_bad_arguments_get_one_line_config_errors(db, call, message):
    with pytest.raises(ConfigError, match=message) as caught:
        call(db)
    assert "\n" not in str(caught.value)


def test_a_database_object_or_a_path(db):
    assert ex.overview(gsckit.open(db), WEIGHTS, start=D2, end=D2).equals(
        ex.overview(str(db), WEIGHTS, start=D2, end=D2))


# --- charts -----------------------------------------------------------------------------------

def analysis_frames(db: Path) -> dict[str, pl.DataFrame]:
    return {
        "overview": ex.overview(db, WEIGHTS, start=D2, end=D2),
        "movers": ex.movers(db, MOVERS, current=(D1, D1 + timedelta(days=6))),
        "striking_distance": ex.striking_distance(db, SHOP, start=D1, end=D2),
        "cannibalization": ex.cannibalization(db, SHOP, start=D1, end=D2),
        "ctr_curve": ex.ctr_curve(db, SHOP, min_impressions=0, start=D1, end=D2),
        "brand_split": ex.brand_split(db, SHOP, ["acme"], start=D1, end=D2),
        "page_groups": ex.page_groups(db, SHOP, start=D1, end=D2),
        "anomalies": ex.anomalies(db, ANOMALY),
        "bubble": ex.breakdown(db, SHOP, start=D1, end=D2),
    }


def test_every_analysis_has_a_chart_that_renders_to_png_and_svg(db):
    for kind, frame in analysis_frames(db).items():
        figure = ex.chart(frame)
        spec = figure.to_dict()
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/"), kind
        png = ex.render(figure)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2_000, kind
        svg = ex.render(figure, "svg")
        assert svg.lstrip().startswith(b"<svg") and b"</svg>" in svg, kind


def test_an_empty_result_still_charts(db):
    # an analysis can rightly find nothing (no cannibalization, no anomaly); its chart is empty
    for kind, frame in analysis_frames(db).items():
        svg = ex.render(ex.chart(frame.head(0), kind=kind), "svg")
        assert svg.lstrip().startswith(b"<svg"), kind


def test_charts_are_what_an_analyst_draws(db):
    frames = analysis_frames(db)
    bubble = ex.chart(frames["bubble"]).to_dict()
    assert bubble["mark"]["type"] == "circle"
    assert bubble["encoding"]["x"]["field"] == "ctr"
    assert bubble["encoding"]["x"]["scale"]["type"] == "log"
    assert bubble["encoding"]["y"]["scale"] == {"type": "log", "reverse": True, "nice": False}
    assert bubble["encoding"]["size"]["field"] == "clicks"
    movers = ex.chart(frames["movers"]).to_dict()
    assert movers["mark"]["type"] == "bar"
    assert movers["encoding"]["color"]["scale"]["domain"] == ["up", "down"]
    overview = ex.chart(frames["overview"]).to_dict()
    panels = overview["vconcat"]
    assert len(panels) == 4
    assert panels[3]["encoding"]["y"]["scale"]["reverse"] is True  # position: 1 at the top
    color = panels[0]["encoding"]["color"]
    assert color["scale"]["range"] == ["#1f6feb", "#9ab8e8"]  # the previous period faded
    assert color["scale"]["domain"][1].startswith("previous (from ")  # the legend says which
    assert color["legend"]["orient"] == "top"
    curve = ex.chart(frames["ctr_curve"]).to_dict()
    assert [layer["mark"]["type"] for layer in curve["layer"]] == ["circle", "line"]


def test_chart_errors(db, monkeypatch):
    with pytest.raises(ConfigError, match="pass kind="):
        ex.chart(pl.DataFrame({"x": [1]}))
    with pytest.raises(ConfigError, match="unknown chart kind"):
        ex.chart(pl.DataFrame({"x": [1]}), kind="pie")
    with pytest.raises(ConfigError, match="needs the columns"):
        ex.chart(pl.DataFrame({"x": [1]}), kind="movers")
    monkeypatch.setitem(sys.modules, "altair", None)  # as if the notebook extra were missing
    frame = ex.movers(db, MOVERS, current=(D1, D1 + timedelta(days=6)))
    with pytest.raises(ConfigError, match=r"pip install 'gsckit\[notebook\]'"):
        ex.chart(frame)
