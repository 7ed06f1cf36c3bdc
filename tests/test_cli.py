"""The ``gsckit`` command line: bad input, the lock, exit codes, status, help and the demo.

Most calls go through ``gsckit.cli.main`` in-process (it runs its own event loop, so the tests are
sync and the simulator runs in a thread); a few run ``python -m gsckit`` for true exit codes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

import gsckit
import gsckit.cli
from gsckit import EngineConfig, RetryPolicy
from gsckit.cli import EXIT_CODES, build_parser, main
from gsckit.planner import earliest_day, pacific_today
from gsckit.sim import Faults

from .conftest import SITE, TOKEN, assert_matches_truth, day_range, days_ago, duplicate_keys
from .test_resume import committed_slices, ledger_consistent

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
    "range_older_than_16_months": ({"--start": str(days_ago(600)), "--end": str(days_ago(550))},
                                   [], "16 months"),
    "hourly_range_older_than_10_days": ({"--start": str(days_ago(14)), "--end": str(days_ago(12)),
                                         "--data-state": "hourly_all", "--dimensions": "hour"},
                                        [], "hourly data"),
    "discover_with_query_dimension": ({"--search-type": "discover"}, [], "query dimension"),
    "googlenews_with_query_dimension": ({"--search-type": "googleNews",
                                         "--dimensions": "query"}, [], "query dimension"),
    "discover_with_query_filter": ({"--search-type": "discover", "--dimensions": "date,page"},
                                   ["--filter", "query contains shoes"], "query filter"),
    "web_and_googlenews_with_query": ({"--search-type": "web,googleNews"}, [], "on its own"),
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
    assert summary["requests"] == sim.stats()["requests"] == 3 + 1  # and the daily totals
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
    assert sim.stats()["requests"] == 2  # no totals are asked for a run that committed nothing


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
    assert {"days", "final_days", "fresh_days", "newest_final_day", "gaps"} <= set(columns), (
        f"status hides columns: {columns}")
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


# --- help -----------------------------------------------------------------------------------

def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


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


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_help_shows_every_default_and_the_exit_codes(capsys, command):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    flat = " ".join(out.split())
    parser = subcommands()[command]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.required:
            continue  # positionals, on/off flags and required options have no default
        shown = " ".join(formatter._expand_help(action).split())
        assert shown in flat, f"{action.option_strings[0]}: help not shown as expected"
        assert "default" in shown, f"{command} {action.option_strings[0]} hides its default"
        if action.default not in (None, []):
            assert str(action.default) in shown, (action.option_strings[0], shown)
    epilog = out.split("exit codes:", 1)[1].splitlines()[1:]
    codes = {int(line.split()[0]): " ".join(line.split()[1:]) for line in epilog}
    assert {0, 2} <= set(codes), codes
    assert all(EXIT_CODES[c] == text for c, text in codes.items())


def test_top_level_help_lists_every_subcommand_and_every_exit_code(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for command in ("backfill", "status", "sim", "demo"):
        assert command in out
    table = out.split("exit codes:", 1)[1]
    for status, meaning in {0: "success", 1: "incomplete", 2: "bad input", 75: "busy",
                            130: "Ctrl-C", 143: "SIGTERM"}.items():
        assert any(line.split()[:1] == [str(status)] and meaning in line
                   for line in table.splitlines()), (status, table)
    code, _, err = cli(capsys)
    assert code == 2 and one_error_line(err)


def test_backfill_help_names_every_flag(capsys):
    code, out, _ = cli(capsys, "backfill", "--help")
    assert code == 0
    missing = [flag for flag in BACKFILL_FLAGS if f"{flag} " not in out and f"{flag}\n" not in out]
    assert missing == []


# --- the newcomer's path ------------------------------------------------------------------------

VENV_GSCKIT = Path(sys.executable).parent / "gsckit"
FRESH_PATH = "/usr/bin:/bin"


def pasted_commands(out: str, header: str) -> list[str]:
    """The indented lines printed under ``header``: what a newcomer pastes."""
    after = out.split(header, 1)[1].splitlines()[1:]
    lines = []
    for line in after:
        if not line.startswith("  "):
            break
        lines.append(line.strip())
    return lines


def in_a_fresh_shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Paste ``line`` into a new login-less bash: no virtualenv, a bare PATH, no token."""
    env = {"PATH": FRESH_PATH, "HOME": str(cwd), "TMPDIR": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_demo_removes_its_temporary_database_and_its_commands_work_in_a_fresh_shell(
        tmp_path, capsys, monkeypatch):
    assert VENV_GSCKIT.is_file(), "the gsckit script is installed next to this Python"
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    # run as `.venv/bin/gsckit demo` run by make: the venv is not on the shell's PATH
    monkeypatch.setattr(sys, "argv", [str(VENV_GSCKIT)])
    monkeypatch.setenv("PATH", FRESH_PATH)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    code, out, err = cli(capsys, "demo", "--days", "3", "--latency-ms", "0", "--no-progress")
    assert code == 0, err
    assert "simulator on http://127.0.0.1:" in out
    assert "complete: 3 days committed" in out
    table = out.split("Top queries:", 1)[1]
    for column in ("query", "clicks", "impressions", "ctr"):
        assert column in table
    assert list(temp.iterdir()) == [], "the demo left its temporary database behind"

    lines = pasted_commands(out, "The temporary database was removed.")
    assert lines[0] == f"{VENV_GSCKIT} demo --days 3 --latency-ms 0 --db demo.duckdb"
    assert any(line.startswith(f"{VENV_GSCKIT} status") for line in lines)
    shell = tmp_path / "shell"
    shell.mkdir()
    results = [in_a_fresh_shell(line, shell) for line in lines]
    for line, result in zip(lines, results, strict=True):
        assert result.returncode == 0, (line, result.stderr)
        assert "command not found" not in result.stderr
    assert "complete: 3 days committed" in results[0].stdout
    kept = pasted_commands(results[0].stdout, "Explore it")
    assert kept[0] == f"{VENV_GSCKIT} status --db {shell / 'demo.duckdb'}"
    assert "sc-domain:demo.example" in results[1].stdout and "date,query,page" in results[1].stdout
    assert "shape:" in results[2].stdout
    assert gsckit.open(shell / "demo.duckdb").days().height == 3
    code, out, err = cli(capsys, "demo", "--days", "0")
    assert code == 2 and "--days" in one_error_line(err)


@pytest.mark.slow
def test_the_lines_gsckit_sim_prints_work_in_a_fresh_shell(tmp_path):
    env = {"PATH": FRESH_PATH, "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    server = subprocess.Popen([str(VENV_GSCKIT), "sim", "--port", "0", "--rows-per-day", "300"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = ""
        while "status --db" not in out:
            line = server.stdout.readline()
            assert line, f"the simulator stopped: {server.stderr.read()}"
            out += line
        assert out.startswith("gsckit simulator listening on http://127.0.0.1:")
        lines = pasted_commands(out, "Try it from another shell")
        dry_run, backfill, _ = lines[:3]
        assert backfill.startswith(f"{VENV_GSCKIT} backfill sc-domain:demo.example --start ")
        assert "--base-url http://127.0.0.1:" in backfill and "--token " in backfill
        assert dry_run == f"{backfill} --dry-run"
        results = [in_a_fresh_shell(line, tmp_path) for line in lines]
    finally:
        server.send_signal(signal.SIGTERM)
        _, server_err = server.communicate(timeout=30)
    assert server.returncode == 0, server_err
    for line, result in zip(lines, results, strict=True):
        assert result.returncode == 0, (line, result.stderr)
    assert "7 days planned over 1 site(s): 0 already complete, 7 to fetch" in results[0].stdout
    assert results[1].stdout.startswith("complete: 7 days committed (7 final)")
    # the simulator keeps Google's time: the sync adds today and the two days before, fresh
    assert results[2].stdout.startswith("complete: 3 days committed (3 fresh), 7 already done")
    assert "sc-domain:demo.example" in results[3].stdout
    assert gsckit.open(tmp_path / "sim.duckdb").days().height == 10


def test_sim_on_a_busy_port_is_one_line_exit_2(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = cli(capsys, "sim", "--port", port)
    line = one_error_line(err)
    assert code == 2 and out == ""
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


# --- stopping like a service --------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_cancels_like_ctrl_c_and_a_rerun_resumes_to_the_truth(thread_sim, tmp_path,
                                                                     capsys):
    sim = thread_sim(rows_per_day=2_000, latency_s=0.2)
    days = day_range(45, 30)
    db, audit = tmp_path / "gsc.duckdb", tmp_path / "audit.jsonl"
    argv = ["backfill", SITE, "--start", days[0], "--end", days[-1], "--db", db,
            "--base-url", sim.base_url, "--no-progress", "--json"]
    env = {**os.environ, "GSC_ACCESS_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gsckit", *map(str, argv), "--concurrency", "2",
         "--audit-log", str(audit)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 60
    while committed_slices(audit) < 3 and proc.poll() is None:
        assert time.monotonic() < deadline, "the backfill never got going"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert err.splitlines() == ["gsckit: terminated (SIGTERM); completed days are saved, "
                                "re-run to resume"]
    assert out == ""
    saved = ledger_consistent(db)
    assert 3 <= saved < len(days), "the run was stopped mid-way with its finished days saved"
    assert duplicate_keys(db) == 0

    sim.do(sim.sim.configure, latency_s=0.0)
    sim.do(sim.sim.reset_stats)
    code, out, err = cli(capsys, *argv, "--concurrency", "8", "--token", TOKEN)
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert (summary["skipped"], summary["done"]) == (saved, len(days) - saved)
    assert sim.stats()["requests"] == len(days) - saved + 1  # and the daily totals
    assert ledger_consistent(db) == len(days) and duplicate_keys(db) == 0
    sim.do(assert_matches_truth, db, sim.sim, days)


def test_dry_run_needs_no_credentials_and_writes_nothing(thread_sim, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.delenv("GSC_ACCESS_TOKEN", raising=False)
    days = day_range(30, 5)
    db = tmp_path / "gsc.duckdb"
    code, out, err = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[-1],
                         "--db", db, "--dry-run", "--json")
    assert code == 0 and err == ""
    plan = json.loads(out)
    assert {key: plan[key] for key in ("slices", "skipped", "todo", "requests", "min_seconds",
                                       "sites", "missing", "probes", "estimated")} == {
        "slices": 5, "skipped": 0, "todo": 5, "requests": 6, "min_seconds": 0.4, "sites": 1,
        "missing": 5, "probes": 0, "estimated": False}
    assert plan["streams"] == [{"site": SITE, "search_type": "web", "not_final_yet": [],
                                "missing": [f"{days[0]}..{days[-1]}"]}]
    assert not db.exists()


def test_a_start_past_the_horizon_moves_with_one_warning_line(thread_sim, tmp_path, capsys):
    oldest = earliest_day(pacific_today())
    start, end = oldest - timedelta(days=30), oldest + timedelta(days=2)
    warning = (f"gsckit: warning: start {start} is older than Search Console's 16 months of "
               f"data; starting at the earliest day, {oldest}")
    db = tmp_path / "gsc.duckdb"
    code, out, err = cli(capsys, "backfill", SITE, "--start", start, "--end", end, "--db", db,
                         "--dry-run", "--json")
    assert (code, err.splitlines()) == (0, [warning])
    assert json.loads(out)["todo"] == 3
    sim = thread_sim(rows_per_day=20)
    code, out, err = cli(capsys, "backfill", SITE, "--start", start, "--end", end, "--db", db,
                         "--base-url", sim.base_url, "--token", TOKEN, "--no-progress")
    assert (code, err.splitlines()) == (0, [warning])
    assert out.startswith("complete: 3 days committed")
    assert sim.stats()["requests"] == 3 + 1  # and the daily totals
    sim.do(assert_matches_truth, db, sim.sim, [oldest + timedelta(days=i) for i in range(3)])


def test_a_reader_that_stops_reading_gets_no_traceback(thread_sim, tmp_path):
    # `gsckit completeness --db D | head -1`: the pipe is closed before gsckit writes
    sim = thread_sim(rows_per_day=50)
    days = day_range(40, 30)
    db = tmp_path / "gsc.duckdb"
    assert gsckit_proc("backfill", SITE, "--start", days[0], "--end", days[-1], "--db", db,
                       "--base-url", sim.base_url, "--no-progress").returncode == 0
    with subprocess.Popen([sys.executable, "-m", "gsckit", "completeness", "--db", str(db)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 0
    assert err == ""
