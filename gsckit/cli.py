"""The ``gsckit`` command line: a thin layer over the library.

Exit codes: 0 success; 1 a halted or incomplete run; 2 bad input (nothing sent, nothing written);
75 the database is busy (another backfill writes it, or it stayed held past --wait: retry later);
130 interrupted. Errors are one line on stderr, and never contain a token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NoReturn

from .auth import TOKEN_ENV
from .config import DEFAULT_BASE_URL, EngineConfig
from .coordinator import Report
from .errors import ConfigError, GsckitError, RunHalted
from .planner import DATA_STATES, pacific_today
from .runner import backfill_async, preview
from .store import Database

DEMO_SITE = "sc-domain:demo.example"
DEMO_TOKEN = "demo-token"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"gsckit: error: {message} (see gsckit {self.prog.split()[-1]} --help)\n"
                  if " " in self.prog else f"gsckit: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gsckit", description="Fast, quota-safe, crash-safe Google Search "
                     "Console backfills into DuckDB.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("backfill", help="backfill Search Analytics days into DuckDB",
                              description="Fetch every day from --start to --end, page by page, "
                              "and commit each day atomically. Re-running resumes.")
    run.add_argument("site", nargs="+", help="property: sc-domain:example.com or "
                     "https://www.example.com/")
    run.add_argument("--start", required=True, help="first day, YYYY-MM-DD (Pacific time)")
    run.add_argument("--end", required=True, help="last day, YYYY-MM-DD (Pacific time)")
    run.add_argument("--dimensions", default="date,query,page",
                     help="comma-separated: date,query,page,country,device,searchAppearance,hour")
    run.add_argument("--search-type", default="web",
                     help="web, image, video, news, discover, googleNews (comma-separated)")
    run.add_argument("--data-state", default="final", help=f"one of {', '.join(DATA_STATES)}")
    run.add_argument("--filter", action="append", default=[], metavar="'DIM OP VALUE'",
                     help="e.g. 'page contains /blog/' (repeatable; all must match)")
    run.add_argument("--db", default="gsc.duckdb", help="DuckDB file (default gsc.duckdb)")
    run.add_argument("--concurrency", type=int, default=8, help="worker tasks (1 = sequential)")
    run.add_argument("--qpm", type=int, default=960,
                     help="max requests per window, per site and per credential (default 960)")
    run.add_argument("--qpm-window-s", type=float, default=60.0,
                     help="rate window in seconds (default 60)")
    run.add_argument("--base-url", default=DEFAULT_BASE_URL,
                     help="API root: Google's, or a loopback URL such as the simulator's")
    auth = run.add_mutually_exclusive_group()
    auth.add_argument("--token", help=f"OAuth access token (prefer ${TOKEN_ENV})")
    auth.add_argument("--credentials", metavar="FILE",
                      help="service-account or authorized-user JSON file")
    run.add_argument("--audit-log", metavar="FILE", help="append JSON-lines audit events here")
    run.add_argument("--json", action="store_true", help="print one JSON summary line")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--force", action="store_true", help="re-fetch days already committed")
    run.add_argument("--dry-run", action="store_true", help="validate and print what would be "
                     "fetched (days, requests, time at the rate limit); send and write nothing")
    run.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                     help="how long to wait for a database another process holds before "
                     "exiting 75 (default 5)")
    run.set_defaults(handler=_backfill)

    status = commands.add_parser("status", help="which days are complete in a database",
                                 description="Summarise the ledger: complete days per stream.")
    status.add_argument("--db", default="gsc.duckdb", help="DuckDB file (default gsc.duckdb)")
    status.add_argument("--json", action="store_true", help="one JSON object per stream")
    status.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait while a backfill holds the database before "
                        "exiting 75 (default 5)")
    status.set_defaults(handler=_status)

    sim = commands.add_parser("sim", help="run the Search Console simulator on 127.0.0.1",
                              description="Serve a fake Search Analytics API for offline use.")
    sim.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sim.add_argument("--rows-per-day", type=int, default=30_000, help="rows per day (default "
                     "30000, capped at 50000 exposed)")
    sim.add_argument("--latency-ms", type=float, default=0.0, help="mean added latency per "
                     "request (default 0)")
    sim.add_argument("--quota-qpm", type=int, default=1200, help="per-site and per-token "
                     "quota before 429s (default 1200)")
    sim.add_argument("--window-s", type=float, default=60.0, help="quota window (default 60)")
    sim.add_argument("--seed", type=int, default=1, help="data seed (default 1)")
    sim.set_defaults(handler=_sim)

    demo = commands.add_parser("demo", help="backfill 90 days from the built-in simulator",
                               description="Start the simulator, backfill 90 days with "
                               "realistic latency, then print a summary and the top queries.")
    demo.add_argument("--days", type=int, default=90, help="days to backfill (default 90)")
    demo.add_argument("--db", help="DuckDB file (default: a fresh temporary file)")
    demo.add_argument("--latency-ms", type=float, default=800.0,
                      help="simulated latency per request, +/-50%% (default 800)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gsckit`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except RunHalted as exc:
        if getattr(args, "json", False) and exc.report is not None:
            print(json.dumps(_summary(exc.report)))
        print(f"gsckit: {exc}", file=sys.stderr)
        return exc.exit_code
    except GsckitError as exc:
        print(f"gsckit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gsckit: interrupted; completed days are saved, re-run to resume",
              file=sys.stderr)
        return 130


def _summary(report: Report) -> dict[str, Any]:
    return {"requests": report.requests, "retries": report.retries, "rows": report.rows,
            "slices": report.slices, "done": report.done, "skipped": report.skipped,
            "failed": report.failed, "wall_s": report.wall_s, "peak_qpm": report.peak_qpm,
            "halted": report.halted, "error": report.error}


def _backfill(args: argparse.Namespace) -> int:
    config = EngineConfig(max_concurrency=args.concurrency, qpm=args.qpm,
                          qpm_window_s=args.qpm_window_s, base_url=args.base_url,
                          db_wait_s=args.wait)
    if args.dry_run:
        plan = preview(args.site, args.start, args.end, dimensions=args.dimensions,
                       search_type=args.search_type, data_state=args.data_state,
                       filters=args.filter, db=args.db, config=config, force=args.force)
        print(json.dumps(dataclasses.asdict(plan)) if args.json else plan.summary())
        return 0
    report = asyncio.run(backfill_async(
        args.site, args.start, args.end, dimensions=args.dimensions,
        search_type=args.search_type, data_state=args.data_state, filters=args.filter,
        db=args.db, token=args.token, credentials=args.credentials, config=config,
        audit_log=args.audit_log, progress=not args.no_progress and "auto", force=args.force))
    if args.json:
        print(json.dumps(_summary(report)))
    else:
        print(report.summary())
    return 0 if report.ok else 1


def _status(args: argparse.Namespace) -> int:
    if not 0 <= args.wait <= 86_400:
        raise ConfigError(f"--wait must be 0..86400 seconds, got {args.wait:g}")
    frame = Database(args.db, wait=args.wait).status()
    if args.json:
        for row in frame.iter_rows(named=True):
            print(json.dumps(row, default=str))
    elif frame.height == 0:
        print(f"{args.db}: no complete days yet")
    else:
        import polars as pl

        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=40):
            print(frame)
    return 0


def _sim(args: argparse.Namespace) -> int:
    from .sim import SimConfig, serve

    config = SimConfig(seed=args.seed, rows_per_day=args.rows_per_day,
                       latency_s=args.latency_ms / 1000, quota_qpm=args.quota_qpm,
                       window_s=args.window_s)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.host, args.port))
    return 0


def _demo(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= 480:
        raise ConfigError("--days must be 1..480")
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="gsckit-demo-"), "demo.duckdb")
    report = asyncio.run(_run_demo(args.days, db, args.latency_ms / 1000, not args.no_progress))
    print(report.summary())
    top = Database(db).sql(
        "SELECT query, sum(clicks)::BIGINT AS clicks, sum(impressions)::BIGINT AS impressions, "
        "round(sum(clicks) / sum(impressions), 4) AS ctr FROM search_analytics "
        "GROUP BY query ORDER BY clicks DESC, query LIMIT 10")
    print(f"\nTop queries in {db}:")
    print(top)
    print(f"\nExplore it: gsckit.open({db!r}).frame()  or  gsckit status --db {db}")
    return 0 if report.ok else 1


async def _run_demo(days: int, db: str, latency_s: float, progress: bool) -> Report:
    from .sim import SimConfig, Simulator

    def rows_per_day(site: str, search_type: str, day: Any) -> int:
        return 8_000 + (day.toordinal() * 7_919) % 40_000

    end = pacific_today() - timedelta(days=3)
    start = end - timedelta(days=days - 1)
    async with Simulator(SimConfig(rows_per_day=rows_per_day, latency_s=latency_s)) as sim:
        print(f"simulator on {sim.base_url}; backfilling {days} days of {DEMO_SITE} into {db}")
        return await backfill_async(DEMO_SITE, start, end, db=db, token=DEMO_TOKEN,
                                    base_url=sim.base_url, progress=progress or False)
