"""Credential sources and the token lifecycle, against the simulator's OAuth side on loopback.

Service accounts sign real JWTs with a key generated for this session; people use refresh tokens.
Expiry is driven by moving the simulator's token clock (and google-auth's, where the test needs
the client to see it), never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.request
import webbrowser

import pytest

import gsckit
from gsckit.auth import (
    ADC_ENV,
    TOKEN_ENV,
    GoogleCredentials,
    StaticToken,
    from_environment,
    from_file,
    login_path,
    resolve,
    resolve_all,
)

from .conftest import SITE, assert_matches_truth, day_range, run
from .oauth_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    authorized_user,
    sa_email,
    service_account,
)

FAST = gsckit.EngineConfig(retry=gsckit.RetryPolicy(max_attempts=4, base_s=0.01,
                                                    max_backoff_s=0.02))


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No ambient credentials: empty config folders, no tokens, no metadata server."""
    for name in (TOKEN_ENV, ADC_ENV, "GCE_METADATA_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setattr("google.auth.compute_engine._metadata.detect_gce_residency_linux",
                        lambda: False)


def query_tokens(sim) -> set[str | None]:
    return {r.token_id for r in sim.request_log}


# --- every kind of file, end to end ---------------------------------------------------------

async def test_service_account_file_signs_a_jwt_and_runs_a_backfill(make_sim, rsa_keys, db,
                                                                     tmp_path):
    sim = await make_sim(rows_per_day=300)
    path = service_account(sim, rsa_keys, tmp_path)
    days = day_range(12, 3)
    report = await run(sim, db, days[0], days[-1], token=None, credentials=path)
    assert report.ok and report.done == 3
    assert sim.oauth.token_requests == 1 and sim.oauth.failed_grants == 0
    assert query_tokens(sim) == {f"sa:{sa_email('bot')}"}
    assert_matches_truth(db, sim, days)


async def test_a_key_the_server_does_not_know_is_refused(make_sim, rsa_keys, db, tmp_path):
    sim = await make_sim(rows_per_day=10)
    # registered under another key: the signature check must fail
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    sim.oauth.add_service_account(sa_email("bot"), other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    path = service_account(sim, rsa_keys, tmp_path, register=False)
    day = day_range(12, 1)[0]
    with pytest.raises(gsckit.CredentialRefused) as info:  # by the pre-flight's first token
        await run(sim, db, day, day, token=None, credentials=path)
    assert info.value.exit_code == 1 and str(path) in str(info.value)
    assert sim.oauth.failed_grants == 1 and sim.stats()["requests"] == 0
    assert not db.exists()


async def test_authorized_user_file_uses_its_refresh_token(make_sim, db, tmp_path):
    sim = await make_sim(rows_per_day=200)
    path = authorized_user(sim, tmp_path)
    days = day_range(12, 2)
    report = await run(sim, db, days[0], days[-1], token=None, credentials=path)
    assert report.ok and sim.oauth.token_requests == 1
    assert query_tokens(sim) == {"user:alice"}


# --- token lifecycle ------------------------------------------------------------------------

async def test_a_token_the_server_expired_gets_one_refresh_and_one_retry(make_sim, rsa_keys, db,
                                                                         tmp_path):
    sim = await make_sim(rows_per_day=100)
    creds = from_file(service_account(sim, rsa_keys, tmp_path))
    days = day_range(20, 4)  # older than the 10 days whose freshness a run asks Google first
    first = await run(sim, db, days[0], days[1], token=creds, max_concurrency=1)
    assert first.ok and sim.oauth.token_requests == 1
    sim.oauth.advance(3_600)  # the server's clock says the token is dead; google-auth does not
    second = await run(sim, db, days[2], days[3], token=creds, max_concurrency=1,
                       preflight=False)  # the engine meets the 401, not the pre-flight
    assert second.ok and second.retries == 1
    # two pages and the daily totals per run; the 401 answered the second run's first request
    assert sim.stats()["by_status"] == {"200": 2 * (2 + 1), "401": 1}
    assert sim.oauth.token_requests == 2


async def test_refresh_happens_ahead_of_expiry_without_a_401(make_sim, rsa_keys, db, tmp_path,
                                                             monkeypatch):
    import google.auth._helpers as helpers

    sim = await make_sim(rows_per_day=100)
    creds = from_file(service_account(sim, rsa_keys, tmp_path))
    days = day_range(12, 4)
    assert (await run(sim, db, days[0], days[1], token=creds)).ok
    remaining = creds.remaining_s()
    assert remaining is not None and 3_500 < remaining <= 3_600
    # both clocks move to 3 minutes before expiry: inside google-auth's 3 min 45 s margin
    skip = 3_600 - 180
    real = helpers.utcnow
    monkeypatch.setattr(helpers, "utcnow", lambda: real() + dt.timedelta(seconds=skip))
    sim.oauth.advance(skip)
    second = await run(sim, db, days[2], days[3], token=creds)
    assert second.ok and second.retries == 0
    assert "401" not in sim.stats()["by_status"]
    assert sim.oauth.token_requests == 2


async def test_concurrent_workers_share_one_refresh(make_sim, rsa_keys, db, tmp_path):
    sim = await make_sim(rows_per_day=50)
    creds = from_file(service_account(sim, rsa_keys, tmp_path))
    days = day_range(30, 16)
    report = await run(sim, db, days[0], days[-1], token=creds, max_concurrency=8)
    assert report.ok and sim.oauth.token_requests == 1


async def test_a_network_error_while_refreshing_is_retried(make_sim, rsa_keys, db, tmp_path):
    sim = await make_sim(rows_per_day=100)
    sim.oauth.drop_next = 2
    events = []
    days = day_range(12, 2)
    creds = from_file(service_account(sim, rsa_keys, tmp_path))
    report = await run(sim, db, days[0], days[-1], token=creds, max_concurrency=1, config=FAST,
                       listeners=[events.append], preflight=False)
    assert report.ok and report.failed == 0
    assert sim.oauth.token_requests == 3  # two resets, then a token
    retries = [e.data for e in events if e.kind == "retry"]
    assert len(retries) == 2 and all("refreshing the token" in r["error"] for r in retries)
    assert_matches_truth(db, sim, days)
    # the pre-flight retries a network error while refreshing too
    sim.oauth.advance(3_600)
    sim.oauth.drop_next = 1
    more = day_range(20, 1)
    assert (await run(sim, db, more[0], more[0], token=creds)).ok
    assert sim.oauth.token_requests == 5


async def test_a_revoked_service_account_halts_naming_the_key_and_the_fix(make_sim, rsa_keys, db,
                                                                          tmp_path):
    sim = await make_sim(rows_per_day=100)
    path = service_account(sim, rsa_keys, tmp_path)
    creds = from_file(path)
    days = day_range(12, 3)
    assert (await run(sim, db, days[0], days[0], token=creds)).ok
    sim.oauth.revoke(f"sa:{sa_email('bot')}")  # live tokens die, the key is refused
    with pytest.raises(gsckit.RunHalted) as info:  # mid-run: the engine meets it
        await run(sim, db, days[1], days[2], token=creds, max_concurrency=1, preflight=False)
    cause = info.value.cause
    assert isinstance(cause, gsckit.CredentialRefused) and cause.exit_code == 1
    text = str(info.value)
    assert sa_email("bot") in text and str(path) in text and "invalid_grant" in text
    assert "new JSON key" in text
    assert rsa_keys[0].splitlines()[3] not in text
    # the first run's page and daily totals; the second run halts at its first request
    assert sim.stats()["by_status"] == {"200": 1 + 1, "401": 1}


async def test_a_revoked_refresh_token_says_to_log_in_again(make_sim, db, tmp_path):
    sim = await make_sim(rows_per_day=10)
    path = authorized_user(sim, tmp_path)
    sim.oauth.revoke("user:alice")
    day = day_range(12, 1)[0]
    with pytest.raises(gsckit.CredentialRefused) as info:
        await run(sim, db, day, day, token=None, credentials=path)
    assert "gsckit login" in str(info.value) and "7 days" in str(info.value)
    refresh = json.loads(path.read_text())["refresh_token"]
    assert refresh not in str(info.value) and CLIENT_SECRET not in str(info.value)


# --- where credentials come from ------------------------------------------------------------

def write_user(path, account: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"type": "authorized_user", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "refresh_token": "1//r"}
    if account:
        info["account"] = account
    path.write_text(json.dumps(info))
    return path


def test_resolution_order(monkeypatch, tmp_path, rsa_keys):
    from gsckit.auth import gcloud_adc_path

    with pytest.raises(gsckit.CredentialsError, match="gsckit login"):
        resolve()
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    assert "metadata server" in resolve().source  # only where a metadata server exists
    gcloud = write_user(gcloud_adc_path())
    found = resolve()
    assert isinstance(found, GoogleCredentials) and str(gcloud) in found.source
    assert "gcloud auth application-default login" in found.fix
    login = write_user(login_path(), account="me@example.com")
    assert str(login) in resolve().source and "me@example.com" in resolve().source
    monkeypatch.setenv(ADC_ENV, str(write_user(tmp_path / "adc.json")))
    assert f"${ADC_ENV}" in resolve().source
    monkeypatch.setenv(TOKEN_ENV, "ya29.from-env")
    assert isinstance(resolve(), StaticToken) and TOKEN_ENV in resolve().source
    # explicit arguments win over everything
    assert "token argument" in resolve("ya29.arg").source
    assert str(login) in resolve(credentials_file=login).source
    assert from_environment() is not None


def test_impersonation_wraps_any_google_source(tmp_path):
    base = from_file(write_user(tmp_path / "me.json"))
    target = "reporter@proj.iam.gserviceaccount.com"
    creds = resolve(credentials_file=tmp_path / "me.json", impersonate=target)
    assert creds.client_email == target and creds.identity == f"sa:{target}"
    assert "impersonated by" in creds.source and base.source in creds.source
    with pytest.raises(gsckit.CredentialsError, match="google-auth credentials"):
        resolve("ya29.static", impersonate=target)
    with pytest.raises(gsckit.CredentialsError, match="not a service account"):
        resolve(credentials_file=tmp_path / "me.json", impersonate="nobody")


def test_gcloud_impersonation_file_names_the_target(tmp_path):
    path = tmp_path / "adc.json"
    path.write_text(json.dumps({
        "type": "impersonated_service_account", "delegates": [],
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects"
        "/-/serviceAccounts/gsc@proj.iam.gserviceaccount.com:generateAccessToken",
        "source_credentials": {"type": "authorized_user", "client_id": CLIENT_ID,
                               "client_secret": CLIENT_SECRET, "refresh_token": "1//r"}}))
    creds = from_file(path)
    assert creds.client_email == "gsc@proj.iam.gserviceaccount.com"
    assert CLIENT_SECRET not in repr(creds) + creds.source


def test_a_pool_refuses_the_same_identity_twice(tmp_path, rsa_keys):
    a = write_user(tmp_path / "a.json")
    b = write_user(tmp_path / "b.json")
    with pytest.raises(gsckit.CredentialsError, match="same identity"):
        resolve_all(credentials=[a, b])
    assert len(resolve_all(credentials=[a])) == 1
    with pytest.raises(gsckit.CredentialsError, match="empty"):
        resolve_all(credentials=[])
    assert resolve_all("ya29.x")[0].source.startswith("a static access token")


def test_sources_name_themselves_without_secrets(tmp_path, rsa_keys):
    from .oauth_helpers import sa_email

    class Sim:  # only token_uri is read when the key is not registered
        class oauth:
            token_uri = "http://127.0.0.1:9/token"

    path = service_account(Sim, rsa_keys, tmp_path, register=False)
    creds = from_file(path)
    assert creds.source == f"service account {sa_email('bot')} (file {path})"
    for line in rsa_keys[0].splitlines()[1:-1]:
        assert line not in creds.source + repr(creds)
    assert creds.expiry is None and creds.remaining_s() is None
    assert SITE  # the shared site constant is importable for the engine tests above


# --- gsckit login ---------------------------------------------------------------------------

class FollowingBrowser(webbrowser.BaseBrowser):
    """A "browser" that opens the consent link and follows Google's redirect to the loopback
    server, as a person clicking "Allow" would, from another thread."""

    def __init__(self) -> None:
        super().__init__("gsckit-test-browser")
        self.urls: list[str] = []
        self.threads: list[threading.Thread] = []

    def open(self, url, new=0, autoraise=True):
        self.urls.append(url)
        thread = threading.Thread(target=lambda: urllib.request.urlopen(url, timeout=20).read())
        thread.start()
        self.threads.append(thread)
        return True


def test_login_runs_the_whole_flow_and_the_file_is_used_afterwards(thread_sim, tmp_path, capsys):
    from .oauth_helpers import client_secrets

    sim = thread_sim(rows_per_day=50)
    secrets_file = client_secrets(sim.sim, tmp_path)
    sim.sim.oauth.add_user("alice", CLIENT_ID, {SITE: "siteFullUser"})
    browser = FollowingBrowser()
    webbrowser.register(browser.name, None, browser)
    saved = gsckit.login(secrets_file, browser=browser.name, open_browser=True, timeout_s=30)
    for thread in browser.threads:
        thread.join(20)
    assert saved == login_path() and saved.stat().st_mode & 0o777 == 0o600
    info = json.loads(saved.read_text())
    assert info["type"] == "authorized_user" and info["refresh_token"].startswith("1//sim-")
    link = browser.urls[0]
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in link and "code_challenge=" in link
    assert "webmasters.readonly" in link and CLIENT_SECRET not in link
    out = capsys.readouterr().out
    assert link in out and str(saved) in out and CLIENT_SECRET not in out
    assert info["refresh_token"] not in out
    # used automatically from now on
    creds = resolve()
    assert str(saved) in creds.source
    days = day_range(12, 1)
    report = gsckit.backfill(SITE, days[0], days[0], db=tmp_path / "gsc.duckdb", progress=False,
                             base_url=sim.base_url)
    assert report.ok
    assert {r.token_id for r in sim.sim.request_log} == {"user:alice"}


def test_login_refuses_a_file_that_is_not_a_client(tmp_path):
    sa = tmp_path / "sa.json"
    sa.write_text(json.dumps({"type": "service_account"}))
    with pytest.raises(gsckit.ConfigError, match="not an OAuth client secrets file"):
        gsckit.login(sa)
    with pytest.raises(gsckit.ConfigError, match="does not exist"):
        gsckit.login(tmp_path / "missing.json")
    assert not login_path().exists()


async def test_the_authorization_endpoint_refuses_a_non_loopback_redirect(make_sim):
    import aiohttp

    sim = await make_sim()
    sim.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    sim.oauth.add_user("alice", CLIENT_ID)
    async with aiohttp.ClientSession() as session:
        for redirect, status in (("urn:ietf:wg:oauth:2.0:oob", 400),
                                 ("https://evil.example/cb", 400),
                                 ("http://127.0.0.1:5/", 302)):
            async with session.get(sim.oauth.auth_uri, allow_redirects=False, params={
                    "client_id": CLIENT_ID, "redirect_uri": redirect, "response_type": "code",
                    "scope": "https://www.googleapis.com/auth/webmasters.readonly",
                    "state": "s1"}) as resp:
                assert resp.status == status, redirect
                if status == 302:
                    assert resp.headers["Location"].startswith(redirect + "?code=4")
                    assert "state=s1" in resp.headers["Location"]
