"""What a daily ``gsckit sync`` of one property costs on an already-synced database, in requests.

The simulator keeps Google's time (final data through today - 3, fresh data for the newer days,
``firstIncompleteDate`` in its answers) with its clock pinned ``--days + 1`` days behind ours,
and every sync plans with the simulated today (``today=``), as it would against Google.
One sync brings the database up to date (16 months back by default); then, for each of
``--days`` simulated days, the clock moves one day and the property is synced once, then a
second time the same day, then once for final data only. Requests are counted by the
simulator's own request log, and what each committed day was (new, fresh again, promoted to
final, a final day re-checked) comes from the engine's events. The last line is JSON.

    python benchmarks/sync_cost.py                          # 1,000 rows a day (one page), ~40 s
    python benchmarks/sync_cost.py --rows-per-day 60000 --history-days 14   # capped days
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import _common as c

import gsckit
from gsckit.events import Event
from gsckit.planner import pacific_today
from gsckit.sim import SimConfig, Simulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows-per-day", type=int, default=1_000,
                   help="(query, page) rows a final day holds (default 1000: one page)")
    p.add_argument("--history-days", type=int, default=None,
                   help="days of history the first sync fetches (default: 16 months)")
    p.add_argument("--days", type=int, default=10, help="daily syncs to measure (default 10)")
    p.add_argument("--lookback-days", type=int, default=4, help="sync's look-back (default 4)")
    return p.parse_args(argv)


class Outcomes:
    """Counts what each committed day was, from the engine's slice_done events."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        if event.kind == "slice_done":
            self.counts[str(event.data["outcome"])] += 1


async def one_sync(sim: Simulator, db: Path, args: argparse.Namespace, **kw: Any
                   ) -> dict[str, Any]:
    sim.reset_stats()
    outcomes = Outcomes()
    started = time.perf_counter()
    report = await gsckit.sync_async(c.SITE, db=db, token=c.TOKEN, base_url=sim.base_url,
                                     progress=False, listeners=[outcomes],
                                     lookback_days=args.lookback_days, today=sim.today, **kw)
    assert report.ok, report.summary()
    requests = len(sim.request_log)
    assert requests == report.requests
    return {"requests": requests, "probes": report.probes, "totals": report.totals_requests,
            "data_requests": requests - report.probes - report.totals_requests,
            "days": report.done,
            "new": outcomes.counts["new"], "fresh_again": outcomes.counts["refreshed"],
            "promoted": outcomes.counts["promoted"], "rechecked": outcomes.counts["replaced"],
            "wall_s": round(time.perf_counter() - started, 2)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    behind = args.days + 1
    now = datetime.combine(pacific_today() - timedelta(days=behind), datetime.min.time())
    config = SimConfig(rows_per_day=args.rows_per_day, now=now.replace(hour=12))
    rows = []
    async with Simulator(config) as sim:
        with tempfile.TemporaryDirectory(prefix="gsckit-sync-cost-") as folder:
            db = Path(folder) / "gsc.duckdb"
            start = (None if args.history_days is None
                     else sim.today - timedelta(days=args.history_days - 1))
            first = await one_sync(sim, db, args, start=start)
            print(f"first sync: {first['days']} days in {first['requests']} requests "
                  f"({first['wall_s']} s)")
            for _ in range(args.days):
                sim.advance(days=1)
                daily = await one_sync(sim, db, args, start=start)
                again = await one_sync(sim, db, args, start=start)
                final = await one_sync(sim, db, args, start=start, data_state="final")
                rows.append((str(sim.today), daily, again, final))
    headers = ["simulated day", "requests", "probe", "totals", "new", "fresh again", "promoted",
               "re-checked", "again same day", "final only"]
    print(c.table(headers, [(day, d["requests"], d["probes"], d["totals"], d["new"],
                             d["fresh_again"], d["promoted"], d["rechecked"], a["requests"],
                             f["requests"]) for day, d, a, f in rows]))
    steady = [d["requests"] for _, d, _, _ in rows[1:]] or [rows[0][1]["requests"]]
    result = {"rows_per_day": args.rows_per_day, "lookback_days": args.lookback_days,
              "first_sync_requests": first["requests"], "first_sync_days": first["days"],
              "daily_requests_median": statistics.median(steady),
              "daily_requests_min": min(steady), "daily_requests_max": max(steady),
              "second_sync_same_day": max(a["requests"] for _, _, a, _ in rows),
              "final_only_sync": max(f["requests"] for _, _, _, f in rows),
              "machine": c.machine()}
    print(f"a daily sync of one property on an already-synced database: "
          f"{result['daily_requests_median']} requests (min {result['daily_requests_min']}, "
          f"max {result['daily_requests_max']}); a second sync the same day: "
          f"{result['second_sync_same_day']}; a final-only sync: {result['final_only_sync']}")
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
