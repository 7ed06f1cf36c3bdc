"""What a gsckit file holds, how to recognise one, and the steps that upgrade an older file.

Physical layout (schema version 3):

- ``gsckit_rows``: one row per API row, with only what varies inside a day slice (the dimension
  values and the four metrics) plus the slice's ``slice_id``;
- ``gsckit_ledger``: one row per committed day slice, with what is constant inside it (site,
  search type, dimensions, filters, date, fetch time), its counts and ``slice_id``, and its state:
  ``data_state`` is ``final`` (Google's final data) or ``fresh`` (partial data that Google may
  still change), ``requested`` the ``dataState`` sent, ``first_incomplete`` the first-incomplete
  marker Google sent for a fresh day, ``newest_final`` Google's newest final day when the day was
  fetched, ``rechecked`` whether a final day was re-fetched once by a sync's look-back;
- ``search_analytics``: a view joining the two, with the column names and meanings users' SQL
  has always seen.

Storing the slice constants once per day instead of once per row halves the insert cost and
saves about a byte a row, and ``ctr`` is kept only where it is not ``clicks / impressions``
(benchmarks/ingest.py). A file records its version in ``gsckit_meta``;
:func:`upgrade` brings an older file up to :data:`SCHEMA_VERSION` in one transaction, and only the
writer runs it: readers of an older file see the same surface through its own tables.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from ..errors import ConfigError

TABLE = "search_analytics"
ROWS = "gsckit_rows"
LEDGER = "gsckit_ledger"
META = "gsckit_meta"
SCHEMA_VERSION = 3
FINAL, FRESH = "final", "fresh"
STATES = (FINAL, FRESH)

COLUMNS = ("site", "search_type", "dimensions", "filters", "date", "hour", "query", "page",
           "country", "device", "search_appearance", "clicks", "impressions", "ctr", "position",
           "data_state", "fetched_at")
# per-row columns of gsckit_rows after slice_id, in table order
ROW_COLUMNS = ("hour", "query", "page", "country", "device", "search_appearance", "clicks",
               "impressions", "ctr", "position")

# ctr is stored only where it is not exactly clicks / impressions (as a double division), which
# for API rows is never: the view computes it back bit for bit, and the file saves 1.6 bytes a row
STORED_CTR = "CASE WHEN {0}ctr = {0}clicks / {0}impressions THEN NULL ELSE {0}ctr END"
_ROWS_DDL = f"""
CREATE TABLE {ROWS} (
    slice_id INTEGER NOT NULL,
    hour TIMESTAMPTZ,
    query VARCHAR,
    page VARCHAR,
    country VARCHAR,
    device VARCHAR,
    search_appearance VARCHAR,
    clicks BIGINT NOT NULL,
    impressions BIGINT NOT NULL,
    ctr DOUBLE,
    position DOUBLE
)"""
_LEDGER_DDL = f"""
CREATE TABLE {LEDGER} (
    slice_key VARCHAR PRIMARY KEY,
    site VARCHAR NOT NULL,
    search_type VARCHAR NOT NULL,
    dimensions VARCHAR NOT NULL,
    filters VARCHAR NOT NULL,
    date DATE NOT NULL,
    data_state VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    pages INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL,
    slice_id INTEGER NOT NULL,
    requested VARCHAR NOT NULL,
    first_incomplete VARCHAR,
    newest_final DATE,
    rechecked BOOLEAN NOT NULL
)"""
LEDGER_COLUMNS = 18
# the ledger as version 2 made it (the step from version 1 builds it)
_LEDGER_V2_DDL = f"""
CREATE TABLE {LEDGER} (
    slice_key VARCHAR PRIMARY KEY,
    site VARCHAR NOT NULL,
    search_type VARCHAR NOT NULL,
    dimensions VARCHAR NOT NULL,
    filters VARCHAR NOT NULL,
    date DATE NOT NULL,
    data_state VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    pages INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    fetched_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL,
    slice_id INTEGER NOT NULL
)"""

_VIEW_DDL = f"""
CREATE VIEW {TABLE} AS
SELECT l.site, l.search_type, l.dimensions, l.filters, l.date, r.hour, r.query, r.page, r.country,
       r.device, r.search_appearance, r.clicks, r.impressions,
       coalesce(r.ctr, r.clicks / r.impressions) AS ctr, r.position, l.data_state, l.fetched_at
FROM {ROWS} AS r JOIN {LEDGER} AS l USING (slice_id)"""
_META_DDL = f"CREATE TABLE {META} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"


def create(con: duckdb.DuckDBPyConnection) -> None:
    """Create the current schema in an empty database (inside the caller's transaction)."""
    for ddl in (_ROWS_DDL, _LEDGER_DDL, _VIEW_DDL, _META_DDL):
        con.execute(ddl)
    con.execute(f"INSERT INTO {META} VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])


def _v1_to_v2(con: duckdb.DuckDBPyConnection) -> None:
    """Move the slice constants out of the v1 row table into the ledger; position nullable."""
    con.execute(_LEDGER_V2_DDL.replace(LEDGER, "gsckit_ledger_v2", 1))
    con.execute(f"INSERT INTO gsckit_ledger_v2 SELECT *, row_number() OVER (ORDER BY date, "
                f"slice_key)::INTEGER FROM {LEDGER}")
    con.execute(_ROWS_DDL)
    columns = ", ".join(f"t.{c}" if c != "ctr" else STORED_CTR.format("t.") for c in ROW_COLUMNS)
    con.execute(
        f"INSERT INTO {ROWS} SELECT l.slice_id, {columns} "
        f"FROM {TABLE} AS t JOIN gsckit_ledger_v2 AS l ON t.site = l.site "
        "AND t.search_type = l.search_type AND t.dimensions = l.dimensions "
        "AND t.filters = l.filters AND t.date = l.date ORDER BY l.slice_id")
    con.execute(f"DROP TABLE {TABLE}")
    con.execute(f"DROP TABLE {LEDGER}")
    con.execute(f"ALTER TABLE gsckit_ledger_v2 RENAME TO {LEDGER}")
    con.execute(_VIEW_DDL)


# a day fetched this long after it ended (Pacific) held final data whatever was asked for: Google
# finalises within a few days, and its own recipe looks for the newest final day in the last 10
SETTLED_DAYS = 10
# the v2 ledger's entries as day states: its data_state was the dataState requested
_V2_STATE = f"""CASE WHEN (data_state = '{FINAL}' AND rows > 0)
    OR epoch(fetched_at) - 8 * 3600 >= epoch(date::TIMESTAMP) + {SETTLED_DAYS} * 86400
    THEN '{FINAL}' ELSE '{FRESH}' END"""


def _v2_to_v3(con: duckdb.DuckDBPyConnection) -> None:
    """Give each day its state (final or fresh) and room for what gsckit knew when fetching.

    Version 2 recorded the dataState requested, not what Google served. A day that returned rows
    to a ``final`` request is final; so is any day fetched long after it ended. Everything else
    becomes fresh, so the next sync or backfill fetches it again: ``all`` days that were never
    refreshed, and the empty ``final`` days that a run made too early recorded (their rows were
    lost, and are recovered this way).
    """
    con.execute(f"DROP VIEW {TABLE}")
    con.execute(_LEDGER_DDL.replace(LEDGER, "gsckit_ledger_v3", 1))
    con.execute(
        f"INSERT INTO gsckit_ledger_v3 SELECT slice_key, site, search_type, dimensions, filters, "
        f"date, {_V2_STATE}, rows, pages, requests, duplicates, fetched_at, run_id, slice_id, "
        f"data_state, NULL, NULL, false FROM {LEDGER}")
    con.execute(f"DROP TABLE {LEDGER}")
    con.execute(f"ALTER TABLE gsckit_ledger_v3 RENAME TO {LEDGER}")
    con.execute(_VIEW_DDL)


# version N -> N + 1; each runs inside the one transaction of upgrade()
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {1: _v1_to_v2,
                                                                      2: _v2_to_v3}


def kind(con: duckdb.DuckDBPyConnection) -> str:
    """``"empty"`` (no tables), ``"gsckit"`` (has gsckit_meta) or ``"foreign"``."""
    names = {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main'").fetchall()}
    if not names:
        return "empty"
    return "gsckit" if META in names else "foreign"


def version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in a gsckit file."""
    rows = con.execute(f"SELECT value FROM {META} WHERE key = 'schema_version'").fetchall()
    try:
        return int(rows[0][0]) if rows else 1
    except ValueError:
        return 0


def foreign_error(path: str) -> ConfigError:
    return ConfigError(f"{path!r} is a DuckDB file that gsckit did not create (it has no "
                       f"{META} table); choose another --db path")


def check_readable(con: duckdb.DuckDBPyConnection, path: str) -> str:
    """Classify the file for a reader: ``"empty"`` or ``"gsckit"``; refuse anything else."""
    found = kind(con)
    if found == "foreign":
        raise foreign_error(path)
    if found == "gsckit" and version(con) < 1:
        raise ConfigError(f"{path!r} has an unreadable gsckit schema version")
    return found


def upgrade(con: duckdb.DuckDBPyConnection, path: str) -> bool:
    """Create or upgrade the schema in one transaction; return True if anything was written.

    The caller holds the write connection. A file from a newer gsckit, or a DuckDB file gsckit
    did not create, is refused before anything is written.
    """
    found = kind(con)
    if found == "foreign":
        raise foreign_error(path)
    current = version(con) if found == "gsckit" else 0
    if current > SCHEMA_VERSION or (found == "gsckit" and current < 1):
        raise ConfigError(f"{path!r} was written by a newer gsckit (schema version {current}, "
                          f"this one knows {SCHEMA_VERSION}); upgrade gsckit")
    if current == SCHEMA_VERSION:
        return False
    con.execute("BEGIN TRANSACTION")
    try:
        if current == 0:
            create(con)
        else:
            for step in range(current, SCHEMA_VERSION):
                MIGRATIONS[step](con)
            con.execute(f"UPDATE {META} SET value = ? WHERE key = 'schema_version'",
                        [str(SCHEMA_VERSION)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return True


def days_source(con: duckdb.DuckDBPyConnection) -> str:
    """A subquery of the ledger with each day's ``state`` (final or fresh), ``newest_final`` and
    ``first_incomplete``, whatever the file's version: readers never migrate, so an older file's
    requested data states are read as day states the way the upgrade would set them."""
    common = ("site, search_type, dimensions, filters, date, rows, pages, requests, fetched_at, "
              "slice_key")
    if kind(con) != "gsckit" or version(con) >= 3:
        return (f"(SELECT {common}, data_state AS state, newest_final, first_incomplete, "
                f"rechecked FROM {LEDGER})")
    return (f"(SELECT {common}, {_V2_STATE} AS state, NULL::DATE AS newest_final, "
            f"NULL::VARCHAR AS first_incomplete, false AS rechecked FROM {LEDGER})")


def memory_surface(con: duckdb.DuckDBPyConnection) -> None:
    """Give an in-memory database the current (empty) tables: an empty file's read surface."""
    create(con)
