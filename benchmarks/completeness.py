"""Completeness: what splitting capped days recovers, and how well the hidden share is measured.

Two backfills of the same days from one simulator (150,000 query-attributable (query, page) keys
a day, 20% of the clicks anonymized, every day final, no latency), one with ``split="auto"`` and
one with ``split="off"``, each into its own database. Against the simulator's truths:

- recall: stored (query, page) keys over the true keys, and stored clicks over the clicks a
  query-grouped answer could ever show (the anonymized ones never can);
- exactness: stored keys whose clicks or impressions differ from the truth (target 0), the
  largest position difference, duplicate keys;
- the completeness view's ``hidden_clicks_share`` against the true anonymized share, per day
  (target: within 0.5 percentage points);
- requests: in all, per day, and the extra ones per capped day (split minus off).

    python benchmarks/completeness.py              # 10 days (the issue's target)
    python benchmarks/completeness.py --days 2     # quicker

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import _common as c
import duckdb
import polars as pl

import gsckit
from gsckit.sim import SimConfig, Simulator

KEYS = ["query", "page"]
TARGETS = {"keys": 0.90, "clicks": 0.99, "hidden_pp": 0.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--rows-per-day", type=int, default=150_000,
                   help="query-attributable (query, page) keys a day")
    p.add_argument("--anonymized-share", type=float, default=0.2)
    p.add_argument("--concurrency", type=int, default=8)
    return p.parse_args(argv)


def stored(db: Path, day: date) -> pl.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return pl.DataFrame(con.sql(
            "SELECT query, page, clicks, impressions, position FROM search_analytics "
            "WHERE date = ?", params=[day]))


def measure(db: Path, sim: Simulator, days: list[date]) -> dict[str, Any]:
    """Recall, exactness and the hidden share of one database against the simulator."""
    keys = true_keys = clicks = true_clicks = wrong = duplicates = 0
    worst_position = worst_hidden = 0.0
    view = gsckit.open(db).completeness().to_dicts()
    hidden = {row["date"]: row["hidden_clicks_share"] for row in view}
    for day in days:
        every = sim.uncapped_truth(c.SITE, day)
        got = stored(db, day)
        duplicates += got.height - got.select(pl.struct(KEYS).n_unique()).item()
        joined = got.join(every, on=KEYS, how="left", suffix="_true")
        wrong += joined.filter((pl.col("clicks") != pl.col("clicks_true"))
                               | (pl.col("impressions") != pl.col("impressions_true"))
                               | pl.col("clicks_true").is_null()).height
        worst_position = max(worst_position, float(
            (joined["position"] - joined["position_true"]).abs().max() or 0.0))
        keys += got.height
        true_keys += every.height
        clicks += int(got["clicks"].sum())
        true_clicks += int(every["clicks"].sum())
        truth = sim.totals(c.SITE, day).hidden_clicks_share
        if hidden.get(day) is not None:
            worst_hidden = max(worst_hidden, abs(hidden[day] - truth) * 100)
        else:
            worst_hidden = float("nan")
    return {"keys": keys, "true_keys": true_keys, "key_recall": keys / true_keys,
            "click_recall": clicks / true_clicks, "wrong_metrics": wrong,
            "max_position_diff": worst_position, "duplicates": duplicates,
            "hidden_share_max_diff_pp": worst_hidden,
            "capped_days": sum(bool(row["capped"]) for row in view),
            "split_days": sum(bool(row["split"]) for row in view)}


async def backfill(sim: Simulator, db: Path, days: list[date], split: str,
                   concurrency: int) -> tuple[gsckit.Report, float]:
    sim.reset_stats()
    started = time.perf_counter()
    report = await gsckit.backfill_async(c.SITE, days[0], days[-1], db=db, token=c.TOKEN,
                                         base_url=sim.base_url, progress=False, split=split,
                                         max_concurrency=concurrency)
    return report, time.perf_counter() - started


async def main(args: argparse.Namespace) -> dict[str, Any]:
    last = c.last_day() - timedelta(days=7)
    days = [last - timedelta(days=args.days - 1 - i) for i in range(args.days)]
    config = SimConfig(rows_per_day=args.rows_per_day, anonymized_share=args.anonymized_share,
                       all_final=True, quota_qpm=100_000)
    results: dict[str, Any] = {"days": args.days, "rows_per_day": args.rows_per_day,
                               "anonymized_share": args.anonymized_share}
    with tempfile.TemporaryDirectory(prefix="gsckit-completeness-") as folder:
        async with Simulator(config) as sim:
            for split in ("auto", "off"):
                db = Path(folder) / f"{split}.duckdb"
                report, wall = await backfill(sim, db, days, split, args.concurrency)
                figures = measure(db, sim, days)
                figures.update(requests=report.requests, wall_s=round(wall, 1),
                               requests_per_day=report.requests / args.days,
                               split_requests=report.split_requests,
                               summary=report.completeness.line() if report.completeness else "")
                results[split] = figures
    auto, off = results["auto"], results["off"]
    capped = max(auto["split_days"], 1)
    results["extra_requests_per_capped_day"] = (auto["requests"] - off["requests"]) / capped
    results["targets_met"] = {
        "keys": auto["key_recall"] >= TARGETS["keys"],
        "clicks": auto["click_recall"] >= TARGETS["clicks"],
        "exact": auto["wrong_metrics"] == 0 and auto["duplicates"] == 0,
        "hidden_share": auto["hidden_share_max_diff_pp"] <= TARGETS["hidden_pp"]}
    return results


def report(results: dict[str, Any]) -> None:
    auto, off = results["auto"], results["off"]
    print(f"{results['days']} days x {results['rows_per_day']:,} (query, page) keys, "
          f"{results['anonymized_share']:.0%} of clicks anonymized; machine: "
          f"{c.machine()}")
    rows = []
    for name, r in (("split auto", auto), ("split off", off)):
        rows.append([name, f"{r['keys']:,} of {r['true_keys']:,}", f"{r['key_recall']:.1%}",
                     f"{r['click_recall']:.2%}", r["wrong_metrics"],
                     f"{r['max_position_diff']:.1e}", r["duplicates"],
                     c.fmt(r["hidden_share_max_diff_pp"], ".3f"), r["requests"],
                     f"{r['requests_per_day']:.1f}", r["wall_s"]])
    print(c.table(["run", "keys stored", "key recall", "query clicks", "wrong clicks/impr",
                   "max position diff", "duplicate keys", "hidden share max diff (pp)",
                   "requests", "per day", "wall s"], rows))
    print(f"extra requests per capped day: {results['extra_requests_per_capped_day']:.1f}")
    print(f"split auto: {auto['summary']}")
    print(f"split off:  {off['summary']}")
    met = results["targets_met"]
    print("targets: " + ", ".join(f"{k} {c.verdict(v)}" for k, v in met.items()))
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    outcome = asyncio.run(main(parse_args()))
    report(outcome)
    sys.exit(0 if all(outcome["targets_met"].values()) else 1)
