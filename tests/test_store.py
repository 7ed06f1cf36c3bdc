"""The DuckDB store: private files, atomic day commits, de-duplication, replace semantics, data
state in the ledger, and the read-side ``Database``."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

import gsckit
from gsckit import ConfigError, Database, Slice, StoreError
from gsckit.events import AuditLog, Event
from gsckit.store import LEDGER, SCHEMA_VERSION, TABLE, Commit, Staged, Store

from .conftest import SITE, assert_matches_truth, day_range, days_ago, run

OTHER = "https://www.other.example/"
DIMS = ("date", "query", "page")


def piece(day: date, *, site: str = SITE, search_type: str = "web", dimensions=DIMS,
          data_state: str = "final") -> Slice:
    return Slice(site, search_type, tuple(dimensions), (), data_state, day)


def page(queries: list[str], *, clicks: list[int] | None = None, pages: list[str] | None = None
         ) -> pl.DataFrame:
    n = len(queries)
    clicks = clicks if clicks is not None else [100 - i for i in range(n)]
    return pl.DataFrame({
        "query": queries,
        "page": pages if pages is not None else [f"https://ex.example/{q}" for q in queries],
        "clicks": pl.Series(clicks, dtype=pl.Int64),
        "impressions": pl.Series([c * 10 + 5 for c in clicks], dtype=pl.Int64),
        "ctr": pl.Series([c / (c * 10 + 5) for c in clicks], dtype=pl.Float64),
        "position": pl.Series([1.5 + i for i in range(n)], dtype=pl.Float64),
    }, schema_overrides={"query": pl.String, "page": pl.String})


def commit(store: Store, s: Slice, frame: pl.DataFrame, run_id: str = "run-1") -> Commit:
    return store.commit_slice(s, frame, pages=1, requests=1, run_id=run_id)


def slice_rows(path: Path, s: Slice) -> pl.DataFrame:
    with duckdb.connect(str(path)) as con:
        return pl.DataFrame(con.sql(
            f"SELECT query, page, clicks, impressions, ctr, position, data_state FROM {TABLE} "
            "WHERE site = ? AND search_type = ? AND dimensions = ? AND date = ? "
            "ORDER BY query, page",
            params=[s.site, s.search_type, s.dimensions_key, s.day]))


def ledger(path: Path) -> pl.DataFrame:
    with duckdb.connect(str(path)) as con:
        return pl.DataFrame(con.sql(f"SELECT * FROM {LEDGER} ORDER BY slice_key"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    """A umask that would create group/world-readable files, so 0600 must be deliberate."""
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- file permissions -----------------------------------------------------------------------

def test_database_file_and_wal_are_created_0600(db, loose_umask):
    store = Store(db)
    try:
        assert mode(db) == 0o600
        commit(store, piece(days_ago(10)), page(["a", "b"]))
        wal = db.with_name(db.name + ".wal")
        for path in (db, wal):
            if path.exists():
                assert mode(path) == 0o600, f"{path.name} is {oct(mode(path))}"
    finally:
        store.close()
    assert mode(db) == 0o600


def test_audit_log_is_created_0600(tmp_path, loose_umask):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log(Event("qpm", {"qpm": 1.0}))
    log.close()
    assert mode(path) == 0o600
    assert path.read_text().count("\n") == 1


async def test_a_backfill_creates_both_files_0600(make_sim, db, tmp_path, loose_umask):
    sim = await make_sim(rows_per_day=200)
    days = day_range(10, 2)
    audit = tmp_path / "audit.jsonl"
    report = await run(sim, db, days[0], days[-1], audit_log=audit)
    assert report.ok
    assert mode(db) == 0o600 and mode(audit) == 0o600
    assert not db.with_name(db.name + ".wal").exists(), "close() should checkpoint the WAL"


def test_store_refuses_a_missing_folder_or_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Store(tmp_path / "nope" / "gsc.duckdb")
    with pytest.raises(ConfigError, match="directory"):
        Store(tmp_path)
    assert not (tmp_path / "nope").exists()


# --- atomic commits -------------------------------------------------------------------------

class FailingLedger:
    """Wraps a DuckDB connection; the ledger insert raises ``error`` (after rows were inserted)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, error: BaseException) -> None:
        self._con = con
        self._error = error
        self.rows_inserted_before_failure = None

    def execute(self, sql: str, *args, **kwargs):
        if sql.lstrip().startswith(f"INSERT OR REPLACE INTO {LEDGER}"):
            self.rows_inserted_before_failure = self._con.execute(
                f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            raise self._error
        return self._con.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._con, name)


@pytest.mark.parametrize("error, raised", [
    (duckdb.IOException("disk I/O error"), StoreError),
    (RuntimeError("writer thread interrupted"), RuntimeError),
], ids=["duckdb_error", "other_error"])
def test_failed_ledger_insert_rolls_back_rows_and_keeps_the_old_slice(db, error, raised):
    day = days_ago(10)
    old, neighbour = page(["a", "b", "c"]), page(["n1", "n2"])
    with Store(db) as store:
        commit(store, piece(day), old, run_id="first")
        commit(store, piece(days_ago(11)), neighbour, run_id="first")
        real = store._con
        store._con = FailingLedger(real, error)
        with pytest.raises(raised):
            commit(store, piece(day), page(["x", "y", "z", "w"]), run_id="second")
        inserted = store._con.rows_inserted_before_failure
        store._con = real
        # the failure came after the delete and the insert: both must have been undone
        assert inserted == 4 + 2
        assert real.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 3 + 2
        # the connection is usable afterwards (no transaction left open)
        commit(store, piece(days_ago(12)), page(["later"]))
    got = slice_rows(db, piece(day))
    assert got["query"].to_list() == ["a", "b", "c"]
    assert got["clicks"].to_list() == old["clicks"].to_list()
    entries = ledger(db)
    assert entries.height == 3
    entry = entries.filter(pl.col("slice_key") == piece(day).key)
    assert entry["run_id"].to_list() == ["first"] and entry["rows"].to_list() == [3]


def test_uncastable_frame_fails_the_commit_and_writes_nothing(db):
    day = days_ago(10)
    with Store(db) as store:
        commit(store, piece(day), page(["a", "b"]), run_id="first")
        bad = page(["x", "y", "z"]).with_columns(
            pl.Series("clicks", ["7", "8", "lots"], dtype=pl.String))
        with pytest.raises(StoreError, match="cannot store the rows"):
            commit(store, piece(day), bad, run_id="second")
        with pytest.raises(StoreError):
            commit(store, piece(days_ago(9)), bad, run_id="second")
    assert slice_rows(db, piece(day))["query"].to_list() == ["a", "b"]
    assert slice_rows(db, piece(days_ago(9))).height == 0
    entries = ledger(db)
    assert entries["slice_key"].to_list() == [piece(day).key]
    assert entries["run_id"].to_list() == ["first"]


# --- de-duplication and replace semantics ---------------------------------------------------

def test_commit_deduplicates_keys_within_a_slice_and_counts_them(db):
    s = piece(days_ago(10))
    frame = page(["a", "b", "a", "c", "b", "a"], clicks=[9, 8, 7, 6, 5, 4],
                 pages=["p1", "p1", "p1", "p1", "p1", "p2"])
    # keys: (a,p1) x2, (b,p1) x2, (c,p1), (a,p2) -> 4 unique, 2 duplicates
    with Store(db) as store:
        result = commit(store, s, frame)
    assert result == Commit(rows=4, duplicates=2)
    got = slice_rows(db, s)
    assert got.select("query", "page", "clicks").rows() == [
        ("a", "p1", 9), ("a", "p2", 4), ("b", "p1", 8), ("c", "p1", 6)], "first occurrence wins"
    entry = ledger(db).row(0, named=True)
    assert (entry["rows"], entry["duplicates"]) == (4, 2)


def test_distinct_keys_are_not_merged(db):
    s = piece(days_ago(10))
    # same query on different pages, same page for different queries: all distinct keys
    frame = page(["a", "a", "b"], pages=["p1", "p2", "p1"])
    with Store(db) as store:
        assert commit(store, s, frame) == Commit(rows=3, duplicates=0)
    assert slice_rows(db, s).height == 3


def test_recommit_replaces_the_slice_and_leaves_other_slices_alone(db):
    day = days_ago(10)
    target = piece(day)
    others = [piece(days_ago(11)), piece(day, search_type="image"), piece(day, site=OTHER),
              piece(day, dimensions=("query",))]
    with Store(db) as store:
        commit(store, target, page(["a", "b", "c", "d", "e"]), run_id="first")
        for i, s in enumerate(others):
            frame = page([f"o{i}-1", f"o{i}-2"])
            commit(store, s, frame.drop("page") if "page" not in s.dimensions else frame)
        before = {s.key: slice_rows(db, s) for s in others}
        assert commit(store, target, page(["d", "e", "f", "g"], clicks=[1, 2, 3, 4]),
                      run_id="second") == Commit(rows=4, duplicates=0, outcome="replaced")
    got = slice_rows(db, target)
    assert got.select("query", "clicks").rows() == [("d", 1), ("e", 2), ("f", 3), ("g", 4)]
    for s in others:
        assert slice_rows(db, s).equals(before[s.key]), f"{s.key} changed"
    entry = ledger(db).filter(pl.col("slice_key") == target.key).row(0, named=True)
    assert (entry["rows"], entry["run_id"]) == (4, "second")
    assert ledger(db).height == 5


def test_an_empty_day_is_recorded_but_never_replaces_rows(db):
    empty, full = piece(days_ago(11)), piece(days_ago(10))
    with Store(db) as store:
        assert commit(store, empty, page([])) == Commit(0, 0, "final", "new")
        assert store.completed([empty]) == {empty.key}
        commit(store, full, page(["a", "b"]))
        # a final day's rows would be lost for good: the empty answer is kept out
        assert commit(store, full, page([]), run_id="later") == Commit(0, 0, "final", "kept")
        # an empty day takes rows when they come
        assert commit(store, empty, page(["c"])).outcome == "replaced"
    assert slice_rows(db, full)["query"].to_list() == ["a", "b"]
    assert slice_rows(db, empty)["query"].to_list() == ["c"]
    assert ledger(db).select("rows", "run_id").rows() == [(1, "run-1"), (2, "run-1")]


# --- data state -----------------------------------------------------------------------------

def test_fresh_days_are_never_complete_and_final_days_are_for_any_request(db):
    fresh_day, final_day, missing_day = days_ago(3), days_ago(10), days_ago(11)
    with Store(db) as store:
        assert store.completed([]) == set()
        assert commit(store, piece(fresh_day, data_state="all"), page(["a"])).state == "fresh"
        commit(store, piece(final_day, data_state="final"), page(["b"]))
        for state in ("final", "all", "hourly_all"):
            ask = [piece(d, data_state=state) for d in (fresh_day, final_day, missing_day)]
            # fresh data is fetched again until Google calls it final
            assert store.completed(ask) == {piece(final_day).key}
        # the ledger key ignores data state: a final commit promotes the fresh day
        assert commit(store, piece(fresh_day, data_state="final"), page(["a2"])) == Commit(
            1, 0, "final", "promoted")
        assert store.completed([piece(fresh_day)]) == {piece(fresh_day).key}
    assert ledger(db).select("data_state", "requested").rows() == [("final", "final")] * 2
    assert slice_rows(db, piece(fresh_day))["data_state"].to_list() == ["final"]


def test_final_rows_are_never_replaced_by_fresh_ones(db):
    day = days_ago(5)
    with Store(db) as store:
        commit(store, piece(day, data_state="all"), page(["a"]))
        assert commit(store, piece(day, data_state="all"), page(["a", "b"])).outcome == (
            "refreshed")
        assert commit(store, piece(day), page(["c", "d", "e"])).outcome == "promoted"
        # the rule lives in the commit itself: whatever planned it, a fresh answer is kept out
        kept = store.commit_slices([Staged(piece(day, data_state="all"), page(["x"]), 1, 1,
                                           state="fresh", reason="fresh")], run_id="late")
        assert kept == [Commit(0, 0, "final", "kept")]
        # a re-check that comes back empty keeps the rows and is not asked again
        recheck = Staged(piece(day), page([]), 1, 1, state="final", reason="recheck")
        assert store.commit_slices([recheck], run_id="late")[0].outcome == "kept"
    assert slice_rows(db, piece(day))["query"].to_list() == ["c", "d", "e"]
    entry = ledger(db).row(0, named=True)
    assert (entry["data_state"], entry["rows"], entry["rechecked"]) == ("final", 3, True)


def test_a_fresh_day_records_the_marker_and_what_was_known(db):
    day = days_ago(2)
    with Store(db) as store:
        store.commit_slices([Staged(piece(day, data_state="all"), page(["a"]), 1, 1,
                                    state="fresh", first_incomplete=str(day),
                                    newest_final=days_ago(3))], run_id="r")
    entry = ledger(db).row(0, named=True)
    assert (entry["data_state"], entry["requested"], entry["first_incomplete"],
            entry["newest_final"], entry["rechecked"]) == ("fresh", "all", str(day),
                                                            days_ago(3), False)
    row = gsckit.open(db).status().row(0, named=True)
    assert (row["days"], row["final_days"], row["fresh_days"], row["newest_final_day"],
            row["google_final_through"]) == (1, 0, 1, None, days_ago(3))


# --- Database (read side) -------------------------------------------------------------------

@pytest.fixture
def filled(db) -> Path:
    with Store(db) as store:
        for d in (12, 11, 10):
            commit(store, piece(days_ago(d)), page([f"q{d}-a", f"q{d}-b"], clicks=[1, 5]))
            commit(store, piece(days_ago(d), search_type="image"), page([f"img{d}"]))
            commit(store, piece(days_ago(d), site=OTHER), page([f"other{d}"]))
        commit(store, piece(days_ago(10), dimensions=("date", "query")),
               page(["dq"]).drop("page"))
    return db


def test_frame_filters_by_site_dates_type_and_dimensions(filled):
    database = gsckit.open(filled)
    assert isinstance(database, Database)
    everything = database.frame()
    assert everything.height == 3 * (2 + 1 + 1) + 1
    web = database.frame(SITE, search_type="web", dimensions=["date", "query", "page"])
    assert web.height == 6 and set(web["site"]) == {SITE}
    assert web["date"].to_list() == sorted(web["date"].to_list()), "ordered by date"
    first = web.filter(pl.col("date") == days_ago(12))
    assert first["clicks"].to_list() == [5, 1], "then by clicks, descending"
    assert database.frame(OTHER)["query"].to_list() == ["other12", "other11", "other10"]
    window = database.frame(SITE, start=days_ago(11), end=str(days_ago(10)), search_type="web",
                            dimensions="date,query,page")
    assert sorted(set(window["date"])) == [days_ago(11), days_ago(10)] and window.height == 4
    assert database.frame(start=days_ago(10), end=days_ago(10)).height == 2 + 1 + 1 + 1
    assert database.frame(search_type="image")["query"].to_list() == ["img12", "img11", "img10"]
    narrow = database.frame(dimensions=("date", "query"))
    assert narrow["query"].to_list() == ["dq"] and narrow["page"].to_list() == [None]
    assert database.frame("sc-domain:nobody.example").height == 0
    assert database.frame(start=days_ago(9)).height == 0


def test_sql_with_params_status_and_days(filled):
    database = Database(filled)
    got = database.sql(f"SELECT search_type, count(*) AS n FROM {TABLE} WHERE site = ? AND "
                       "date >= ? GROUP BY 1 ORDER BY 1", [SITE, days_ago(11)])
    assert got.rows() == [("image", 2), ("web", 4 + 1)]  # + the date,query slice
    assert isinstance(got, pl.DataFrame)
    status = database.status()
    assert status.height == 4
    web = status.filter((pl.col("site") == SITE) & (pl.col("search_type") == "web")
                        & (pl.col("dimensions") == "date,query,page")).row(0, named=True)
    assert (web["days"], web["rows"], web["first_day"], web["last_day"]) == (
        3, 6, days_ago(12), days_ago(10))
    assert database.days(OTHER).height == 3 and database.days().height == 10
    with pytest.raises(StoreError):
        database.sql("SELECT nope FROM nowhere")


def test_opening_a_missing_database_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Database(tmp_path / "missing.duckdb")
    with pytest.raises(ValueError):
        gsckit.open(str(tmp_path / "missing.duckdb"))
    assert list(tmp_path.iterdir()) == []


async def test_database_reads_a_real_backfill(make_sim, db):
    sim = await make_sim(rows_per_day=700)
    days = day_range(20, 3)
    await run(sim, db, days[0], days[-1])
    total = assert_matches_truth(db, sim, days)
    assert gsckit.open(db).frame(SITE, start=days[0], end=days[-1]).height == total == 2100
    assert gsckit.open(db).status()["days"].to_list() == [3]


def test_a_group_commit_is_all_or_nothing(db):
    first, second = piece(days_ago(10)), piece(days_ago(11))
    with Store(db) as store:
        real = store._con
        store._con = FailingLedgerOnSecond(real)
        with pytest.raises(StoreError):
            store.commit_slices([Staged(first, page(["a", "b"]), 1, 1),
                                 Staged(second, page(["c"]), 1, 1)], run_id="group")
        store._con = real
        assert real.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 0
        commits = store.commit_slices([Staged(first, page(["a", "b"]), 1, 1),
                                       Staged(second, page(["c", "c"]), 1, 1)], run_id="group")
    assert [(c.rows, c.duplicates) for c in commits] == [(2, 0), (1, 1)]
    assert ledger(db).height == 2


class FailingLedgerOnSecond(FailingLedger):
    """Lets the first ledger insert through and fails the second."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        super().__init__(con, duckdb.IOException("disk full"))
        self._seen = 0

    def execute(self, sql: str, *args, **kwargs):
        if sql.lstrip().startswith(f"INSERT OR REPLACE INTO {LEDGER}"):
            self._seen += 1
            if self._seen == 1:
                return self._con.execute(sql, *args, **kwargs)
        return super().execute(sql, *args, **kwargs)


# --- a commit that fails for real: a file size limit ----------------------------------------

FSIZE_CHILD = r"""
import json, resource, signal, sys
import gsckit
import gsckit.store.writer as writer
base_url, db, start, end, limit, wal = sys.argv[1:7]
if wal != "-":
    writer.WAL_CHECKPOINT = wal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
out = {}
try:
    gsckit.backfill("sc-domain:example.com", start, end, db=db, base_url=base_url,
                    token="t", progress=False, max_concurrency=2)
    out["halted"] = False
except gsckit.RunHalted as exc:
    out.update(halted=True, message=str(exc), done=exc.report.done, cause=type(exc.cause).__name__)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
if sys.argv[7] == "rerun":  # the same process runs again: it must reopen the file and resume
    report = gsckit.backfill("sc-domain:example.com", start, end, db=db, base_url=base_url,
                             token="t", progress=False)
    out.update(rerun_ok=report.ok, rerun_done=report.done, rerun_skipped=report.skipped)
print(json.dumps(out))
"""


def _consistent(db: Path) -> int:
    """Every ledger entry has exactly its rows and no rows lack an entry; returns the days."""
    with duckdb.connect(str(db), read_only=True) as con:
        bad = con.execute(
            f"SELECT count(*) FROM {LEDGER} l WHERE rows <> (SELECT count(*) FROM gsckit_rows r "
            "WHERE r.slice_id = l.slice_id)").fetchall()[0][0]
        orphans = con.execute(f"SELECT count(*) FROM gsckit_rows WHERE slice_id NOT IN "
                              f"(SELECT slice_id FROM {LEDGER})").fetchall()[0][0]
        days = con.execute(f"SELECT count(*) FROM {LEDGER}").fetchall()[0][0]
    assert (bad, orphans) == (0, 0), "a day is partly committed"
    return days


@pytest.mark.parametrize("wal, cause", [("-", "File too large while committing"),
                                        ("128KB", "invalidated")],
                         ids=["wal_write_fails", "checkpoint_invalidates_the_database"])
def test_a_commit_that_hits_a_file_size_limit_halts_with_the_cause_and_resumes(
        thread_sim, tmp_path, wal, cause):
    sim = thread_sim(rows_per_day=3_000)
    days = day_range(40, 12)
    db = tmp_path / "gsc.duckdb"
    Store(db).close()
    limit = db.stat().st_size + 2_500_000
    rerun = "rerun" if wal != "-" else "once"
    proc = subprocess.run([sys.executable, "-c", FSIZE_CHILD, sim.base_url, str(db),
                           str(days[0]), str(days[-1]), str(limit), wal, rerun],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["halted"] is True, out
    message = out["message"]
    assert "\n" not in message and "File too large" in message and cause in message, message
    assert "re-run" in message and out["cause"] == "CommitError"
    assert 0 < out["done"] < len(days)
    if wal == "-":
        assert _consistent(db) == out["done"], "the report counts exactly the saved days"
        again = asyncio.run(_rerun(sim, db, days))
        assert again.ok and again.skipped == out["done"]
    else:
        assert out["rerun_ok"] and out["rerun_done"] + out["rerun_skipped"] == len(days)
    assert _consistent(db) == len(days)
    sim.do(assert_matches_truth, db, sim.sim, days)


async def _rerun(sim, db: Path, days) -> gsckit.Report:
    return await gsckit.backfill_async(SITE, days[0], days[-1], db=db, token="t",
                                       base_url=sim.base_url, progress=False)


# --- position may be absent (Discover, Google News) -----------------------------------------

def test_rows_without_a_position_are_stored_as_null(db):
    from gsckit.parse import parse_page

    body = json.dumps({"rows": [
        {"keys": ["https://ex.example/a"], "clicks": 3, "impressions": 40, "ctr": 0.075},
        {"keys": ["https://ex.example/b"], "clicks": 1, "impressions": 9, "ctr": 0.111}]})
    frame = parse_page(body.encode(), ("page",))
    assert frame["position"].null_count() == 2
    discover = piece(days_ago(10), search_type="discover", dimensions=("page",))
    with Store(db) as store:
        assert commit(store, discover, frame) == Commit(rows=2, duplicates=0)
    got = gsckit.open(db).frame(search_type="discover")
    assert got["page"].to_list() == ["https://ex.example/a", "https://ex.example/b"]
    assert got["position"].to_list() == [None, None]
    assert got["clicks"].to_list() == [3, 1]


# --- schema versions ------------------------------------------------------------------------

V1_DDL = """
CREATE TABLE search_analytics (site VARCHAR NOT NULL, search_type VARCHAR NOT NULL,
    dimensions VARCHAR NOT NULL, filters VARCHAR NOT NULL, date DATE NOT NULL, hour TIMESTAMPTZ,
    query VARCHAR, page VARCHAR, country VARCHAR, device VARCHAR, search_appearance VARCHAR,
    clicks BIGINT NOT NULL, impressions BIGINT NOT NULL, ctr DOUBLE NOT NULL,
    position DOUBLE NOT NULL, data_state VARCHAR NOT NULL, fetched_at TIMESTAMPTZ NOT NULL);
CREATE TABLE gsckit_ledger (slice_key VARCHAR PRIMARY KEY, site VARCHAR NOT NULL,
    search_type VARCHAR NOT NULL, dimensions VARCHAR NOT NULL, filters VARCHAR NOT NULL,
    date DATE NOT NULL, data_state VARCHAR NOT NULL, rows BIGINT NOT NULL, pages INTEGER NOT NULL,
    requests INTEGER NOT NULL, duplicates INTEGER NOT NULL, fetched_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL);
CREATE TABLE gsckit_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
INSERT INTO gsckit_meta VALUES ('schema_version', '1');
"""


def _v1_file(path: Path) -> None:
    """A file as the first release wrote it: three slices of two sites, with rows."""
    with duckdb.connect(str(path)) as con:
        con.execute(V1_DDL)
        for n, (site, day, queries) in enumerate([(SITE, days_ago(12), ["a", "b", "c"]),
                                                  (SITE, days_ago(11), ["d"]),
                                                  (OTHER, days_ago(12), ["e", "f"])]):
            s = piece(day, site=site)
            rows = page(queries).with_columns(
                pl.lit(site).alias("site"), pl.lit("web").alias("search_type"),
                pl.lit(s.dimensions_key).alias("dimensions"), pl.lit("").alias("filters"),
                pl.lit(day).alias("date"), pl.lit(None, pl.Datetime("us", "UTC")).alias("hour"),
                pl.lit(None, pl.String).alias("country"), pl.lit(None, pl.String).alias("device"),
                pl.lit(None, pl.String).alias("search_appearance"),
                pl.lit("final").alias("data_state"),
                pl.lit(datetime(2026, 1, 1, tzinfo=UTC)).alias("fetched_at"))
            con.from_arrow(rows.select(V1_COLUMNS).__arrow_c_stream__()).insert_into(TABLE)
            con.execute(f"INSERT INTO {LEDGER} VALUES (?, ?, 'web', ?, '', ?, 'final', ?, 1, 1, "
                        "0, TIMESTAMPTZ '2026-01-01 00:00:00+00', ?)",
                        [s.key, site, s.dimensions_key, day, len(queries), f"old-{n}"])


V1_COLUMNS = ["site", "search_type", "dimensions", "filters", "date", "hour", "query", "page",
              "country", "device", "search_appearance", "clicks", "impressions", "ctr",
              "position", "data_state", "fetched_at"]


def _version(path: Path) -> str:
    return gsckit.open(path).sql("SELECT value FROM gsckit_meta WHERE key = 'schema_version'"
                                 ).item()


def test_an_old_file_is_read_as_it_is_and_upgraded_once_by_the_writer(db):
    _v1_file(db)
    reader = gsckit.open(db)
    before = reader.frame()
    before_days = reader.days()
    assert before.height == 6 and before.columns == V1_COLUMNS
    assert reader.status()["days"].to_list() == [1, 2]
    assert _version(db) == "1", "a reader never migrates"
    with Store(db) as store:
        assert _version(db) == str(SCHEMA_VERSION)
        assert store.completed([piece(days_ago(12)), piece(days_ago(10))]) == {
            piece(days_ago(12)).key}
        # the upgraded table takes what v1 refused: rows without a position
        commit(store, piece(days_ago(10)), page(["g"]).with_columns(
            pl.lit(None, pl.Float64).alias("position")))
    after = gsckit.open(db)
    assert after.frame().filter(pl.col("date") != days_ago(10)).equals(before)
    assert after.days().select(before_days.columns).filter(pl.col("date") != days_ago(10)
                                                           ).equals(before_days)
    assert after.frame(start=days_ago(10))["position"].to_list() == [None]
    with duckdb.connect(str(db), read_only=True) as con:
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables"
                                 ).fetchall())
    assert kinds[TABLE] == "VIEW" and kinds["gsckit_rows"] == "BASE TABLE"
    snapshot = gsckit.open(db).frame()
    Store(db).close()  # opening an upgraded file changes nothing
    assert gsckit.open(db).frame().equals(snapshot) and _version(db) == str(SCHEMA_VERSION)


def _v2_file(path: Path, entries: list[tuple[str, int, int]]) -> dict[str, str]:
    """A version-2 file with one day per entry (requested data state, rows, days between the
    day and its fetch); returns each day's slice key by entry index."""
    from gsckit.store import schema

    keys = {}
    with duckdb.connect(str(path)) as con:
        for ddl in (schema._ROWS_DDL, schema._LEDGER_V2_DDL, schema._VIEW_DDL, schema._META_DDL):
            con.execute(ddl)
        con.execute("INSERT INTO gsckit_meta VALUES ('schema_version', '2')")
        for n, (state, rows, after) in enumerate(entries, start=1):
            day = date(2026, 3, 1) + timedelta(days=n)
            s = piece(day)
            fetched = datetime(day.year, day.month, day.day, 20, tzinfo=UTC) + timedelta(after)
            con.execute(f"INSERT INTO {LEDGER} VALUES (?, ?, 'web', ?, '', ?, ?, ?, 1, 1, 0, ?, "
                        "'old', ?)", [s.key, SITE, s.dimensions_key, day, state, rows, fetched,
                                      n])
            for k in range(rows):
                con.execute("INSERT INTO gsckit_rows (slice_id, query, page, clicks, "
                            "impressions) VALUES (?, ?, 'p', 1, 2)", [n, f"q{k}"])
            keys[s.key] = state
    return keys


def test_a_version_2_file_gets_day_states_that_recover_what_it_lost(db):
    # requested state, rows, days from the day to its fetch
    entries = [("final", 3, 2),        # final rows: final
               ("final", 0, 0),        # empty final day fetched too early: rows lost, recovered
               ("all", 2, 1),          # fresh data never refreshed
               ("all", 2, 20),         # fetched long after: Google's data was final
               ("final", 0, 30),       # an empty day long final: empty for good
               ("hourly_all", 1, 1)]   # fresh hourly data
    want = ["final", "fresh", "fresh", "final", "final", "fresh"]
    _v2_file(db, entries)
    before = gsckit.open(db).frame()
    row = gsckit.open(db).status().row(0, named=True)
    assert (row["final_days"], row["fresh_days"]) == (3, 3), "a reader reads states as they are"
    assert _version(db) == "2"
    Store(db).close()
    assert _version(db) == str(SCHEMA_VERSION)
    days = gsckit.open(db).days()
    assert days["data_state"].to_list() == want
    assert days["requested"].to_list() == [e[0] for e in entries]
    assert days["newest_final"].null_count() == 6 and not days["rechecked"].any()
    after = gsckit.open(db).frame()
    assert after.drop("data_state").equals(before.drop("data_state"))
    # the recovered days are what the next run fetches again
    with Store(db) as store:
        asked = [piece(date(2026, 3, 1) + timedelta(days=n)) for n in range(1, 7)]
        done = store.completed(asked)
    assert [s.key in done for s in asked] == [w == "final" for w in want]


def test_a_failed_upgrade_leaves_the_old_file_as_it_was(db, monkeypatch):
    from gsckit.store import schema

    _v1_file(db)
    before = gsckit.open(db).frame()

    def broken(con):
        schema._v1_to_v2(con)
        raise duckdb.IOException("disk I/O error")

    monkeypatch.setitem(schema.MIGRATIONS, 1, broken)
    with pytest.raises(StoreError, match="not usable"):
        Store(db)
    assert _version(db) == "1"
    assert gsckit.open(db).frame().equals(before)


def test_a_file_from_a_newer_gsckit_is_refused_by_the_writer(db):
    Store(db).close()
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE gsckit_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ConfigError, match="newer gsckit"):
        Store(db)
