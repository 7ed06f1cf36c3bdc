"""The ledger's days as the rest of gsckit reads them: each day's state and what was known.

This is the one reader of day states: planning (what a run fetches), ``status`` and the dry run
go through it, never through string matching of their own. It works on every schema version
(see :func:`.schema.days_source`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..planner import Slice
from .schema import FINAL, days_source

Stream = tuple[str, str, str, str]
"""(site, search type, dimensions key, filters key): the days of one stream share it."""


@dataclass(frozen=True)
class LedgerDay:
    """One committed day: ``state`` (``final`` or ``fresh``), ``rows``, ``pages``, Google's
    ``newest_final`` day when it was fetched (``None`` when unknown) and whether a final day was
    already ``rechecked`` once."""

    state: str
    rows: int
    pages: int
    newest_final: date | None
    rechecked: bool

    @property
    def final(self) -> bool:
        return self.state == FINAL


def read_days(con: Any, streams: Iterable[Stream], start: date | None = None
              ) -> dict[Stream, dict[date, LedgerDay]]:
    """Every committed day of ``streams`` (from ``start`` on), keyed by stream then date."""
    wanted = list(dict.fromkeys(streams))
    found: dict[Stream, dict[date, LedgerDay]] = {stream: {} for stream in wanted}
    if not wanted:
        return found
    keys = ["|".join(stream) for stream in wanted]
    rows = con.execute(
        f"SELECT site, search_type, dimensions, filters, date, state, rows, pages, newest_final, "
        f"rechecked FROM {days_source(con)} WHERE concat_ws('|', site, search_type, dimensions, "
        "filters) IN (SELECT unnest(?::VARCHAR[])) AND date >= ?",
        [keys, start or date.min]).fetchall()
    for site, search_type, dims, filters, day, state, count, pages, newest, rechecked in rows:
        found[(site, search_type, dims, filters)][day] = LedgerDay(
            state, int(count), int(pages), newest, bool(rechecked))
    return found


def completed(con: Any, slices: Iterable[Slice]) -> set[str]:
    """Keys of ``slices`` committed with Google's final data: what no run fetches again (fresh
    days are fetched again until Google calls them final)."""
    wanted = [s.key for s in slices]
    if not wanted:
        return set()
    rows = con.execute(
        f"SELECT slice_key FROM {days_source(con)} WHERE state = '{FINAL}' AND slice_key IN "
        "(SELECT unnest(?::VARCHAR[]))", [wanted]).fetchall()
    return {key for (key,) in rows}
