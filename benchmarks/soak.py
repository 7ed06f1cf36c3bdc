"""The reliability campaign (issue 5 §8): SIGKILLs of one long CLI backfill, then a fault storm.

    python benchmarks/soak.py                      # the full campaign, as `make soak` runs it
    python benchmarks/soak.py --kills 10 --requests 1000   # a quick look

**Kills**: one ``gsckit backfill`` command (a real subprocess) against a simulator in a thread of
this process, SIGKILLed at a random moment and relaunched, ``--kills`` times, then run to its end.
Each launch is killed at a random moment: one in eight while it starts (imports, the lock, the
WAL replay, the plan), the others after it started fetching, at a time drawn from the measured
seconds per committed day so that the kills spread over the whole backfill (fetching, parsing,
commits and DuckDB's automatic checkpoints), and a launch that gets to the end of its work, at a
moment after it said so (the closing checkpoint). One kill in 20 is kept for the end: the launch
after the others runs to the end of its work and is killed in its closing checkpoint, and so are
the launches after it, which replay the WAL the last kill left and checkpoint it. Re-fetched
slices come from the simulator's request log: a day answered in full to more than one launch.

**Faults**: ``gsckit.backfill`` over several sites and search types against a simulator that
answers a share of the query requests with each fault kind it has (every kind in
``RATE_FAULTS``), until ``--requests`` requests were sent. The retry settings are scaled down so
that it ends in minutes: backoff 20-200 ms, a load-quota pause of 1 s instead of 15 minutes,
the rate window 0.25 s instead of 60, a 2-s read timeout against 3-s stalls. A 403 quotaExceeded
that comes again after a site's pause means, to gsckit, a load quota that persists: that site
stops and a re-run resumes it, as a scheduler would; the campaign re-runs until every day is in.

Both end with the whole table compared with the simulator's ground truth, duplicate keys
counted, the ledger checked against the rows, and the file opened again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb
import polars as pl
from _common import ROOT, day_range

import gsckit
from gsckit import EngineConfig, RetryPolicy, Timeouts
from gsckit.client import forget_shared_limiters
from gsckit.parse import METRICS
from gsckit.sim import RATE_FAULTS, Faults, SimConfig, Simulator, SimulatorThread

TOKEN = "soak-token"
KILL_SITE = "sc-domain:soak.example"
FAULT_SITES = tuple(f"sc-domain:soak{n}.example" for n in range(1, 7))
FAULT_TYPES = ("web", "image", "video")
DIMENSIONS = ("date", "query", "page")
WINDOW_S = 0.25


# ---------------------------------------------------------------------------------------------
# the simulator in a thread of this process (its request log and truths stay at hand)


# ---------------------------------------------------------------------------------------------
# the end state


@dataclass(frozen=True)
class EndState:
    """What the database holds at the end of a campaign, against the simulator's truth."""

    slices: int
    ledger_entries: int
    rows: int
    truth_rows: int
    equal_to_truth: bool
    duplicate_keys: int
    ledger_disagreements: int
    opens_cleanly: bool
    wal_left: bool

    @property
    def ok(self) -> bool:
        return (self.equal_to_truth and self.duplicate_keys == 0 and self.ledger_entries ==
                self.slices and self.ledger_disagreements == 0 and self.opens_cleanly)


def _truth(sim: Simulator, slices: Sequence[tuple[str, str, date]]) -> pl.DataFrame:
    frames = [sim.ground_truth(site, day, search_type=search_type, dimensions=DIMENSIONS)
              .with_columns(site=pl.lit(site), search_type=pl.lit(search_type), date=pl.lit(day))
              for site, search_type, day in slices]
    return pl.concat(frames, how="vertical")


def ledger_disagreements(con: duckdb.DuckDBPyConnection) -> int:
    """Slices whose rows and ledger entry disagree (rows without an entry, or another count)."""
    [(bad,)] = con.execute(
        "SELECT count(*) FROM gsckit_ledger l FULL JOIN (SELECT site, search_type, dimensions, "
        "filters, date, count(*) AS n FROM search_analytics GROUP BY ALL) r "
        "USING (site, search_type, dimensions, filters, date) "
        "WHERE l.slice_key IS NULL OR coalesce(r.n, 0) <> l.rows").fetchall()
    return int(bad)


def duplicate_keys(con: duckdb.DuckDBPyConnection) -> int:
    """Row keys stored more than once."""
    [(dupes,)] = con.execute(
        "SELECT count(*) FROM (SELECT 1 FROM search_analytics GROUP BY site, search_type, "
        "dimensions, filters, date, hour, query, page, country, device, search_appearance "
        "HAVING count(*) > 1)").fetchall()
    return int(dupes)


def end_state(db: Path, sim: SimulatorThread, slices: Sequence[tuple[str, str, date]]) -> EndState:
    """Compare the whole table with the truth of ``slices``; check the ledger and the file."""
    wal_left = db.with_name(db.name + ".wal").exists()
    columns = ["site", "search_type", "date", "query", "page", *METRICS]
    with duckdb.connect(str(db), read_only=True) as con:
        stored = pl.DataFrame(con.sql(f"SELECT {', '.join(columns)} FROM search_analytics"))
        dupes, bad = duplicate_keys(con), ledger_disagreements(con)
        [(entries,)] = con.execute("SELECT count(*) FROM gsckit_ledger").fetchall()
    want = sim.do(_truth, sim.sim, slices).select(columns)
    stored, want = stored.sort(columns), want.sort(columns)
    equal = stored.schema == want.schema and stored.equals(want)
    try:
        opens = gsckit.open(db).days().height == entries
    except gsckit.GsckitError:
        opens = False
    return EndState(slices=len(slices), ledger_entries=int(entries), rows=stored.height,
                    truth_rows=want.height, equal_to_truth=equal, duplicate_keys=dupes,
                    ledger_disagreements=bad, opens_cleanly=opens, wal_left=wal_left)


# ---------------------------------------------------------------------------------------------
# the SIGKILL campaign


@dataclass(frozen=True)
class KillFigures:
    """What the SIGKILL campaign did and what it left."""

    kills: int
    launches: int
    days: int
    rows_per_day: int
    kills_by_phase: dict[str, int]
    kills_leaving_wal: int
    killed_with_work_left: int
    requests: int
    slices_fetched: int
    slices_refetched: int
    refetched_per_kill: float
    max_refetched_in_one_launch: int
    final_exit_code: int
    wall_s: float
    end: EndState

    @property
    def ok(self) -> bool:
        return self.final_exit_code == 0 and self.end.ok and not self.end.wal_left


class _Audit:
    """Follows one launch's audit log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._tail = b""
        self.started = self.ended = False
        self.done = 0
        self.todo: int | None = None

    def poll(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        *lines, self._tail = (self._tail + chunk).split(b"\n")
        for line in lines:
            event = json.loads(line).get("event")
            if event == "run_start":
                self.started = True
                self.todo = json.loads(line).get("todo")
            elif event == "slice_done":
                self.done += 1
            elif event == "run_end":
                self.ended = True

    @property
    def phase(self) -> str:
        if not self.started:
            return "starting"
        return "closing" if self.ended else "fetching and committing"


def _launch(sim: SimulatorThread, db: Path, audit: Path, days: Sequence[date]
            ) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gsckit", "backfill", KILL_SITE, "--start", str(days[0]),
           "--end", str(days[-1]), "--db", str(db), "--base-url", sim.base_url,
           "--audit-log", str(audit), "--concurrency", "8", "--no-progress", "--json"]
    env = {**os.environ, "GSC_ACCESS_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", ""))
                                         if p)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def _answered_days(sim: Simulator) -> tuple[int, list[date]]:
    """Query requests since the last reset, and the day of each page answered in full."""
    days = [r.day for r in sim.request_log if r.status == 200 and r.day is not None
            and r.day == r.end_day and r.fault in (None, "stall")]
    sent = int(sim.stats()["requests"])
    sim.reset_stats()
    return sent, days


def kill_campaign(workdir: Path, *, kills: int = 200, days: int = 300,
                  rows_per_day: int = 12_000, latency_s: float = 0.05, seed: int = 5,
                  log: Callable[[str], None] = lambda _: None) -> KillFigures:
    """SIGKILL one CLI backfill ``kills`` times at random moments, then let it finish."""
    rng = random.Random(seed)
    reserve = max(1, kills // 20)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "kills.duckdb"
    first, last = day_range(days)
    span = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    sim = SimulatorThread(SimConfig(seed=seed, rows_per_day=rows_per_day, latency_s=latency_s,
                              all_final=True))
    phases: Counter[str] = Counter()
    fetched_before: set[date] = set()
    refetched: list[int] = []
    fetched_total = requests = wal_kills = with_work = launches = 0
    startup_s = 1.5  # launch to run_start, measured
    day_s = 0.1  # seconds per committed day after run_start, measured
    closing_s: list[float] = [0.5]  # run_end to exit, measured on the launches that finish
    started = time.perf_counter()
    exit_code = -1
    try:
        while True:
            launches += 1
            audit = _Audit(workdir / f"audit{launches:04d}.jsonl")
            killing = phases.total() < kills
            remaining = len(span) - _ledger_entries(db)
            # a moment drawn so that the kills spread over the backfill (a launch commits
            # about ``mean`` days on average), with a few left for its closing checkpoint: when
            # it has nothing left to fetch, a launch replays the WAL the last kill left, then
            # checkpoints it at the end
            timed = remaining > 0 and phases.total() < kills - reserve
            mean = remaining / max(1, kills - reserve - phases.total())
            at_start = timed and rng.random() < 0.12
            spawned = time.monotonic()
            proc = _launch(sim, db, audit.path, span)
            kill_at = spawned + rng.uniform(0, startup_s) if at_start else None
            started_at: float | None = None
            ended_at: float | None = None
            last_done_at = spawned
            while proc.poll() is None and killing:
                time.sleep(0.003)
                was_started, was_ended, was_done = audit.started, audit.ended, audit.done
                audit.poll()
                now = time.monotonic()
                if audit.started and not was_started:
                    started_at = now
                    startup_s = 0.8 * startup_s + 0.2 * (now - spawned)
                    if kill_at is None and timed:
                        kill_at = now + rng.uniform(0, 2 * mean * day_s)
                if audit.done != was_done:
                    last_done_at = now
                if audit.ended and not was_ended:
                    ended_at = now
                    if kill_at is None or kill_at > now:
                        kill_at = now + rng.uniform(0, max(closing_s[-10:]))
                if kill_at is not None and now >= kill_at:
                    audit.poll()
                    proc.send_signal(signal.SIGKILL)
                    break
            if started_at is not None and audit.done:
                day_s = 0.7 * day_s + 0.3 * (last_done_at - started_at) / audit.done
            _, err = proc.communicate(timeout=600)
            if proc.returncode == 0 and ended_at is not None:
                closing_s.append(time.monotonic() - ended_at)
            audit.poll()
            sent, answered = sim.do(_answered_days, sim.sim)
            requests += sent
            fetched_total += len(set(answered))
            again = len(set(answered) & fetched_before)
            fetched_before |= set(answered)
            refetched.append(again)  # what the kills before this launch cost it
            if proc.returncode == -signal.SIGKILL:
                phases[audit.phase] += 1
                wal_kills += db.with_name(db.name + ".wal").exists()
                with_work += audit.todo is None or audit.done < audit.todo
                if phases.total() % 20 == 0:
                    log(f"  {phases.total()} kills, {_ledger_entries(db)}/{len(span)} days in")
                continue
            exit_code = proc.returncode
            if exit_code != 0:
                log(err.decode(errors="replace")[-2000:])
            if exit_code != 0 or not killing:
                break
            # the work ran out before the kills did: the rest hit launches with nothing to fetch
        wall = time.perf_counter() - started
        end = end_state(db, sim, [(KILL_SITE, "web", day) for day in span])
    finally:
        sim.close()
    return KillFigures(
        kills=phases.total(), launches=launches, days=len(span), rows_per_day=rows_per_day,
        kills_by_phase=dict(phases), kills_leaving_wal=wal_kills, killed_with_work_left=with_work,
        requests=requests, slices_fetched=fetched_total, slices_refetched=sum(refetched),
        refetched_per_kill=sum(refetched) / max(1, phases.total()),
        max_refetched_in_one_launch=max(refetched, default=0), final_exit_code=exit_code,
        wall_s=wall, end=end)


def _ledger_entries(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            [(n,)] = con.execute("SELECT count(*) FROM gsckit_ledger").fetchall()
        return int(n)
    except duckdb.Error:
        return 0


# ---------------------------------------------------------------------------------------------
# the fault campaign


@dataclass(frozen=True)
class FaultFigures:
    """What the fault campaign sent, what the simulator did to it, and what it left."""

    requests: int
    faults: dict[str, int]
    fault_share: float
    runs: int
    retries: int
    stopped_sites: int
    server_duplicates: int
    repeated_pages: int
    repeated_probes: int
    rows_per_day: int
    wall_s: float
    end: EndState
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.end.ok


def _repeats(sim: Simulator) -> dict[str, int]:
    """Complete 200 answers that repeat an earlier one: day pages, and range requests (the
    freshness probe each run sends per stream)."""
    seen: Counter[tuple[Any, ...]] = Counter(
        (r.site, r.search_type, r.day, r.end_day, r.data_state, r.start_row, r.row_limit)
        for r in sim.request_log if r.status == 200 and r.fault in (None, "stall"))
    found = {"pages": 0, "probes": 0}
    for key, n in seen.items():
        found["pages" if key[2] == key[3] else "probes"] += n - 1
    return found


def fault_campaign(workdir: Path, *, requests: int = 10_000, rate: float = 0.025,
                   rows_per_day: int = 200, seed: int = 11,
                   log: Callable[[str], None] = lambda _: None) -> FaultFigures:
    """Backfill against a simulator that answers ``rate`` of the requests with each fault kind,
    re-running until every day is in; the days are sized for about ``requests`` requests."""
    rates = dict.fromkeys(RATE_FAULTS, rate)
    share = rate * len(rates)
    slices_needed = int(requests * (1 - share) * 1.05) + 1
    ndays = -(-slices_needed // (len(FAULT_SITES) * len(FAULT_TYPES)))
    first, last = day_range(ndays)
    span = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    policy = RetryPolicy(max_attempts=12, base_s=0.02, max_backoff_s=0.2, quota_pause_s=1.0)
    # scaled time: a 0.25-s rate window, so that the limit a random 429 cuts recovers in
    # seconds (+60 a window), as it would in minutes against Google
    config = EngineConfig(max_concurrency=16, qpm=1_200, qpm_window_s=WINDOW_S, retry=policy,
                          timeouts=Timeouts(total=20, connect=2, sock_read=2.0))
    faults = Faults(seed=seed, rates=rates, stall_s=3.0)
    sim = SimulatorThread(SimConfig(seed=seed, rows_per_day=rows_per_day, all_final=True,
                              faults=faults, window_s=1.0))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "faults.duckdb"
    started = time.perf_counter()
    runs = retries = stopped = 0
    try:
        while True:
            runs += 1
            report = gsckit.backfill(list(FAULT_SITES), span[0], span[-1], db=db,
                                     search_type=",".join(FAULT_TYPES), token=TOKEN,
                                     base_url=sim.base_url, progress=False, config=config)
            forget_shared_limiters()
            retries += report.retries
            stopped += len(report.stopped_sites)
            if report.ok or runs >= 500:
                break
            if runs % 10 == 0:
                log(f"  run {runs}: {sim.do(lambda: sim.sim.stats()['requests'])} requests")
        wall = time.perf_counter() - started
        stats = sim.do(sim.sim.stats)
        repeats = sim.do(_repeats, sim.sim)
        end = end_state(db, sim, [(site, search_type, day) for site in FAULT_SITES
                                  for search_type in FAULT_TYPES for day in span])
    finally:
        sim.close()
    sent = int(stats["requests"])
    faults_seen = {kind: int(stats["faults"].get(kind, 0)) for kind in RATE_FAULTS}
    return FaultFigures(
        requests=sent, faults=faults_seen, fault_share=sum(faults_seen.values()) / max(1, sent),
        runs=runs, retries=retries, stopped_sites=stopped,
        server_duplicates=int(stats["duplicates"]), repeated_pages=repeats["pages"],
        repeated_probes=repeats["probes"], rows_per_day=rows_per_day, wall_s=wall,
        end=end, settings={"rate_per_kind": rate, "max_attempts": policy.max_attempts,
                           "backoff_s": [policy.base_s, policy.max_backoff_s],
                           "quota_pause_s": policy.quota_pause_s, "qpm_window_s": WINDOW_S,
                           "sock_read_s": 2.0, "stall_s": 3.0, "workers": 16,
                           "sites": len(FAULT_SITES), "search_types": len(FAULT_TYPES),
                           "days": len(span)})


# ---------------------------------------------------------------------------------------------
# figures


def describe_kills(f: KillFigures) -> str:
    phases = ", ".join(f"{n} {phase}" for phase, n in sorted(f.kills_by_phase.items()))
    e = f.end
    return "\n".join([
        f"SIGKILL campaign: {f.kills} kills of one `gsckit backfill` ({f.days} days x "
        f"{f.rows_per_day:,} rows, 8 workers), {f.launches} launches, {f.wall_s:.0f} s",
        f"  kill moments: {phases}; {f.kills_leaving_wal} left a WAL for the next open to "
        f"replay; {f.killed_with_work_left} while days were left to fetch",
        f"  requests: {f.requests:,}; slices fetched {f.slices_fetched:,} times for "
        f"{f.days} days: re-fetched {f.slices_refetched} = {f.refetched_per_kill:.2f} per kill "
        f"(max {f.max_refetched_in_one_launch} in one launch)",
        f"  end: exit {f.final_exit_code}; {e.rows:,} rows = truth {e.truth_rows:,}: "
        f"{e.equal_to_truth}; duplicate keys {e.duplicate_keys}; ledger {e.ledger_entries}/"
        f"{e.slices} entries, {e.ledger_disagreements} disagreeing; opens cleanly "
        f"{e.opens_cleanly}; WAL left {e.wal_left}"])


def describe_faults(f: FaultFigures) -> str:
    kinds = ", ".join(f"{kind} {n}" for kind, n in f.faults.items())
    e = f.end
    return "\n".join([
        f"Fault campaign: {f.requests:,} requests, {sum(f.faults.values()):,} faults "
        f"({f.fault_share:.1%}), {f.runs} runs ({f.stopped_sites} site stops), "
        f"{f.retries:,} retries, {f.wall_s:.0f} s",
        f"  faults by kind: {kinds}",
        f"  settings: {json.dumps(f.settings)}",
        f"  server-side repeats of identical successful requests: {f.server_duplicates} "
        f"(by the request log: {f.repeated_pages} day pages, {f.repeated_probes} range "
        "requests)",
        f"  end: {e.rows:,} rows = truth {e.truth_rows:,}: {e.equal_to_truth}; duplicate keys "
        f"{e.duplicate_keys}; ledger {e.ledger_entries}/{e.slices} entries, "
        f"{e.ledger_disagreements} disagreeing; opens cleanly {e.opens_cleanly}"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--days", type=int, default=300, help="days of the killed backfill")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the databases go (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    import tempfile

    ok = True
    with tempfile.TemporaryDirectory(prefix="gsckit-soak-") as tmp:
        workdir = args.workdir or Path(tmp)
        if not args.skip_kills:
            kills = kill_campaign(workdir, kills=args.kills, days=args.days, seed=args.seed,
                                  log=print)
            print(describe_kills(kills), flush=True)
            if args.json:
                print(json.dumps(asdict(kills), default=str))
            ok &= kills.ok
        if not args.skip_faults:
            faults = fault_campaign(workdir, requests=args.requests, seed=args.seed + 6, log=print)
            print(describe_faults(faults), flush=True)
            if args.json:
                print(json.dumps(asdict(faults), default=str))
            ok &= faults.ok
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
