"""Readers and the writer share a file: in one process, across processes, read-only, and odd
files refused in one line by every command.

Cross-process tests run real ``python`` processes against a simulator thread: a CLI backfill with
a reader polling beside it, a reader holding the file while a backfill starts, a writer holding it
while readers and a second writer arrive, two readers at once.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

import gsckit
from gsckit import ConfigError, DatabaseLocked, StoreError
from gsckit.store import LEDGER, TABLE, Store

from .conftest import SITE, TOKEN, assert_matches_truth, day_range, days_ago, duplicate_keys, run
from .test_cli import cli, one_error_line
from .test_store import commit, page, piece

HELPER = r"""
import json, sys, time
import gsckit
mode, db = sys.argv[1], sys.argv[2]
if mode == "poll":            # read the ledger until every day is there; time each read
    total, seen = int(sys.argv[3]), []
    while not __import__("os").path.exists(db):
        time.sleep(0.02)
    deadline = time.monotonic() + 60
    database = gsckit.open(db, wait=30)
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        days = database.days().height
        seen.append([days, time.monotonic() - t0])
        if days >= total:
            break
        time.sleep(0.05)
    print(json.dumps(seen))
elif mode == "hold":          # one slow read
    database = gsckit.open(db)
    def slow(con):
        print(json.dumps({"start": time.time()}), flush=True)
        time.sleep(float(sys.argv[3]))
        return con.execute("SELECT count(*) FROM gsckit_ledger").fetchall()[0][0]
    days = database._read(slow)
    print(json.dumps({"end": time.time(), "days": days}), flush=True)
elif mode == "writer":        # a writer that never commits, so it never lends the file
    from gsckit.store import Store
    store = Store(db)
    print("ready", flush=True)
    sys.stdin.read()
    store.close()
"""
FOREIGN_HOLDER = ("import duckdb, sys\n"
                  "con = duckdb.connect(sys.argv[1])\n"
                  "print('ready', flush=True)\n"
                  "sys.stdin.read()\n")


def helper(*args: object, stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", HELPER, *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)


def backfill_proc(sim, db: Path, days, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "gsckit", "backfill", SITE, "--start", str(days[0]), "--end",
            str(days[-1]), "--db", str(db), "--base-url", sim.base_url, "--token", TOKEN,
            "--no-progress", "--json", *extra]
    return subprocess.Popen(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# --- across processes -----------------------------------------------------------------------

def test_a_reader_process_reads_committed_days_while_a_cli_backfill_runs(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=2_000, latency_s=0.12)
    days = day_range(40, 24)
    db = tmp_path / "gsc.duckdb"
    writer = backfill_proc(sim, db, days, "--concurrency", "1")
    reader = helper("poll", db, len(days))
    code, out, err = finish(writer)
    assert code == 0, err
    rcode, rout, rerr = finish(reader)
    assert rcode == 0, rerr
    seen = json.loads(rout)
    counts = [n for n, _ in seen]
    assert counts == sorted(counts), "a reader never sees a committed day disappear"
    assert any(0 < n < len(days) for n in counts), f"no read landed mid-run: {counts}"
    waits = [s for _, s in seen]
    print(f"\nreader wait during a backfill: {len(waits)} reads, median "
          f"{statistics.median(waits) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms")
    assert max(waits) < 30
    assert json.loads(out.splitlines()[-1])["done"] == len(days)
    assert not db.with_name(db.name + ".wal").exists(), "the closing checkpoint folds the WAL in"
    sim.do(assert_matches_truth, db, sim.sim, days)
    assert duplicate_keys(db) == 0


def test_a_reader_holding_the_file_delays_a_backfill_but_never_fails_it(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=300)
    days = day_range(30, 3)
    db = tmp_path / "gsc.duckdb"
    Store(db).close()  # an initialised, empty gsckit file
    reader = helper("hold", db, 1.0)
    started = json.loads(reader.stdout.readline())["start"]
    writer = backfill_proc(sim, db, days, "--wait", "0.2")
    code, _out, err = finish(writer)
    finished = time.time()
    rcode, rout, rerr = finish(reader)
    assert rcode == 0, rerr
    assert json.loads(rout)["days"] == 0, "the reader saw the file as it was when it started"
    assert code == 0, err
    assert finished - started >= 1.0, "the backfill waited for the reader to finish"
    sim.do(assert_matches_truth, db, sim.sim, days)


def test_two_reader_processes_read_at_the_same_time(tmp_path):
    db = tmp_path / "gsc.duckdb"
    Store(db).close()
    first, second = helper("hold", db, 0.6), helper("hold", db, 0.6)
    spans = []
    for proc in (first, second):
        code, out, err = finish(proc)
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        spans.append((lines[0]["start"], lines[1]["end"]))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the reads did not overlap: {spans}"


def test_a_writer_holding_the_file_makes_readers_busy_after_the_wait_and_a_second_writer_fail_fast(
        thread_sim, tmp_path, capsys):
    sim = thread_sim(rows_per_day=10)
    db = tmp_path / "gsc.duckdb"
    holder = helper("writer", db, stdin=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        code, out, err = cli(capsys, "status", "--db", db, "--wait", "0.4")
        waited = time.monotonic() - t0
        line = one_error_line(err)
        assert code == 75 and out == ""
        assert "busy" in line and f"a gsckit backfill (PID {holder.pid}" in line, line
        assert waited >= 0.4
        code, out, err = cli(capsys, "backfill", SITE, "--start", str(day_range(20, 1)[0]),
                             "--end", str(day_range(20, 1)[0]), "--db", db, "--dry-run",
                             "--wait", "0.2")
        assert code == 75 and f"PID {holder.pid}" in one_error_line(err)
        with pytest.raises(DatabaseLocked, match=f"PID {holder.pid}"):
            gsckit.open(db, wait=0.2).days()
        t0 = time.monotonic()
        code, out, err = cli(capsys, "backfill", SITE, "--start", str(day_range(20, 1)[0]),
                             "--end", str(day_range(20, 1)[0]), "--db", db, "--base-url",
                             sim.base_url, "--token", TOKEN, "--no-progress", "--wait", "30")
        line = one_error_line(err)
        assert code == 75
        assert f"being written by a gsckit backfill (PID {holder.pid}" in line, line
        assert time.monotonic() - t0 < 10, "a second writer fails fast, without the wait"
        assert sim.stats()["requests"] == 0
    finally:
        holder.stdin.close()
        holder.wait(15)
        holder.stdout.close()
        holder.stderr.close()


def test_a_foreign_holder_is_named_as_what_it_is(tmp_path, capsys):
    db = tmp_path / "gsc.duckdb"
    Store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", FOREIGN_HOLDER, str(db)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        code, _out, err = cli(capsys, "status", "--db", db, "--wait", "0.3")
        line = one_error_line(err)
        assert code == 75
        assert "another process (" in line and f"PID {holder.pid})" in line, line
        assert "gsckit backfill" not in line
    finally:
        holder.stdin.close()
        holder.wait(15)
        holder.stdout.close()


# --- in one process -------------------------------------------------------------------------

async def test_reads_in_the_backfilling_process_see_committed_days_and_never_wait(make_sim, db):
    sim = await make_sim(rows_per_day=1_500, latency_s=0.05)
    days = day_range(40, 16)
    task = asyncio.create_task(run(sim, db, days[0], days[-1], max_concurrency=2))
    counts, slowest = [], 0.0
    while not task.done():
        if db.exists():
            t0 = time.perf_counter()
            got = await asyncio.to_thread(lambda: gsckit.open(db, wait=0).sql(
                f"SELECT (SELECT count(*) FROM {TABLE}) AS n, (SELECT count(*) FROM {LEDGER}) "
                f"AS days, (SELECT coalesce(sum(rows), 0) FROM {LEDGER}) AS ledger_rows"))
            slowest = max(slowest, time.perf_counter() - t0)
            # every committed day is there with all its rows: a read never sees half a day
            assert got["n"][0] == got["ledger_rows"][0]
            counts.append(got["days"][0])
        await asyncio.sleep(0.03)
    report = task.result()
    assert report.ok and report.done == len(days)
    assert counts == sorted(counts)
    assert any(0 < n < len(days) for n in counts), counts
    assert slowest < 5, "wait=0: a read inside the writing process never waits for the file"
    assert_matches_truth(db, sim, days)


async def test_a_read_only_query_cannot_write_even_inside_the_writing_process(make_sim, db):
    sim = await make_sim(rows_per_day=200, latency_s=0.3)
    days = day_range(20, 2)
    await run(sim, db, days[0], days[-1])
    more = day_range(18, 6)
    task = asyncio.create_task(run(sim, db, more[0], more[-1], max_concurrency=1))
    await asyncio.sleep(0.5)
    assert not task.done()
    with pytest.raises(StoreError, match="read-only"):
        await asyncio.to_thread(gsckit.open(db).sql, f"DELETE FROM {TABLE}")
    assert (await task).ok
    assert gsckit.open(db).days().height == 2 + 6


# --- read-only ------------------------------------------------------------------------------

@pytest.mark.parametrize("statement", [
    f"DELETE FROM {TABLE} WHERE date IS NOT NULL",
    "DELETE FROM gsckit_rows",
    f"UPDATE {LEDGER} SET rows = 0",
    f"DROP TABLE {LEDGER}",
    f"SELECT 1; DELETE FROM {TABLE}",
    f"COMMIT; DELETE FROM {TABLE}",
    "ATTACH ':memory:' AS other",
    "CHECKPOINT",
    "SET threads = 1",
], ids=["delete_view", "delete_rows", "update_ledger", "drop", "second_statement", "commit",
        "attach", "checkpoint", "set"])
def test_sql_refuses_anything_but_reading_and_changes_nothing(tmp_path, statement):
    db = tmp_path / "gsc.duckdb"
    with Store(db) as store:
        commit(store, piece(days_ago(10)), page(["a", "b"]))
    before = gsckit.open(db).frame()
    with pytest.raises(StoreError) as caught:
        gsckit.open(db).sql(statement)
    assert "\n" not in str(caught.value)
    after = gsckit.open(db).frame()
    assert after.equals(before)
    assert gsckit.open(db).days()["rows"].to_list() == [2]


# --- odd files ------------------------------------------------------------------------------

def _odd(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "odd.duckdb"
    if kind == "directory":
        path.mkdir()
    elif kind == "not_duckdb":
        path.write_text("date,clicks\n2026-01-01,3\n")
    elif kind == "foreign_duckdb":
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE sales (day DATE, amount INTEGER)")
            con.execute("INSERT INTO sales VALUES ('2026-01-01', 3)")
    return path


def _snapshot(path: Path) -> object:
    if path.is_dir():
        return sorted(p.name for p in path.iterdir())
    if path.read_bytes()[:4] == b"date":
        return path.read_bytes()
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1"
                           ).fetchall(), con.execute("FROM sales").fetchall()


@pytest.mark.parametrize("kind", ["directory", "not_duckdb", "foreign_duckdb"])
def test_odd_database_files_get_one_line_and_exit_2_from_every_command(thread_sim, tmp_path,
                                                                       capsys, kind):
    sim = thread_sim(rows_per_day=10)
    path = _odd(kind, tmp_path)
    before = _snapshot(path)
    day = str(day_range(20, 1)[0])
    commands = {
        "backfill": ["backfill", SITE, "--start", day, "--end", day, "--db", path, "--base-url",
                     sim.base_url, "--token", TOKEN, "--no-progress"],
        "dry_run": ["backfill", SITE, "--start", day, "--end", day, "--db", path, "--dry-run"],
        "status": ["status", "--db", path],
    }
    lines = {}
    for name, argv in commands.items():
        code, out, err = cli(capsys, *argv)
        assert code == 2, (name, code, err)
        assert out == ""
        lines[name] = one_error_line(err).split(": ", 2)[-1]
    with pytest.raises(ConfigError) as caught:
        gsckit.open(path)
    lines["open"] = str(caught.value)
    assert len(set(lines.values())) == 1, f"different messages for one file: {lines}"
    assert sim.stats()["requests"] == 0
    assert _snapshot(path) == before, "an odd file was changed"


def test_an_empty_duckdb_file_reads_as_no_days_and_a_backfill_initialises_it(thread_sim,
                                                                            tmp_path, capsys):
    sim = thread_sim(rows_per_day=40)
    db = tmp_path / "gsc.duckdb"
    duckdb.connect(str(db)).close()
    code, out, err = cli(capsys, "status", "--db", db)
    assert code == 0 and "no complete days yet" in out, err
    assert gsckit.open(db).frame().height == 0
    days = day_range(20, 2)
    code, out, err = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[-1],
                         "--db", db, "--dry-run", "--json")
    assert code == 0 and json.loads(out)["todo"] == 2, err
    code, out, err = cli(capsys, "backfill", SITE, "--start", days[0], "--end", days[-1],
                         "--db", db, "--base-url", sim.base_url, "--token", TOKEN,
                         "--no-progress")
    assert code == 0, err
    assert gsckit.open(db).frame().height == 80


def test_wait_must_be_a_sane_number_of_seconds(tmp_path, capsys):
    db = tmp_path / "gsc.duckdb"
    Store(db).close()
    code, out, err = cli(capsys, "status", "--db", db, "--wait", "-1")
    assert code == 2 and out == "" and "--wait" in one_error_line(err)
    with pytest.raises(ConfigError, match="wait"):
        gsckit.open(db, wait=-1)
    code, _out, err = cli(capsys, "backfill", SITE, "--start", "2026-01-01", "--end",
                         "2026-01-01", "--db", db, "--wait", "-1", "--dry-run")
    assert code == 2 and "db_wait_s" in one_error_line(err)


def test_polars_frames_get_plain_numbers(tmp_path):
    db = tmp_path / "gsc.duckdb"
    with Store(db) as store:
        commit(store, piece(days_ago(10)), page(["a", "b", "c"], clicks=[5, 3, 1]))
    got = gsckit.open(db).sql(
        f"SELECT sum(clicks) AS clicks, sum(impressions) AS impressions, avg(position) AS pos, "
        f"sum(clicks) / sum(impressions) AS ctr, 1.25 AS literal, count(*) AS n, "
        f"sum(clicks)::HUGEINT * 1 AS huge FROM {TABLE}")
    assert got.schema == pl.Schema({"clicks": pl.Int64, "impressions": pl.Int64,
                                    "pos": pl.Float64, "ctr": pl.Float64,
                                    "literal": pl.Float64, "n": pl.Int64, "huge": pl.Int64})
    assert got.row(0) == (9, 9 * 10 + 15, 2.5, 9 / 105, 1.25, 3, 9)
    beyond = gsckit.open(db).sql("SELECT (2::HUGEINT ** 70)::HUGEINT AS big")
    assert beyond.schema["big"] == pl.Float64 and beyond["big"][0] == 2.0 ** 70


def test_the_pandas_extra_converts_frames(tmp_path):
    """``pip install gsckit[pandas]`` brings what ``to_pandas()`` needs (runs where installed)."""
    import tomllib

    extra = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["pandas"]
    assert {req.split(">")[0] for req in extra} == {"pandas", "pyarrow"}
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    db = tmp_path / "gsc.duckdb"
    with Store(db) as store:
        commit(store, piece(days_ago(10)), page(["a", "b"]))
    frame = gsckit.open(db).frame().to_pandas()
    assert list(frame["query"]) == ["a", "b"] and frame["clicks"].dtype == "int64"
