"""Validation and slicing: every bad input is refused before anything is sent."""

import warnings
from datetime import date, timedelta

import pytest

from gsckit import ConfigError, Filter, HorizonWarning, make_query, plan
from gsckit.planner import check_site, earliest_day

TODAY = date(2026, 11, 30)


def query(**kw):
    args = {"sites": "sc-domain:example.com", "start": "2026-11-01", "end": "2026-11-03",
            "today": TODAY}
    args.update(kw)
    return make_query(args.pop("sites"), args.pop("start"), args.pop("end"), **args)


def test_plan_is_one_slice_per_site_type_and_day_oldest_first():
    q = query(sites=["sc-domain:a.com", "https://www.b.com/"], search_type="web,image")
    slices = plan(q)
    assert len(slices) == 3 * 2 * 2
    assert [s.day for s in slices[:4]] == [date(2026, 11, 1)] * 4
    assert slices[-1].day == date(2026, 11, 3)
    assert len({s.key for s in slices}) == len(slices)


def test_body_is_one_day_page_with_filters():
    q = query(filters=["page contains /blog/", Filter("country", "equals", "usa")])
    body = plan(q)[0].body(25_000, 25_000)
    assert body["startDate"] == body["endDate"] == "2026-11-01"
    assert body["startRow"] == 25_000 and body["rowLimit"] == 25_000
    assert body["dimensions"] == ["date", "query", "page"]
    assert body["dimensionFilterGroups"][0]["filters"][0] == {
        "dimension": "page", "operator": "contains", "expression": "/blog/"}


def test_names_are_case_insensitive_and_canonicalised():
    q = query(dimensions=["PAGE", "device"],
              search_type="GOOGLENEWS", data_state="ALL", filters=["COUNTRY EQUALS usa"])
    assert q.dimensions == ("page", "device")
    assert q.filters == (Filter("country", "equals", "usa"),)
    assert q.search_types == ("googleNews",)
    assert q.data_state == "all"


def test_filter_key_is_order_independent():
    a = plan(query(filters=["query contains x", "page contains y"]))[0]
    b = plan(query(filters=["page contains y", "query contains x"]))[0]
    assert a.filters_key == b.filters_key and a.key == b.key


def test_earliest_day_is_sixteen_months_back():
    assert earliest_day(date(2026, 11, 30)) == date(2025, 7, 30)
    assert earliest_day(date(2026, 4, 30)) == date(2024, 12, 30)
    assert earliest_day(date(2026, 6, 30)) == date(2025, 2, 28)


@pytest.mark.parametrize("kw, words", [
    ({"start": "2026-13-01"}, "not a valid"),
    ({"start": "yesterday"}, "not a valid"),
    ({"end": "2026-11-31"}, "not a valid"),
    ({"start": "2026-11-05", "end": "2026-11-01"}, "after end"),
    ({"end": "2026-12-01"}, "future"),
    ({"start": "2025-06-01", "end": "2025-07-29"}, "whole range 2025-06-01 to 2025-07-29 is "
                                                   "older than Search Console's 16 months"),
    ({"dimensions": ["query", "bogus"]}, "unknown dimension"),
    ({"dimensions": ["query", "query"]}, "twice"),
    ({"dimensions": ["searchAppearance", "query"]}, "searchAppearance"),
    ({"dimensions": ["hour"]}, "hourly_all"),
    ({"search_type": "shopping"}, "unknown search type"),
    ({"data_state": "fresh"}, "unknown data_state"),
    ({"filters": ["query like x"]}, "operator"),
    ({"filters": ["date equals 2026-01-01"]}, "filter dimension"),
    ({"filters": ["query contains"]}, "DIMENSION OPERATOR EXPRESSION"),
    ({"filters": ["page includingRegex ([a-z"]}, "regex"),
    ({"filters": ["country equals france"]}, "alpha-3"),
    ({"filters": ["device equals phone"]}, "DESKTOP"),
    ({"data_state": "hourly_all", "dimensions": ["hour"], "start": "2026-11-01"}, "10 days"),
    ({"search_type": "discover"}, "'discover' has no query data.*'date,page'"),
    ({"search_type": "googleNews", "dimensions": ["query", "country"]},
     "'googleNews' has no query data.*'country'"),
    ({"search_type": "discover", "dimensions": ["page"], "filters": ["query contains x"]},
     "query filter"),
    ({"search_type": "web,googleNews", "dimensions": ["date", "query"]},
     "'googleNews'.*backfill googleNews on its own"),
])
def test_bad_input_is_refused_with_the_reason(kw, words):
    with pytest.raises(ConfigError, match=words):
        query(**kw)


@pytest.mark.parametrize("site, words", [
    ("example.com", "not a Search Console property"),
    ("https://www.example.com", "did you mean 'https://www.example.com/'"),
    ("sc-domain:https://example.com", "bare domain"),
    ("sc-domain%3Aexample.com", "percent-encoded"),
    (" sc-domain:example.com", "whitespace"),
    ("ftp://example.com/", "not a Search Console property"),
    ("https://user:pw@example.com/", "credentials"),
    ("", "property"),
])
def test_bad_sites_are_refused_with_the_fix(site, words):
    with pytest.raises(ConfigError, match=words):
        check_site(site)


def test_good_sites_pass_unchanged():
    for site in ("sc-domain:example.com", "https://www.example.com/", "http://ex.co.uk/shop/"):
        assert check_site(site) == site


def test_hourly_query_within_ten_days_is_accepted():
    start = TODAY - timedelta(days=3)
    q = query(start=start, end=TODAY, dimensions=["hour"], data_state="hourly_all")
    assert q.dimensions == ("hour",) and q.days == 4


@pytest.mark.parametrize("search_type", ["discover", "googleNews"])
def test_discover_and_news_without_query_are_accepted(search_type):
    q = query(search_type=search_type, dimensions=["date", "page", "country", "device"],
              filters=["page contains /news/", "country equals usa"])
    assert q.search_types == (search_type,)
    assert plan(q)[0].body(0, 10)["type"] == search_type


def test_query_is_fine_for_every_other_search_type():
    q = query(search_type="web,image,video,news", filters=["query contains shoes"])
    assert len(plan(q)) == 3 * 4


def test_a_rerun_after_the_horizon_moved_starts_at_the_earliest_day_with_a_warning():
    # a run planned yesterday from the then-earliest day is re-run today: one day has expired
    yesterday = TODAY - timedelta(days=1)
    first = earliest_day(yesterday)
    assert earliest_day(TODAY) == first + timedelta(days=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert query(start=first, end="2025-08-05", today=yesterday).start == first
    with pytest.warns(HorizonWarning) as caught:
        q = query(start=first, end="2025-08-05")
    [warning] = caught
    assert str(warning.message) == (f"start {first} is older than Search Console's 16 months "
                                    "of data; starting at the earliest day, "
                                    f"{first + timedelta(days=1)}")
    assert warning.filename == __file__, "the warning points at the caller"
    assert (q.start, q.end) == (earliest_day(TODAY), date(2025, 8, 5))
    assert plan(q)[0].day == earliest_day(TODAY)


def test_a_range_ending_on_the_earliest_day_is_clamped_not_refused():
    oldest = earliest_day(TODAY)
    with pytest.warns(HorizonWarning, match="16 months"):
        q = query(start=oldest - timedelta(days=40), end=oldest)
    assert q.days == 1 and q.start == oldest


def test_an_hourly_rerun_after_the_ten_day_horizon_moved_is_clamped():
    with pytest.warns(HorizonWarning, match=r"hourly data \(the last 10 days\)"):
        q = query(start=TODAY - timedelta(days=12), end=TODAY, dimensions=["hour"],
                  data_state="hourly_all")
    assert q.start == TODAY - timedelta(days=10) and q.days == 11
