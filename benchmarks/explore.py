"""Time every gsckit.explore analysis on a 10,000,000-row database, and its peak RSS.

The database (200 days x 50,000 date,query,page rows, plus the date-only totals, with their ledger
entries, in the gsckit schema) is generated inside DuckDB with SQL in seconds and kept for
re-runs. The analyses then run in a fresh child process, so its peak RSS is theirs alone (plus
Python, polars and DuckDB). Each is timed as the median of a few runs, through the public
functions (which open the file through ``gsckit.Database`` on every call, as a notebook would).

    python benchmarks/explore.py                 # 200 days x 50,000 rows
    python benchmarks/explore.py --days 40       # a smaller file
    python benchmarks/explore.py --db PATH       # keep the generated file at PATH

Targets: every analysis under 1 s, overview under 0.2 s, peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from gsckit.store import LEDGER, TABLE, Store  # noqa: E402

SITE = "sc-domain:bench.example"
ROWS = 50_000
FIRST = date(2026, 1, 1)
QUERIES = 200_000  # distinct queries; each day shows 50,000 of them

# One day of (query, page) rows: query ids are a permutation per day, so keys are unique within
# a day and recur across days; position depends on the query, CTR falls with position, traffic
# has a weekly rhythm, 2% of queries carry the brand name, and every tenth query alternates
# between two pages from one day to the next (cannibalization).
_DAY = f"""
INSERT INTO {TABLE}
SELECT '{SITE}', 'web', 'date,query,page', '', day, NULL,
       CASE WHEN q % 50 = 0 THEN 'bench ' ELSE 'query ' END || q,
       'https://www.bench.example/' || (q % 37) || '/' || (q % 997) || '/p'
           || (q % 20000 + CASE WHEN q % 10 = 0 AND dayofmonth(day) % 2 = 0 THEN 20000 ELSE 0 END),
       NULL, NULL, NULL, clicks, impressions, clicks / impressions, position, 'final', now()
FROM (SELECT ?::DATE AS day) d, range({ROWS}) r(j),
LATERAL (SELECT (r.j * 7919 + (d.day - DATE '{FIRST}') * 104729) % {QUERIES} AS q),
LATERAL (SELECT 1 + (q % 400) / 20.0 AS position,
                (20 + 400000 // (q + 2)) * (CASE WHEN isodow(d.day) >= 6 THEN 0.7 ELSE 1 END)
                    ::BIGINT AS impressions),
LATERAL (SELECT (impressions * 0.35 / position)::BIGINT AS clicks)
ORDER BY clicks DESC
"""
_TOTALS = f"""
INSERT INTO {TABLE}
SELECT site, search_type, 'date', '', date, NULL, NULL, NULL, NULL, NULL, NULL,
       sum(clicks), sum(impressions), sum(clicks) / sum(impressions),
       sum(position * impressions) / sum(impressions), 'final', now()
FROM {TABLE} WHERE dimensions = 'date,query,page' GROUP BY ALL ORDER BY date
"""
_LEDGER = f"""
INSERT INTO {LEDGER}
SELECT concat_ws('|', site, search_type, dimensions, filters, date), site, search_type,
       dimensions, filters, date, 'final', count(*), 1, 1, 0, now(), 'bench'
FROM {TABLE} GROUP BY ALL
"""


def generate(path: Path, days: int) -> float:
    """Write the benchmark database at ``path``; returns seconds."""
    started = time.perf_counter()
    Store(path).close()  # the gsckit schema, exactly as a backfill creates it
    with duckdb.connect(str(path)) as con:
        con.execute("SET memory_limit = '512MB'")
        for offset in range(days):
            con.execute(_DAY, [FIRST + timedelta(days=offset)])
        con.execute(_TOTALS)
        con.execute(_LEDGER)
        con.execute("CHECKPOINT")
    return time.perf_counter() - started


def cases(days: int) -> list[tuple[str, str, dict[str, object]]]:
    """(label, function, keyword arguments) for every analysis."""
    last = FIRST + timedelta(days=days - 1)
    half = (FIRST + timedelta(days=days // 2), last)
    return [
        ("overview (date totals)", "overview", {}),
        ("overview (date,query,page rows)", "overview", {"dimensions": "date,query,page"}),
        ("overview weekly, whole file", "overview",
         {"freq": "week", "start": half[0], "end": last}),
        ("movers by query", "movers", {"by": "query"}),
        ("movers by page", "movers", {"by": "page"}),
        ("movers by query, half vs half", "movers", {"by": "query", "current": half}),
        ("striking_distance", "striking_distance", {}),
        ("cannibalization", "cannibalization", {}),
        ("ctr_curve", "ctr_curve", {}),
        ("brand_split (terms)", "brand_split", {"pattern": ["bench"]}),
        ("page_groups depth 1", "page_groups", {"depth": 1}),
        ("page_groups depth 2", "page_groups", {"depth": 2}),
        ("anomalies (date totals)", "anomalies", {}),
        ("breakdown by query", "breakdown", {}),
    ]


def measure(path: Path, days: int, runs: int) -> dict[str, object]:
    """Run every case ``runs`` times in this process; medians in seconds, and peak RSS."""
    import gsckit.explore as ex

    warnings.simplefilter("error")  # the generated file is complete: a warning is a bug
    results: dict[str, object] = {}
    for label, name, kwargs in cases(days):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            frame = getattr(ex, name)(str(path), SITE, **kwargs)
            times.append(time.perf_counter() - started)
        results[label] = {"median_s": statistics.median(times), "rows": frame.height}
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", type=Path, help="keep the generated database here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.db, args.days, args.runs)))
        return
    folder = None if args.db else tempfile.TemporaryDirectory(prefix="gsckit-explore-")
    path = args.db or Path(folder.name) / "bench.duckdb"  # type: ignore[union-attr]
    if not path.exists():
        seconds = generate(path, args.days)
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]  # type: ignore[index]
        print(f"generated {rows:,} rows ({args.days} days) in {seconds:.1f} s, "
              f"{path.stat().st_size / 2**20:.0f} MB: {path}")
    child = subprocess.run(
        [sys.executable, __file__, "--measure", "--db", str(path), "--days", str(args.days),
         "--runs", str(args.runs)], capture_output=True, text=True, check=False)
    if child.returncode:
        sys.exit(child.stderr)
    results = json.loads(child.stdout)
    rss = results.pop("peak_rss_mb")
    print(f"\n{'analysis':34} {'median ms':>10} {'rows':>7}  target")
    for label, figures in results.items():
        target = 0.2 if label.startswith("overview (date") else 1.0
        ms = figures["median_s"] * 1000
        mark = "ok" if figures["median_s"] < target else "MISSED"
        print(f"{label:34} {ms:10.1f} {figures['rows']:7}  < {target * 1000:.0f} ms {mark}")
    print(f"\npeak RSS of the analyses' process: {rss:.0f} MB (target < 300 MB)")
    if folder:
        folder.cleanup()


if __name__ == "__main__":
    main()
