"""The ingest hot path, JSON bytes -> polars columns -> DuckDB, and the engine's memory use.

(a) direct: real 25,000-row page bodies are fetched ONCE from a zero-latency simulator (its own
    process, stopped before timing), then ``parse_page(body, dims)`` and ``Store.commit_slice`` (a
    day's two pages concatenated, as the engine's writer does) are timed with no network, over
    several rounds with a fresh DuckDB file each: microseconds per row, wall and CPU.
(b) end to end: in a fresh subprocess per size, the full engine with its default settings
    (8 workers, 32 unpersisted pages) backfills 30 days, 120 days and the whole 16-month window
    the API serves from a zero-latency simulator with 50,000 rows a day (2 full pages + 1 empty
    page a day), unthrottled (qpm 1,200 per 0.05-s window); each child prints its rows, wall,
    gsckit's own process CPU per row (the simulator runs in another process), peak RSS
    (ru_maxrss), the CPU of the closing checkpoint, and its commit cost early vs late in the run.

    python benchmarks/ingest.py            # (a) 8 days x 5 rounds; (b) 30, 120 days, full window
    python benchmarks/ingest.py --quick    # (a) 2 days x 2 rounds; (b) 3, 6 and 10 days

Targets: (a) parse + commit <= 2.5 us/row (also counting the closing checkpoint), <= 40 bytes
per row in the file after it; (b) end to end <= 4 us/row of gsckit's CPU at 120 days, peak RSS
<= 400 MB and flat (within 10%) from 30 days to the full window.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import _common as c

ROWS_PER_DAY = 50_000
ROW_LIMIT = 25_000
RSS_LIMIT_MB = 400.0
FLAT_TOLERANCE = 0.10  # the largest run's peak RSS may exceed the smallest's by at most 10%
TARGET_US = 2.5
TARGET_BYTES = 40
E2E_TARGET_US = 4.0  # gsckit's process CPU per row, end to end, at 120 days


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--direct-days", type=int, help="days of bodies for (a) (default 8; quick 2)")
    p.add_argument("--rounds", type=int, help="timed rounds for (a) (default 5; quick 2)")
    p.add_argument("--small-days", type=int, help="(b) small run (default 30; quick 3)")
    p.add_argument("--mid-days", type=int, help="(b) the CPU target's run (default 120; quick 6)")
    p.add_argument("--large-days", type=int,
                   help="(b) large run (default: the whole 16-month window; quick 10)")
    p.add_argument("--concurrency", type=int, default=8, help="(b) max_concurrency")
    p.add_argument("--timeout-s", type=float, default=1800.0, help="(b) time bound per child")
    p.add_argument("--skip-direct", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    # internal: one end-to-end run in this (fresh) process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--days", type=int, help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.direct_days = args.direct_days or (2 if args.quick else 8)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.small_days = args.small_days or (3 if args.quick else 30)
    args.mid_days = args.mid_days or (6 if args.quick else 120)
    args.large_days = args.large_days or (10 if args.quick else c.max_days())
    return args


# ---------------------------------------------------------------------------------------------
# (a) direct


def fetch_bodies(days: int) -> tuple[list[tuple[Any, list[bytes]]], float | None]:
    """``[(slice, [page0, page1]), ...]`` fetched over HTTP once; and the simulator's CPU."""
    from gsckit.planner import Slice

    start, end = c.day_range(days)
    out = []
    with c.SimProcess(rows_per_day=ROWS_PER_DAY, latency_ms=0, quota_qpm=10_000_000) as sim:
        for k in range((end - start).days + 1):
            piece = Slice(c.SITE, "web", c.DIMENSIONS, (), "final", start + timedelta(days=k))
            pages = [c.http_json(sim.query_url(c.SITE), method="POST",
                                 body=piece.body(s, ROW_LIMIT), raw=True)
                     for s in range(0, ROWS_PER_DAY, ROW_LIMIT)]
            out.append((piece, pages))
    return out, sim.cpu_s


def direct(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from gsckit.parse import parse_page
    from gsckit.store import Store

    bodies, sim_cpu = fetch_bodies(args.direct_days)
    rows = sum(parse_page(b, c.DIMENSIONS).height for _, pages in bodies for b in pages)  # warm
    nbytes = sum(len(b) for _, pages in bodies for b in pages)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="gsckit-bench-") as tmp:
        for r in range(args.rounds):
            db = Path(tmp) / f"direct-{r}.duckdb"
            store = Store(db)
            acc = {"parse": 0.0, "concat": 0.0, "commit": 0.0}
            cpu = {"parse": 0.0, "concat": 0.0, "commit": 0.0}
            try:
                for piece, pages in bodies:
                    c0, t0 = c.self_cpu(), time.perf_counter()
                    frames = [parse_page(b, c.DIMENSIONS) for b in pages]
                    c1, t1 = c.self_cpu(), time.perf_counter()
                    frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
                    c2, t2 = c.self_cpu(), time.perf_counter()
                    store.commit_slice(piece, frame, pages=len(frames), requests=len(frames),
                                       run_id="bench")
                    c3, t3 = c.self_cpu(), time.perf_counter()
                    acc["parse"] += t1 - t0
                    acc["concat"] += t2 - t1
                    acc["commit"] += t3 - t2
                    cpu["parse"] += c1 - c0
                    cpu["concat"] += c2 - c1
                    cpu["commit"] += c3 - c2
            finally:
                c0, t0 = c.self_cpu(), time.perf_counter()
                store.close()
                acc["close"] = time.perf_counter() - t0
                cpu["close"] = c.self_cpu() - c0
            files = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")
                        if p.suffix != ".gsckit-writer" and "gsckit-" not in p.name)
            rounds.append({k: v / rows * 1e6 for k, v in acc.items()}
                          | {f"cpu_{k}": v / rows * 1e6 for k, v in cpu.items()}
                          | {"file_bytes_per_row": files / rows})
    for r in rounds:
        r["total"] = r["parse"] + r["concat"] + r["commit"]
        r["cpu_total"] = r["cpu_parse"] + r["cpu_concat"] + r["cpu_commit"]
        r["total_with_close"] = r["total"] + r["close"]
        r["cpu_total_with_close"] = r["cpu_total"] + r["cpu_close"]
    keys = [k for k in rounds[0] if k != "file_bytes_per_row"]
    return {
        "rows_per_round": rows, "bytes_per_row": round(nbytes / rows, 1),
        "rounds": len(rounds),
        "median_us_per_row": {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys},
        "min_us_per_row": {k: round(min(r[k] for r in rounds), 3) for k in keys},
        "parse_mb_per_s": round(nbytes / (statistics.median(r["parse"] for r in rounds)
                                          * rows) , 1),
        "sim_cpu_s_fetch": None if sim_cpu is None else round(sim_cpu, 2),
        "file_bytes_per_row": round(statistics.median(r["file_bytes_per_row"] for r in rounds),
                                    1),
    }


# ---------------------------------------------------------------------------------------------
# (b) end to end, one child process per size


async def child_run(args: argparse.Namespace) -> dict[str, Any]:
    import gsckit.store as store_module
    from gsckit import EngineConfig, backfill_async

    commits: list[tuple[float, int]] = []
    closes: list[tuple[float, float]] = []
    original_commit = store_module.Store.commit_slices
    original_close = store_module.Store.close

    def timed_commit(self: Any, staged: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        results = original_commit(self, staged, **kw)
        commits.append((time.perf_counter() - t0, sum(r.rows for r in results)))
        return results

    def timed_close(self: Any) -> None:
        t0, cpu0 = time.perf_counter(), c.self_cpu()
        original_close(self)
        closes.append((time.perf_counter() - t0, c.self_cpu() - cpu0))

    # measurement only; the code is unchanged
    store_module.Store.commit_slices = timed_commit  # type: ignore[method-assign]
    store_module.Store.close = timed_close  # type: ignore[method-assign]
    start, end = c.day_range(args.days)
    rss_before = c.rss_mb()
    # the default settings, unthrottled: 1,200 per 0.05 s is scaled time (24,000 a second)
    config = EngineConfig(max_concurrency=args.concurrency, qpm=1_200, qpm_window_s=0.05,
                          base_url=args.base_url)
    cpu0, t0 = c.self_cpu(), time.perf_counter()
    # 50,000-row days reach the API's cap; the hot path is measured on their own pages, and what
    # splitting capped days costs is benchmarks/completeness.py's
    report = await backfill_async(
        c.SITE, start, end, dimensions=c.DIMENSIONS, db=args.db, token=c.TOKEN, config=config,
        progress=False, preflight=False, split="off")
    wall = time.perf_counter() - t0
    cpu = c.self_cpu() - cpu0

    def commit_us(part: list[tuple[float, int]]) -> float | None:
        n = sum(rows for _, rows in part)
        return round(sum(t for t, _ in part) / n * 1e6, 3) if n else None

    tenth = max(1, len(commits) // 10)
    db_bytes = sum(p.stat().st_size for p in Path(args.db).parent.glob(Path(args.db).name + "*"))
    rows = report.rows
    close_s, close_cpu = closes[-1] if closes else (None, None)
    return {
        "days": (end - start).days + 1, "start": str(start), "end": str(end), "ok": report.ok,
        "rows": rows, "requests": report.requests, "retries": report.retries,
        "wall_s": round(wall, 2), "report_wall_s": report.wall_s,
        "us_per_row": round(wall / rows * 1e6, 3) if rows else None,
        "cpu_s": round(cpu, 2), "cpu_us_per_row": round(cpu / rows * 1e6, 3) if rows else None,
        "close_s": None if close_s is None else round(close_s, 2),
        "close_cpu_us_per_row": None if close_cpu is None or not rows else round(
            close_cpu / rows * 1e6, 3),
        "rss_after_imports_mb": None if rss_before is None else round(rss_before, 1),
        "peak_rss_mb": round(c.peak_rss_mb(), 1),
        "commit_us_per_row_first10pct": commit_us(commits[:tenth]),
        "commit_us_per_row_last10pct": commit_us(commits[-tenth:]),
        "commit_us_per_row_all": commit_us(commits),
        "db_mb": round(db_bytes / 2**20, 1),
        "max_queue": report.max_queue, "max_unpersisted_pages": report.max_unpersisted_pages,
    }


def end_to_end(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with c.SimProcess(rows_per_day=ROWS_PER_DAY, latency_ms=0, quota_qpm=10_000_000) as sim, \
            tempfile.TemporaryDirectory(prefix="gsckit-bench-") as tmp:
        for label, days in (("small", args.small_days), ("mid", args.mid_days),
                            ("large", args.large_days)):
            db = Path(tmp) / f"e2e-{label}.duckdb"
            sim.reset()
            sim_cpu0, sys0 = sim.cpu(), c.system_busy_cpu()
            kids0, t0 = c.children_cpu(), time.perf_counter()
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--days",
                    str(days), "--base-url", sim.base_url, "--db", str(db), "--concurrency",
                    str(args.concurrency)]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout_s,
                                  cwd=c.ROOT)
            outer = time.perf_counter() - t0
            child_cpu = c.children_cpu() - kids0
            sim_cpu1, sys1 = sim.cpu(), c.system_busy_cpu()
            if proc.returncode != 0:
                raise RuntimeError(f"child for {days} days failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            stats = sim.stats()
            sim_cpu = None if sim_cpu0 is None or sim_cpu1 is None else sim_cpu1 - sim_cpu0
            other = None if sys0 is None or sys1 is None or sim_cpu is None else max(
                0.0, (sys1 - sys0) - child_cpu - sim_cpu)
            result.update(
                label=label, outer_wall_s=round(outer, 2),
                child_cpu_s=round(child_cpu, 2),
                sim_cpu_s=None if sim_cpu is None else round(sim_cpu, 2),
                gsckit_cpu_share=round(child_cpu / (outer * c.CORES), 3),
                sim_cpu_share=None if sim_cpu is None else round(sim_cpu / (outer * c.CORES), 3),
                other_cpu_share=None if other is None else round(other / (outer * c.CORES), 3),
                server_requests=stats["requests"], server_duplicates=stats["duplicates"],
                rate_limited_429=stats["rate_limited"])
            results.append(result)
            print(f"  {label}: {result['days']} days, {result['rows']:,} rows in "
                  f"{result['wall_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
            for path in Path(tmp).glob(db.name + "*"):
                path.unlink()
    return results


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(child_run(args))))
        return 0
    print(f"ingest: {ROWS_PER_DAY:,} rows/day, {ROW_LIMIT:,}-row pages, dimensions "
          f"{','.join(c.DIMENSIONS)}, {c.CORES} cores", flush=True)
    summary: dict[str, Any] = {"benchmark": "ingest", "quick": args.quick,
                               "machine": c.machine()}
    targets: list[tuple[str, str, bool | None]] = []
    if not args.skip_direct:
        d = direct(args)
        summary["direct"] = d
        med, low = d["median_us_per_row"], d["min_us_per_row"]
        print(f"\n(a) direct, no network: {d['rows_per_round']:,} rows "
              f"({args.direct_days} days x 2 pages, {d['bytes_per_row']} JSON bytes/row) x "
              f"{d['rounds']} rounds, fresh DuckDB file per round")
        print(c.table(
            ["step", "wall us/row (median)", "wall us/row (best)", "CPU us/row (median)"],
            [["parse_page", f"{med['parse']:.3f}", f"{low['parse']:.3f}",
              f"{med['cpu_parse']:.3f}"],
             ["pl.concat (2 pages)", f"{med['concat']:.3f}", f"{low['concat']:.3f}",
              f"{med['cpu_concat']:.3f}"],
             ["Store.commit_slice", f"{med['commit']:.3f}", f"{low['commit']:.3f}",
              f"{med['cpu_commit']:.3f}"],
             ["total", f"{med['total']:.3f}", f"{low['total']:.3f}",
              f"{med['cpu_total']:.3f}"],
             ["Store.close (closing checkpoint)", f"{med['close']:.3f}", f"{low['close']:.3f}",
              f"{med['cpu_close']:.3f}"],
             ["total with the close", f"{med['total_with_close']:.3f}",
              f"{low['total_with_close']:.3f}", f"{med['cpu_total_with_close']:.3f}"]]))
        print(f"parse throughput {d['parse_mb_per_s']} MB/s of JSON (median round); file after "
              f"the closing checkpoint: {d['file_bytes_per_row']} bytes/row")
        targets.append((f"direct parse + commit <= {TARGET_US:g} us/row (median)",
                        f"{med['total']:.2f} us/row", med["total"] <= TARGET_US))
        targets.append((f"the same with the closing checkpoint <= {TARGET_US:g} us/row",
                        f"{med['total_with_close']:.2f} us/row",
                        med["total_with_close"] <= TARGET_US))
        targets.append((f"file after the closing checkpoint <= {TARGET_BYTES} bytes/row",
                        f"{d['file_bytes_per_row']} bytes/row",
                        d["file_bytes_per_row"] <= TARGET_BYTES))
    if not args.skip_e2e:
        print(f"\n(b) end to end, one fresh process per size (concurrency {args.concurrency}, "
              "default settings, unthrottled, zero-latency simulator in its own process)",
              flush=True)
        runs = end_to_end(args)
        summary["end_to_end"] = runs
        print(c.table(
            ["run", "days", "rows", "requests", "wall s", "us/row", "CPU us/row",
             "of which close", "commit us/row first/last 10%", "peak RSS MB",
             "RSS after imports", "DB MB", "cpu gsckit", "cpu sim", "cpu other"],
            [[r["label"], r["days"], f"{r['rows']:,}", r["requests"], f"{r['wall_s']:.1f}",
              f"{r['us_per_row']:.2f}", f"{r['cpu_us_per_row']:.2f}",
              c.fmt(r["close_cpu_us_per_row"], ".2f"),
              f"{c.fmt(r['commit_us_per_row_first10pct'], '.2f')} / "
              f"{c.fmt(r['commit_us_per_row_last10pct'], '.2f')}",
              f"{r['peak_rss_mb']:.0f}", c.fmt(r["rss_after_imports_mb"], ".0f"),
              f"{r['db_mb']:.0f}",
              f"{r['child_cpu_s']:.1f}s {r['gsckit_cpu_share']:.0%}",
              "-" if r["sim_cpu_s"] is None else f"{r['sim_cpu_s']:.1f}s {r['sim_cpu_share']:.0%}",
              "-" if r["other_cpu_share"] is None else f"{r['other_cpu_share']:.0%}"]
             for r in runs]))
        print(f"(cpu: user+sys seconds and share of wall x {c.CORES} cores; 'other' is CPU used "
              "by unrelated processes on the machine meanwhile)")
        small, mid, large = runs
        targets.append((f"end to end <= {E2E_TARGET_US:g} us/row of gsckit CPU at "
                         f"{mid['days']} days", f"{mid['cpu_us_per_row']:.2f} us/row",
                         mid["cpu_us_per_row"] <= E2E_TARGET_US))
        peak = max(r["peak_rss_mb"] for r in runs)
        growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
        targets.append((f"peak RSS <= {RSS_LIMIT_MB:g} MB", f"{peak:.0f} MB",
                        peak <= RSS_LIMIT_MB))
        targets.append((f"peak RSS flat: {large['days']} vs {small['days']} days within "
                        f"{FLAT_TOLERANCE:.0%}",
                        " -> ".join(f"{r['peak_rss_mb']:.0f}" for r in runs)
                        + f" MB ({growth:+.0%})", growth <= FLAT_TOLERANCE))
        ok = all(r["ok"] and r["rows"] == r["days"] * ROWS_PER_DAY for r in runs)
        targets.append(("every day complete, rows == days x 50,000", str(ok), ok))
        dups = sum(r["server_duplicates"] for r in runs)
        targets.append(("server duplicates", str(dups), dups == 0))
        summary["rss_growth"] = round(growth, 3)
    print()
    if args.quick:
        print("(--quick is a smoke run: judge the targets on the full run)")
    print(c.table(["target", "measured", "verdict"],
                  [[t, m, c.verdict(ok)] for t, m, ok in targets]))
    summary["targets"] = {t: {"measured": m, "pass": ok} for t, m, ok in targets}
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
