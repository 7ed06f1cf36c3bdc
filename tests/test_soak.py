"""The reliability campaign (issue 5 §8), excluded from ``make test``; run it with ``make soak``.

Both tests run ``benchmarks/soak.py``'s campaigns at full size, print its figures, and assert
the end state: the table equal to the simulator's truth, no duplicate key, the ledger agreeing
with the rows, the file opening cleanly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import soak
from gsckit.sim import RATE_FAULTS


def _show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print("\n" + text, flush=True)


def _assert_end_state(end: soak.EndState) -> None:
    assert end.rows == end.truth_rows > 0
    assert end.equal_to_truth, "the table differs from the simulator's ground truth"
    assert end.duplicate_keys == 0
    assert end.ledger_entries == end.slices and end.ledger_disagreements == 0
    assert end.opens_cleanly


@pytest.mark.soak
def test_two_hundred_sigkills_of_one_cli_backfill_lose_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = soak.kill_campaign(tmp_path, kills=200, log=lambda line: _show(capsys, line))
    _show(capsys, soak.describe_kills(figures))
    assert figures.kills >= 200
    assert figures.final_exit_code == 0, "the last launch did not finish cleanly"
    _assert_end_state(figures.end)
    assert not figures.end.wal_left, "the clean finish left a WAL behind"
    # the moments spread over the run: while starting, while fetching and committing, closing
    phases = figures.kills_by_phase
    assert phases.get("starting", 0) >= 10 and phases.get("fetching and committing", 0) >= 100
    assert phases.get("closing", 0) >= 1
    assert figures.killed_with_work_left >= 150
    # a launch re-fetches at most the days held in memory at the last kill (the page bound,
    # 16 one-page days), and those of the kill before when the launch between got no further
    assert figures.max_refetched_in_one_launch <= 32
    # every day was answered in full once plus once per re-fetch (the simulator's request log)
    assert figures.slices_fetched - figures.slices_refetched == figures.days


@pytest.mark.soak
def test_ten_thousand_requests_with_every_fault_kind_lose_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = soak.fault_campaign(tmp_path, requests=10_000,
                                  log=lambda line: _show(capsys, line))
    _show(capsys, soak.describe_faults(figures))
    assert figures.requests >= 10_000
    assert figures.fault_share >= 0.10
    assert set(figures.faults) == set(RATE_FAULTS) and {"502", "504"} <= set(figures.faults)
    assert min(figures.faults.values()) >= 100, figures.faults
    _assert_end_state(figures.end)
