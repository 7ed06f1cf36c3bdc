"""What a row key is, and the two things done with keys: dropping repeats and merging parts.

A parsed page has one column per requested dimension (the key) and the four metrics. Inside one
answer a key can only repeat when a page boundary moved among rows tied on clicks: the repeat
is the same row, and one copy is kept. Across the partitions of a split day (by device, by
country) the same key is a different share of the traffic, and the shares are added up. Both
work on whole columns in polars, with no per-row Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import polars as pl

from .parse import METRICS


def key_columns(frame: pl.DataFrame) -> list[str]:
    """The columns of ``frame`` that make up a row's key (everything but the metrics)."""
    return [c for c in frame.columns if c not in METRICS]


def dedupe(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop rows repeating a key (ties can shift between pages); return the rows and the count.

    One 64-bit hash per row, combined from per-column hashes, proves the keys distinct in the
    usual case; only if two hashes collide does the exact (slower) comparison run.
    """
    keys = key_columns(frame)
    if not keys or frame.height < 2:
        return frame, 0
    combined = reduce(lambda a, b: a ^ b,
                      (pl.col(c).hash(seed=i + 1) for i, c in enumerate(keys)))
    if not frame.select(combined.is_duplicated().any()).item():
        return frame, 0
    unique = frame.unique(subset=keys, keep="first", maintain_order=True)
    return unique, frame.height - unique.height


def merge(parts: Sequence[pl.DataFrame]) -> tuple[pl.DataFrame, int]:
    """Combine the rows of disjoint partitions of one day into the day's rows, exactly.

    Each part is first rid of its own repeats (:func:`dedupe`); then rows with the same key
    are combined: clicks and impressions summed, the position weighted by impressions, the CTR
    recomputed as clicks / impressions (as Google computes it). A position the API leaves out
    (Discover, Google News) stays null. Returns the rows and the repeats dropped.
    """
    if not parts:
        raise ValueError("merge needs at least one partition")
    cleaned = [dedupe(part) for part in parts]
    dropped = sum(count for _, count in cleaned)
    frames = [frame for frame, _ in cleaned if frame.height] or [cleaned[0][0]]
    if len(frames) == 1:
        return frames[0], dropped
    whole = pl.concat(frames, how="vertical", rechunk=False)
    keys = key_columns(whole)
    impressions = pl.col("impressions")
    weighted = (pl.col("position") * impressions).sum() / impressions.sum()
    sums = [pl.col("clicks").sum(), impressions.sum(),
            pl.when(pl.col("position").is_null().all()).then(None).otherwise(
                pl.when(impressions.sum() > 0).then(weighted).otherwise(
                    pl.col("position").mean())).alias("position")]
    # a date-only answer has no key: its parts add up to one row
    merged = whole.group_by(keys).agg(sums) if keys else whole.select(sums)
    merged = merged.with_columns(
        (pl.col("clicks") / pl.col("impressions")).alias("ctr")).select(whole.columns)
    return merged, dropped
