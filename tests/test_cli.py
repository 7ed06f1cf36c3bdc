"""The ``gsckit`` command line: bad input, the lock, exit codes, status, help and the demo.

Most calls go through ``gsckit.cli.main`` in-process (it runs its own event loop, so the tests are
sync and the simulator runs in a thread); a few run ``python -m gsckit`` for true exit codes.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest

import gsckit
import gsckit.cli
from gsckit import EngineConfig, RetryPolicy
from gsckit.cli import main
from gsckit.sim import Faults

from .conftest import SITE, TOKEN, assert_matches_truth, day_range, days_ago

SUMMARY_KEYS = {"requests", "retries", "rows", "slices", "wall_s", "peak_qpm", "halted"}
BACKFILL_FLAGS = ("--start", "--end", "--dimensions", "--search-type", "--data-state", "--db",
                  "--concurrency", "--qpm", "--qpm-window-s", "--base-url", "--token",
                  "--audit-log", "--json", "--no-progress")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``gsckit ARGV`` in-process: (exit status, stdout, stderr). argparse exits via SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def gsckit_proc(*argv: str, token: str | None = TOKEN, timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
    """``python -m gsckit ARGV`` in a real process (true exit status)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GSC_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS")}
    if token is not None:
        env["GSC_ACCESS_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "gsckit", *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got {lines!r}"
    assert lines[0].startswith("gsckit: error:"), lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch):
    monkeypatch.delenv("GSC_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


# --- bad input ------------------------------------------------------------------------------

DAY = str(days_ago(10))
DROP = object()

# id -> (option changes: flag -> value, or DROP to leave it out; extra args; words the one
#        error line must contain). "{tmp}" in a value is the test's tmp_path.
BAD_INPUT = {
    "malformed_start": ({"--start": DAY.replace("-", "/")}, [], "not a valid YYYY-MM-DD"),
    "impossible_start": ({"--start": f"{days_ago(10).year}-02-30"}, [],
                         "not a valid YYYY-MM-DD"),
    "end_before_start": ({"--start": str(days_ago(5)), "--end": str(days_ago(10))}, [],
                         "is after end"),
    "end_in_future": ({"--end": str(days_ago(-2))}, [], "in the future"),
    "start_older_than_16_months": ({"--start": str(days_ago(600))}, [], "16 months"),
    "site_without_trailing_slash": ({"site": "https://www.example.com"}, [], "end with '/'"),
    "percent_encoded_site": ({"site": "sc-domain%3Aexample.com"}, [], "percent-encoded"),
    "site_not_a_property": ({"site": "example.com"}, [], "not a search console property"),
    "unknown_dimension": ({"--dimensions": "date,keyword"}, [], "unknown dimension"),
    "duplicate_dimension": ({"--dimensions": "query,page,query"}, [], "listed twice"),
    "search_appearance_with_other": ({"--dimensions": "searchAppearance,query"}, [],
                                     "searchappearance"),
    "hour_without_hourly_all": ({"--dimensions": "date,hour"}, [], "hourly_all"),
    "unknown_search_type": ({"--search-type": "web,shopping"}, [], "unknown search type"),
    "unknown_data_state": ({"--data-state": "fresh"}, [], "data_state"),
    "bad_filter_operator": ({}, ["--filter", "query startsWith shoes"], "filter operator"),
    "invalid_regex_filter": ({}, ["--filter", "page includingRegex ([a-z"], "regex"),
    "filter_without_value": ({}, ["--filter", "query contains"], "dimension operator"),
    "base_url_not_google": ({"--base-url": "https://example.org/"}, [], "refused"),
    "empty_token": ({"--token": ""}, [], "empty"),
    "token_with_space": ({"--token": "two words"}, [], "spaces"),
    "no_credentials": ({"--token": DROP}, [], "no credentials"),
    "credentials_file_missing": ({"--token": DROP, "--credentials": "{tmp}/missing.json"}, [],
                                 "does not exist"),
    "credentials_not_json": ({"--token": DROP, "--credentials": "{tmp}/notjson.json"}, [],
                             "not readable json"),
    "credentials_wrong_type": ({"--token": DROP, "--credentials": "{tmp}/wrongtype.json"}, [],
                               "has type"),
    "concurrency_zero": ({"--concurrency": "0"}, [], "max_concurrency"),
    "qpm_zero": ({"--qpm": "0"}, [], "qpm"),
    "qpm_window_zero": ({"--qpm-window-s": "0"}, [], "qpm_window_s"),
    "db_folder_missing": ({"--db": "{tmp}/no-such-folder/gsc.duckdb"}, [], "does not exist"),
    "db_is_a_directory": ({"--db": "{tmp}"}, [], "directory"),
    "audit_log_is_a_directory": ({"--audit-log": "{tmp}/auditdir"}, [], "audit"),
    "audit_log_folder_missing": ({"--audit-log": "{tmp}/no-such-folder/audit.jsonl"}, [],
                                 "does not exist"),
    "unknown_flag": ({}, ["--turbo"], "unrecognized arguments"),
    "missing_start": ({"--start": DROP}, [], "--start"),
    "concurrency_not_a_number": ({"--concurrency": "many"}, [], "invalid int"),
}


def backfill_argv(tmp: Path, base_url: str, changes: dict, extra: list[str]) -> list[str]:
    opts = {"site": SITE, "--start": DAY, "--end": DAY, "--db": str(tmp / "gsc.duckdb"),
            "--audit-log": str(tmp / "audit.jsonl"), "--base-url": base_url, "--token": TOKEN}
    opts.update(changes)
    argv = ["backfill", opts.pop("site")]
    for flag, value in opts.items():
        if value is not DROP:
            argv += [flag, value.replace("{tmp}", str(tmp))]
    return [*argv, "--no-progress", *extra]


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_nothing_sent_nothing_written(thread_sim, tmp_path,
                                                                   capsys, case):
    changes, extra, words = BAD_INPUT[case]
    (tmp_path / "notjson.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "wrongtype.json").write_text(json.dumps({"type": "external_account"}))
    (tmp_path / "auditdir").mkdir()
    sim = thread_sim(rows_per_day=10)
    code, out, err = cli(capsys, *backfill_argv(tmp_path, sim.base_url, changes, extra))
    line = one_error_line(err)
    assert code == 2, (code, line)
    assert words.lower() in line.lower(), line
    assert out == ""
    assert sim.stats()["requests"] == 0
    assert not (tmp_path / "gsc.duckdb").exists(), "the database was created"
    assert not (tmp_path / "audit.jsonl").exists(), "the audit log was created"
    assert not any((tmp_path / "auditdir").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auditdir", "notjson.json",
                                                          "wrongtype.json"]


@pytest.mark.parametrize("argv, words", [
    (["backfill", "https://www.example.com", "--start", DAY, "--end", DAY], "end with '/'"),
    (["backfill", SITE, "--end", DAY], "--start"),
    (["status", "--db", "{tmp}/missing.duckdb"], "does not exist"),
], ids=["config_error", "argparse_error", "status_missing_db"])
def test_bad_input_exit_status_of_a_real_process_is_2(tmp_path, argv, words):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "backfill":
        argv += ["--db", str(tmp_path / "gsc.duckdb"), "--base-url", "http://127.0.0.1:9/"]
    proc = gsckit_proc(*argv)
    assert proc.returncode == 2, proc.stderr
    assert words in one_error_line(proc.stderr)
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


HOLDER = ("import duckdb, sys\n"
          "con = duckdb.connect(sys.argv[1])\n"
          "print('ready', flush=True)\n"
          "sys.stdin.read()\n")


def test_locked_database_names_the_holder_and_sends_nothing(thread_sim, tmp_path, capsys):
    db = tmp_path / "gsc.duckdb"
    audit = tmp_path / "audit.jsonl"
    sim = thread_sim(rows_per_day=10)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        code, out, err = cli(capsys, "backfill", SITE, "--start", DAY, "--end", DAY, "--db", db,
                             "--audit-log", audit, "--base-url", sim.base_url, "--token", TOKEN,
                             "--no-progress", "--wait", "0.3")
        line = one_error_line(err)
        assert code == 75  # EX_TEMPFAIL: contention is temporary, not bad input
        assert "busy" in line and f"PID {holder.pid}" in line, line
        assert out == ""
        assert sim.stats()["requests"] == 0
        assert not audit.exists()
    finally:
        holder.stdin.close()
        holder.wait(15)
        holder.stdout.close()
    with duckdb.connect(str(db)) as con:
        tables = con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0]
    assert tables == 0, "gsckit wrote to a database it could not lock"


# --- runs -----------------------------------------------------------------------------------

def test_backfill_in_a_real_process_prints_a_json_summary(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=3_000)
    days = day_range(15, 3)
    db = tmp_path / "gsc.duckdb"
    proc = gsckit_proc("backfill", SITE, "--start", days[0], "--end", days[-1], "--db", db,
                       "--base-url", sim.base_url, "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert set(summary) >= SUMMARY_KEYS
    assert summary["halted"] is False
    assert summary["slices"] == 3 and summary["retries"] == 0
    assert summary["requests"] == sim.stats()["requests"] == 3
    truth_rows = sim.do(assert_matches_truth, db, sim.sim, days)
    assert summary["rows"] == truth_rows == 9_000
    assert isinstance(summary["wall_s"], float) and summary["peak_qpm"] >= 1


def test_halted_run_exits_1_names_the_site_and_resumes(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=10, latency_s=0.05,
                     faults=Faults(script={3: "403_permission"}))
    days = day_range(30, 8)
    db = tmp_path / "gsc.duckdb"
    argv = ("backfill", SITE, "--start", days[0], "--end", days[-1], "--db", db,
            "--base-url", sim.base_url, "--concurrency", "2", "--json", "--no-progress")
    proc = gsckit_proc(*argv)
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.splitlines()
    assert SITE in line and "re-run" in line and "403" in line, line
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["halted"] is True and summary["done"] < 8
    assert gsckit.open(db).days().height == summary["done"]
    sim.do(sim.sim.configure, faults=Faults())
    again = gsckit_proc(*argv)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout.splitlines()[-1])
    assert resumed["skipped"] == summary["done"] and resumed["done"] == 8 - summary["done"]
    sim.do(assert_matches_truth, db, sim.sim, days)


def test_halted_run_in_process_without_json(thread_sim, tmp_path, capsys):
    sim = thread_sim(rows_per_day=10, latency_s=0.05,
                     faults=Faults(script={3: "403_permission"}))
    days = day_range(30, 8)
    code, _, err = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[-1],
                       "--db", tmp_path / "gsc.duckdb", "--base-url", sim.base_url,
                       "--token", TOKEN, "--concurrency", "2", "--no-progress")
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith("gsckit: backfill halted:")
    assert SITE in line and "re-run" in line


def test_incomplete_run_exits_1(thread_sim, tmp_path, capsys, monkeypatch):
    # every attempt fails with 503: the day fails (resumable) but the run is not halted
    fast = RetryPolicy(max_attempts=2, base_s=0.01, max_backoff_s=0.02)
    monkeypatch.setattr(gsckit.cli, "EngineConfig", functools.partial(EngineConfig, retry=fast))
    sim = thread_sim(rows_per_day=10, faults=Faults(rates={"503": 1.0}))
    [day] = day_range(20, 1)
    code, out, err = cli(capsys, "backfill", SITE, "--start", day, "--end", day, "--db",
                         tmp_path / "gsc.duckdb", "--base-url", sim.base_url, "--token", TOKEN,
                         "--json", "--no-progress")
    assert code == 1, err
    summary = json.loads(out.splitlines()[-1])
    assert (summary["failed"], summary["done"], summary["halted"]) == (1, 0, False)
    assert sim.stats()["requests"] == 2


def test_status_lists_streams_and_day_counts(thread_sim, tmp_path, capsys):
    sim = thread_sim(rows_per_day=50)
    days = day_range(12, 3)
    db = tmp_path / "gsc.duckdb"
    code, out, err = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[-1],
                         "--search-type", "web,image", "--db", db, "--base-url", sim.base_url,
                         "--token", TOKEN, "--no-progress")
    assert code == 0, err
    assert out.startswith("complete: 6 days committed")
    code, out, err = cli(capsys, "status", "--db", db)
    assert code == 0 and err == ""
    assert SITE in out and "web" in out and "image" in out and "date,query,page" in out
    assert str(days[0]) in out and str(days[-1]) in out
    header = next(line for line in out.splitlines() if "site" in line and "search_type" in line)
    columns = [c.strip() for c in header.strip("│ ").split("┆")]
    # the day count is what status is for: it must not be elided by polars' column limit
    assert "days" in columns and "data_state" in columns, f"status hides columns: {columns}"
    cells = [[c.strip() for c in line.strip("│ ").split("┆")] for line in out.splitlines()
             if line.startswith("│ " + SITE)]
    assert sorted((c[columns.index("search_type")], c[columns.index("days")]) for c in cells
                  ) == [("image", "3"), ("web", "3")]
    code, out, err = cli(capsys, "status", "--db", db, "--json")
    assert code == 0 and err == ""
    streams = [json.loads(line) for line in out.splitlines()]
    assert sorted((s["site"], s["search_type"], s["days"]) for s in streams) == [
        (SITE, "image", 3), (SITE, "web", 3)]
    assert all(s["rows"] == 150 and s["first_day"] == str(days[0]) for s in streams)


def test_status_of_an_empty_or_missing_database(tmp_path, capsys):
    gsckit.store.Store(tmp_path / "empty.duckdb").close()
    code, out, err = cli(capsys, "status", "--db", tmp_path / "empty.duckdb")
    assert code == 0 and "no complete days yet" in out
    code, out, err = cli(capsys, "status", "--db", tmp_path / "empty.duckdb", "--json")
    assert code == 0 and out == ""
    code, out, err = cli(capsys, "status", "--db", tmp_path / "missing.duckdb")
    assert code == 2 and out == ""
    assert "does not exist" in one_error_line(err)
    assert not (tmp_path / "missing.duckdb").exists()


# --- help and demo --------------------------------------------------------------------------

@pytest.mark.parametrize("command, words", [
    ("backfill", "commit each day atomically"),
    ("status", "complete days per stream"),
    ("sim", "fake Search Analytics API"),
    ("demo", "top queries"),
])
def test_every_subcommand_has_help(capsys, command, words):
    code, out, err = cli(capsys, command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: gsckit {command}")
    assert words in " ".join(out.split())


def test_top_level_help_lists_every_subcommand(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for command in ("backfill", "status", "sim", "demo"):
        assert command in out
    code, _, err = cli(capsys)
    assert code == 2 and one_error_line(err)


def test_backfill_help_names_every_flag(capsys):
    code, out, _ = cli(capsys, "backfill", "--help")
    assert code == 0
    missing = [flag for flag in BACKFILL_FLAGS if f"{flag} " not in out and f"{flag}\n" not in out]
    assert missing == []


def test_demo_runs_offline_and_prints_top_queries(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, out, err = cli(capsys, "demo", "--days", "5", "--latency-ms", "20", "--no-progress")
    assert code == 0, err
    assert "simulator on http://127.0.0.1:" in out
    assert "complete: 5 days committed" in out
    assert "Top queries in" in out
    table = out.split("Top queries in", 1)[1]
    for column in ("query", "clicks", "impressions", "ctr"):
        assert column in table
    [db] = tmp_path.glob("gsckit-demo-*/demo.duckdb")
    assert gsckit.open(db).days().height == 5
    code, out, err = cli(capsys, "demo", "--days", "0")
    assert code == 2 and "--days" in one_error_line(err)


def test_dry_run_needs_no_credentials_and_writes_nothing(thread_sim, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.delenv("GSC_ACCESS_TOKEN", raising=False)
    days = day_range(30, 5)
    db = tmp_path / "gsc.duckdb"
    code, out, err = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[-1],
                         "--db", db, "--dry-run", "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == {"slices": 5, "skipped": 0, "todo": 5, "requests": 5,
                               "min_seconds": 0.3, "sites": 1}
    assert not db.exists()
