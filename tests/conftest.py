"""Shared fixtures: the simulator on 127.0.0.1 (in the test's loop or in a thread), and helpers
that compare the DuckDB table with the simulator's ground truth."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import gsckit
from gsckit.client import forget_shared_limiters
from gsckit.parse import DIMENSION_COLUMNS as DIM_COLUMNS
from gsckit.parse import METRICS as PARSE_METRICS
from gsckit.planner import pacific_today
from gsckit.sim import SimConfig, Simulator, SimulatorThread

from .oauth_helpers import rsa_keys  # noqa: F401 (the auth tests' session key fixture)

TOKEN = "test-token-Zq9xK"
SITE = "sc-domain:example.com"
METRICS = list(PARSE_METRICS)


def days_ago(n: int) -> date:
    return pacific_today() - timedelta(days=n)


def day_range(first_ago: int, days: int) -> list[date]:
    start = days_ago(first_ago)
    return [start + timedelta(days=i) for i in range(days)]


SIM_DEFAULTS: dict[str, Any] = {"all_final": True}
"""Settings every fixture simulator starts with unless the test passes its own: every day final,
so tests that are not about freshness see the same data whatever the hour (pass
``all_final=False`` for Google's timing, and ``now=...`` to pin the clock)."""


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> Iterator[None]:
    """Each test starts with fresh rate windows: backfills of one process share its limiter."""
    yield
    forget_shared_limiters()


@pytest.fixture
async def make_sim() -> AsyncIterator[Any]:
    """Factory: ``sim = await make_sim(rows_per_day=..., latency_s=...)``; closed after the test."""
    sims: list[Simulator] = []

    async def factory(**config: Any) -> Simulator:
        sim = Simulator(SimConfig(**{**SIM_DEFAULTS, **config}))
        await sim.start()
        sims.append(sim)
        return sim

    yield factory
    for sim in sims:
        await sim.close()


ThreadSim = SimulatorThread
"""A simulator in a thread, for CLI calls and subprocesses (``gsckit.sim.SimulatorThread``)."""


@pytest.fixture
def thread_sim() -> Iterator[Any]:
    """Factory for :class:`ThreadSim`; every one is closed after the test."""
    sims: list[ThreadSim] = []

    def factory(**config: Any) -> ThreadSim:
        sim = ThreadSim(SimConfig(**{**SIM_DEFAULTS, **config}))
        sims.append(sim)
        return sim

    yield factory
    for sim in sims:
        sim.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gsc.duckdb"


async def run(sim: Any, db: Path, start: date, end: date, **kw: Any) -> gsckit.Report:
    """``backfill_async`` against ``sim`` with test defaults (token, no progress bar)."""
    kw.setdefault("token", TOKEN)
    kw.setdefault("progress", False)
    site = kw.pop("site", SITE)
    return await gsckit.backfill_async(site, start, end, db=db, base_url=sim.base_url, **kw)


def stored(db: Path, site: str, day: date, dimensions: Sequence[str] = ("date", "query", "page"),
           search_type: str = "web") -> pl.DataFrame:
    """The committed rows of one slice, as the simulator's ground truth names its columns."""
    cols = [DIM_COLUMNS[d] for d in dimensions if d in DIM_COLUMNS] + METRICS
    with duckdb.connect(str(db)) as con:
        frame = pl.DataFrame(con.sql(
            f"SELECT {', '.join(cols)} FROM search_analytics WHERE site = ? AND date = ? "
            "AND search_type = ? AND dimensions = ?",
            params=[site, day, search_type, ",".join(dimensions)]))
    return frame.sort(cols)


def truth(sim: Simulator, site: str, day: date,
          dimensions: Sequence[str] = ("date", "query", "page"), search_type: str = "web",
          filters: Sequence[Any] = ()) -> pl.DataFrame:
    frame = sim.ground_truth(site, day, search_type=search_type, dimensions=dimensions,
                             filters=filters)
    return frame.sort(frame.columns)


def assert_matches_truth(db: Path, sim: Simulator, days: Sequence[date], site: str = SITE,
                         dimensions: Sequence[str] = ("date", "query", "page")) -> int:
    """Every day's committed rows equal the simulator's exposed rows, key by key; returns rows."""
    total = 0
    for day in days:
        want = truth(sim, site, day, dimensions)
        got = stored(db, site, day, dimensions)
        assert got.columns == want.columns, (got.columns, want.columns)
        assert got.height == want.height, f"{day}: {got.height} rows stored, {want.height} exposed"
        assert got.equals(want), f"{day}: stored rows differ from ground truth"
        total += got.height
    return total


def table_snapshot(db: Path) -> pl.DataFrame:
    """The whole table minus fetch times, sorted: for before/after comparisons."""
    with duckdb.connect(str(db)) as con:
        frame = pl.DataFrame(con.sql("SELECT * EXCLUDE (fetched_at) FROM search_analytics"))
    return frame.sort(frame.columns)


def duplicate_keys(db: Path) -> int:
    """Row keys that occur more than once (must always be 0)."""
    with duckdb.connect(str(db)) as con:
        return con.execute(
            "SELECT count(*) FROM (SELECT 1 FROM search_analytics GROUP BY site, search_type, "
            "dimensions, filters, date, hour, query, page, country, device, search_appearance "
            "HAVING count(*) > 1)").fetchone()[0]
