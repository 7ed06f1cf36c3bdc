"""Halt time: from an unrecoverable answer (403 "sufficient permission") to every worker stopped.

Each run starts a simulator in its own process with latency (default 300 ms +/-50%) and
``Faults(script={N: "403_permission"})``, N different per run, and backfills with
max_concurrency 8 until the engine halts. Two figures per run:

- ``halt_s``: the engine's own measure (``RunHalted.report.halt_s``): from the worker raising the
  halt to the TaskGroup having stopped every worker and helper;
- ``outer_s``: from the 403 response reaching gsckit (the client's ``request`` event with status
  403, seen by a listener) to ``backfill_async`` raising ``RunHalted``, i.e. including the writer
  thread's pending commit, the session close and the final DuckDB checkpoint.

    python benchmarks/halt.py            # 20 runs
    python benchmarks/halt.py --quick    # 3 runs

Target: p100 < 1 s (design note: < 5 s). The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

import gsckit.store as store_module
from gsckit import RunHalted, backfill_async
from gsckit.events import Event

TARGET_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 runs")
    p.add_argument("--runs", type=int, help="runs (default 20; quick 3)")
    p.add_argument("--latency-ms", type=float, default=300.0)
    p.add_argument("--rows-per-day", type=int, default=40_000, help="two pages a day")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--days", type=int, default=120, help="days planned (the run halts first)")
    p.add_argument("--timeout-s", type=float, default=120.0, help="time bound per run")
    args = p.parse_args(argv)
    args.runs = args.runs or (3 if args.quick else 20)
    return args


def fault_index(run: int) -> int:
    """The request number that gets the 403: spread over 5..124, a different one per run."""
    return 5 + (run * 37) % 120


def remove_files(folder: Path, prefix: str) -> None:
    """Delete a run's database and WAL."""
    for path in folder.glob(prefix + "*"):
        path.unlink()


async def one_run(run: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n = fault_index(run)
    config = {"seed": 1 + run, "rows_per_day": args.rows_per_day,
              "latency_s": args.latency_ms / 1000, "faults": {"script": {n: "403_permission"}}}
    db = workdir / f"halt-{run}.duckdb"
    fault_at: list[float] = []
    ok_before = 0

    def listener(event: Event) -> None:
        nonlocal ok_before
        if event.kind != "request":
            return
        if event.data.get("status") == 403 and not fault_at:
            fault_at.append(time.perf_counter())
        elif event.data.get("status") == 200 and not fault_at:
            ok_before += 1

    start, end = c.day_range(args.days)
    closes: list[float] = []
    commit_ends: list[float] = []
    original_close = store_module.Store.close
    original_commit = store_module.Store.commit_slices

    def timed_commit(self: Any, *a: Any, **kw: Any) -> Any:  # measurement only
        try:
            return original_commit(self, *a, **kw)
        finally:
            commit_ends.append(time.perf_counter())

    def timed_close(self: Any) -> None:  # measurement only: how long the final CHECKPOINT takes
        t = time.perf_counter()
        try:
            original_close(self)
        finally:
            closes.append(time.perf_counter() - t)

    with c.SimProcess(config=config) as sim:
        store_module.Store.close = timed_close  # type: ignore[method-assign]
        store_module.Store.commit_slices = timed_commit  # type: ignore[method-assign]
        cpu0 = c.self_cpu()
        t0 = time.perf_counter()
        report = error = None
        try:
            await asyncio.wait_for(backfill_async(
                c.SITE, start, end, dimensions=c.DIMENSIONS, db=db, token=c.TOKEN,
                base_url=sim.base_url, max_concurrency=args.concurrency, progress=False,
                listeners=[listener]), timeout=args.timeout_s)
        except RunHalted as exc:
            report, error = exc.report, exc
        finally:
            store_module.Store.close = original_close  # type: ignore[method-assign]
            store_module.Store.commit_slices = original_commit  # type: ignore[method-assign]
        returned = time.perf_counter()
        cpu = c.self_cpu() - cpu0
        await asyncio.sleep(args.latency_ms / 1000 * 1.6)  # let cancelled requests finish
        stats = sim.stats()
    remove_files(workdir, db.name)
    if report is None or not fault_at:
        raise RuntimeError(f"run {run}: expected RunHalted after request {n}, got "
                           f"{'a complete run' if report is None else 'no 403 event'}")
    return {
        "run": run, "fault_request": n, "halt_s": report.halt_s,
        "outer_s": round(returned - fault_at[0], 4),
        "store_close_s": round(closes[-1], 4) if closes else None,
        "commit_tail_s": round(max([0.0] + [t - fault_at[0] for t in commit_ends]), 4),
        "to_fault_s": round(fault_at[0] - t0, 3),
        "requests_sent": report.requests, "server_requests": stats["requests"],
        "ok_before_fault": ok_before, "days_committed": report.done,
        "rows_committed": report.rows, "error": str(error.cause)[:80] if error else None,
        "server_403": stats["by_status"].get("403", 0), "cpu_s": round(cpu, 2),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="gsckit-bench-") as tmp:
        for run in range(args.runs):
            r = await one_run(run, args, Path(tmp))
            results.append(r)
            print(f"  run {run + 1:>2}/{args.runs}: 403 at request {r['fault_request']:>3}, "
                  f"halt_s {r['halt_s']:.4f}, outer {r['outer_s']:.4f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"halt: {args.runs} runs, max_concurrency {args.concurrency}, simulator latency "
          f"{args.latency_ms:g} ms +/-50% in its own process, {args.rows_per_day:,} rows/day, "
          f"403 'sufficient permission' at request N; {c.CORES} cores", flush=True)
    sys0, cpu0, t0 = c.system_busy_cpu(), c.self_cpu(), time.perf_counter()
    kids0 = c.children_cpu()
    results = asyncio.run(main_async(args))
    wall = time.perf_counter() - t0
    cpu, kids = c.self_cpu() - cpu0, c.children_cpu() - kids0
    sys1 = c.system_busy_cpu()
    other = None if sys0 is None or sys1 is None else max(0.0, sys1 - sys0 - cpu - kids)
    print()
    print(c.table(
        ["run", "403 at req", "to fault s", "200s before", "days done", "req sent (gsckit)",
         "req seen (server)", "halt_s", "outer s", "commit tail s", "Store.close s"],
        [[r["run"] + 1, r["fault_request"], f"{r['to_fault_s']:.2f}", r["ok_before_fault"],
          r["days_committed"], r["requests_sent"], r["server_requests"], f"{r['halt_s']:.4f}",
          f"{r['outer_s']:.4f}", f"{r['commit_tail_s']:.4f}", c.fmt(r["store_close_s"], ".4f")]
         for r in results]))
    figures: dict[str, dict[str, float | None]] = {}
    for key in ("halt_s", "outer_s", "commit_tail_s", "store_close_s"):
        values = [r[key] for r in results if r[key] is not None]
        figures[key] = {f"p{q}": c.percentile(values, q) for q in (50, 90, 100)}
    print()
    print(c.table(["figure", "p50 s", "p90 s", "p100 s", f"target p100 < {TARGET_S:g} s"],
                  [[k, f"{v['p50']:.4f}", f"{v['p90']:.4f}", f"{v['p100']:.4f}",
                    c.verdict(v["p100"] < TARGET_S) if k in ("halt_s", "outer_s")
                    else "(part of outer)"]
                   for k, v in figures.items()]))
    print("halt_s: worker raises the halt -> TaskGroup done (every worker and helper stopped); "
          "outer_s: 403 reaches gsckit -> backfill_async raises, including the writer's pending "
          "commit and Store.close() (the final DuckDB CHECKPOINT); commit tail: how long a day "
          "commit in the writer thread went on after the 403")
    share = lambda s: s / (wall * c.CORES)  # noqa: E731
    print(f"\nCPU: benchmark process {cpu:.1f} s ({share(cpu):.0%} of {c.CORES} cores over "
          f"{wall:.0f} s), simulator processes {kids:.1f} s ({share(kids):.0%})"
          + ("" if other is None else f", other processes on the machine {share(other):.0%}"))
    summary = {"benchmark": "halt", "quick": args.quick, "runs": args.runs,
               "concurrency": args.concurrency, "latency_ms": args.latency_ms,
               "rows_per_day": args.rows_per_day, "results": results, "percentiles": figures,
               "target_p100_s": TARGET_S,
               "pass": {k: figures[k]["p100"] is not None and figures[k]["p100"] < TARGET_S
                        for k in ("halt_s", "outer_s")},
               "wall_s": round(wall, 1), "cpu_bench_s": round(cpu, 2),
               "cpu_sim_s": round(kids, 2),
               "cpu_other_share": None if other is None else round(share(other), 3),
               "machine": c.machine()}
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
