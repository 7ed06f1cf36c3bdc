"""SQL for re-derived metrics, and the argument checks the analyses share.

ctr and position are never averaged. ``ctr = Σclicks / Σimpressions`` and ``position =
Σ(position * impressions) / Σimpressions``, the latter over rows that have a position (Discover
and Google News have none, so their position is NULL). Intermediate steps carry four additive
sums, ``clicks``, ``impressions``, ``pw`` (position * impressions) and ``pi`` (impressions with a
position), so a day can be re-aggregated into weeks or months without loss.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import duckdb

from ..errors import ConfigError
from .scope import check_choice

METRICS = ("clicks", "impressions", "ctr", "position")
FREQS = ("day", "week", "month")

SUMS = ("sum(clicks)::BIGINT AS clicks, sum(impressions)::BIGINT AS impressions, "
        "sum(position * impressions)::DOUBLE AS pw, "
        "(sum(impressions) FILTER (WHERE position IS NOT NULL))::BIGINT AS pi")
RESUMS = ("sum(clicks)::BIGINT AS clicks, sum(impressions)::BIGINT AS impressions, "
          "sum(pw)::DOUBLE AS pw, sum(pi)::BIGINT AS pi")


def ratios(alias: str = "", suffix: str = "") -> str:
    """``ctr`` and ``position`` from the sums of ``alias`` (``"p."``), named with ``suffix``."""
    return (f"{alias}clicks / nullif({alias}impressions, 0) AS ctr{suffix}, "
            f"{alias}pw / nullif({alias}pi, 0) AS position{suffix}")


def check_metric(metric: object) -> str:
    return check_choice(metric, METRICS, "metric")


def check_freq(freq: object) -> str:
    return check_choice(freq, FREQS, "freq")


def check_limit(limit: object) -> int | None:
    """``None`` (every row) or a positive int."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive integer or None, not {limit!r}")
    return limit


def check_int(value: object, what: str, low: int, high: int) -> int:
    """An int in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an integer from {low} to {high}, not {value!r}")
    return value


def check_number(value: object, what: str, low: float, high: float) -> float:
    """A real number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value <= high):
        raise ConfigError(f"{what} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def pattern_regex(pattern: object, what: str = "pattern") -> str:
    """A case-insensitive RE2 regex from a regex string or a list of literal terms.

    Checked by DuckDB's own regex engine (RE2: no look-arounds or back-references), so a
    pattern that would fail mid-query fails here, in one line.
    """
    if isinstance(pattern, str):
        regex = pattern
    elif isinstance(pattern, Sequence) and pattern and all(
            isinstance(t, str) and t.strip() for t in pattern):
        regex = "|".join(re.escape(t.strip()) for t in pattern)
    else:
        raise ConfigError(f"{what} must be a regex or a non-empty list of non-empty terms")
    if not regex.strip():
        raise ConfigError(f"{what} is empty; give a regex such as 'acme|acme corp' or terms")
    try:
        with duckdb.connect() as con:
            con.execute("SELECT regexp_matches('', ?, 'i')", [regex]).fetchall()
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0].split(": ", 1)[-1]
        raise ConfigError(f"{what} {regex!r} is not a valid regex: {reason}") from None
    return regex
