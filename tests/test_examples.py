"""The example pipeline runs as documented against the simulator, and re-runs as a no-op."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, time
from pathlib import Path

from .conftest import days_ago

EXAMPLE = Path(__file__).parent.parent / "examples" / "daily_pipeline.py"


def test_daily_pipeline_syncs_then_fetches_only_fresh_days(thread_sim, tmp_path):
    # Google's timing, the simulated day a day behind ours: 3 fresh days, the rest final
    sim = thread_sim(rows_per_day=2_000, all_final=False,
                     now=datetime.combine(days_ago(1), time(12)))
    cmd = [sys.executable, str(EXAMPLE), "sc-domain:a.example", "https://shop.example.com/",
           "--days", "8", "--db", str(tmp_path / "gsc.duckdb"),
           "--audit-log", str(tmp_path / "audit.jsonl"), "--base-url", sim.base_url]
    env = {**os.environ, "GSC_ACCESS_TOKEN": "pipeline-token"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    # 7 days with data per property (the newest is the simulated today), 2 probes, 2 requests
    # for the daily totals
    assert "complete: 14 days committed (8 final; 6 fresh)" in first.stdout, first.stdout
    assert sim.stats()["requests"] == 14 + 2 + 2
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "complete: 6 days committed (6 fresh), 8 already done" in second.stdout, (
        second.stdout)
    assert sim.stats()["requests"] == 18 + 6 + 2 + 2, (
        "a second run asks only for the fresh days (and their probes and totals)")
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events].count("run_start") == 2
    states = [(e["state"], e["outcome"]) for e in events if e["event"] == "slice_done"]
    assert states.count(("fresh", "refreshed")) == 6 and states.count(("final", "new")) == 8


def test_daily_pipeline_bad_site_exits_2(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLE), "example.com", "--token", "x",
                          "--db", str(tmp_path / "x.duckdb")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "not a Search Console property" in out.stderr
    assert not (tmp_path / "x.duckdb").exists()
