"""Answers, not only rows: the analyses SEO analysts rewrite, one call each, computed in DuckDB.

    import gsckit.explore as ex
    ex.overview("gsc.duckdb", "sc-domain:example.com", freq="week")
    ex.chart(ex.movers("gsc.duckdb", "sc-domain:example.com", by="page"))

Every analysis takes a :class:`gsckit.Database` (or a path), a site, and a date range that
defaults to the last 28 complete days: the 28 days ending at the newest day that the ledger holds
with Google's final data for the stream read (the newest committed day when none is final). It
reads one stored stream (one search type and one dimension set, never a sum across two), runs one
SQL query through the read-only reader and returns a polars DataFrame. Figures resting on
missing, fresh or capped days raise a :class:`CompletenessWarning`. Charts need the ``notebook``
extra (Vega-Altair and vl-convert-python); the analyses do not.
"""

from __future__ import annotations

from .charts import chart, render
from .completeness import CompletenessWarning, completeness_warnings
from .rankings import (
    breakdown,
    cannibalization,
    ctr_curve,
    movers,
    page_groups,
    striking_distance,
)
from .trends import anomalies, brand_split, overview

__all__ = [
    "CompletenessWarning",
    "anomalies",
    "brand_split",
    "breakdown",
    "cannibalization",
    "chart",
    "completeness_warnings",
    "ctr_curve",
    "movers",
    "overview",
    "page_groups",
    "render",
    "striking_distance",
]
