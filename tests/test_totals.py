"""Daily totals as pure functions: the date-only request, its answer, the rows recorded, and
which days a run asks for (the engine's side is in test_completeness.py)."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest

from gsckit import Filter
from gsckit.errors import TransportError
from gsckit.totals import TotalsRequest, parse_totals, requests_for

SITE = "sc-domain:example.com"
D = [date(2026, 3, d) for d in range(1, 8)]


def answer(rows: list[tuple[str, float, float, float | None]]) -> bytes:
    body = {"rows": [{"keys": [day], "clicks": c, "impressions": i, "ctr": c / i,
                      **({} if p is None else {"position": p})} for day, c, i, p in rows],
            "responseAggregationType": "byProperty"}
    return json.dumps(body).encode()


def test_the_request_is_grouped_by_date_over_the_whole_range_with_the_streams_filters():
    blog = Filter("page", "contains", "/blog/")
    request = TotalsRequest(SITE, "image", (blog,), "all", D[0], D[6], D[4])
    body = request.body()
    assert body["startDate"] == "2026-03-01" and body["endDate"] == "2026-03-07"
    assert body["dimensions"] == ["date"] and body["type"] == "image"
    assert body["dataState"] == "all" and body["rowLimit"] == 25_000
    assert body["dimensionFilterGroups"] == [{"groupType": "and", "filters": [blog.to_api()]}]
    assert request.key == (SITE, "image", json.dumps([blog.to_api()], separators=(",", ":")))


def test_the_answer_becomes_final_and_fresh_days_and_quiet_final_days_are_zeros():
    parsed = parse_totals(answer([("2026-03-02", 10, 100, 4.5), ("2026-03-04", 3, 60, 7.25),
                                  ("2026-03-06", 1, 9, None)]))
    assert parsed.columns == ["date", "clicks", "impressions", "ctr", "position"]
    assert parsed["date"].to_list() == [D[1], D[3], D[5]]
    assert parsed["position"].to_list() == [4.5, 7.25, None]
    # final through the 4th: the 1st and 3rd had no data (zeros); the 5th and 7th fresh and
    # absent (nothing recorded); the 6th fresh
    rows = TotalsRequest(SITE, "web", (), "all", D[0], D[6], D[3]).rows(parsed)
    by_day = {r["date"]: r for r in rows.iter_rows(named=True)}
    assert sorted(by_day) == [D[0], D[1], D[2], D[3], D[5]]
    assert [by_day[d]["data_state"] for d in sorted(by_day)] == [
        "final", "final", "final", "final", "fresh"]
    assert (by_day[D[0]]["clicks"], by_day[D[0]]["impressions"]) == (0, 0)
    assert (by_day[D[1]]["clicks"], by_day[D[1]]["impressions"]) == (10, 100)
    assert by_day[D[1]]["ctr"] == 0.1 and by_day[D[5]]["position"] is None
    assert set(rows["site"]) == {SITE} and set(rows["filters"]) == {""}


def test_an_empty_or_broken_answer():
    assert parse_totals(b"{}").height == 0
    assert parse_totals(b'{"rows": []}').height == 0
    with pytest.raises(TransportError):
        parse_totals(b'{"rows": [')
    with pytest.raises(TransportError):
        parse_totals(answer([("yesterday", 1, 2, 3.0)]))


def test_one_request_per_stream_for_the_days_without_final_totals():
    web, image = (SITE, "web", ""), (SITE, "image", "")
    days = {web: [(d, D[4]) for d in D], image: [(D[0], D[6]), (D[1], D[6])]}
    recorded = {web: {D[0], D[1], D[5]}, image: {D[0], D[1]}}
    [request] = requests_for(days, {web: (), image: ()}, recorded)
    # the 3rd to the 7th (the 6th is asked again inside the range); the 6th and 7th are fresh
    assert (request.key, request.start, request.end) == (web, D[2], D[6])
    assert request.data_state == "all" and request.newest_final == D[4]
    [final] = requests_for({web: [(d, D[6]) for d in D[:3]]}, {web: ()}, {})
    assert final.data_state == "final" and (final.start, final.end) == (D[0], D[2])
    assert requests_for({web: []}, {web: ()}, {}) == []


def test_rows_keep_to_the_requested_range():
    parsed = parse_totals(answer([("2026-02-28", 5, 50, 2.0), ("2026-03-01", 1, 10, 3.0)]))
    rows = TotalsRequest(SITE, "web", (), "final", D[0], D[1], D[1]).rows(parsed)
    assert rows["date"].to_list() == [D[0], D[1]]
    assert rows.filter(pl.col("date") == D[1])["clicks"].item() == 0
