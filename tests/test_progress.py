"""The terminal progress bar: counts read the same way as they grow."""

from __future__ import annotations

import io
import re

from gsckit.events import Event
from gsckit.progress import Progress


def test_rows_retries_and_failures_are_formatted_stably_as_they_grow():
    out = io.StringIO()
    bar = Progress(notebook=False, file=out, mininterval=0)
    bar(Event("run_start", {"todo": 6, "qpm": 960}))
    rows = 0
    for added in (999, 1, 1_457_386, 41_614, 98_500_000):
        rows += added
        bar(Event("slice_done", {"rows": added}))
    for _ in range(3):
        bar(Event("retry", {}))
    bar(Event("slice_failed", {"error": "HTTP 503"}))
    bar(Event("run_end", {}))
    shown = re.findall(r"rows=([^,\]]+(?:,\d{3})*)", out.getvalue())
    assert list(dict.fromkeys(shown)) == ["999", "1,000", "1,458,386", "1,500,000",
                                          "100,000,000"], shown
    assert rows == 100_000_000
    assert "e+" not in out.getvalue()
    assert "retries=3" in out.getvalue() and "failed=1" in out.getvalue()
