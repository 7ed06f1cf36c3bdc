"""What a gsckit file holds, how to recognise one, and the steps that upgrade an older file.

Physical layout (schema version 4):

- ``gsckit_rows``: one row per API row, with only what varies inside a day slice (the dimension
  values and the four metrics) plus the slice's ``slice_id``;
- ``gsckit_ledger``: one row per committed day slice, with what is constant inside it (site,
  search type, dimensions, filters, date, fetch time), its counts and ``slice_id``, and its state:
  ``data_state`` is ``final`` (Google's final data) or ``fresh`` (partial data that Google may
  still change), ``requested`` the ``dataState`` sent, ``first_incomplete`` the first-incomplete
  marker Google sent for a fresh day, ``newest_final`` Google's newest final day when the day was
  fetched, ``rechecked`` whether a final day was re-fetched once by a sync's look-back;
- ``search_analytics``: a view joining the two, with the column names and meanings users' SQL
  has always seen;
- ``gsckit_detail``: one row per committed day slice (same ``slice_id``): the sums of its rows,
  whether the cap cut them, and what splitting the day did (version 4);
- ``daily_totals``: Google's own totals per site, search type, filters and day, from a request
  grouped by date alone (version 4);
- ``completeness``: a view of each committed day against its totals (version 4).

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
from ..planner import ROW_CAP

TABLE = "search_analytics"
ROWS = "gsckit_rows"
LEDGER = "gsckit_ledger"
META = "gsckit_meta"
DETAIL = "gsckit_detail"
TOTALS = "daily_totals"
COMPLETENESS = "completeness"
SCHEMA_VERSION = 4
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
# the ledger as version 2 made it (the step from version 1 builds it); version 3 added the day's
# state: the marker Google sent, its newest final day when fetched, and whether it was re-checked
_LEDGER_V2_COLUMNS = """
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
    slice_id INTEGER NOT NULL"""
_LEDGER_V2_DDL = f"CREATE TABLE {LEDGER} ({_LEDGER_V2_COLUMNS}\n)"
_LEDGER_DDL = f"""CREATE TABLE {LEDGER} ({_LEDGER_V2_COLUMNS},
    requested VARCHAR NOT NULL,
    first_incomplete VARCHAR,
    newest_final DATE,
    rechecked BOOLEAN NOT NULL
)"""
LEDGER_COLUMNS = 18

_VIEW_DDL = f"""
CREATE VIEW {TABLE} AS
SELECT l.site, l.search_type, l.dimensions, l.filters, l.date, r.hour, r.query, r.page, r.country,
       r.device, r.search_appearance, r.clicks, r.impressions,
       coalesce(r.ctr, r.clicks / r.impressions) AS ctr, r.position, l.data_state, l.fetched_at
FROM {ROWS} AS r JOIN {LEDGER} AS l USING (slice_id)"""
_META_DDL = f"CREATE TABLE {META} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
# partitions is 0 for a day fetched whole; the unsplit_* columns are NULL then
_DETAIL_DDL = f"""
CREATE TABLE {DETAIL} (
    slice_id INTEGER PRIMARY KEY,
    clicks BIGINT NOT NULL,
    impressions BIGINT NOT NULL,
    capped BOOLEAN NOT NULL,
    partitions INTEGER NOT NULL,
    capped_partitions INTEGER NOT NULL,
    unsplit_rows BIGINT,
    unsplit_clicks BIGINT,
    unsplit_impressions BIGINT,
    split_requests INTEGER NOT NULL,
    split_note VARCHAR NOT NULL
)"""
_TOTALS_DDL = f"""
CREATE TABLE {TOTALS} (
    site VARCHAR NOT NULL,
    search_type VARCHAR NOT NULL,
    filters VARCHAR NOT NULL,
    date DATE NOT NULL,
    data_state VARCHAR NOT NULL,
    clicks BIGINT NOT NULL,
    impressions BIGINT NOT NULL,
    ctr DOUBLE,
    position DOUBLE,
    fetched_at TIMESTAMPTZ NOT NULL,
    run_id VARCHAR NOT NULL,
    PRIMARY KEY (site, search_type, filters, date)
)"""
# the completeness of each committed day; {detail} is the detail table joined {join} (for a
# file older than version 4, an equivalent computed from its rows, see completeness_sql)
_COMPLETENESS_SELECT = """
SELECT l.site, l.search_type, l.dimensions, l.filters, l.date, l.data_state,
       l.rows, l.pages, l.requests,
       coalesce(d.clicks, 0) AS detail_clicks,
       coalesce(d.impressions, 0) AS detail_impressions,
       t.clicks AS total_clicks, t.impressions AS total_impressions,
       t.ctr AS total_ctr, t.position AS total_position, t.data_state AS totals_data_state,
       CASE WHEN t.clicks > 0 THEN 1 - coalesce(d.clicks, 0) / t.clicks END
           AS hidden_clicks_share,
       CASE WHEN t.impressions > 0 THEN 1 - coalesce(d.impressions, 0) / t.impressions END
           AS hidden_impressions_share,
       coalesce(d.capped, false) AS capped,
       coalesce(d.partitions, 0) > 0 AS split,
       coalesce(d.partitions, 0) AS partitions,
       coalesce(d.capped_partitions, 0) AS capped_partitions,
       d.unsplit_rows, d.unsplit_clicks,
       l.rows - d.unsplit_rows AS gained_rows,
       d.clicks - d.unsplit_clicks AS gained_clicks,
       coalesce(d.split_requests, 0) AS split_requests,
       coalesce(d.split_note, '') AS split_note
FROM {ledger} AS l
LEFT JOIN {detail} AS d {join}
LEFT JOIN {totals} AS t
  ON t.site = l.site AND t.search_type = l.search_type AND t.filters = l.filters
 AND t.date = l.date"""
_COMPLETENESS_DDL = f"CREATE VIEW {COMPLETENESS} AS " + _COMPLETENESS_SELECT.format(
    ledger=LEDGER, detail=DETAIL, join="USING (slice_id)", totals=TOTALS)
# what a version 3 file knows of its committed days: their sums, and capped when an answer
# reached the cap (nothing was ever split)
_DETAIL_FROM_ROWS = f"""
SELECT l.slice_id, coalesce(r.clicks, 0) AS clicks, coalesce(r.impressions, 0) AS impressions,
       l.rows >= {ROW_CAP} AS capped, 0 AS partitions, 0 AS capped_partitions,
       NULL::BIGINT AS unsplit_rows, NULL::BIGINT AS unsplit_clicks,
       NULL::BIGINT AS unsplit_impressions, 0 AS split_requests, '' AS split_note
FROM {LEDGER} AS l LEFT JOIN (
    SELECT slice_id, sum(clicks)::BIGINT AS clicks, sum(impressions)::BIGINT AS impressions
    FROM {ROWS} GROUP BY slice_id) AS r USING (slice_id)"""
# the same for a reader of any older file, through the columns every version has
_STREAM = "site, search_type, dimensions, filters, date"
_DETAIL_FROM_TABLE = f"""
(SELECT {_STREAM}, sum(clicks)::BIGINT AS clicks, sum(impressions)::BIGINT AS impressions,
        count(*) >= {ROW_CAP} AS capped, 0 AS partitions, 0 AS capped_partitions,
        NULL::BIGINT AS unsplit_rows, NULL::BIGINT AS unsplit_clicks, 0 AS split_requests,
        '' AS split_note
 FROM {TABLE} GROUP BY ALL)"""
_NO_TOTALS = ("(SELECT NULL::VARCHAR AS site, NULL::VARCHAR AS search_type, "
              "NULL::VARCHAR AS filters, NULL::DATE AS date, NULL::VARCHAR AS data_state, "
              "NULL::BIGINT AS clicks, NULL::BIGINT AS impressions, NULL::DOUBLE AS ctr, "
              "NULL::DOUBLE AS position WHERE false)")


def completeness_sql(file_version: int) -> str:
    """The query behind the ``completeness`` view, for a file of ``file_version`` (a reader
    never migrates: an older file is read through what it has, without totals)."""
    if file_version >= 4:
        return f"SELECT * FROM {COMPLETENESS}"
    return _COMPLETENESS_SELECT.format(ledger=LEDGER, detail=_DETAIL_FROM_TABLE,
                                       join=f"USING ({_STREAM})", totals=_NO_TOTALS)


def create(con: duckdb.DuckDBPyConnection) -> None:
    """Create the current schema in an empty database (inside the caller's transaction)."""
    for ddl in (_ROWS_DDL, _LEDGER_DDL, _VIEW_DDL, _META_DDL, _DETAIL_DDL, _TOTALS_DDL,
                _COMPLETENESS_DDL):
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


def _v3_to_v4(con: duckdb.DuckDBPyConnection) -> None:
    """Add the completeness tables: each committed day's sums from its rows, no totals yet."""
    con.execute(_DETAIL_DDL)
    con.execute(f"INSERT INTO {DETAIL} {_DETAIL_FROM_ROWS}")
    con.execute(_TOTALS_DDL)
    con.execute(_COMPLETENESS_DDL)


# version N -> N + 1; each runs inside the one transaction of upgrade()
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {1: _v1_to_v2,
                                                                      2: _v2_to_v3,
                                                                      3: _v3_to_v4}


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
