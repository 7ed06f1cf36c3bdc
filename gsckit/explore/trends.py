"""Analyses over time: the overview against the previous period, brand against non-brand, and
anomalous days.

Each reads one stream (see :mod:`gsckit.explore.scope`) with one SQL query run inside DuckDB;
only the per-day or per-period result reaches Python. Periods are built from the stream's
committed days, so a day with no rows counts as zero and a day never fetched is left out (and
named in a :class:`~gsckit.explore.CompletenessWarning`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from ..store import TABLE
from . import completeness
from .metrics import (
    RESUMS,
    SUMS,
    check_freq,
    check_int,
    check_metric,
    check_number,
    pattern_regex,
    ratios,
)
from .scope import DatabaseLike, DateLike, resolve

_TRUNC = {"day": "day", "week": "week", "month": "month"}


def overview(db: DatabaseLike, site: str, *, freq: str = "day", start: DateLike | None = None,
             end: DateLike | None = None, search_type: str = "web",
             dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
    """Clicks, impressions, ctr and position per period, against the previous period.

    Reads the smallest stored dimension set (the date-only totals when they exist; they include
    anonymized queries, which query rows do not). The range defaults to the last 28 complete
    days. The previous period is the same number of days just before ``start``; its days are
    aligned day by day onto the current range (day *i* against day *i*), then grouped by
    ``freq``: ``"day"``, ``"week"`` (ISO weeks, Monday first) or ``"month"`` (calendar months).

    Columns: ``period`` (first day of the period), ``days`` (committed days in it), ``clicks``,
    ``impressions``, ``ctr``, ``position``, ``previous_period`` (first day of the aligned
    previous days), ``clicks_previous``, ``impressions_previous``, ``ctr_previous``,
    ``position_previous``, and ``clicks_change``, ``impressions_change``, ``ctr_change``,
    ``position_change`` (current minus previous; NULL without previous days). Sorted by period.
    """
    part = _TRUNC[check_freq(freq)]
    scope = resolve(db, site, (), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    shift = scope.length
    first = scope.start - timedelta(days=shift)
    where, params = scope.where(first, scope.end)
    frame = scope.sql(f"""
        WITH daily AS (SELECT date, {SUMS} FROM {TABLE} WHERE {where} GROUP BY date),
        series AS (
            SELECT d.date, d.date >= ? AS current,
                   CASE WHEN d.date >= ? THEN d.date ELSE d.date + ? END AS aligned,
                   coalesce(clicks, 0) AS clicks, coalesce(impressions, 0) AS impressions,
                   coalesce(pw, 0) AS pw, coalesce(pi, 0) AS pi
            FROM (SELECT unnest(?::DATE[]) AS date) d LEFT JOIN daily USING (date)),
        periods AS (
            SELECT date_trunc('{part}', aligned)::DATE AS period, current,
                   min(date) AS first_day, count(*)::BIGINT AS days, {RESUMS}
            FROM series GROUP BY ALL),
        joined AS (
            SELECT c.period, c.days, c.clicks, c.impressions, {ratios("c.")},
                   p.first_day AS previous_period, p.clicks AS clicks_previous,
                   p.impressions AS impressions_previous, {ratios("p.", "_previous")}
            FROM periods c LEFT JOIN periods p ON p.period = c.period AND NOT p.current
            WHERE c.current)
        SELECT *, clicks - clicks_previous AS clicks_change,
               impressions - impressions_previous AS impressions_change,
               ctr - ctr_previous AS ctr_change, position - position_previous AS position_change
        FROM joined ORDER BY period""",
        [*params, scope.start, scope.start, shift, scope.committed(first, scope.end)])
    completeness.warn(scope, [(scope.start, scope.end), (first, scope.start - timedelta(1))])
    return frame


def brand_split(db: DatabaseLike, site: str, pattern: str | Sequence[str], *,
                freq: str = "day", start: DateLike | None = None, end: DateLike | None = None,
                search_type: str = "web", dimensions: str | Sequence[str] | None = None
                ) -> pl.DataFrame:
    """Brand against non-brand traffic per period.

    ``pattern`` is a regex (RE2 syntax) or a list of terms (matched literally, anywhere in the
    query); matching ignores case. Reads the smallest stored dimension set with ``query``.
    Anonymized queries are in neither segment: query rows never contain them.

    Columns: ``period``, ``segment`` (``"brand"`` or ``"non-brand"``, both present for every
    period, zero-filled), ``clicks``, ``impressions``, ``ctr``, ``position`` and
    ``clicks_share`` (the segment's share of the period's query clicks). Sorted by period, then
    segment.
    """
    regex = pattern_regex(pattern)
    part = _TRUNC[check_freq(freq)]
    scope = resolve(db, site, ("query",), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    where, params = scope.where(scope.start, scope.end)
    frame = scope.sql(f"""
        WITH daily AS (
            SELECT date, CASE WHEN regexp_matches(query, ?, 'i') THEN 'brand'
                              ELSE 'non-brand' END AS segment, {SUMS}
            FROM {TABLE} WHERE {where} GROUP BY ALL),
        grid AS (
            SELECT d.date, s.segment, date_trunc('{part}', d.date)::DATE AS period
            FROM (SELECT unnest(?::DATE[]) AS date) d,
                 (SELECT unnest(['brand', 'non-brand']) AS segment) s),
        periods AS (
            SELECT g.period, g.segment, coalesce(sum(clicks), 0)::BIGINT AS clicks,
                   coalesce(sum(impressions), 0)::BIGINT AS impressions,
                   sum(pw)::DOUBLE AS pw, sum(pi)::BIGINT AS pi
            FROM grid g LEFT JOIN daily USING (date, segment) GROUP BY ALL)
        SELECT period, segment, clicks, impressions, {ratios()},
               clicks / nullif(sum(clicks) OVER (PARTITION BY period), 0) AS clicks_share
        FROM periods ORDER BY period, segment""",
        [regex, *params, scope.committed(scope.start, scope.end)])
    completeness.warn(scope, [(scope.start, scope.end)])
    return frame


def anomalies(db: DatabaseLike, site: str, metric: str = "clicks", *, weeks: int = 8,
              k: float = 3.0, min_history: int = 4, start: DateLike | None = None,
              end: DateLike | None = None, search_type: str = "web",
              dimensions: str | Sequence[str] | None = None) -> pl.DataFrame:
    """Days whose ``metric`` falls outside a robust band that knows the weekly rhythm.

    Two medians, both over the ``weeks`` weeks before the day (8 by default), so one odd day
    cannot move either much:

    - the day's *baseline* is the median of the same weekday (up to ``weeks`` values: Mondays
      against Mondays, so weekly seasonality is built in);
    - every earlier day has a *ratio*, its value over its own baseline; the *level* is the median
      of the ratios of all days in the window (it follows a trend), and the *spread* their median
      absolute deviation times 1.4826 (a standard deviation for normal data; floored at 0.01 so a
      flat history does not flag rounding noise). Ratios from all weekdays make the spread
      stable where a weekday's own 8 values would not.

    ``expected = baseline * level``, ``scale = baseline * spread``, and the band is ``expected ±
    k * scale``. A day is an anomaly when it lies outside the band and at least ``min_history``
    same-weekday days were committed before it. Days before ``start`` are read for the history
    only (2 * ``weeks`` weeks: the ratios need baselines of their own).

    Reads the smallest stored dimension set (the date-only totals when they exist). Columns:
    ``date``, ``<metric>``, ``expected``, ``lower``, ``upper``, ``score`` (the distance from
    ``expected`` in units of ``scale``), ``history`` (same-weekday values behind the baseline)
    and ``anomaly``; one row per committed day of the range, sorted by date.
    ``frame.filter("anomaly")`` keeps the anomalous days.
    """
    metric = check_metric(metric)
    weeks = check_int(weeks, "weeks", 2, 52)
    k = check_number(k, "k", 0.5, 20)
    min_history = check_int(min_history, "min_history", 1, weeks)
    scope = resolve(db, site, (), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    first = scope.start - timedelta(weeks=2 * weeks)
    where, params = scope.where(first, scope.end)
    value = {"clicks": "coalesce(clicks, 0)::DOUBLE",
             "impressions": "coalesce(impressions, 0)::DOUBLE",
             "ctr": "clicks / nullif(impressions, 0)", "position": "pw / nullif(pi, 0)"}[metric]
    window = (f"RANGE BETWEEN INTERVAL {7 * weeks} DAY PRECEDING AND INTERVAL 1 DAY PRECEDING")
    frame = scope.sql(f"""
        WITH daily AS (SELECT date, {SUMS} FROM {TABLE} WHERE {where} GROUP BY date),
        series AS (
            SELECT d.date, {value} AS value
            FROM (SELECT unnest(?::DATE[]) AS date) d LEFT JOIN daily USING (date)),
        baselines AS (
            SELECT date, value, median(value) OVER same AS baseline,
                   count(value) OVER same AS history
            FROM series WINDOW same AS (PARTITION BY isodow(date) ORDER BY date {window})),
        ratios AS (SELECT *, value / nullif(baseline, 0) AS ratio FROM baselines),
        levels AS (
            SELECT *, median(ratio) OVER before AS level,
                   greatest(1.4826 * mad(ratio) OVER before, 0.01) AS spread
            FROM ratios WINDOW before AS (ORDER BY date {window})),
        banded AS (
            SELECT date, value, baseline * level AS expected, baseline * spread AS scale,
                   history FROM levels WHERE date >= ?)
        SELECT date, value AS {metric}, expected, expected - {k} * scale AS lower,
               expected + {k} * scale AS upper, (value - expected) / nullif(scale, 0) AS score,
               history::BIGINT AS history,
               coalesce(history >= {min_history} AND abs(value - expected) > {k} * scale, false)
                   AS anomaly
        FROM banded ORDER BY date""",
        [*params, scope.committed(first, scope.end), scope.start])
    completeness.warn(scope, [(scope.start, scope.end)])
    return frame
