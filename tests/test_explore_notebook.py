"""notebooks/explore.ipynb runs in a real kernel: a background job whose display updates while
other cells run, every analysis with a frame and a chart, the planted anomalies found, no token."""

from __future__ import annotations

import base64
import json
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gsckit.sim import SimConfig, Simulator

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "explore.ipynb"
ANALYSES = ("overview", "movers", "striking_distance", "cannibalization", "ctr_curve",
            "brand_split", "page_groups", "anomalies", "breakdown")


def outputs(cell: nbformat.NotebookNode, key: str) -> list[str]:
    """Every ``key`` (``text``, or a MIME type) among a code cell's outputs."""
    found = []
    for out in cell.get("outputs", []):
        value = out.get("text") if key == "text" else out.get("data", {}).get(key)
        if value:
            found.append(value)
    return found


@pytest.mark.notebook
@pytest.mark.slow
def test_explore_notebook_runs_a_background_job_and_every_analysis(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o.output_type != "error" for c in cells for o in c.get("outputs", []))
    rendered = json.dumps([c.get("outputs", []) for c in cells])
    assert "notebook-demo-token" not in rendered, "a token reached the notebook's outputs"
    assert "notebook-demo-token" not in json.dumps(nb.metadata)

    # the job: started in one cell, explored while it ran in the next, awaited in a third
    while_running = next(c for c in cells if "job.progress.done" in c.source)
    status, warning = outputs(while_running, "text")
    assert "CompletenessWarning" in warning and "of 140 days from 2026-06-15" in warning
    progress = re.search(r"running: (\d+) of 140 days committed", status)
    assert progress and 35 <= int(progress.group(1)) < 140, status
    assert re.search(r"shape: \(\d+, 7\)", outputs(while_running, "text/plain")[0])
    awaited = next(c for c in cells if "await job" in c.source)
    assert "complete: 140 days committed" in outputs(awaited, "text")[0]
    widgets = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [w["state"] for w in widgets.values() if w["model_name"] == "FloatProgressModel"]
    days = [b for b in bars if b.get("description") != "QPM"]
    assert [(b["value"], b["max"], b["bar_style"]) for b in days] == [(140, 140, "success")]
    assert next(b["value"] for b in bars if b.get("description") == "QPM") > 0
    labels = [w["state"].get("value", "") for w in widgets.values()
              if w["model_name"] == "HTMLModel"]
    assert any(label.startswith("complete: 140 days committed") for label in labels), labels
    started = next(c for c in cells if "gsckit.start(" in c.source)
    shown = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for o in started.outputs if "application/vnd.jupyter.widget-view+json"
             in o.get("data", {})]
    assert len(shown) == 3, "bar, gauge and status line belong to the cell that started the job"

    # every analysis: a frame with rows and a PNG chart
    for name in ANALYSES:
        cell = next(c for c in cells if f"ex.{name}(" in c.source and "ex.chart(" in c.source)
        shapes = [re.search(r"shape: \((\d+), (\d+)\)", text) for text in
                  outputs(cell, "text/plain")]
        assert any(s and int(s.group(1)) > 0 for s in shapes), f"{name}: no rows shown"
        [png] = outputs(cell, "image/png")
        assert base64.b64decode(png).startswith(b"\x89PNG"), f"{name}: no PNG chart"

    # the planted drops and spikes, from the simulator's own truth, are all flagged
    anomalies = next(c for c in cells if "ex.anomalies(" in c.source)
    text = outputs(anomalies, "text")[0]
    flagged = set(re.search(r"flagged: (.*)", text).group(1).split(", "))
    sim = Simulator(SimConfig(rows_per_day=3_000, now="2026-11-04T12:00"))
    end = date(2026, 11, 1)
    judged = end - timedelta(weeks=20) + timedelta(days=1, weeks=4)
    planted = {str(a.day) for a in sim.planted_anomalies("sc-domain:example.com",
                                                         start=judged, end=end)}
    assert len(planted) >= 3 and planted <= flagged, (planted, flagged)
    assert len(flagged - planted) <= 1, "more than one false alarm"
    assert (tmp_path / "explore.duckdb").exists()
