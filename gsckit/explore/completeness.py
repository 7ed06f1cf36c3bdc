"""Warnings for figures that rest on incomplete days.

Every analysis calls :func:`warn` with the ranges it read. From the ledger: days of the range
that were never committed (they count as nothing) and days committed with fresh data (Google may
still change them). From the store's per-day completeness (:meth:`gsckit.Database.completeness`,
measured against Google's daily totals): days whose answers reached the 50,000-row cap, and a
high share of clicks hidden from query rows (anonymized queries).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import polars as pl

from .scope import FINAL, DatabaseLike, DateLike, Scope, resolve

HIDDEN_SHARE_WARNING = 0.3  # a click-weighted hidden share above this is worth a warning


class CompletenessWarning(UserWarning):
    """An analysis's figures rest on missing, fresh, capped or largely hidden days."""


def messages(scope: Scope, ranges: Sequence[tuple[date, date]]) -> list[str]:
    """One line per completeness problem of ``scope``'s stream over ``ranges``."""
    found: list[str] = []
    stream = f"{scope.site} {scope.search_type} ({scope.dimensions})"
    for first, last in ranges:
        span = (last - first).days + 1
        days = scope.days.filter(pl.col("date").is_between(first, last))
        if days.height < span:
            missing = sorted(set(_calendar(first, last)) - set(days["date"].to_list()))
            found.append(f"{stream}: {len(missing)} of {span} days from {first} to {last} are "
                         f"not in the database (first missing {missing[0]}); figures cover "
                         "only the committed days")
        fresh = days.filter(pl.col("data_state") != FINAL).height
        if fresh:
            found.append(f"{stream}: {fresh} of {span} days from {first} to {last} hold fresh "
                         "data that Google may still change")
        found += _store_messages(scope, first, last, stream)
    return found


def warn(scope: Scope, ranges: Sequence[tuple[date, date]]) -> None:
    """Emit a :class:`CompletenessWarning` per problem, pointing at the analysis's caller."""
    for text in messages(scope, ranges):
        warnings.warn(text, CompletenessWarning, stacklevel=3)


def completeness_warnings(db: DatabaseLike, site: str, *, start: DateLike | None = None,
                          end: DateLike | None = None, search_type: str = "web",
                          dimensions: str | Sequence[str] | None = None) -> list[str]:
    """The completeness problems of one stream over a range, as lines (nothing is emitted).

    The stream and the default range are chosen as for :func:`gsckit.explore.overview`
    (``dimensions`` picks another stored set).
    """
    scope = resolve(db, site, (), start=start, end=end, search_type=search_type,
                    dimensions=dimensions)
    return messages(scope, [(scope.start, scope.end)])


def _calendar(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _store_messages(scope: Scope, first: date, last: date, stream: str) -> list[str]:
    """Capped days and the hidden share, from the store's per-day completeness when it has it."""
    completeness: Any = getattr(scope.db, "completeness", None)
    if completeness is None:
        return []
    frame: pl.DataFrame = completeness(scope.site, start=first, end=last)
    frame = frame.filter(pl.col("search_type") == scope.search_type,
                         pl.col("dimensions") == scope.dimensions,
                         pl.col("date").is_between(first, last))
    found = []
    capped = frame.filter(pl.col("capped")).height
    if capped:
        found.append(f"{stream}: {capped} of {frame.height} days from {first} to {last} reached "
                     "the API's 50,000-row cap; rows past it are missing")
    if "query" in scope.dimensions.split(",") and "total_clicks" in frame.columns:
        total = float(frame["total_clicks"].sum())
        hidden = float((frame["hidden_clicks_share"].fill_null(0) * frame["total_clicks"]).sum())
        if total and hidden / total > HIDDEN_SHARE_WARNING:
            found.append(f"{stream}: {hidden / total:.0%} of clicks from {first} to {last} are "
                         "hidden from query rows (anonymized queries); sums by query undercount")
    return found
