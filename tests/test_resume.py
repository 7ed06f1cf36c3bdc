"""Crash safety: SIGKILL a real `gsckit backfill` process mid-run, then re-run to the truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import gsckit

from .conftest import SITE, TOKEN, assert_matches_truth, day_range, duplicate_keys

DAYS = day_range(60, 40)


def start_backfill(sim, db: Path, audit: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gsckit", "backfill", SITE, "--start", str(DAYS[0]),
           "--end", str(DAYS[-1]), "--db", str(db), "--base-url", sim.base_url,
           "--audit-log", str(audit), "--concurrency", "8", "--no-progress", "--json"]
    env = {**os.environ, "GSC_ACCESS_TOKEN": TOKEN}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def committed_slices(audit: Path) -> int:
    if not audit.exists():
        return 0
    return sum('"event":"slice_done"' in line for line in audit.read_text().splitlines())


def ledger_consistent(db: Path) -> int:
    """Rows exist exactly for ledger entries, with the ledger's row counts; returns entries."""
    with duckdb.connect(str(db)) as con:
        bad = con.execute(
            "SELECT count(*) FROM gsckit_ledger l FULL JOIN (SELECT site, search_type, "
            "dimensions, filters, date, count(*) AS n FROM search_analytics GROUP BY ALL) r "
            "USING (site, search_type, dimensions, filters, date) "
            "WHERE l.slice_key IS NULL OR coalesce(r.n, 0) <> l.rows").fetchone()[0]
        entries = con.execute("SELECT count(*) FROM gsckit_ledger").fetchone()[0]
    assert bad == 0, "ledger and rows disagree"
    return entries


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 7, 15])
def test_sigkill_mid_run_then_rerun_equals_ground_truth(thread_sim, tmp_path, kill_after):
    sim = thread_sim(rows_per_day=30_000, latency_s=0.15)
    db, audit = tmp_path / "gsc.duckdb", tmp_path / "audit.jsonl"
    proc = start_backfill(sim, db, audit)
    deadline = time.monotonic() + 60
    while committed_slices(audit) < kill_after and proc.poll() is None:
        assert time.monotonic() < deadline, "the backfill never got going"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    survived = ledger_consistent(db)
    assert survived >= kill_after
    assert duplicate_keys(db) == 0

    sim.do(sim.sim.reset_stats)
    rerun = start_backfill(sim, db, tmp_path / "audit2.jsonl")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["skipped"] == survived
    assert summary["done"] == len(DAYS) - survived, "only the uncommitted days are fetched"
    assert ledger_consistent(db) == len(DAYS)
    assert duplicate_keys(db) == 0
    assert sim.stats()["duplicates"] == 0
    sim.do(assert_matches_truth, db, sim.sim, DAYS)
    assert gsckit.open(db).days().height == len(DAYS)
