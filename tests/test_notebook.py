"""The quickstart notebook runs top to bottom in a real kernel, with widgets and no secrets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.notebook
@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    rendered = json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                        for o in c.get("outputs", []))
    assert "complete: 30 days committed" in outputs
    assert "requests sent: 0, days skipped: 30" in outputs
    assert "(900000, 17)" in outputs  # 30 days x 30,000 rows, 17 columns
    widgets = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    names = {w["model_name"] for w in widgets.values()}
    assert {"FloatProgressModel", "HTMLModel", "HBoxModel"} <= names
    gauges = [w["state"] for w in widgets.values() if w["model_name"] == "FloatProgressModel"
              and w["state"].get("description") == "QPM"]
    assert gauges and gauges[0]["value"] > 0, "the QPM gauge never moved"
    assert "notebook-demo-token" not in rendered, "a token reached the notebook's outputs"
    assert (tmp_path / "quickstart.duckdb").exists()
