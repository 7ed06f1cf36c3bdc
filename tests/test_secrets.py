"""No secret reaches a log, the database, a repr, an exception or the terminal.

A canary token is used for real runs (with retries and a halt) and a canary private key and
refresh token for credentials files; every place a secret could leak is then searched for it.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from pathlib import Path

import pytest

import gsckit
from gsckit import (
    CallableToken,
    CredentialsError,
    EngineConfig,
    RetryPolicy,
    RunHalted,
    StaticToken,
    Timeouts,
)
from gsckit.auth import TOKEN_ENV, GoogleCredentials, from_file, resolve
from gsckit.cli import main
from gsckit.client import Client
from gsckit.ratelimit import SlidingWindowLimiter
from gsckit.sim import Faults

from .conftest import SITE, day_range, run
from .oauth_helpers import sa_email

CANARY = "ya29.CANARY-" + "x" * 40
KEY_CANARY = "CANARYKEY" + "Q" * 40
REFRESH_CANARY = "1//CANARYREFRESH-" + "r" * 30
SECRET_CLIENT = "GOCSPX-CANARYSECRET-" + "s" * 20
FAST = EngineConfig(retry=RetryPolicy(max_attempts=8, base_s=0.01, max_backoff_s=0.03),
                    timeouts=Timeouts(total=5, connect=2, sock_read=2))
REQUEST_FIELDS = {"site", "day", "start_row", "status", "rows", "attempt", "latency_ms"}


def assert_no_canary(text: str | bytes, where: str, *canaries: str) -> None:
    canaries = canaries or (CANARY,)
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    for canary in canaries:
        for needle in (canary, canary[:16]):
            assert needle.encode() not in data, f"a secret leaked into {where}"
    assert b"CANARY" not in data, f"a secret leaked into {where}"


def everything_about(exc: BaseException) -> str:
    """What any display of ``exc`` can show: str, repr, args and the one-line form of ``exc`` and
    of every exception a traceback would print with it (``__cause__``, and ``__context__`` unless
    suppressed by ``raise ... from None``), plus ``RunHalted.cause``."""
    parts, seen, todo = [], set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), repr(e.args), *traceback.format_exception_only(e)]
        todo += [e.__cause__, getattr(e, "cause", None)]
        if not e.__suppress_context__:
            todo.append(e.__context__)
    return "\n".join(parts)


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


# --- a real run with retries, then a halt ---------------------------------------------------

async def test_canary_token_reaches_no_log_database_report_or_error(make_sim, db, tmp_path):
    audit = tmp_path / "audit.jsonl"
    events = []
    sim = await make_sim(rows_per_day=3_000, faults=Faults(seed=3, rates={"500": 0.3}))
    days = day_range(20, 6)
    report = await run(sim, db, days[0], days[-1], token=CANARY, config=FAST, audit_log=audit,
                       listeners=[events.append])
    assert report.ok and report.retries > 0 and sim.stats()["faults"]["500"] > 0
    # a callable source (refreshable) for a second, forced run
    forced = await run(sim, db, days[0], days[1], token=lambda: CANARY, config=FAST,
                       audit_log=audit, force=True, listeners=[events.append])
    assert forced.ok and forced.done == 2

    strict = await make_sim(rows_per_day=10, tokens=frozenset({"other"}))
    more = day_range(40, 3)
    with pytest.raises(RunHalted) as info:
        await run(strict, db, more[0], more[-1], token=CANARY, config=FAST, audit_log=audit,
                  listeners=[events.append], preflight=False)
    halted = info.value
    assert isinstance(halted.cause, gsckit.Unauthorized)

    # the audit log, the database and its WAL
    log = audit.read_bytes()
    assert b'"event":"halt"' in log and b'"event":"retry"' in log
    assert_no_canary(log, "the audit log")
    for path in (db, db.with_name(db.name + ".wal")):
        if path.exists():
            assert_no_canary(path.read_bytes(), path.name)
    # every event any listener saw
    assert_no_canary(json.dumps([(e.kind, dict(e.data)) for e in events], default=str),
                     "engine events")
    # reports and the halt
    for rep in (report, forced, halted.report):
        assert_no_canary(repr(rep) + str(rep) + rep.summary(), "a Report")
        assert_no_canary(json.dumps(rep.to_dict(), default=str), "Report.to_dict()")
    assert_no_canary(everything_about(halted), "RunHalted")
    assert_no_canary(everything_about(halted.cause), "RunHalted.cause")
    assert "401" in str(halted) and SITE in str(halted)


async def test_credential_objects_and_the_client_redact_the_token():
    static = StaticToken(CANARY)
    callable_ = CallableToken(lambda: CANARY)
    async_callable = CallableToken(_async_source)
    for creds in (static, callable_, async_callable):
        assert await creds.token() == CANARY  # the token is loaded, and still not shown
        assert_no_canary(repr(creds) + str(creds) + f"{creds!r} {creds}", type(creds).__name__)
        assert "redacted" in repr(creds)
    assert_no_canary(repr(resolve(CANARY)), "resolve(token)")
    client = Client(EngineConfig(base_url="http://127.0.0.1:9/"), static,
                    SlidingWindowLimiter(10, 1.0), lambda *a, **k: None)
    assert_no_canary(repr(client) + str(client), "the Client repr")
    assert "127.0.0.1" in repr(client)


async def _async_source() -> str:
    await asyncio.sleep(0)
    return CANARY


@pytest.mark.parametrize("bad", [CANARY + " extra", CANARY + "\n", CANARY + "\x00", "é" + CANARY])
async def test_rejected_token_errors_do_not_echo_it(bad, monkeypatch):
    with pytest.raises(CredentialsError) as info:
        StaticToken(bad)
    assert_no_canary(everything_about(info.value), "a token error")
    with pytest.raises(CredentialsError) as info:
        await CallableToken(lambda: bad).token()
    assert_no_canary(everything_about(info.value), "a token callable error")
    if "\x00" in bad:
        return  # an environment variable cannot hold a NUL
    monkeypatch.setenv(TOKEN_ENV, bad)
    with pytest.raises(CredentialsError) as info:
        resolve()
    assert f"${TOKEN_ENV}" in str(info.value)
    assert_no_canary(everything_about(info.value), "an environment token error")


# --- the audit log's content ----------------------------------------------------------------

async def test_audit_log_has_qpm_and_request_lines_with_their_fields(make_sim, db, tmp_path):
    audit = tmp_path / "audit.jsonl"
    sim = await make_sim(rows_per_day=30_000, faults=Faults(script={2: "500", 4: "500"}))
    days = day_range(20, 3)
    report = await run(sim, db, days[0], days[-1], token=CANARY, config=FAST, audit_log=audit)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert "qpm" in kinds
    qpm = next(r for r in records if r["event"] == "qpm")
    assert {"qpm", "in_window", "peak", "target", "window_s"} <= set(qpm)
    requests = [r for r in records if r["event"] == "request"]
    assert len(requests) == report.requests == sim.stats()["requests"]
    for r in requests:
        assert set(r) >= REQUEST_FIELDS, set(r)
        assert r["site"] == SITE and r["day"] in {str(d) for d in days}
        assert r["start_row"] in (0, 25_000) and r["attempt"] >= 1
        assert isinstance(r["latency_ms"], float) and r["latency_ms"] >= 0
    assert {r["status"] for r in requests} == {200, 500}
    pages = [r for r in requests if r.get("request") != "totals"]
    assert len(pages) == len(requests) - report.totals_requests
    assert sum(r["rows"] for r in pages if r["status"] == 200) == report.rows == 90_000
    assert any(r["attempt"] > 1 for r in requests)
    assert all("ts" in r for r in records)
    assert_no_canary(audit.read_bytes(), "the audit log")


# --- the command line -----------------------------------------------------------------------

def cli(capsys, *argv) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out + err


def test_cli_output_never_shows_the_token(thread_sim, tmp_path, capsys):
    days = day_range(20, 2)
    sim = thread_sim(rows_per_day=500, faults=Faults(seed=2, rates={"500": 0.3}))
    audit = tmp_path / "audit.jsonl"
    common = ["--start", days[0], "--end", days[-1], "--db", tmp_path / "gsc.duckdb",
              "--audit-log", audit]
    outputs = []
    # a successful run, with the progress display on
    code, text = cli(capsys, "backfill", SITE, *common, "--base-url", sim.base_url,
                     "--token", CANARY, "--json")
    assert code == 0, text
    outputs.append(text)
    # a halted run: the token is rejected (401, refreshed once, rejected again)
    strict = thread_sim(rows_per_day=10, tokens=frozenset({"other"}))
    code, text = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[0], "--db",
                     tmp_path / "other.duckdb", "--base-url", strict.base_url, "--token", CANARY,
                     "--no-progress", "--force")
    assert code == 1 and "401" in text
    outputs.append(text)
    code, text = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[0], "--db",
                     tmp_path / "other.duckdb", "--base-url", strict.base_url, "--token", CANARY,
                     "--no-progress", "--json", "--no-preflight")
    assert code == 1 and '"halted": true' in text
    outputs.append(text)
    # bad input next to a valid token, and a token the CLI refuses
    for argv in (
        ["backfill", "https://www.example.com", *common, "--token", CANARY],
        ["backfill", SITE, *common, "--base-url", "https://example.org/", "--token", CANARY],
        ["backfill", SITE, *common, "--token", CANARY + " pasted twice"],
        ["backfill", SITE, *common, "--token", CANARY, "--credentials", tmp_path / "x.json"],
        ["backfill", SITE, *common, "--token", CANARY, "--turbo"],
    ):
        code, text = cli(capsys, *argv)
        assert code == 2, text
        outputs.append(text)
    code, text = cli(capsys, "status", "--db", tmp_path / "gsc.duckdb", "--json")
    assert code == 0
    outputs.append(text)
    for text in outputs:
        assert_no_canary(text, "CLI output")
    assert_no_canary(audit.read_bytes(), "the CLI's audit log")
    assert_no_canary((tmp_path / "gsc.duckdb").read_bytes(), "the CLI's database")


# --- credentials files ----------------------------------------------------------------------

def service_account(tmp_path: Path, private_key: object, name: str = "sa.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "kid",
        "private_key": private_key, "client_email": "bot@p.iam.gserviceaccount.com",
        "client_id": "123", "token_uri": "https://oauth2.googleapis.com/token"}))
    return path


MALFORMED_KEYS = {
    "bare": KEY_CANARY,
    "pkcs8_armour": f"-----BEGIN PRIVATE KEY-----\n{KEY_CANARY}\n-----END PRIVATE KEY-----\n",
    "rsa_armour": f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_CANARY}\n-----END RSA PRIVATE KEY-----",
    "truncated_der": ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
                      f"{KEY_CANARY}\n-----END PRIVATE KEY-----\n"),
    "certificate": f"-----BEGIN CERTIFICATE-----\n{KEY_CANARY}\n-----END CERTIFICATE-----\n",
    "list": [KEY_CANARY],
    "object": {"pem": KEY_CANARY},
}


@pytest.mark.parametrize("kind", list(MALFORMED_KEYS))
def test_malformed_private_key_errors_do_not_contain_the_key(tmp_path, kind):
    path = service_account(tmp_path, MALFORMED_KEYS[kind])
    with pytest.raises(CredentialsError) as info:
        from_file(path)
    assert str(path) in str(info.value)
    assert_no_canary(everything_about(info.value), "a credentials error", KEY_CANARY)


def test_cli_with_a_malformed_key_file_prints_one_clean_line(tmp_path, capsys):
    path = service_account(tmp_path, MALFORMED_KEYS["pkcs8_armour"])
    day = day_range(10, 1)[0]
    code, text = cli(capsys, "backfill", SITE, "--start", day, "--end", day, "--db",
                     tmp_path / "gsc.duckdb", "--credentials", path, "--base-url",
                     "http://127.0.0.1:9/", "--no-progress")
    assert code == 2 and len(text.splitlines()) == 1 and "malformed" in text
    assert_no_canary(text, "CLI output", KEY_CANARY)
    assert not (tmp_path / "gsc.duckdb").exists()


def test_loaded_google_credentials_hide_key_and_refresh_token(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    sa = from_file(service_account(tmp_path, pem))
    assert isinstance(sa, GoogleCredentials) and sa.identity == "sa:bot@p.iam.gserviceaccount.com"
    body = pem.splitlines()[5]  # a line from the middle of the key
    assert body not in repr(sa) and body not in str(sa) and "redacted" in repr(sa)

    user = tmp_path / "user.json"
    user.write_text(json.dumps({"type": "authorized_user", "client_id": "cid.apps.example",
                                "client_secret": SECRET_CLIENT,
                                "refresh_token": REFRESH_CANARY}))
    creds = from_file(user)
    assert_no_canary(repr(creds) + str(creds), "authorized-user credentials",
                     REFRESH_CANARY, SECRET_CLIENT)


async def test_refresh_failure_message_has_no_secret():
    import google.auth.exceptions

    class Refusing:
        valid = False
        token = None

        def refresh(self, request):
            raise google.auth.exceptions.RefreshError(
                f"invalid_grant: Token has been expired or revoked ({REFRESH_CANARY})",
                {"error": "invalid_grant", "refresh_token": REFRESH_CANARY})

    creds = GoogleCredentials(Refusing(), "user:cid", "a Google account (file user.json)")
    with pytest.raises(gsckit.CredentialRefused, match="invalid_grant") as info:
        await creds.token()
    assert_no_canary(everything_about(info.value), "a refresh error", REFRESH_CANARY)


# --- every file and output of the auth commands ---------------------------------------------

ACCESS_CANARY = "ya29.CANARYACCESS-"
REFRESH_PREFIX = "1//CANARYREFRESH-"


def test_auth_commands_write_and_print_no_secret(thread_sim, tmp_path, capsys, monkeypatch,
                                                 rsa_keys):
    """login, sites, doctor, backfill (key file, then the login file), a revoked credential and
    status: every output, the audit log, the database and its WAL hold no token, key or client
    secret; the login file holds only what it must (the refresh token, mode 0600) and no
    access token."""
    import webbrowser

    from .oauth_helpers import CLIENT_ID, CLIENT_SECRET, client_secrets, service_account
    from .test_auth import FollowingBrowser

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    sim = thread_sim(rows_per_day=300, faults=Faults(seed=4, rates={"500": 0.2}))
    oauth = sim.sim.oauth
    oauth.token_prefix, oauth.refresh_prefix = ACCESS_CANARY, REFRESH_PREFIX
    key_lines = [line for line in rsa_keys[0].splitlines() if "PRIVATE KEY" not in line]
    secrets_file = client_secrets(sim.sim, tmp_path)
    oauth.add_user("alice", CLIENT_ID, {SITE: "siteOwner"})
    key = service_account(sim.sim, rsa_keys, tmp_path, "bot", {SITE: "siteFullUser"})
    outputs = []

    browser = FollowingBrowser()
    webbrowser.register(browser.name, None, browser)
    login_file = gsckit.login(secrets_file, browser=browser.name, timeout_s=30)
    for thread in browser.threads:
        thread.join(20)
    outputs.append(capsys.readouterr())
    days = [str(d) for d in day_range(20, 3)]
    db, audit = tmp_path / "gsc.duckdb", tmp_path / "audit.jsonl"
    common = ["--base-url", sim.base_url]
    run_args = ["--start", days[0], "--end", days[-1], "--db", db, "--audit-log", audit]
    for argv in (["sites", *common, "--credentials", key],
                 ["sites", *common],  # the login file
                 ["doctor", SITE, "https://example.com/", *common, "--credentials", key],
                 ["doctor", SITE, *common, "--json"],
                 ["backfill", SITE, *run_args, *common, "--credentials", key],
                 ["backfill", SITE, *run_args, *common, "--force", "--json"],
                 ["status", "--db", db]):
        code, text = cli(capsys, *argv)
        assert code in (0, 1), text
        outputs.append(text)
    oauth.revoke(f"sa:{sa_email('bot')}")
    for argv in (["backfill", SITE, *run_args, *common, "--credentials", key, "--force"],
                 ["backfill", SITE, *run_args, *common, "--credentials", key, "--force",
                  "--no-preflight"],
                 ["doctor", SITE, *common, "--credentials", key]):
        code, text = cli(capsys, *argv)
        assert code == 1 and "invalid_grant" in text
        outputs.append(text)

    secrets = (ACCESS_CANARY, REFRESH_PREFIX, CLIENT_SECRET, *key_lines)

    def clean(data: bytes | str, where: str) -> None:
        blob = data.encode() if isinstance(data, str) else data
        for secret in secrets:
            assert secret.encode() not in blob, f"a secret leaked into {where}"

    for out in outputs:
        clean(str(out), "command output")
    written = [p for p in tmp_path.rglob("*") if p.is_file()
               and p not in (key, secrets_file, login_file)]
    assert audit in written and db in written
    for path in written:
        clean(path.read_bytes(), str(path))
    # the login file: the refresh token it exists to keep, owner-only, and no access token
    kept = login_file.read_text()
    assert login_file.stat().st_mode & 0o777 == 0o600 and REFRESH_PREFIX in kept
    assert ACCESS_CANARY not in kept and not any(line in kept for line in key_lines)
    assert oauth.token_requests >= 4  # tokens really were issued, so the scan had prey
