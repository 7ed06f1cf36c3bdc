"""What it costs the writer to let readers in, and how long a reader waits during a backfill.

Each run is a real backfill in a fresh child process against a simulator in its own process
(50,000 rows a day, so every day is 2 full pages + 1 empty one, with latency), while the writer
thread's time is measured per commit group: the commit itself plus, when a reader asked, closing
the connection (DuckDB checkpoints the WAL) and taking the file back (reopening) before the next
commit. Two designs are compared:

- ``lend``: gsckit's design. The writer keeps its connection and lends the file only when a
  reader signals through the sidecar lock, or after 10 s idle.
- ``reopen``: the alternative, the writer holds the file only while it commits (close after
  every commit group, reopen before the next): readers never wait for a lend.

Each design runs with 1 and 16 workers, with no reader and with a reader process that polls
``Database.sql`` every 0.5 s (its waits are printed: median and max).

    python benchmarks/readers.py            # 40 days per run
    python benchmarks/readers.py --quick    # 8 days per run

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
from pathlib import Path
from typing import Any

import _common as c

ROWS_PER_DAY = 50_000
READER = r"""
import json, sys, time
from pathlib import Path
import gsckit
db, stop = Path(sys.argv[1]), Path(sys.argv[2])
while not db.exists():
    time.sleep(0.01)
database = gsckit.open(db, wait=120)
waits = []
while not stop.exists():
    t0 = time.monotonic()
    database.sql("SELECT count(*) FROM gsckit_ledger")
    waits.append(time.monotonic() - t0)
    time.sleep(0.5)
print(json.dumps(waits))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 days per run instead of 40")
    p.add_argument("--days", type=int, help="days per run (default 40; quick 8)")
    p.add_argument("--latency-ms", type=float, default=150.0, help="simulator latency")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--design", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.days = args.days or (8 if args.quick else 40)
    return args


async def child(args: argparse.Namespace) -> dict[str, Any]:
    """One backfill with the writer thread's time per commit group measured."""
    from gsckit import backfill_async
    from gsckit.store import Store

    groups: list[float] = []
    idle: list[float] = []
    commit_slices, idle_check = Store.commit_slices, Store.idle

    def timed_commit(self: Store, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            if self._con is None:  # the time to take the file back counts for this group
                self._open()
            return commit_slices(self, *a, **kw)
        finally:
            groups.append(time.perf_counter() - t0)
            if args.design == "reopen":
                self._release()

    def timed_idle(self: Store) -> None:
        t0 = time.perf_counter()
        idle_check(self)
        idle.append(time.perf_counter() - t0)

    Store.commit_slices = timed_commit  # type: ignore[method-assign]  # measurement only
    Store.idle = timed_idle  # type: ignore[method-assign]
    start, end = c.day_range(args.days)
    cpu0, t0 = c.self_cpu(), time.perf_counter()
    report = await backfill_async(c.SITE, start, end, dimensions=c.DIMENSIONS, db=args.db,
                                  token=c.TOKEN, base_url=args.base_url, qpm=1_200,
                                  qpm_window_s=0.05,  # scaled time: unthrottled
                                  max_concurrency=args.workers, progress=False,
                                  split="off")  # capped days: their own pages, no partitions
    return {"rows": report.rows, "ok": report.ok, "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(c.self_cpu() - cpu0, 2), "groups": len(groups),
            "group_ms": [round(g * 1000, 2) for g in groups],
            "idle_ms_total": round(sum(idle) * 1000, 1), "idle_checks": len(idle)}


def one(sim: c.SimProcess, tmp: Path, design: str, workers: int, reader: bool,
        days: int) -> dict[str, Any]:
    db = tmp / f"{design}-{workers}-{int(reader)}.duckdb"
    stop = tmp / "stop"
    stop.unlink(missing_ok=True)
    sim.reset()
    poller = subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop)],
                              stdout=subprocess.PIPE, text=True, cwd=c.ROOT) if reader else None
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--design", design,
            "--workers", str(workers), "--base-url", sim.base_url, "--db", str(db),
            "--days", str(days)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=c.ROOT, timeout=1800)
    stop.touch()
    waits: list[float] = []
    if poller is not None:
        out, _ = poller.communicate(timeout=120)
        waits = json.loads(out.strip().splitlines()[-1])
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    groups = result.pop("group_ms")
    result.update(
        design=design, workers=workers, reader=reader,
        group_ms_mean=round(statistics.fmean(groups), 1),
        group_ms_p50=round(statistics.median(groups), 1),
        group_ms_max=round(max(groups), 1),
        writer_us_per_row=round(sum(groups) / 1000 / result["rows"] * 1e6, 3),
        reads=len(waits),
        wait_ms_p50=round(statistics.median(waits) * 1000, 1) if waits else None,
        wait_ms_max=round(max(waits) * 1000, 1) if waits else None)
    for path in tmp.glob(db.name + "*"):
        path.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(child(args))))
        return 0
    print(f"readers: {args.days} days x {ROWS_PER_DAY:,} rows per run, simulator latency "
          f"{args.latency_ms:g} ms, {c.CORES} cores", flush=True)
    runs = []
    with c.SimProcess(rows_per_day=ROWS_PER_DAY, latency_ms=args.latency_ms,
                      quota_qpm=10_000_000) as sim, \
            tempfile.TemporaryDirectory(prefix="gsckit-bench-") as folder:
        for design in ("lend", "reopen"):
            for workers in (1, 16):
                for reader in (False, True):
                    r = one(sim, Path(folder), design, workers, reader, args.days)
                    runs.append(r)
                    print(f"  {design} {workers:>2} workers, reader {'yes' if reader else 'no '}"
                          f": {r['groups']} groups, {r['group_ms_mean']} ms/group, "
                          f"{r['wall_s']} s", flush=True)
    print(c.table(
        ["design", "workers", "reader polling", "wall s", "commit groups", "ms/group mean",
         "p50", "max", "writer us/row", "reads", "reader wait p50 ms", "max ms"],
        [[r["design"], r["workers"], "yes" if r["reader"] else "no", f"{r['wall_s']:.1f}",
          r["groups"], r["group_ms_mean"], r["group_ms_p50"], r["group_ms_max"],
          f"{r['writer_us_per_row']:.2f}", r["reads"] or "-", c.fmt(r["wait_ms_p50"], ".0f"),
          c.fmt(r["wait_ms_max"], ".0f")] for r in runs]))
    ok = all(r["ok"] and r["rows"] == args.days * ROWS_PER_DAY for r in runs)
    print(f"every run complete: {ok}")
    print(json.dumps({"benchmark": "readers", "days": args.days, "machine": c.machine(),
                      "runs": runs, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
