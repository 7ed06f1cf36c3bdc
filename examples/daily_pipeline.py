"""A scheduled daily pipeline: several properties, the last N final days, an audit log, and exit
codes a scheduler understands (0 done, 1 halted or incomplete: re-run later, 2 bad input).

    python examples/daily_pipeline.py sc-domain:example.com https://shop.example.com/ \
        --credentials service-account.json --db gsc.duckdb --audit-log gsc-audit.jsonl

Safe to re-run at any time: committed days are skipped, so a cron entry every few hours simply
completes whatever is missing. Try it offline against the simulator with
``--base-url http://127.0.0.1:8765/ --token any`` after ``gsckit sim``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

import gsckit
from gsckit.planner import pacific_today

FINAL_LAG_DAYS = 3  # Search Console finalises a day after 2-3 days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sites", nargs="+")
    parser.add_argument("--days", type=int, default=30, help="days back to keep complete")
    parser.add_argument("--db", default="gsc.duckdb")
    parser.add_argument("--audit-log", default="gsc-audit.jsonl")
    parser.add_argument("--credentials", help="service-account or authorized-user JSON")
    parser.add_argument("--token", help="access token (else GSC_ACCESS_TOKEN)")
    parser.add_argument("--base-url", default=None, help="API root (the simulator for a dry run)")
    args = parser.parse_args(argv)

    end = pacific_today() - timedelta(days=FINAL_LAG_DAYS)
    start = end - timedelta(days=args.days - 1)
    try:
        report = gsckit.backfill(
            args.sites, start, end, dimensions=["date", "query", "page"], db=args.db,
            audit_log=args.audit_log, credentials=args.credentials, token=args.token,
            base_url=args.base_url, progress=False,
        )
    except gsckit.GsckitError as exc:
        print(f"daily_pipeline: {exc}", file=sys.stderr)
        return exc.exit_code
    print(report.summary())
    for failure in report.failures:
        print(f"  failed: {failure}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
