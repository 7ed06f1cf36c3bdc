"""The example pipeline runs as documented against the simulator, and re-runs as a no-op."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "daily_pipeline.py"


def test_daily_pipeline_completes_then_resumes_as_a_no_op(thread_sim, tmp_path):
    sim = thread_sim(rows_per_day=2_000)
    cmd = [sys.executable, str(EXAMPLE), "sc-domain:a.example", "https://shop.example.com/",
           "--days", "7", "--db", str(tmp_path / "gsc.duckdb"),
           "--audit-log", str(tmp_path / "audit.jsonl"), "--base-url", sim.base_url]
    env = {**os.environ, "GSC_ACCESS_TOKEN": "pipeline-token"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "complete: 14 days committed" in first.stdout
    assert sim.stats()["requests"] == 14
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0 and "0 days committed, 14 already done" in second.stdout
    assert sim.stats()["requests"] == 14
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events.count("run_start") == 2 and events.count("slice_done") == 14


def test_daily_pipeline_bad_site_exits_2(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLE), "example.com", "--token", "x",
                          "--db", str(tmp_path / "x.duckdb")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "not a Search Console property" in out.stderr
    assert not (tmp_path / "x.duckdb").exists()
