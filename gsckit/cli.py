"""The ``gsckit`` command line: a thin layer over the library.

Each command is one block: ``_add_NAME(commands)`` declares it with ``_command(...)`` (whose
``codes`` are the exit codes its ``--help`` lists) and the shared option groups ``add_*`` below,
and ``_NAME(args)`` calls the library. To add a command, write both and list the adder in
``COMMANDS``; ``tests/test_docs.py`` then wants every flag in the README.

Errors are one line on stderr and never contain a token. SIGTERM is handled like Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import signals
from .auth import TOKEN_ENV
from .cli_connect import add_connect_commands, credential_kwargs
from .config import EngineConfig
from .coordinator import Report
from .errors import ConfigError, GsckitError, RunHalted
from .planner import (
    DATA_STATES,
    DEFAULT_DIMENSIONS,
    DIMENSIONS,
    SEARCH_TYPES,
    HorizonWarning,
    pacific_today,
)
from .runner import (
    DEFAULT_LOOKBACK_DAYS,
    Preview,
    backfill_async,
    preview,
    preview_sync,
    sync_async,
)
from .split import SPLIT_MODES
from .store import Database

DEMO_SITE = "sc-domain:demo.example"
DEMO_TOKEN = "demo-token"
SIM_TOKEN = "sim-token"
DEFAULT_DB = "gsc.duckdb"

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT = 0, 1, 2
EXIT_BUSY, EXIT_INTERRUPTED, EXIT_TERMINATED = 75, 130, 143
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INCOMPLETE: "a halted or incomplete run: completed days are saved, re-run to resume",
    EXIT_BAD_INPUT: "bad input: nothing sent, nothing written",
    EXIT_BUSY: "the database is busy (another process holds its lock): try again later",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C): completed days are saved",
    EXIT_TERMINATED: "terminated (SIGTERM): completed days are saved",
}
_DEFAULTS = EngineConfig()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see gsckit {self.prog.split()[-1]} --help)" if " " in self.prog else ""
        self.exit(EXIT_BAD_INPUT, f"gsckit: error: {message}{hint}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default and keeps multi-line paragraphs as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.nargs == 0
                or action.default in (None, argparse.SUPPRESS, [])):
            return text
        return f"{text} (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def exit_codes_epilog(*codes: int) -> str:
    """The 'exit codes:' paragraph that ends a command's ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {EXIT_CODES[code]}" for code in codes)


def _command(commands: Any, name: str, *, summary: str, description: str,
             codes: Sequence[int] = tuple(EXIT_CODES)) -> argparse.ArgumentParser:
    """A subcommand whose help shows every default and ends with its exit ``codes``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description, epilog=exit_codes_epilog(*codes),
        formatter_class=_HelpFormatter)
    return parser


# --- shared option groups ---------------------------------------------------------------------

def add_site_argument(parser: argparse.ArgumentParser) -> None:
    """The positional SITE [SITE ...] of a command that fetches."""
    parser.add_argument("site", nargs="+", help="property: sc-domain:example.com or "
                        "https://www.example.com/ (several allowed)")


def add_range_options(parser: argparse.ArgumentParser) -> None:
    """--start and --end, both required."""
    group = parser.add_argument_group("days")
    group.add_argument("--start", required=True, help="first day, YYYY-MM-DD (Pacific time; "
                       "required). Older than 16 months: moved to the earliest day, with a warning")
    group.add_argument("--end", required=True, help="last day, YYYY-MM-DD (Pacific time; "
                       "required)")


def add_query_options(parser: argparse.ArgumentParser, data_state: str = "final") -> None:
    """What a stream is: --dimensions, --search-type, --data-state, --filter."""
    group = parser.add_argument_group("what to fetch")
    group.add_argument("--dimensions", default=",".join(DEFAULT_DIMENSIONS),
                       help=f"comma-separated, from {','.join(DIMENSIONS)}")
    group.add_argument("--search-type", default="web",
                       help=f"comma-separated, from {', '.join(SEARCH_TYPES)}")
    group.add_argument("--data-state", default=data_state, help=f"one of {', '.join(DATA_STATES)}"
                       ": final days only (later days are not final yet and left alone), or fresh "
                       "data too (committed as fresh, replaced by the final figures later); "
                       "hourly_all with the hour dimension")
    group.add_argument("--filter", action="append", default=[], metavar="'DIM OP VALUE'",
                       help="e.g. 'page contains /blog/'; repeatable, all must match "
                       "(default: no filter)")


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """--db, the DuckDB file every command works on, and --wait, how long it may be busy."""
    parser.add_argument("--db", default=DEFAULT_DB, help="the DuckDB file")
    parser.add_argument("--wait", type=float, default=_DEFAULTS.db_wait_s, metavar="SECONDS",
                        help="how long to wait while another process holds the database (a "
                        "reader waits for the running backfill's next commit) before exit 75")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The :class:`EngineConfig` knobs; read them back with :func:`engine_config`."""
    group = parser.add_argument_group("engine")
    group.add_argument("--concurrency", type=int, default=_DEFAULTS.max_concurrency,
                       help="worker tasks; 1 is the sequential mode")
    group.add_argument("--qpm", type=int, default=_DEFAULTS.qpm,
                       help="max requests per rate window, per site and per credential")
    group.add_argument("--qpm-window-s", type=float, default=_DEFAULTS.qpm_window_s,
                       help="the rate window in seconds")
    group.add_argument("--base-url", default=_DEFAULTS.base_url,
                       help="API root: Google's, or a loopback URL such as the simulator's")


def add_auth_options(parser: argparse.ArgumentParser) -> None:
    """--token or --credentials (repeatable: a pool), --impersonate; without them, the
    environment (see 'Connect to Google' in the README); read back with ``credential_kwargs``."""
    group = parser.add_argument_group("credentials (default: $GSC_ACCESS_TOKEN, "
                                      "$GOOGLE_APPLICATION_CREDENTIALS, the 'gsckit login' "
                                      "file, gcloud's ADC, in that order)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--token", help=f"an OAuth access token (default: ${TOKEN_ENV}, which "
                        "other local users cannot see on the command line)")
    choice.add_argument("--credentials", metavar="FILE", action="append",
                        help="a service-account or authorized-user JSON file; repeat it to pool "
                        "several credentials, whose per-user quotas add up (default: the "
                        "environment, in the order above)")
    group.add_argument("--impersonate", metavar="EMAIL",
                       help="act as this service account with the credentials found (default: "
                       "no impersonation)")


def add_run_output_options(parser: argparse.ArgumentParser) -> None:
    """--audit-log, --json and --no-progress for a command that runs the engine."""
    group = parser.add_argument_group("output")
    group.add_argument("--audit-log", metavar="FILE",
                       help="append JSON-lines audit events to FILE (default: no audit log)")
    group.add_argument("--json", action="store_true", help="print one JSON summary line")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The :class:`EngineConfig` that :func:`add_engine_options` asked for."""
    return EngineConfig(max_concurrency=args.concurrency, qpm=args.qpm,
                        qpm_window_s=args.qpm_window_s, base_url=args.base_url,
                        db_wait_s=getattr(args, "wait", _DEFAULTS.db_wait_s))


# --- backfill ---------------------------------------------------------------------------------

def _add_backfill(commands: Any) -> None:
    run = _command(commands, "backfill", summary="backfill Search Analytics days into DuckDB",
                   description="Fetch every day from --start to --end, page by page, and commit "
                   "each day atomically. Re-running resumes: committed days are skipped.")
    add_site_argument(run)
    add_range_options(run)
    add_query_options(run)
    add_db_option(run)
    add_engine_options(run)
    add_auth_options(run)
    add_run_output_options(run)
    run.add_argument("--force", action="store_true", help="re-fetch days already committed")
    run.add_argument("--no-preflight", action="store_true", help="skip the sites.list check "
                     "that every site is readable before the first data request")
    run.add_argument("--dry-run", action="store_true", help="validate and print what would be "
                     "fetched (days, requests, time at the rate limit); send and write nothing")
    add_split_option(run)
    run.set_defaults(handler=_backfill)


def add_split_option(parser: argparse.ArgumentParser) -> None:
    """--split: whether days that reach the API's 50,000-row cap are fetched in partitions."""
    parser.add_argument("--split", choices=SPLIT_MODES, default="auto",
                        help="auto: fetch a day whose answer reaches the 50,000-row cap again "
                        "by device, then by country, and store the merged rows (stops on a "
                        "stream where it gains nothing); off: keep the capped answer")


def _backfill(args: argparse.Namespace) -> int:
    config = engine_config(args)
    if args.dry_run:
        _print_preview(preview(args.site, args.start, args.end, dimensions=args.dimensions,
                               search_type=args.search_type, data_state=args.data_state,
                               filters=args.filter, db=args.db, config=config,
                               force=args.force, split=args.split), args.json)
        return EXIT_OK
    report = signals.run(backfill_async(
        args.site, args.start, args.end, dimensions=args.dimensions,
        search_type=args.search_type, data_state=args.data_state, filters=args.filter,
        db=args.db, config=config, preflight=not args.no_preflight, **credential_kwargs(args),
        audit_log=args.audit_log, progress=not args.no_progress and "auto", force=args.force,
        split=args.split))
    print(json.dumps(_summary(report)) if args.json else report.summary())
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


def _summary(report: Report) -> dict[str, Any]:
    return {"requests": report.requests, "retries": report.retries, "rows": report.rows,
            "slices": report.slices, "done": report.done, "skipped": report.skipped,
            "failed": report.failed, "wall_s": report.wall_s, "peak_qpm": report.peak_qpm,
            "halted": report.halted, "error": report.error, "stopped": report.stopped,
            "stopped_sites": dict(report.stopped_sites), "rate_limited": report.rate_limited,
            "fresh_days": report.fresh_days, "final_days": report.final_days,
            "promoted": report.promoted, "not_final_yet": report.not_final_yet,
            "kept": report.kept, "probes": report.probes,
            "split_days": report.split_days, "split_requests": report.split_requests,
            "completeness": report.completeness.to_dict() if report.completeness else None}


def _print_preview(plan: Preview, as_json: bool) -> None:
    print(json.dumps(dataclasses.asdict(plan), default=str) if as_json else plan.summary())


# --- sync -------------------------------------------------------------------------------------

def _add_sync(commands: Any) -> None:
    run = _command(commands, "sync", summary="bring a database up to date (the daily job)",
                   description="Per stream, ask Google for its newest final day (one request), "
                   "then fetch every missing day from --start (default: the day after the "
                   "stream's last final day; a new stream: 16 months back) through the newest "
                   "day with data, fetch every fresh day again, promote fresh days that became "
                   "final, and re-check recent final days once. Two syncs in a row send only "
                   "what fresh days need.")
    add_site_argument(run)
    run.add_argument("--start", help="first day, YYYY-MM-DD (default: the day after each "
                     "stream's last final day; a new stream: 16 months back)")
    add_query_options(run, data_state="all")
    run.add_argument("--lookback-days", type=int, default=DEFAULT_LOOKBACK_DAYS, metavar="N",
                     help="final days among the newest N final days are fetched once more, in "
                     "the first sync after Google's newest final day moved on (0: never)")
    add_db_option(run)
    add_engine_options(run)
    add_auth_options(run)
    add_split_option(run)
    add_run_output_options(run)
    run.add_argument("--no-preflight", action="store_true", help="skip the sites.list check "
                     "that every site is readable before the first data request")
    run.add_argument("--dry-run", action="store_true", help="print what a sync would fetch "
                     "and why (missing, fresh, re-check) from the ledger and the date; send "
                     "and write nothing (Google's newest final day is estimated)")
    run.set_defaults(handler=_sync)


def _sync(args: argparse.Namespace) -> int:
    config = engine_config(args)
    if args.dry_run:
        _print_preview(preview_sync(
            args.site, start=args.start, dimensions=args.dimensions,
            search_type=args.search_type, data_state=args.data_state, filters=args.filter,
            lookback_days=args.lookback_days, db=args.db, config=config, split=args.split),
            args.json)
        return EXIT_OK
    report = signals.run(sync_async(
        args.site, start=args.start, dimensions=args.dimensions,
        search_type=args.search_type, data_state=args.data_state, filters=args.filter,
        lookback_days=args.lookback_days, db=args.db, config=config,
        preflight=not args.no_preflight, **credential_kwargs(args), audit_log=args.audit_log,
        progress=not args.no_progress and "auto", split=args.split))
    print(json.dumps(_summary(report)) if args.json else report.summary())
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


# --- status -----------------------------------------------------------------------------------

def _add_status(commands: Any) -> None:
    status = _command(commands, "status", summary="which days are complete in a database",
                      description="Summarise the ledger: complete days per stream, how many "
                      "hold Google's final data and how many fresh (partial) data, the newest "
                      "final day, and the gaps.",
                      codes=(EXIT_OK, EXIT_BAD_INPUT, EXIT_BUSY, EXIT_INTERRUPTED,
                             EXIT_TERMINATED))
    add_db_option(status)
    status.add_argument("--json", action="store_true", help="one JSON object per stream")
    status.set_defaults(handler=_status)


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

        # one line per stream, however wide: a wrapped site name is unreadable
        frame = frame.with_columns(pl.col("last_fetched").dt.strftime("%Y-%m-%d %H:%M UTC"))
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=1000, fmt_str_lengths=100,
                       tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
            print(frame)
    return EXIT_OK


# --- completeness -----------------------------------------------------------------------------

def _add_completeness(commands: Any) -> None:
    report = _command(commands, "completeness", summary="how complete each committed day is",
                      description="Measure every committed day against Google's daily totals: "
                      "rows, pages and requests; detail clicks against the totals and the share "
                      "hidden from the rows; whether the 50,000-row cap cut the day, whether it "
                      "was split and what splitting gained. One line per stream, then the "
                      "days. A reader: read-only, it waits for a running backfill's next commit.",
                      codes=(EXIT_OK, EXIT_BAD_INPUT, EXIT_BUSY, EXIT_INTERRUPTED,
                             EXIT_TERMINATED))
    add_db_option(report)
    report.add_argument("--site", help="only this property (default: every site)")
    report.add_argument("--start", help="first day, YYYY-MM-DD (default: the first committed)")
    report.add_argument("--end", help="last day, YYYY-MM-DD (default: the last committed)")
    report.add_argument("--json", action="store_true", help="one JSON object per day")
    report.set_defaults(handler=_completeness)


def _completeness(args: argparse.Namespace) -> int:
    from .completeness import by_stream
    from .planner import check_day, check_site

    if not 0 <= args.wait <= 86_400:
        raise ConfigError(f"--wait must be 0..86400 seconds, got {args.wait:g}")
    site = check_site(args.site) if args.site is not None else None
    start = check_day(args.start, "start") if args.start is not None else None
    end = check_day(args.end, "end") if args.end is not None else None
    frame = Database(args.db, wait=args.wait).completeness(site, start=start, end=end)
    if args.json:
        for row in frame.iter_rows(named=True):
            print(json.dumps(row, default=str))
    elif frame.height == 0:
        print(f"{args.db}: no committed days" + (" in that range" if start or end else " yet"))
    else:
        import polars as pl

        for name, summary in by_stream(frame).items():
            print(f"{name}: {summary.line()}")
        shown = frame.select(
            "site", "search_type", "dimensions", "date", "data_state", "rows", "requests",
            "detail_clicks", "total_clicks", pl.col("hidden_clicks_share").round(4),
            "capped", "split", "gained_rows", "gained_clicks")
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=220, fmt_str_lengths=30):
            print(shown)
    return EXIT_OK


# --- sim --------------------------------------------------------------------------------------

def _add_sim(commands: Any) -> None:
    sim = _command(commands, "sim", summary="run the Search Console simulator on 127.0.0.1",
                   description="Serve a fake Search Analytics API for offline use, and print "
                   "the gsckit commands to run against it from another shell. Ctrl-C or "
                   "SIGTERM stops it (exit 0).", codes=(EXIT_OK, EXIT_BAD_INPUT))
    sim.add_argument("--host", default="127.0.0.1", help="loopback address")
    sim.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one")
    sim.add_argument("--rows-per-day", type=int, default=30_000,
                     help="rows per day and search type, of which at most 50000 are exposed")
    sim.add_argument("--latency-ms", type=float, default=0.0,
                     help="mean added latency per request")
    sim.add_argument("--quota-qpm", type=int, default=1200,
                     help="requests per window, per site and per token, before 429s")
    sim.add_argument("--window-s", type=float, default=60.0, help="the quota window in seconds")
    sim.add_argument("--seed", type=int, default=1, help="data seed")
    _add_sim_behaviour(sim)
    sim.set_defaults(handler=_sim)


def _add_sim_behaviour(sim: argparse.ArgumentParser) -> None:
    """The simulator's time and completeness settings (gsckit.sim.SimConfig has the details)."""
    sim.add_argument("--now", help="freeze the simulated clock at this ISO date or time "
                     "(Pacific; default: the real clock); move it with POST /_sim/clock")
    sim.add_argument("--final-lag-days", type=int, default=3,
                     help="days are final through today minus this; newer days are fresh")
    sim.add_argument("--all-final", action="store_true", help="every day final and static")
    sim.add_argument("--row-cap", type=int, default=50_000,
                     help="rows exposed per day and search type")
    sim.add_argument("--anonymized-share", type=float, default=0.2,
                     help="share of clicks from anonymized queries")
    sim.add_argument("--anonymized-dropped-by", choices=("query_filter", "any_filter"),
                     default="query_filter", help="which filters drop anonymized traffic")
    sim.add_argument("--filters-after-cap", action="store_true",
                     help="apply filters after the daily cap instead of before it")
    sim.add_argument("--metadata-style", choices=("camel", "snake"), default="camel",
                     help="firstIncompleteDate (camel) or first_incomplete_date (snake)")


def _sim(args: argparse.Namespace) -> int:
    from .sim import SimConfig

    config = SimConfig(seed=args.seed, rows_per_day=args.rows_per_day,
                       latency_s=args.latency_ms / 1000, quota_qpm=args.quota_qpm,
                       window_s=args.window_s, now=args.now,
                       final_lag_days=args.final_lag_days, all_final=args.all_final,
                       row_cap=args.row_cap, anonymized_share=args.anonymized_share,
                       anonymized_dropped_by=args.anonymized_dropped_by,
                       filters_before_cap=not args.filters_after_cap,
                       metadata_style=args.metadata_style)
    try:
        signals.run(_serve(config, args.host, args.port))
    except (KeyboardInterrupt, signals.Terminated):
        pass  # the normal way to stop a server
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
                          "choose another --port (0 picks a free one)") from None
    return EXIT_OK


async def _serve(config: Any, host: str, port: int) -> None:
    from .sim import Simulator

    async with Simulator(config, host=host, port=port) as sim:
        print(f"gsckit simulator listening on {sim.base_url} (Ctrl-C to stop)")
        _print_commands("Try it from another shell (any token works):",
                        sim_commands(sim.base_url))
        sys.stdout.flush()
        await asyncio.Event().wait()


def sim_commands(base_url: str, today: date | None = None) -> list[str]:
    """The dry-run, backfill, sync and status lines to paste against a simulator at
    ``base_url``: the backfill takes the last seven final days, the sync adds the fresh ones."""
    end = (today or pacific_today()) - timedelta(days=3)
    start = end - timedelta(days=6)
    gsckit = gsckit_command()
    target = ["--db", "sim.duckdb", "--base-url", shlex.quote(base_url), "--token", SIM_TOKEN]
    backfill = [gsckit, "backfill", DEMO_SITE, "--start", str(start), "--end", str(end), *target]
    sync = [gsckit, "sync", DEMO_SITE, "--start", str(start), *target]
    return [" ".join([*backfill, "--dry-run"]), " ".join(backfill), " ".join(sync),
            f"{gsckit} status --db sim.duckdb"]


# --- demo -------------------------------------------------------------------------------------

def _add_demo(commands: Any) -> None:
    demo = _command(commands, "demo", summary="backfill 90 days from the built-in simulator",
                    description="Start the simulator, backfill 90 days with realistic "
                    "latency, print a summary and the top queries, then the commands to "
                    "explore further. Without --db the database is temporary and removed on "
                    "exit.", codes=(EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT, EXIT_INTERRUPTED,
                                    EXIT_TERMINATED))
    demo.add_argument("--days", type=int, default=90, help="days to backfill, 1..480")
    demo.add_argument("--db", help="keep the database in this DuckDB file (default: a "
                      "temporary file, removed on exit)")
    demo.add_argument("--latency-ms", type=float, default=800.0,
                      help="simulated latency per request, +/-50%%")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= 480:
        raise ConfigError("--days must be 1..480")
    with contextlib.ExitStack() as stack:
        if args.db:
            db = args.db
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(
                prefix="gsckit-demo-", ignore_cleanup_errors=True))
            db = os.path.join(folder, "demo.duckdb")
        report = signals.run(_run_demo(args.days, db, args.latency_ms / 1000,
                                       not args.no_progress))
        print(report.summary())
        top = Database(db).sql(
            "SELECT query, sum(clicks)::BIGINT AS clicks, sum(impressions)::BIGINT AS "
            "impressions, round(sum(clicks) / sum(impressions), 4) AS ctr FROM "
            "search_analytics GROUP BY query ORDER BY clicks DESC, query LIMIT 10")
        print(f"\nTop queries in {db}:" if args.db else "\nTop queries:")
        print(top)
    _print_commands(*_demo_next_steps(args))
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


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


def _demo_next_steps(args: argparse.Namespace) -> tuple[str, list[str]]:
    gsckit = gsckit_command()
    lines = []
    if args.db:
        db = str(Path(args.db).absolute())
        header = "\nExplore it (paste into any shell):"
    else:
        db = "demo.duckdb"
        header = ("\nThe temporary database was removed. To keep one and explore it, paste "
                  "into any shell:")
        rerun = [gsckit, "demo"]
        for flag, value, default in (("--days", args.days, 90),
                                     ("--latency-ms", args.latency_ms, 800.0)):
            if value != default:
                rerun += [flag, f"{value:g}"]
        lines.append(" ".join([*rerun, "--db", db]))
    code = f"import gsckit; print(gsckit.open({json.dumps(db)}).frame())"
    lines += [f"{gsckit} status --db {shlex.quote(db)}",
              f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"]
    return header, lines


# --- export -----------------------------------------------------------------------------------

def _add_export(commands: Any) -> None:
    export = _command(commands, "export", summary="write the rows as Hive-partitioned Parquet "
                      "(incremental)", description="Write search_analytics as Hive-partitioned "
                      "Parquet through DuckDB's COPY. A re-export rewrites only the partitions "
                      "whose days changed since the last one.",
                      codes=(EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT, EXIT_BUSY))
    export.add_argument("db", help="the DuckDB file written by gsckit")
    export.add_argument("--to", required=True, metavar="DIR", help="the export folder "
                        "(required; created; _gsckit_export.json in it records what was "
                        "exported)")
    export.add_argument("--partition-by", default="site,month", help="comma-separated keys "
                        "from site, search_type, dimensions, year, month")
    export.add_argument("--full", action="store_true", help="rewrite every partition (also to "
                        "change the partitioning of an existing folder)")
    export.add_argument("--json", action="store_true", help="print one JSON summary line")
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    report = Database(args.db).export_parquet(args.to, partition_by=args.partition_by,
                                              full=args.full)
    print(json.dumps(report.to_dict()) if args.json else report.summary())
    return EXIT_OK


# --- what a fresh shell can run -------------------------------------------------------------

def gsckit_command() -> str:
    """How a fresh shell runs this gsckit: plain ``gsckit`` when its PATH already finds this one,
    else this one's full path (a fresh shell has no virtualenv activated)."""
    script = Path(sys.argv[0]).absolute()
    if script.name != "gsckit" or not script.is_file():
        return f"{shlex.quote(sys.executable)} -m gsckit"
    found = shutil.which("gsckit")
    if found and Path(found).absolute() == script and not os.environ.get("VIRTUAL_ENV"):
        return "gsckit"
    return shlex.quote(str(script))


def _print_commands(header: str, lines: list[str]) -> None:
    print(header)
    for line in lines:
        print(f"  {line}")
    if sys.prefix != sys.base_prefix and gsckit_command() != "gsckit":
        activate = shlex.quote(str(Path(sys.prefix) / "bin" / "activate"))
        print(f"  source {activate}   # optional: then plain 'gsckit' and 'python' work here")


# --- entry point ------------------------------------------------------------------------------

COMMANDS: tuple[Callable[[Any], None], ...] = (_add_backfill, _add_sync, _add_status,
                                               _add_completeness, _add_sim, _add_demo,
                                               add_connect_commands, _add_export)


def build_parser() -> argparse.ArgumentParser:
    """The ``gsckit`` parser with every command in ``COMMANDS``."""
    parser = _Parser(prog="gsckit", description="Fast, quota-safe, crash-safe Google Search "
                     "Console backfills into DuckDB. Run 'gsckit COMMAND --help' for a "
                     "command's options.", epilog=exit_codes_epilog(*EXIT_CODES),
                     formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gsckit`` command; returns the exit status."""
    try:
        code = _dispatch(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader stopped reading (``gsckit completeness | head``): the output it did not
        # want goes nowhere, instead of a traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    """Run one command and turn its errors into one line and an exit status."""
    with signals.sigterm_cancels(), _one_line_warnings():
        try:
            args = build_parser().parse_args(argv)
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
            return EXIT_INTERRUPTED
        except signals.Terminated:
            print("gsckit: terminated (SIGTERM); completed days are saved, re-run to resume",
                  file=sys.stderr)
            return EXIT_TERMINATED


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show a moved start (:class:`HorizonWarning`) as one stderr line, every time."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, HorizonWarning):
            print(f"gsckit: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        default = warnings.showwarning
        warnings.simplefilter("always", HorizonWarning)
        warnings.showwarning = show
        yield
