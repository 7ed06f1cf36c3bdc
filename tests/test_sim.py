"""The simulator against a real aiohttp client on 127.0.0.1: paging, cap, errors, faults, quota,
stats, revisions and the speed bound that keeps it out of every benchmark's way.

``make_sim`` (conftest.py) starts a Simulator with the given SimConfig fields and closes it."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from yarl import URL

from gsckit.errors import ConfigError
from gsckit.planner import Filter
from gsckit.sim import (
    COUNTRIES,
    DEVICES,
    SEARCH_APPEARANCES,
    Faults,
    SimConfig,
    Simulator,
    api,
    data,
    keys,
    serve,
)

DAY = date(2026, 3, 14)
SITE = "sc-domain:example.com"
PREFIX_SITE = "https://www.example.com/"
TOKEN = "ya29.secret-test-token"
DIMS = ("date", "query", "page")

MakeSim = Callable[..., Awaitable[Simulator]]  # the make_sim fixture from conftest.py


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def query_url(sim: Simulator, site: str = SITE) -> URL:
    return URL(f"{sim.base_url}webmasters/v3/sites/{quote(site, safe='')}/searchAnalytics/query",
               encoded=True)


def body(*, day: date = DAY, dims: Sequence[str] = DIMS, start_row: int = 0,
         row_limit: int = 25_000, **extra: Any) -> dict[str, Any]:
    return {"startDate": day.isoformat(), "endDate": day.isoformat(), "dimensions": list(dims),
            "type": "web", "dataState": "final", "startRow": start_row, "rowLimit": row_limit,
            **extra}


async def post(session: aiohttp.ClientSession, sim: Simulator, payload: dict[str, Any], *,
               site: str = SITE, token: str | None = TOKEN
               ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.post(query_url(sim, site), json=payload, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def fetch_day(session: aiohttp.ClientSession, sim: Simulator, *, site: str = SITE,
                    day: date = DAY, dims: Sequence[str] = DIMS, **extra: Any
                    ) -> list[dict[str, Any]]:
    """Every row of a day, paging by 25,000 until a page without ``rows``."""
    rows: list[dict[str, Any]] = []
    while True:
        status, data, _ = await post(session, sim, body(day=day, dims=dims, start_row=len(rows),
                                                        **extra), site=site)
        assert status == 200, data
        if "rows" not in data:
            return rows
        rows.extend(data["rows"])


def as_frame(rows: list[dict[str, Any]], dims: Sequence[str]) -> pl.DataFrame:
    """API rows in ``ground_truth``'s shape."""
    columns: dict[str, Any] = {}
    for k, dim in enumerate(dims):
        if dim != "date":
            name = "search_appearance" if dim == "searchAppearance" else dim
            columns[name] = pl.Series([r["keys"][k] for r in rows], dtype=pl.Utf8)
    for metric, dtype in (("clicks", pl.Int64), ("impressions", pl.Int64),
                          ("ctr", pl.Float64), ("position", pl.Float64)):
        columns[metric] = pl.Series([r[metric] for r in rows], dtype=dtype)
    return pl.DataFrame(columns)


def assert_google_error(data: dict[str, Any], code: int, reason: str, status: str,
                        domain: str = "global") -> None:
    error = data["error"]
    assert error["code"] == code
    assert error["status"] == status
    assert error["errors"][0]["reason"] == reason
    assert error["errors"][0]["domain"] == domain
    assert error["message"] == error["errors"][0]["message"] != ""


# ---- paging, cap, ordering, ground truth -------------------------------------------------------


async def test_paging_is_exact_and_matches_ground_truth(make_sim: MakeSim,
                                                        session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=25_001)
    status, first, _ = await post(session, sim, body(start_row=0))
    assert status == 200 and len(first["rows"]) == 25_000
    assert first["responseAggregationType"] == "byPage"
    _, second, _ = await post(session, sim, body(start_row=25_000))
    assert len(second["rows"]) == 1
    status, third, _ = await post(session, sim, body(start_row=25_001))
    assert status == 200 and "rows" not in third and third["responseAggregationType"]

    rows = first["rows"] + second["rows"]
    assert len({tuple(r["keys"]) for r in rows}) == 25_001
    assert all(r["keys"][0] == DAY.isoformat() for r in rows)
    clicks = [r["clicks"] for r in rows]
    assert clicks == sorted(clicks, reverse=True) and clicks[0] > clicks[-1] == 0
    assert all(r["impressions"] >= max(r["clicks"], 1) and 1 <= r["position"] <= 60
               and r["ctr"] == pytest.approx(r["clicks"] / r["impressions"]) for r in rows)
    assert_frame_equal(as_frame(rows, DIMS), sim.ground_truth(SITE, DAY))


async def test_a_day_over_the_cap_exposes_exactly_50k_rows(make_sim: MakeSim,
                                                            session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=60_000)
    rows = await fetch_day(session, sim)
    assert len(rows) == 50_000
    truth = sim.ground_truth(SITE, DAY)
    assert truth.height == 50_000
    assert_frame_equal(as_frame(rows, DIMS), truth)


async def test_small_pages_and_defaults(make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=2_500)
    payload = body()
    del payload["rowLimit"], payload["startRow"]
    _, data, _ = await post(session, sim, payload)
    assert len(data["rows"]) == 1_000  # default rowLimit
    _, page, _ = await post(session, sim, body(start_row=2_400, row_limit=300))
    assert [r["keys"] for r in page["rows"]] == [
        r["keys"] for r in (await fetch_day(session, sim))[2_400:]]


async def test_dimension_sets_clamp_and_key_formats(make_sim: MakeSim,
                                                    session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=10**6)
    rows = await fetch_day(session, sim, dims=["country", "device"])
    assert len(rows) == len(COUNTRIES) * len(DEVICES) == len({tuple(r["keys"]) for r in rows})
    assert all(re.fullmatch("[a-z]{3}", r["keys"][0]) and r["keys"][1] in DEVICES for r in rows)
    rows = await fetch_day(session, sim, dims=["searchAppearance"])
    assert sorted(r["keys"][0] for r in rows) == sorted(SEARCH_APPEARANCES)
    rows = await fetch_day(session, sim, dims=["hour"], dataState="hourly_all")
    assert sorted(r["keys"][0] for r in rows) == [
        f"{DAY.isoformat()}T{h:02d}:00:00-07:00" for h in range(24)]  # 14 March 2026 is PDT
    rows = await fetch_day(session, sim, dims=[])
    assert len(rows) == 1 and "keys" not in rows[0] and rows[0]["impressions"] > 0


async def test_pages_live_under_the_property(make_sim: MakeSim,
                                             session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=300)
    for site, root in ((SITE, "https://example.com/"), (PREFIX_SITE, PREFIX_SITE)):
        rows = await fetch_day(session, sim, site=site)
        assert len(rows) == 300 and all(r["keys"][2].startswith(root) for r in rows)
        assert all(re.fullmatch(r"[a-z0-9 ]+", r["keys"][1]) for r in rows)


def test_key_vocabulary_is_unique() -> None:
    queries = keys._queries(pl.arange(0, keys._CARDINALITY["query"], eager=True))
    pages = keys._pages(pl.arange(0, keys._CARDINALITY["page"], eager=True), PREFIX_SITE)
    assert queries.n_unique() == queries.len() >= 10**6
    assert pages.n_unique() == pages.len() >= 10**5


async def test_data_is_deterministic_per_seed(make_sim: MakeSim) -> None:
    one, two, other = (await make_sim(seed=5), await make_sim(seed=5), await make_sim(seed=6))
    assert_frame_equal(one.ground_truth(SITE, DAY), two.ground_truth(SITE, DAY))
    assert not one.ground_truth(SITE, DAY).equals(other.ground_truth(SITE, DAY))
    assert not one.ground_truth(SITE, DAY).equals(one.ground_truth(SITE, DAY + timedelta(1)))
    assert not one.ground_truth(SITE, DAY).equals(one.ground_truth(SITE, DAY,
                                                                   search_type="image"))


async def test_rows_per_day_can_be_a_function(make_sim: MakeSim,
                                              session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=lambda site, search_type, day: 10 + day.day)
    assert len(await fetch_day(session, sim)) == 10 + DAY.day
    assert len(await fetch_day(session, sim, day=DAY - timedelta(1))) == 10 + DAY.day - 1
    assert sim.ground_truth(SITE, DAY, search_type="discover").height == 10 + DAY.day


# ---- filters -----------------------------------------------------------------------------------


async def test_filters_on_grouped_dimensions(make_sim: MakeSim,
                                             session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=5_000)
    everything = await fetch_day(session, sim)
    page = everything[7]["keys"][2]

    def group(*filters: dict[str, str]) -> dict[str, Any]:
        return {"dimensionFilterGroups": [{"groupType": "and", "filters": list(filters)}]}

    shoes = await fetch_day(session, sim, **group(
        {"dimension": "QUERY", "operator": "contains", "expression": "SHOES"}))
    assert 0 < len(shoes) < len(everything)
    assert all("shoes" in r["keys"][1] for r in shoes)
    assert len(shoes) == sum("shoes" in r["keys"][1] for r in everything)
    exact = await fetch_day(session, sim, **group({"dimension": "page", "expression": page}))
    assert {r["keys"][2] for r in exact} == {page}
    assert await fetch_day(session, sim, **group(
        {"dimension": "page", "expression": page.upper()})) == []
    red = await fetch_day(session, sim, **group(
        {"dimension": "query", "operator": "includingRegex", "expression": "^red "},
        {"dimension": "page", "operator": "notContains", "expression": "/blog/"}))
    assert red and all(r["keys"][1].startswith("red ") and "/blog/" not in r["keys"][2]
                       for r in red)
    truth = sim.ground_truth(SITE, DAY, filters=[
        Filter("query", "includingRegex", "^red "),
        {"dimension": "page", "operator": "notContains", "expression": "/blog/"}])
    assert_frame_equal(as_frame(red, DIMS), truth)


async def test_filters_on_other_dimensions_keep_a_stable_half(
        make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=4_000)
    everything = {tuple(r["keys"]) for r in await fetch_day(session, sim)}
    kept, dropped = [
        {tuple(r["keys"]) for r in await fetch_day(session, sim, dimensionFilterGroups=[
            {"filters": [{"dimension": "country", "operator": op, "expression": "USA"}]}])}
        for op in ("equals", "notEquals")]
    assert 1_500 < len(kept) < 2_500
    assert kept | dropped == everything and not kept & dropped


async def test_row_cap_applies_after_filtering(make_sim: MakeSim) -> None:
    mobile = [Filter("device", "equals", "MOBILE")]
    sim = await make_sim(rows_per_day=90_000)
    assert 40_000 < sim.ground_truth(SITE, DAY, filters=mobile).height < 50_000
    sim.configure(rows_per_day=120_000)
    assert sim.ground_truth(SITE, DAY, filters=mobile).height == 50_000
    sim.configure(row_cap=1_000)
    assert sim.ground_truth(SITE, DAY, filters=mobile).height == 1_000


# ---- request validation and errors ------------------------------------------------------------


@pytest.mark.parametrize(("change", "needle"), [
    ({"rowLimit": 25_001}, "25000"),
    ({"rowLimit": -1}, "rowLimit"),
    ({"startRow": -5}, "startRow"),
    ({"dimensions": ["query", "colour"]}, "colour"),
    ({"dimensions": ["query", "QUERY"]}, "more than once"),
    ({"dimensions": ["searchAppearance", "query"]}, "Cannot group by search appearance"),
    ({"endDate": (DAY + timedelta(1)).isoformat()}, "startDate must equal endDate"),
    ({"startDate": "2026-02-30"}, "startDate"),
    ({"type": "shopping"}, "shopping"),
    ({"dataState": "fresh"}, "fresh"),
    ({"dimensionFilterGroups": [{"filters": [{"dimension": "date", "expression": "x"}]}]},
     "filter dimension"),
    ({"dimensionFilterGroups": [{"filters": [
        {"dimension": "query", "operator": "includingRegex", "expression": "(unclosed"}]}]},
     "regular expression"),
    ({"dimensionFilterGroups": [{"groupType": "or", "filters": []}]}, "groupType"),
])
async def test_bad_requests_get_google_shaped_400(make_sim: MakeSim,
                                                  session: aiohttp.ClientSession,
                                                  change: dict[str, Any], needle: str) -> None:
    sim = await make_sim()
    status, data, _ = await post(session, sim, {**body(), **change})
    assert status == 400
    assert data["error"]["code"] == 400 and data["error"]["status"] == "INVALID_ARGUMENT"
    assert data["error"]["errors"][0]["reason"] in ("badRequest", "invalidParameter", "required")
    assert needle in data["error"]["message"]
    assert sim.stats()["by_status"] == {"400": 1} and sim.stats()["ok"] == 0


async def test_names_are_case_insensitive_and_search_type_is_accepted(
        make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=50)
    payload = body(dims=["QUERY", "Page"], dataState="ALL")
    del payload["type"]
    status, data, _ = await post(session, sim, {**payload, "searchType": "IMAGE"})
    assert status == 200
    truth = sim.ground_truth(SITE, DAY, search_type="image", dimensions=["query", "page"])
    assert_frame_equal(as_frame(data["rows"], ["query", "page"]), truth)
    with pytest.raises(ConfigError, match="dimension"):
        sim.ground_truth(SITE, DAY, dimensions=["searchAppearance", "query"])


async def test_missing_or_unknown_token_is_401(make_sim: MakeSim,
                                               session: aiohttp.ClientSession) -> None:
    sim = await make_sim(tokens=frozenset({TOKEN}))
    async with session.post(query_url(sim), json=body()) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert_google_error(await resp.json(), 401, "authError", "UNAUTHENTICATED")
    status, data, _ = await post(session, sim, body(), token="ya29.stolen")
    assert status == 401 and data["error"]["status"] == "UNAUTHENTICATED"
    assert "ya29" not in json.dumps(data)
    status, _, _ = await post(session, sim, body(), token=TOKEN)
    assert status == 200
    async with session.get(f"{sim.base_url}webmasters/v3/sites") as resp:
        assert resp.status == 401


async def test_unknown_and_forbidden_sites(make_sim: MakeSim,
                                           session: aiohttp.ClientSession) -> None:
    sim = await make_sim(sites=frozenset({SITE, PREFIX_SITE}),
                         forbidden_sites=frozenset({"https://shop.example.com/"}))
    status, data, _ = await post(session, sim, body(), site="sc-domain:other.org")
    assert status == 404
    assert_google_error(data, 404, "notFound", "NOT_FOUND")
    assert "'sc-domain:other.org' is not a verified Search Console site" in data["error"]["message"]
    status, data, _ = await post(session, sim, body(), site="https://shop.example.com/")
    assert status == 403
    assert_google_error(data, 403, "forbidden", "PERMISSION_DENIED")
    assert "sufficient permission for site 'https://shop.example.com/'" in data["error"]["message"]
    assert (await post(session, sim, body(), site=PREFIX_SITE))[0] == 200
    async with session.get(f"{sim.base_url}webmasters/v3/sites",
                           headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        entries = (await resp.json())["siteEntry"]
    assert {e["siteUrl"]: e["permissionLevel"] for e in entries} == {
        SITE: "siteOwner", PREFIX_SITE: "siteOwner",
        "https://shop.example.com/": "siteUnverifiedUser"}


async def test_sites_list_shows_queried_properties(make_sim: MakeSim,
                                                   session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=5)
    for site in (PREFIX_SITE, SITE):
        assert (await post(session, sim, body(), site=site))[0] == 200
    assert [r.site for r in sim.request_log] == [PREFIX_SITE, SITE]
    async with session.get(f"{sim.base_url}webmasters/v3/sites",
                           headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert [e["siteUrl"] for e in (await resp.json())["siteEntry"]] == [PREFIX_SITE, SITE]


# ---- faults ------------------------------------------------------------------------------------

ERROR_FAULTS = {
    "429": (429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "usageLimits", "Rate Limit"),
    "403_quota": (403, "quotaExceeded", "PERMISSION_DENIED", "usageLimits",
                  "Search Analytics load quota exceeded"),
    "403_rate": (403, "userRateLimitExceeded", "PERMISSION_DENIED", "usageLimits", "Rate Limit"),
    "500": (500, "backendError", "INTERNAL", "global", "Backend Error"),
    "503": (503, "backendError", "UNAVAILABLE", "global", "unavailable"),
    "403_permission": (403, "forbidden", "PERMISSION_DENIED", "global",
                       f"User does not have sufficient permission for site '{SITE}'. See also: "
                       "https://support.google.com/webmasters/answer/2451999."),
    "404": (404, "notFound", "NOT_FOUND", "global",
            f"'{SITE}' is not a verified Search Console site in this account."),
    "401": (401, "authError", "UNAUTHENTICATED", "global", "invalid authentication"),
    "400": (400, "badRequest", "INVALID_ARGUMENT", "global", "invalid argument"),
}


@pytest.mark.parametrize("kind", sorted(ERROR_FAULTS))
async def test_scripted_error_faults(make_sim: MakeSim, session: aiohttp.ClientSession,
                                     kind: str) -> None:
    sim = await make_sim(rows_per_day=10, faults=Faults(script={2: kind}, retry_after_s=7))
    assert (await post(session, sim, body()))[0] == 200
    code, reason, status_name, domain, text = ERROR_FAULTS[kind]
    status, data, headers = await post(session, sim, body())
    assert status == code
    assert_google_error(data, code, reason, status_name, domain)
    assert text in data["error"]["message"]
    assert (headers.get("Retry-After") == "7") == (kind == "429")
    assert (await post(session, sim, body()))[0] == 200
    stats = sim.stats()
    assert stats["faults"] == {kind: 1} and stats["ok"] == 2 and stats["requests"] == 3
    assert [r.fault for r in sim.request_log] == [None, kind, None]


async def test_reset_fault_drops_the_connection(make_sim: MakeSim,
                                                session: aiohttp.ClientSession) -> None:
    sim = await make_sim(faults=Faults(script={1: "reset"}))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, sim, body())
    assert (await post(session, sim, body()))[0] == 200
    assert sim.request_log[0].status is None and sim.stats()["faults"] == {"reset": 1}


async def test_truncate_fault_cuts_the_body(make_sim: MakeSim,
                                            session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=2_000, faults=Faults(script={1: "truncate"}))
    async with session.post(query_url(sim), json=body(),
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 200 and resp.content_length is not None
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    status, data, _ = await post(session, sim, body())
    assert status == 200 and len(data["rows"]) == 2_000
    assert sim.stats()["ok"] == 1 and sim.stats()["by_status"] == {"200": 2}


async def test_invalid_json_fault(make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    sim = await make_sim(faults=Faults(script={1: "invalid_json"}))
    async with session.post(query_url(sim), json=body(),
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        with pytest.raises(json.JSONDecodeError):
            await resp.json()
    assert sim.stats()["faults"] == {"invalid_json": 1} and sim.stats()["ok"] == 0


async def test_stall_fault_answers_late(make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=10, faults=Faults(script={1: "stall"}, stall_s=0.3))
    started = time.monotonic()
    status, data, _ = await post(session, sim, body())
    assert status == 200 and len(data["rows"]) == 10
    assert time.monotonic() - started >= 0.3


async def test_a_stalled_request_is_cancelled_when_the_client_gives_up(
        make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    sim = await make_sim(faults=Faults(script={1: "stall"}, stall_s=30))
    with pytest.raises(asyncio.TimeoutError):
        await session.post(query_url(sim), json=body(), timeout=aiohttp.ClientTimeout(total=0.2),
                           headers={"Authorization": f"Bearer {TOKEN}"})
    started = time.monotonic()
    await sim.close()
    assert time.monotonic() - started < 3
    assert len(sim.request_log) == 1 and sim.request_log[0].status is None


async def test_fault_rates_are_seeded(make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    statuses = []
    for _ in range(2):
        sim = await make_sim(rows_per_day=5, faults=Faults(seed=3, rates={"500": 0.3,
                                                                           "503": 0.2}))
        statuses.append([(await post(session, sim, body()))[0] for _ in range(40)])
    assert statuses[0] == statuses[1]
    assert {200, 500, 503} == set(statuses[0])
    assert 8 <= statuses[0].count(200) <= 32


async def test_configure_switches_faults_mid_run(make_sim: MakeSim,
                                                 session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=5)
    assert (await post(session, sim, body()))[0] == 200
    sim.configure(faults=Faults(script={1: "503"}))
    assert (await post(session, sim, body()))[0] == 503
    sim.configure(faults=Faults(), rows_per_day=7)
    status, data, _ = await post(session, sim, body())
    assert status == 200 and len(data["rows"]) == 7


def test_fault_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="script"):
        Faults(rates={"404": 0.1})
    with pytest.raises(ConfigError, match="unknown fault kind"):
        Faults(script={1: "boom"})
    with pytest.raises(ConfigError, match="at most 1"):
        Faults(rates={"500": 0.7, "503": 0.7})
    with pytest.raises(ConfigError):
        SimConfig(window_s=0)


# ---- quota, stats, concurrency -----------------------------------------------------------------


async def test_quota_per_site_and_per_token(make_sim: MakeSim,
                                            session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=5, quota_qpm=3, window_s=1.0,
                         faults=Faults(retry_after_s=1))
    statuses = [(await post(session, sim, body()))[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    _, data, headers = await post(session, sim, body())
    assert_google_error(data, 429, "rateLimitExceeded", "RESOURCE_EXHAUSTED", "usageLimits")
    assert headers["Retry-After"] == "1"
    assert (await post(session, sim, body(), site=PREFIX_SITE))[0] == 429  # same token
    assert (await post(session, sim, body(), token="ya29.other"))[0] == 429  # same site
    assert (await post(session, sim, body(), site=PREFIX_SITE, token="ya29.other"))[0] == 200
    await asyncio.sleep(1.05)
    assert (await post(session, sim, body()))[0] == 200
    stats = sim.stats()
    assert stats["rate_limited"] == 5 and stats["by_status"] == {"200": 5, "429": 5}
    assert stats["peak_window_by_site"][SITE] == 7
    assert stats["peak_window_by_token"] == {"token#1": 7, "token#2": 2}


async def test_stats_peaks_duplicates_and_in_flight(make_sim: MakeSim,
                                                    session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=50, latency_s=0.3, latency_jitter=0.0, window_s=0.5)
    started = time.monotonic()
    await asyncio.gather(*(post(session, sim, body(row_limit=10 + k)) for k in range(5)))
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.55)
    await post(session, sim, body(row_limit=10))
    await post(session, sim, body(row_limit=10, start_row=10))
    stats = sim.stats()
    assert stats["max_in_flight"] == 5 and stats["in_flight"] == 0
    assert stats["peak_window"] == 5 and stats["peak_window_by_site"] == {SITE: 5}
    assert stats["duplicates"] == 1 and stats["ok"] == 7 and stats["requests"] == 7
    assert stats["window_s"] == 0.5
    text = json.dumps(stats) + repr(sim.request_log)
    assert TOKEN not in text and "ya29" not in text
    record = sim.request_log[-1]
    assert (record.site, record.token_id, record.day, record.start_row, record.row_limit,
            record.status, record.rows, record.fault) == (SITE, "token#1", DAY, 10, 10, 200, 10,
                                                          None)
    assert record.finished - record.arrived >= 0.3
    sim.reset_stats()
    assert sim.stats()["requests"] == 0 and sim.request_log == []
    assert sim.stats()["peak_window"] == 0 and sim.stats()["duplicates"] == 0


async def test_control_endpoints(make_sim: MakeSim, session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=120)
    await post(session, sim, body(), site=PREFIX_SITE)
    async with session.get(f"{sim.base_url}_sim/stats") as resp:
        assert (await resp.json())["requests"] == 1
    params = {"site": PREFIX_SITE, "day": DAY.isoformat(), "type": "web",
              "dimensions": "date,query,country",
              "filters": json.dumps([{"dimension": "query", "operator": "contains",
                                      "expression": "shoes"}])}
    async with session.get(f"{sim.base_url}_sim/truth", params=params) as resp:
        truth = pl.DataFrame((await resp.json())["rows"])
    expected = sim.ground_truth(PREFIX_SITE, DAY, dimensions=["date", "query", "country"],
                                filters=[Filter("query", "contains", "shoes")])
    assert truth.height > 0
    assert_frame_equal(truth, expected)
    async with session.get(f"{sim.base_url}_sim/truth", params={"site": SITE}) as resp:
        assert resp.status == 400
    async with session.post(f"{sim.base_url}_sim/revise",
                            params={"site": PREFIX_SITE, "day": DAY.isoformat()}) as resp:
        assert resp.status == 200
    assert not sim.ground_truth(PREFIX_SITE, DAY).equals(
        Simulator(SimConfig(rows_per_day=120)).ground_truth(PREFIX_SITE, DAY))
    async with session.post(f"{sim.base_url}_sim/reset") as resp:
        assert resp.status == 200
    assert sim.stats()["requests"] == 0


async def test_revise_changes_keys_and_metrics(make_sim: MakeSim,
                                               session: aiohttp.ClientSession) -> None:
    sim = await make_sim(rows_per_day=3_000)
    before = {tuple(r["keys"]): r["clicks"] for r in await fetch_day(session, sim)}
    other_day = await fetch_day(session, sim, day=DAY - timedelta(1))
    other_site = await fetch_day(session, sim, site=PREFIX_SITE)
    sim.revise(SITE, DAY)
    after = {tuple(r["keys"]): r["clicks"] for r in await fetch_day(session, sim)}
    assert len(after) == 3_000
    removed, added = before.keys() - after.keys(), after.keys() - before.keys()
    assert 0 < len(removed) < 600 and 0 < len(added) < 600
    assert any(before[k] != after[k] for k in before.keys() & after.keys())
    assert await fetch_day(session, sim, day=DAY - timedelta(1)) == other_day
    assert await fetch_day(session, sim, site=PREFIX_SITE) == other_site
    assert set(sim.ground_truth(SITE, DAY)["query"]) == {k[1] for k in after}
    sim.revise()
    assert {tuple(r["keys"]) for r in await fetch_day(session, sim, site=PREFIX_SITE)} != {
        tuple(r["keys"]) for r in other_site}


async def test_serve_announces_its_url(capsys: pytest.CaptureFixture[str],
                                       session: aiohttp.ClientSession) -> None:
    task = asyncio.create_task(serve(SimConfig(), port=0))
    for _ in range(100):
        await asyncio.sleep(0.02)
        out = capsys.readouterr().out
        if out:
            break
    match = re.fullmatch(r"gsckit simulator listening on (http://127\.0\.0\.1:\d+/)\n", out)
    assert match, out
    async with session.get(f"{match.group(1)}_sim/stats") as resp:
        assert (await resp.json())["requests"] == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_lifecycle_errors() -> None:
    sim = Simulator()
    with pytest.raises(RuntimeError, match="not started"):
        _ = sim.base_url
    async with sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already started"):
            await sim.start()


# ---- speed -------------------------------------------------------------------------------------


def test_a_25k_page_is_generated_and_encoded_well_under_50ms() -> None:
    query = api._parse_query(body())
    timings = []
    for k in range(8):
        spec = data._SliceSpec(1, SITE, "web", DIMS, (), DAY + timedelta(k), 0, 25_000,
                                 50_000)
        started = time.perf_counter()
        text = api._response_body(data._build_slice(spec).slice(0, 25_000), query)
        timings.append(time.perf_counter() - started)
        assert text.count('"keys"') == 25_000
    assert statistics.median(timings[2:]) < 0.050, timings
