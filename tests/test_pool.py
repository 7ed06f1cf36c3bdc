"""A pool of credentials: each site served by the credentials that can read it, requests spread
over them, and a credential lost mid-run (revoked, or its permission removed) handled per site.
Server-side counts decide, never timing."""

from __future__ import annotations

from collections import Counter

import pytest

import gsckit
from gsckit.auth import ADC_ENV, TOKEN_ENV
from gsckit.cli import main

from .conftest import assert_matches_truth, day_range, duplicate_keys, run
from .oauth_helpers import sa_email, service_account

A, B = "sc-domain:a.example", "sc-domain:b.example"
OWNER = "siteOwner"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    for name in (TOKEN_ENV, ADC_ENV):
        monkeypatch.delenv(name, raising=False)


def keys_for(sim, rsa_keys, folder):
    """one reads both sites, two reads A only, three reads B only."""
    return [service_account(sim, rsa_keys, folder, "one", {A: OWNER, B: "siteFullUser"}),
            service_account(sim, rsa_keys, folder, "two", {A: "siteRestrictedUser"}),
            service_account(sim, rsa_keys, folder, "three", {B: OWNER})]


def served(sim) -> dict[str, Counter]:
    by_site: dict[str, Counter] = {}
    for r in sim.request_log:
        if r.status == 200:
            by_site.setdefault(r.site, Counter())[r.token_id] += 1
    return by_site


async def test_each_site_is_spread_over_the_credentials_that_can_read_it(make_sim, rsa_keys,
                                                                          db, tmp_path):
    sim = await make_sim(rows_per_day=100)
    files = keys_for(sim, rsa_keys, tmp_path)
    days = day_range(40, 24)
    report = await run(sim, db, days[0], days[-1], site=[A, B], token=None, credentials=files,
                       max_concurrency=6)
    assert report.ok and report.credentials == ()
    counts = served(sim)
    one, two, three = (f"sa:{sa_email(n)}" for n in ("one", "two", "three"))
    assert set(counts[A]) == {one, two} and set(counts[B]) == {one, three}
    for site in (A, B):  # both serving credentials carry a real share
        assert min(counts[site].values()) >= 6, counts
    for site in (A, B):
        assert_matches_truth(db, sim, days, site=site)


async def test_per_credential_and_per_site_windows_hold_in_a_pool(make_sim, rsa_keys, db,
                                                                  tmp_path):
    # every credential reads both sites: the pool may send 2 x qpm per window, each site qpm
    sim = await make_sim(rows_per_day=20, window_s=1.5)  # scaled time, as in test_engine
    files = [service_account(sim, rsa_keys, tmp_path, n, {A: OWNER, B: OWNER})
             for n in ("p", "q")]
    days = day_range(60, 30)
    cfg = gsckit.EngineConfig(qpm=12, qpm_window_s=1.5, max_concurrency=8)
    report = await run(sim, db, days[0], days[-1], site=[A, B], token=None, credentials=files,
                       config=cfg)
    assert report.ok and report.requests == 60 + 2  # and each site's daily totals
    stats = sim.stats()
    assert stats["rate_limited"] == 0
    assert max(stats["peak_window_by_token"].values()) <= 12
    assert max(stats["peak_window_by_site"].values()) <= 12
    assert sum(stats["peak_window_by_site"].values()) > 12  # more than one credential's worth


async def test_a_revoked_credential_moves_its_sites_to_the_others(make_sim, rsa_keys, db,
                                                                  tmp_path):
    sim = await make_sim(rows_per_day=100)
    files = keys_for(sim, rsa_keys, tmp_path)
    days = day_range(40, 20)
    done = []

    def revoke_two_after_four_days(event):
        if event.kind == "slice_done":
            done.append(1)
            if len(done) == 4:
                sim.oauth.revoke(f"sa:{sa_email('two')}")

    report = await run(sim, db, days[0], days[-1], site=[A, B], token=None, credentials=files,
                       listeners=[revoke_two_after_four_days], max_concurrency=4)
    assert report.ok and report.failed == 0
    assert any(sa_email("two") in note and "refused" in note for note in report.credentials)
    assert "credentials:" in report.summary()
    for site in (A, B):
        assert_matches_truth(db, sim, days, site=site)
    assert duplicate_keys(db) == 0


async def test_a_site_whose_only_credential_loses_permission_stops_alone(make_sim, rsa_keys, db,
                                                                         tmp_path):
    sim = await make_sim(rows_per_day=100)
    files = [service_account(sim, rsa_keys, tmp_path, "one", {A: OWNER}),
             service_account(sim, rsa_keys, tmp_path, "three", {B: OWNER})]
    days = day_range(40, 16)
    done = []

    def drop_b(event):
        if event.kind == "slice_done":
            done.append(1)
            if len(done) == 4:
                sim.oauth.set_sites(f"sa:{sa_email('three')}", {})

    report = await run(sim, db, days[0], days[-1], site=[A, B], token=None, credentials=files,
                       listeners=[drop_b], max_concurrency=2)
    assert not report.ok and not report.halted and report.failed > 0
    assert all(B in f and "no credential can read" in f for f in report.failures)
    assert any("lost access" in n and B in n for n in report.credentials)
    assert_matches_truth(db, sim, days, site=A)  # the other site finished


async def test_losing_every_credential_halts_the_run(make_sim, rsa_keys, db, tmp_path):
    sim = await make_sim(rows_per_day=100)
    files = [service_account(sim, rsa_keys, tmp_path, n, {A: OWNER}) for n in ("x", "y")]
    days = day_range(40, 10)
    seen = []

    def revoke_all(event):
        if event.kind == "slice_done":
            seen.append(1)
            if len(seen) == 2:
                for name in ("x", "y"):
                    sim.oauth.revoke(f"sa:{sa_email(name)}")

    with pytest.raises(gsckit.RunHalted) as info:
        await run(sim, db, days[0], days[-1], site=A, token=None, credentials=files,
                  listeners=[revoke_all], max_concurrency=2)
    assert isinstance(info.value.cause, gsckit.CredentialRefused)
    assert info.value.report.done >= 2


def test_cli_pool_with_repeated_credentials(thread_sim, rsa_keys, tmp_path, capsys):
    sim = thread_sim(rows_per_day=50)
    files = keys_for(sim.sim, rsa_keys, tmp_path)
    days = day_range(30, 4)
    argv = ["backfill", A, B, "--start", days[0], "--end", days[-1], "--db",
            tmp_path / "gsc.duckdb", "--base-url", sim.base_url, "--json"]
    for path in files:
        argv += ["--credentials", path]
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert err.count("gsckit: credentials: service account") == 3
    assert len({r.token_id for r in sim.sim.request_log}) == 3
