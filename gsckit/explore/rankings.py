"""Analyses by key: movers, striking distance, cannibalization, the CTR curve, page groups and
the breakdown behind the position/CTR bubble chart.

Each reads one stream (see :mod:`gsckit.explore.scope`) with one SQL query run inside DuckDB;
only the ranked result reaches Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import polars as pl

from ..errors import ConfigError
from ..store import TABLE
from . import completeness
from .metrics import (
    RESUMS,
    SUMS,
    check_int,
    check_limit,
    check_metric,
    check_number,
    pattern_regex,
    ratios,
)
from .scope import DatabaseLike, DateLike, check_choice, check_range, column, resolve

KEYS = ("query", "page", "country", "device")
TOP_POSITION = 3  # striking distance's target: the site's own CTR at positions 1-3


def movers(db: DatabaseLike, site: str, by: str = "query",
           current: tuple[DateLike, DateLike] | None = None,
           previous: tuple[DateLike, DateLike] | None = None, metric: str = "clicks",
           limit: int | None = 50, *, search_type: str = "web",
           dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
    """The keys whose ``metric`` changed most between two periods of equal length.

    ``by`` is ``"query"``, ``"page"``, ``"country"`` or ``"device"``; the smallest stored
    dimension set containing it is read. ``current`` defaults to the last 28 complete days and
    ``previous`` to the same number of days just before it; periods of different lengths, or
    overlapping ones, are refused. A key missing from one period counts as 0 there (for
    ``position``, which has no zero, it stays NULL).

    Columns: ``<by>``, ``<metric>_current``, ``<metric>_previous``, ``delta`` (current minus
    previous) and ``delta_pct`` (delta in percent of previous; NULL when previous is 0), sorted
    by ``abs(delta)`` descending, then by key; at most ``limit`` rows (None: all).
    """
    by = check_choice(by, KEYS, "by")
    metric = check_metric(metric)
    limit = check_limit(limit)
    start, end = _period(current, "current")
    scope = resolve(db, site, (by,), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    cur = (scope.start, scope.end)
    prev = _previous(cur, previous)
    where, params = scope.where(min(prev[0], cur[0]), max(prev[1], cur[1]))
    key = column(by)
    span = "date BETWEEN ? AND ?"  # bound to one period, then to the other
    value = {
        "clicks": "coalesce(sum(clicks) FILTER (WHERE {p}), 0)::BIGINT",
        "impressions": "coalesce(sum(impressions) FILTER (WHERE {p}), 0)::BIGINT",
        "ctr": "coalesce(sum(clicks) FILTER (WHERE {p}) / "
               "nullif(sum(impressions) FILTER (WHERE {p}), 0), 0)",
        "position": "sum(position * impressions) FILTER (WHERE {p}) / nullif(sum(impressions) "
                    "FILTER (WHERE {p} AND position IS NOT NULL), 0)",
    }[metric]
    repeats = value.count("{p}")
    frame = scope.sql(f"""
        WITH keyed AS (
            SELECT {key} AS key, {value.format(p=span)} AS now,
                   {value.format(p=span)} AS before
            FROM {TABLE} WHERE {where} AND ({span} OR {span}) GROUP BY {key})
        SELECT key AS {by}, now AS {metric}_current, before AS {metric}_previous,
               now - before AS delta, 100.0 * (now - before) / nullif(before, 0) AS delta_pct
        FROM keyed ORDER BY abs(delta) DESC NULLS LAST, {by} LIMIT ?""",
        [*[*cur] * repeats, *[*prev] * repeats, *params, *cur, *prev, limit])
    completeness.warn(scope, [cur, prev])
    return frame


def striking_distance(db: DatabaseLike, site: str, positions: tuple[float, float] = (8, 20),
                      min_impressions: int = 100, limit: int | None = 100, *,
                      start: DateLike | None = None, end: DateLike | None = None,
                      search_type: str = "web", dimensions: str | Sequence[str] | None = None
                      ) -> pl.DataFrame:
    """Queries ranking just off page one, with their best page, by opportunity.

    Reads the smallest stored dimension set with ``query`` and ``page``; each query's figures
    are summed over its pages (position weighted by impressions). A query qualifies when its
    position lies within ``positions`` (inclusive) and it had at least ``min_impressions``
    impressions in the range (default: the last 28 complete days). Its best page is the one
    with most clicks (then impressions, then name). ``opportunity`` is the clicks it would gain
    at the site's own CTR for positions 1-3 (Σclicks / Σimpressions of the queries ranking
    there): ``max(impressions * top_ctr - clicks, 0)``; NULL when no query ranks there.

    Columns: ``query``, ``best_page``, ``clicks``, ``impressions``, ``ctr``, ``position``,
    ``opportunity``; sorted by opportunity, then impressions, descending.
    """
    low, high = _positions(positions)
    min_impressions = check_int(min_impressions, "min_impressions", 0, 10**12)
    limit = check_limit(limit)
    scope = resolve(db, site, ("query", "page"), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    where, params = scope.where(scope.start, scope.end)
    # rank queries first (one key), then find the best page of the ranked ones only: the
    # (query, page) grouping is the expensive one, and it shrinks to ``limit`` queries
    frame = scope.sql(f"""
        WITH queries AS (SELECT query, {SUMS} FROM {TABLE} WHERE {where} GROUP BY query),
        rated AS (SELECT query, clicks, impressions, {ratios()} FROM queries),
        top AS (SELECT sum(clicks) / nullif(sum(impressions), 0) AS top_ctr FROM rated
                WHERE position < {TOP_POSITION + 0.5}),
        ranked AS (
            SELECT query, clicks, impressions, ctr, position,
                   greatest(impressions * top_ctr - clicks, 0) AS opportunity
            FROM rated, top WHERE position BETWEEN ? AND ? AND impressions >= ?
            ORDER BY opportunity DESC NULLS LAST, impressions DESC, query LIMIT ?),
        pairs AS (
            SELECT query, page, sum(clicks) AS clicks, sum(impressions) AS impressions
            FROM {TABLE} WHERE {where} AND query IN (SELECT query FROM ranked) GROUP BY ALL),
        best AS (
            SELECT query, first(page ORDER BY clicks DESC, impressions DESC, page) AS best_page
            FROM pairs GROUP BY query)
        SELECT query, best_page, clicks, impressions, ctr, position, opportunity
        FROM ranked LEFT JOIN best USING (query)
        ORDER BY opportunity DESC NULLS LAST, impressions DESC, query""",
        [*params, low, high, min_impressions, limit, *params])
    completeness.warn(scope, [(scope.start, scope.end)])
    return frame


def cannibalization(db: DatabaseLike, site: str, min_share: float = 0.1,
                    exclude: str | Sequence[str] | None = None, *,
                    start: DateLike | None = None, end: DateLike | None = None,
                    search_type: str = "web", dimensions: str | Sequence[str] | None = None
                    ) -> pl.DataFrame:
    """Queries where two or more pages each take at least ``min_share`` of the query's clicks.

    Reads the smallest stored dimension set with ``query`` and ``page``. A page's ``share`` is
    its clicks for the query over the query's clicks on all its pages, in the range (default:
    the last 28 complete days); queries without clicks are skipped. ``exclude`` drops queries
    matching a regex or a list of terms (brand queries, typically), ignoring case.

    Columns: ``query``, ``page``, ``clicks``, ``impressions``, ``ctr``, ``position``,
    ``share``, ``query_clicks``, ``competing_pages`` (pages of the query at or above
    ``min_share``); one row per competing page. Sorted by query clicks descending, query, then
    share descending.
    """
    share = check_number(min_share, "min_share", 0.0, 0.5)
    if share <= 0:
        raise ConfigError("min_share must be above 0 (0.1 means 10% of the query's clicks)")
    regex = None if exclude is None else pattern_regex(exclude, "exclude")
    scope = resolve(db, site, ("query", "page"), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    where, params = scope.where(scope.start, scope.end)
    skip = "" if regex is None else "AND NOT regexp_matches(query, ?, 'i')"
    # only queries with two pages or more can qualify; comparing the smallest and largest hash
    # of their pages finds them with one key and no page strings held per query, so the
    # (query, page) grouping covers those queries only
    frame = scope.sql(f"""
        WITH multi AS (
            SELECT query FROM {TABLE} WHERE {where} {skip} GROUP BY query
            HAVING min(hash(page)) <> max(hash(page)) AND sum(clicks) > 0),
        pairs AS (
            SELECT query, page, {SUMS} FROM {TABLE}
            WHERE {where} AND query IN (SELECT query FROM multi) GROUP BY ALL),
        totals AS (SELECT query, sum(clicks)::BIGINT AS query_clicks FROM pairs GROUP BY query),
        kept AS (
            SELECT pairs.*, query_clicks, clicks / query_clicks AS share
            FROM pairs JOIN totals USING (query) WHERE clicks / query_clicks >= ?),
        counted AS (
            SELECT query, count(*)::BIGINT AS competing_pages FROM kept GROUP BY query
            HAVING count(*) >= 2)
        SELECT query, page, clicks, impressions, {ratios()}, share, query_clicks,
               competing_pages
        FROM kept JOIN counted USING (query)
        ORDER BY query_clicks DESC, query, share DESC, page""",
        [*params, *([regex] if regex else []), *params, share])
    completeness.warn(scope, [(scope.start, scope.end)])
    return frame


def ctr_curve(db: DatabaseLike, site: str, max_position: int = 20, min_impressions: int = 100,
              limit: int | None = 1000, *, start: DateLike | None = None,
              end: DateLike | None = None, search_type: str = "web",
              dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
    """The site's own CTR by rounded position, and the queries furthest below it.

    Reads the smallest stored dimension set with ``query``. Each query's position over the range
    (default: the last 28 complete days) is rounded half up to a ``bucket`` (at least 1); the
    site's CTR at a bucket, ``site_ctr``, is Σclicks / Σimpressions of every query in it.
    ``missed_clicks = impressions * (site_ctr - ctr)`` is what the query loses against the
    site's own curve (negative: it does better). Queries without a position are skipped.

    Columns: ``query``, ``clicks``, ``impressions``, ``ctr``, ``position``, ``bucket``,
    ``site_ctr``, ``ctr_gap`` (ctr - site_ctr), ``missed_clicks``; queries with at least
    ``min_impressions`` impressions in buckets up to ``max_position``, sorted by missed clicks
    descending (the underperformers first).
    """
    max_position = check_int(max_position, "max_position", 1, 1000)
    min_impressions = check_int(min_impressions, "min_impressions", 0, 10**12)
    limit = check_limit(limit)
    scope = resolve(db, site, ("query",), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    where, params = scope.where(scope.start, scope.end)
    frame = scope.sql(f"""
        WITH queries AS (SELECT query, {SUMS} FROM {TABLE} WHERE {where} GROUP BY query),
        rated AS (SELECT query, clicks, impressions, {ratios()} FROM queries),
        bucketed AS (
            SELECT *, greatest(round(position), 1)::INTEGER AS bucket FROM rated
            WHERE position IS NOT NULL AND impressions > 0),
        curve AS (
            SELECT bucket, sum(clicks) / sum(impressions) AS site_ctr FROM bucketed
            GROUP BY bucket)
        SELECT query, clicks, impressions, ctr, position, bucket, site_ctr,
               ctr - site_ctr AS ctr_gap, impressions * (site_ctr - ctr) AS missed_clicks
        FROM bucketed JOIN curve USING (bucket) WHERE bucket <= ? AND impressions >= ?
        ORDER BY missed_clicks DESC, query LIMIT ?""",
        [*params, max_position, min_impressions, limit])
    completeness.warn(scope, [(scope.start, scope.end)])
    return frame


def page_groups(db: DatabaseLike, site: str, depth: int = 1, limit: int | None = None, *,
                start: DateLike | None = None, end: DateLike | None = None,
                search_type: str = "web", dimensions: str | Sequence[str] | None = None
                ) -> pl.DataFrame:
    """Traffic by URL folder, ``depth`` folders deep.

    Reads the smallest stored dimension set with ``page``. A page's folder is its scheme and
    host plus the first ``depth`` path segments that end in ``/`` (query string and fragment
    dropped): at depth 1 ``https://ex.com/blog/2024/post`` is in ``https://ex.com/blog/``, at
    depth 2 in ``https://ex.com/blog/2024/``; ``https://ex.com/about`` is in ``https://ex.com/``.

    Columns: ``folder``, ``pages`` (distinct pages with rows in the range), ``clicks``,
    ``impressions``, ``ctr``, ``position``, ``clicks_share`` (of all the stream's clicks);
    sorted by clicks descending, then folder.
    """
    depth = check_int(depth, "depth", 1, 20)
    limit = check_limit(limit)
    scope = resolve(db, site, ("page",), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    where, params = scope.where(scope.start, scope.end)
    # one RE2 pass per distinct page: scheme and host, the first "/", then up to ``depth``
    # segments that end in "/" (a "?" or "#" ends the path)
    folder = (f"regexp_extract(page, '^(?:[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)?/?"
              f"(?:[^/?#]*/){{0,{depth}}}')")
    frame = scope.sql(f"""
        WITH pages AS (SELECT page, {SUMS} FROM {TABLE} WHERE {where} GROUP BY page),
        folders AS (SELECT CASE WHEN suffix(f, '/') THEN f ELSE f || '/' END AS folder,
                           count(*)::BIGINT AS pages, {RESUMS}
                    FROM (SELECT {folder} AS f, * FROM pages) GROUP BY 1)
        SELECT folder, pages, clicks, impressions, {ratios()},
               clicks / nullif(sum(clicks) OVER (), 0) AS clicks_share
        FROM folders ORDER BY clicks DESC, folder LIMIT ?""", [*params, limit])
    completeness.warn(scope, [(scope.start, scope.end)])
    return frame


def breakdown(db: DatabaseLike, site: str, by: str = "query", color: str | None = None,
              limit: int | None = 1000, *, start: DateLike | None = None,
              end: DateLike | None = None, search_type: str = "web",
              dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
    """Clicks, impressions, ctr and position per key (and per ``color`` value): the data of
    Google's position/CTR bubble chart.

    ``by`` and ``color`` are dimensions (``query``, ``page``, ``country``, ``device``;
    ``color`` may be None); the smallest stored dimension set with both is read, so
    ``color="device"`` needs a backfill with the ``device`` dimension. Columns: ``<by>``,
    ``<color>`` (when given), ``clicks``, ``impressions``, ``ctr``, ``position``; the ``limit``
    rows with most clicks, sorted by clicks descending, then by key.
    """
    by = check_choice(by, KEYS, "by")
    if color is not None:
        color = check_choice(color, [k for k in KEYS if k != by], "color")
    limit = check_limit(limit)
    keys = [by] if color is None else [by, color]
    scope = resolve(db, site, keys, start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    where, params = scope.where(scope.start, scope.end)
    names = ", ".join(f"{column(k)} AS {k}" for k in keys)
    frame = scope.sql(f"""
        WITH keyed AS (SELECT {names}, {SUMS} FROM {TABLE} WHERE {where} GROUP BY ALL)
        SELECT {", ".join(keys)}, clicks, impressions, {ratios()} FROM keyed
        ORDER BY clicks DESC, {", ".join(keys)} LIMIT ?""", [*params, limit])
    completeness.warn(scope, [(scope.start, scope.end)])
    return frame


def _period(value: object, what: str) -> tuple[date | None, date | None]:
    if value is None:
        return None, None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{what} must be a (start, end) pair of dates")
    return check_range(value[0], value[1], f"{what} ")


def _previous(current: tuple[date, date], previous: object) -> tuple[date, date]:
    """The previous period: given (same length, no overlap), or the days just before."""
    length = (current[1] - current[0]).days + 1
    if previous is None:
        return current[0] - timedelta(days=length), current[0] - timedelta(days=1)
    first, last = _period(previous, "previous")
    if first is None or last is None:
        raise ConfigError("previous must give both its start and its end")
    if (last - first).days + 1 != length:
        raise ConfigError(f"previous ({first} to {last}, {(last - first).days + 1} days) must "
                          f"be as long as current ({current[0]} to {current[1]}, {length} days)")
    if first <= current[1] and last >= current[0]:
        raise ConfigError(f"previous ({first} to {last}) overlaps current ({current[0]} to "
                          f"{current[1]})")
    return first, last


def _positions(positions: object) -> tuple[float, float]:
    if not isinstance(positions, (tuple, list)) or len(positions) != 2:
        raise ConfigError("positions must be a (low, high) pair such as (8, 20)")
    low = check_number(positions[0], "positions low", 1, 1000)
    high = check_number(positions[1], "positions high", 1, 1000)
    if low > high:
        raise ConfigError(f"positions {positions!r}: low is above high")
    return low, high
