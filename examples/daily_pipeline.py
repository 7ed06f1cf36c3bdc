"""A scheduled daily pipeline: sync several properties, with an audit log and exit codes a
scheduler understands (0 done, 1 halted or incomplete: re-run later, 2 bad input: fix the job,
75 the database is busy: re-run later).

    python examples/daily_pipeline.py sc-domain:example.com https://shop.example.com/ \
        --credentials service-account.json --db gsc.duckdb --audit-log gsc-audit.jsonl

Each run is one ``gsckit.sync``: per property, one request asks Google for its newest final day,
then the missing days are fetched through the newest day with data, the fresh (partial) days
are fetched again, those that became final are promoted, and recent final days are re-checked
once. Safe to re-run at any time: a second run the same day sends only what the fresh days need.
Try it offline against the simulator with ``--base-url http://127.0.0.1:8765/ --token any``
after ``gsckit sim``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

import gsckit
from gsckit.planner import pacific_today


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sites", nargs="+")
    parser.add_argument("--days", type=int, default=None,
                        help="keep the last N days complete (default: from the day after each "
                        "property's last final day; a new property: 16 months back)")
    parser.add_argument("--data-state", default="all", choices=("all", "final"),
                        help="all: fresh days too, promoted when final; final: final days only")
    parser.add_argument("--db", default="gsc.duckdb")
    parser.add_argument("--audit-log", default="gsc-audit.jsonl")
    parser.add_argument("--credentials", help="service-account or authorized-user JSON")
    parser.add_argument("--token", help="access token (else GSC_ACCESS_TOKEN)")
    parser.add_argument("--base-url", default=None, help="API root (the simulator for a dry run)")
    args = parser.parse_args(argv)

    start = None if args.days is None else pacific_today() - timedelta(days=args.days - 1)
    try:
        report = gsckit.sync(
            args.sites, start=start, dimensions=["date", "query", "page"],
            data_state=args.data_state, db=args.db, audit_log=args.audit_log,
            credentials=args.credentials, token=args.token, base_url=args.base_url,
            progress=False,
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
