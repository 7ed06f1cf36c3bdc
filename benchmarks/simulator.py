"""What the simulator costs per day, so a benchmark never waits on it.

For each day size (the (query, page) keys a day holds, ``rows_per_day``), in this process and
without HTTP, once the stream's key table exists (built once per site and search type, timed
apart), over several distinct days:
- fine rows: generating the day's fine rows (query, page, country, device), once per day;
- first page: a 25,000-row ``date,query,page`` page of a day nobody asked for yet (generation,
  grouping, the cap, text and JSON), the cost of a backfill's first request for a day;
- cached page: the next 25,000-row page of the same day (the answer is cached);
- day total: the CPU a backfill makes the simulator spend per day (first + second page).
Then one ``date``-grouped request over the whole 16-month window (the engine's daily-totals
request), first and cached, at the largest size.

    python benchmarks/simulator.py            # 40,000, 50,000 and 150,000 keys a day, 6 days each
    python benchmarks/simulator.py --quick    # 2 days each, a 60-day totals request

Target: a first 25,000-row page from a day of 200,000 fine rows well under 0.5 s. The ingest
benchmark's engine handles a 50,000-row day in about 0.15 s of CPU (2 pages), so the simulator
stays out of the way while a day costs it less than that. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date, datetime, timedelta
from typing import Any

import _common as c

from gsckit.sim import SimConfig, Simulator
from gsckit.sim.api import Request, parse_request, response_body
from gsckit.sim.model import final_rows, stream_keys

NOW = datetime(2026, 3, 19, 12)
PAGE = 25_000


def _request(day: date, end: date | None = None, dims: tuple[str, ...] = c.DIMENSIONS
             ) -> Request:
    return parse_request({"startDate": day.isoformat(), "endDate": (end or day).isoformat(),
                          "dimensions": list(dims), "rowLimit": PAGE})


def _timed(fn: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def measure(keys: int, days: int) -> dict[str, Any]:
    """Per-day costs at ``keys`` (query, page) keys a day."""
    sim = Simulator(SimConfig(rows_per_day=keys, now=NOW, all_final=True))
    stream_keys.cache_clear()
    table_s, _, _ = _timed(lambda: final_rows(sim.data.spec(c.SITE, "web", NOW.date())))
    fine_s, first_s, cached_s, day_cpu, fine_rows = [], [], [], [], []
    for k in range(days):
        day = NOW.date() - timedelta(days=5 + k)
        wall, _, rows = _timed(lambda d=day: final_rows(sim.data.spec(c.SITE, "web", d)))
        fine_s.append(wall)
        fine_rows.append(rows.height)
        request = _request(day)
        first = _timed(lambda r=request: response_body(
            sim.data.answer(c.SITE, r).slice(0, PAGE), r))
        second = _timed(lambda r=request: response_body(
            sim.data.answer(c.SITE, r).slice(PAGE, PAGE), r))
        first_s.append(first[0])
        cached_s.append(second[0])
        day_cpu.append(first[1] + second[1])
    return {"keys": keys, "stream_table_s": round(table_s, 2),
            "fine_rows": round(statistics.mean(fine_rows)),
            "fine_ms": round(1000 * statistics.median(fine_s), 1),
            "first_page_ms": round(1000 * statistics.median(first_s), 1),
            "cached_page_ms": round(1000 * statistics.median(cached_s), 1),
            "cpu_per_day_ms": round(1000 * statistics.median(day_cpu), 1)}


def totals_request(keys: int, days: int) -> dict[str, Any]:
    """One date-grouped request over ``days`` days, first and again."""
    sim = Simulator(SimConfig(rows_per_day=keys, now=NOW, all_final=True))
    end = NOW.date()
    request = _request(end - timedelta(days=days - 1), end, ("date",))
    first = _timed(lambda: sim.data.answer(c.SITE, request))
    again = _timed(lambda: sim.data.answer(c.SITE, request))
    return {"keys": keys, "days": days, "rows": first[2].height,
            "first_s": round(first[0], 2), "cached_ms": round(1000 * again[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer days, a shorter range")
    args = parser.parse_args()
    days = 2 if args.quick else 6
    sizes = [measure(keys, days) for keys in (40_000, 50_000, 150_000)]
    print(c.table(["keys/day", "key table s (once)", "fine rows", "fine ms", "1st page ms",
                   "cached page ms", "CPU ms/day"],
                  [[s["keys"], s["stream_table_s"], s["fine_rows"], s["fine_ms"],
                    s["first_page_ms"], s["cached_page_ms"], s["cpu_per_day_ms"]]
                   for s in sizes]))
    totals = totals_request(50_000, 60 if args.quick else 486)
    print(f"date-grouped request over {totals['days']} days at {totals['keys']:,} keys a day: "
          f"{totals['first_s']} s first, {totals['cached_ms']} ms again")
    big = sizes[-1]
    ok = big["fine_rows"] >= 200_000 and big["first_page_ms"] < 500
    print(f"first page of a {big['fine_rows']:,}-fine-row day: {big['first_page_ms']} ms "
          f"(target < 500 ms) {c.verdict(ok)}")
    print(json.dumps({"machine": c.machine(), "sizes": sizes, "totals_request": totals,
                      "ok": ok}))


if __name__ == "__main__":
    main()
