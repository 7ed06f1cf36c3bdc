"""``sites``, ``doctor`` and the backfill pre-flight, against the simulator's per-credential
permissions (including unverified entries) over loopback."""

from __future__ import annotations

import json

import pytest

import gsckit
from gsckit.auth import ADC_ENV, TOKEN_ENV
from gsckit.cli import main
from gsckit.doctor import doctor_async
from gsckit.sites import closest, sites_async

from .conftest import SITE, day_range, run
from .oauth_helpers import authorized_user, sa_email, service_account

PREFIX = "https://www.example.com/"
OTHER = "sc-domain:other.org"
PERMS = {SITE: "siteOwner", PREFIX: "siteUnverifiedUser", OTHER: "siteRestrictedUser"}


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, tmp_path):
    for name in (TOKEN_ENV, ADC_ENV, "GCE_METADATA_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr("google.auth.compute_engine._metadata.detect_gce_residency_linux",
                        lambda: False)


def cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


async def test_sites_frame_marks_unverified_entries(make_sim, rsa_keys, tmp_path):
    sim = await make_sim()
    path = service_account(sim, rsa_keys, tmp_path, sites=PERMS)
    frame = await sites_async(credentials=path, base_url=sim.base_url)
    assert frame.columns == ["site_url", "permission_level", "readable", "credential"]
    got = {r["site_url"]: (r["permission_level"], r["readable"]) for r in frame.to_dicts()}
    assert got == {SITE: ("siteOwner", True), PREFIX: ("siteUnverifiedUser", False),
                   OTHER: ("siteRestrictedUser", True)}
    assert set(frame["credential"]) == {f"service account {sa_email('bot')} (file {path})"}


def test_sites_command_table_and_json(thread_sim, rsa_keys, tmp_path, capsys):
    sim = thread_sim()
    a = service_account(sim.sim, rsa_keys, tmp_path, "a", {SITE: "siteFullUser"})
    b = authorized_user(sim.sim, tmp_path, "bob", {PREFIX: "siteUnverifiedUser"})
    code, out, _ = cli(capsys, "sites", "--credentials", a, "--credentials", b, "--base-url",
                       sim.base_url, "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["site_url"], r["readable"]) for r in rows] == [(SITE, True), (PREFIX, False)]
    code, out, _ = cli(capsys, "sites", "--credentials", a, "--credentials", b, "--base-url",
                       sim.base_url)
    assert code == 0 and "unverified: no data" in out and SITE in out
    assert "siteUnverifiedUser" in out and "GOCSPX" not in out


@pytest.mark.parametrize("wanted, guess", [
    ("https://example.com/", "sc-domain:example.com"),
    ("https://shop.example.com/", "sc-domain:example.com"),
    ("http://www.other.org/", "sc-domain:other.org"),
    ("https://www.example.com", "https://www.example.com/"),
    ("sc-domain:unrelated.net", None),
])
def test_closest_readable_property(wanted, guess):
    readable = ["sc-domain:example.com", "sc-domain:other.org", "https://www.example.com/"]
    assert closest(wanted, readable) == guess


async def test_preflight_refuses_an_unreadable_site_before_anything_is_written(
        make_sim, rsa_keys, db, tmp_path):
    sim = await make_sim(rows_per_day=10)
    path = service_account(sim, rsa_keys, tmp_path, sites=PERMS)
    day = day_range(12, 1)[0]
    with pytest.raises(gsckit.SiteNotReadable) as info:
        await run(sim, db, day, day, site=[SITE, "https://example.com/"], token=None,
                  credentials=path)
    text = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in text
    assert "did you mean 'sc-domain:example.com'?" in text
    assert (f"add {sa_email('bot')} in Search Console -> Settings -> Users and permissions"
            in text)
    assert sim.stats()["requests"] == 0 and not db.exists()
    # an unverified entry is listed but unreadable, and says so
    with pytest.raises(gsckit.SiteNotReadable, match="only an unverified user"):
        await run(sim, db, day, day, site=PREFIX, token=None, credentials=path)
    # a person is told to sign in with an account that has access
    user = authorized_user(sim, tmp_path, "carol", {OTHER: "siteOwner"})
    with pytest.raises(gsckit.SiteNotReadable, match="gsckit login"):
        await run(sim, db, day, day, token=None, credentials=user)
    assert sim.stats()["requests"] == 0 and not db.exists()
    # readable sites pass, and --no-preflight sends the query to meet Google's 403
    assert (await run(sim, db, day, day, token=None, credentials=path)).ok
    with pytest.raises(gsckit.RunHalted, match="sufficient permission"):
        await run(sim, db, day, day, site=PREFIX, token=None, credentials=path,
                  preflight=False)


def test_cli_preflight_exit_2_one_line(thread_sim, rsa_keys, tmp_path, capsys):
    sim = thread_sim(rows_per_day=10)
    path = service_account(sim.sim, rsa_keys, tmp_path, sites=PERMS)
    day = str(day_range(12, 1)[0])
    code, out, err = cli(capsys, "backfill", "https://example.com/", "--start", day, "--end",
                         day, "--db", tmp_path / "gsc.duckdb", "--credentials", path,
                         "--base-url", sim.base_url, "--no-progress")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "sc-domain:example.com" in err and sa_email("bot") in err
    assert not (tmp_path / "gsc.duckdb").exists() and sim.stats()["requests"] == 0
    # progress on: the run names its credential's source on one line, never a secret
    code, out, err = cli(capsys, "backfill", SITE, "--start", day, "--end", day, "--db",
                         tmp_path / "gsc.duckdb", "--credentials", path, "--base-url",
                         sim.base_url)
    assert code == 0
    assert f"gsckit: credentials: service account {sa_email('bot')} (file {path})" in err
    assert "PRIVATE KEY" not in out + err


async def test_doctor_checks_in_order_with_fixes(make_sim, rsa_keys, tmp_path):
    sim = await make_sim(rows_per_day=30)
    path = service_account(sim, rsa_keys, tmp_path, sites=PERMS)
    wanted = [SITE, "https://example.com/", "https://www.example.com", PREFIX]
    diagnosis = await doctor_async(wanted, credentials=path, base_url=sim.base_url)
    names = [c.name for c in diagnosis.checks]
    assert names == ["credentials", f"token (sa:{sa_email('bot')})",
                     f"sites.list (sa:{sa_email('bot')})", *(f"site {s}" for s in wanted),
                     f"query {SITE}", "quota"]
    by_name = {c.name: c for c in diagnosis.checks}
    assert sa_email("bot") in by_name["credentials"].detail
    assert "valid for 60 more minutes" in by_name[names[1]].detail
    assert "can read 2 properties (1 more listed as unverified" in by_name[names[2]].detail
    assert by_name[f"site {SITE}"].ok
    wrong = by_name["site https://example.com/"]
    assert not wrong.ok and "did you mean 'sc-domain:example.com'?" in wrong.detail
    assert f"add {sa_email('bot')} in Search Console -> Settings -> Users" in wrong.fix
    slash = by_name["site https://www.example.com"]
    assert not slash.ok and "end with '/'" in slash.detail and PREFIX not in slash.fix
    assert "only an unverified user" in by_name[f"site {PREFIX}"].detail
    assert by_name[f"query {SITE}"].ok and "(1 row)" in by_name[f"query {SITE}"].detail
    assert "960" in by_name["quota"].detail
    assert not diagnosis.ok and sim.stats()["requests"] == 1
    good = await doctor_async([SITE, OTHER], credentials=path, base_url=sim.base_url)
    assert good.ok, good.summary()


def test_doctor_command_exit_codes_and_failures(thread_sim, rsa_keys, tmp_path, capsys):
    sim = thread_sim(rows_per_day=30)
    path = service_account(sim.sim, rsa_keys, tmp_path, sites=PERMS)
    base = ["--credentials", path, "--base-url", sim.base_url]
    code, out, _ = cli(capsys, "doctor", SITE, *base)
    assert code == 0 and "all checks passed" in out and "ok   query" in out
    code, out, _ = cli(capsys, "doctor", "https://example.com/", *base, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [c["ok"] for c in report["checks"]][-2:] == [False, True]
    code, out, _ = cli(capsys, "doctor", SITE, "--base-url", sim.base_url)
    assert code == 1 and "FAIL credentials: no credentials" in out
    sim.sim.oauth.revoke(f"sa:{sa_email('bot')}")
    code, out, _ = cli(capsys, "doctor", SITE, *base)
    assert code == 1 and "invalid_grant" in out and "new JSON key" in out
    assert "PRIVATE KEY" not in out
