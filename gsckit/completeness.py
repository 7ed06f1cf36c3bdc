"""Completeness in a few words: the line a report ends with, and one line per stream.

Both read the ``completeness`` view (:meth:`gsckit.Database.completeness`) and say how many days
the API's row cap still cuts, what splitting recovered, and how much of Google's daily total the
stored rows show. For a stream grouped by query the rest is mostly anonymized queries ("not
attributable to a query"); for other groupings only a cap can hide clicks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl


@dataclass(frozen=True)
class Completeness:
    """How complete a set of committed days is (see the README, "Completeness").

    ``days``: days measured; ``capped``: days whose rows a cap still cuts; ``split``: days
    fetched in partitions, which gained ``gained_rows`` rows and ``gained_clicks`` clicks over
    their own capped answers (``unsplit_clicks``) for ``split_requests`` extra requests;
    ``total_clicks`` / ``hidden_clicks``: Google's daily totals of the days that have them, and
    the part of them not in the rows, for streams grouped by query (``query_*``) and for the
    others; ``notes``: why splitting stopped for a stream.
    """

    days: int = 0
    capped: int = 0
    split: int = 0
    gained_rows: int = 0
    gained_clicks: int = 0
    unsplit_clicks: int = 0
    split_requests: int = 0
    query_total_clicks: int = 0
    query_hidden_clicks: int = 0
    total_clicks: int = 0
    hidden_clicks: int = 0
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, frame: pl.DataFrame, notes: tuple[str, ...] = ()) -> Completeness:
        """Sum up rows of the ``completeness`` view."""
        if frame.height == 0:
            return cls(notes=notes)
        split = frame.filter(pl.col("split"))
        totalled = frame.filter(pl.col("total_clicks").is_not_null())
        by_query = pl.col("dimensions").str.split(",").list.contains("query")
        hidden = (pl.col("total_clicks") - pl.col("detail_clicks")).clip(lower_bound=0)
        query = totalled.filter(by_query)
        other = totalled.filter(~by_query)
        return cls(
            days=frame.height, capped=int(frame["capped"].sum()), split=split.height,
            gained_rows=int(split["gained_rows"].sum()),
            gained_clicks=int(split["gained_clicks"].sum()),
            unsplit_clicks=int(split["unsplit_clicks"].sum()),
            split_requests=int(split["split_requests"].sum()),
            query_total_clicks=int(query["total_clicks"].sum()),
            query_hidden_clicks=int(query.select(hidden.sum()).item() or 0),
            total_clicks=int(other["total_clicks"].sum()),
            hidden_clicks=int(other.select(hidden.sum()).item() or 0), notes=notes)

    @property
    def hidden_clicks_share(self) -> float | None:
        """The share of the daily totals' clicks not attributable to a query (query streams),
        or ``None`` without totals."""
        if not self.query_total_clicks:
            return None
        return self.query_hidden_clicks / self.query_total_clicks

    def line(self) -> str:
        """One line: ``3 of 90 days capped; 38% of clicks not attributable to a query``."""
        if not self.days:
            return "no committed days to measure"
        text = f"{self.capped} of {self.days} days capped"
        if self.split:
            gain = (f", +{self.gained_clicks / self.unsplit_clicks:.1%} clicks"
                    if self.unsplit_clicks else "")
            text += (f" ({self.split} split: +{self.gained_rows:,} rows{gain}, "
                     f"{self.split_requests / self.split:.1f} extra requests a day)")
        share = self.hidden_clicks_share
        if share is not None:
            text += f"; {share:.1%} of clicks not attributable to a query"
        if self.total_clicks:
            text += (f"; {self.hidden_clicks / self.total_clicks:.1%} of clicks missing from "
                     "rows not grouped by query")
        return "\n".join([text, *self.notes])

    def to_dict(self) -> dict[str, Any]:
        share = self.hidden_clicks_share
        return {"days": self.days, "capped_days": self.capped, "split_days": self.split,
                "split_gained_rows": self.gained_rows, "split_gained_clicks": self.gained_clicks,
                "split_requests": self.split_requests,
                "hidden_clicks_share": None if share is None else round(share, 6),
                "notes": list(self.notes)}


def by_stream(frame: pl.DataFrame) -> Mapping[str, Completeness]:
    """One :class:`Completeness` per stream of a ``completeness`` frame, named
    ``site search_type (dimensions) [filters]``."""
    found: dict[str, Completeness] = {}
    keys = ["site", "search_type", "dimensions", "filters"]
    for key, part in frame.group_by(keys, maintain_order=True):
        site, search_type, dimensions, filters = (str(k) for k in key)
        name = f"{site} {search_type} ({dimensions})" + (f" {filters}" if filters else "")
        found[name] = Completeness.of(part)
    return found
