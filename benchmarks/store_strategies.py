"""Measure the two ways to give a day slice replace semantics in DuckDB, and print the figures.

A: the design card's ``INSERT OR REPLACE`` into a table with the natural row key as PRIMARY KEY.
B: gsckit's choice: no index; one transaction deletes the (site, type, dimensions, filters, day)
   slice and inserts the new rows (plus the ledger entry, ``INSERT OR REPLACE``, in both).

Both load the same synthetic days (25,000-row slices with realistic query/page strings), then
re-write some existing days with new values (a re-fetch). Reported: µs per row for the first load
and for re-writes, file size, ``count(*)``/top-queries read times, and the stale rows each
strategy leaves behind after the revision.

    python benchmarks/store_strategies.py            # 2,000,000 rows
    python benchmarks/store_strategies.py --quick    # 250,000 rows
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date, timedelta

import duckdb
import polars as pl

KEY = "site, search_type, dimensions, filters, date, query, page"
COLUMNS = """site VARCHAR NOT NULL, search_type VARCHAR NOT NULL, dimensions VARCHAR NOT NULL,
    filters VARCHAR NOT NULL, date DATE NOT NULL, query VARCHAR, page VARCHAR,
    clicks BIGINT, impressions BIGINT, ctr DOUBLE, position DOUBLE"""
LEDGER = """CREATE TABLE ledger (slice_key VARCHAR PRIMARY KEY, rows BIGINT)"""


def day_frame(day: date, rows: int, version: int) -> pl.DataFrame:
    """One slice: unique (query, page) keys, clicks falling with rank."""
    index = pl.int_range(0, rows, eager=True)
    seed = day.toordinal() * 7
    return pl.DataFrame({
        "site": "sc-domain:example.com", "search_type": "web", "dimensions": "date,query,page",
        "filters": "", "date": day,
        "query": "running shoes review " + ((index * 7919 + seed) % 10_000_000).cast(pl.String),
        "page": "https://www.example.com/blog/post-" + ((index * 104_729 + seed) % 1_000_000
                                                         ).cast(pl.String) + "/",
        "clicks": (10_000 // (index + 1) + version).cast(pl.Int64),
        "impressions": (100_000 // (index + 1) + 10 + version).cast(pl.Int64),
        "ctr": pl.Series([0.1] * rows), "position": pl.Series([4.2] * rows),
    })


def write_a(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, key: str) -> None:
    con.execute("BEGIN")
    con.register("staged", con.from_arrow(frame.__arrow_c_stream__()))
    con.execute("INSERT OR REPLACE INTO sa SELECT * FROM staged")
    con.unregister("staged")
    con.execute("INSERT OR REPLACE INTO ledger VALUES (?, ?)", [key, frame.height])
    con.execute("COMMIT")


def write_b(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame, key: str) -> None:
    con.execute("BEGIN")
    con.execute("DELETE FROM sa WHERE site = ? AND search_type = ? AND dimensions = ? "
                "AND filters = ? AND date = ?",
                ["sc-domain:example.com", "web", "date,query,page", "", frame["date"][0]])
    con.from_arrow(frame.__arrow_c_stream__()).insert_into("sa")
    con.execute("INSERT OR REPLACE INTO ledger VALUES (?, ?)", [key, frame.height])
    con.execute("COMMIT")


def measure(strategy: str, days: int, rows: int, rewrites: int, folder: str) -> dict[str, float]:
    path = os.path.join(folder, f"{strategy}.duckdb")
    con = duckdb.connect(path)
    key_clause = f", PRIMARY KEY ({KEY})" if strategy == "A" else ""
    con.execute(f"CREATE TABLE sa ({COLUMNS}{key_clause})")
    con.execute(LEDGER)
    write = write_a if strategy == "A" else write_b
    first = date(2026, 1, 1)
    frames = [day_frame(first + timedelta(days=d), rows, 0) for d in range(days)]
    started = time.perf_counter()
    for d, frame in enumerate(frames):
        write(con, frame, f"day{d}")
    load_s = time.perf_counter() - started
    # a revision: same keys with new metrics, and one key in ten gone upstream
    again = [day_frame(first + timedelta(days=d), rows, 1).filter(pl.int_range(pl.len()) % 10 > 0)
             for d in range(rewrites)]
    started = time.perf_counter()
    for d, frame in enumerate(again):
        write(con, frame, f"day{d}")
    rewrite_s = time.perf_counter() - started
    con.execute("CHECKPOINT")
    started = time.perf_counter()
    total = con.execute("SELECT count(*) FROM sa").fetchall()[0][0]
    count_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    con.execute("SELECT query, sum(clicks) FROM sa WHERE date < DATE '2026-01-08' GROUP BY 1 "
                "ORDER BY 2 DESC LIMIT 100").fetchall()
    top_ms = (time.perf_counter() - started) * 1000
    duplicates = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM sa GROUP BY {KEY} "
                             "HAVING count(*) > 1)").fetchall()[0][0]
    con.close()
    assert duplicates == 0
    expected = days * rows - sum(rows - f.height for f in again)
    return {"stale_rows": total - expected, "load_us_per_row": load_s / (days * rows) * 1e6,
            "rewrite_us_per_row": rewrite_s / sum(f.height for f in again) * 1e6,
            "file_mb": os.path.getsize(path) / 1e6, "count_ms": count_ms, "top100_ms": top_ms,
            "rows": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="250,000 rows instead of 2,000,000")
    args = parser.parse_args()
    days, rows, rewrites = (10, 25_000, 2) if args.quick else (80, 25_000, 8)
    with tempfile.TemporaryDirectory() as folder:
        results = {s: measure(s, days, rows, rewrites, folder) for s in ("A", "B")}
    names = {"A": "PRIMARY KEY + INSERT OR REPLACE", "B": "slice DELETE + INSERT (gsckit)"}
    print(f"DuckDB {duckdb.__version__}; {days} slices x {rows:,} rows; {rewrites} slices "
          "re-written")
    print(f"{'strategy':34} {'load us/row':>11} {'rewrite us/row':>14} {'file MB':>8} "
          f"{'count ms':>9} {'top100 ms':>9} {'stale rows':>10}")
    for strategy, r in results.items():
        print(f"{names[strategy]:34} {r['load_us_per_row']:11.2f} {r['rewrite_us_per_row']:14.2f} "
              f"{r['file_mb']:8.1f} {r['count_ms']:9.1f} {r['top100_ms']:9.1f} "
              f"{r['stale_rows']:10,}")
    print(json.dumps({"duckdb": duckdb.__version__, **results}))


if __name__ == "__main__":
    main()
