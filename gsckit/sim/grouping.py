"""What a request sees of fine rows: filters, grouping, the daily cap, and ranges of days.

Every answer is computed the same way: drop what Google hides (anonymized queries when ``query``
is grouped or filtered, rows without an appearance when ``searchAppearance`` is grouped), apply
the filters, sum clicks, impressions and ``sumpos`` per key, rank by clicks (ties broken by a
hash of the key: arbitrary but stable), keep the top ``row_cap`` of each day, then turn integer
keys into the text the API shows. Only the rows returned ever become text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import NamedTuple

import polars as pl

from .keys import COUNTRIES, DEVICES, SEARCH_APPEARANCES, hour_keys, page_text, query_text

COLUMN = {"query": "qr", "page": "page", "country": "country", "device": "device",
          "searchAppearance": "appearance", "hour": "hour"}
"""The fine-row column behind each dimension (``date`` is the day itself)."""
NAME = {"date": "date", "query": "query", "page": "page", "country": "country",
        "device": "device", "searchAppearance": "search_appearance", "hour": "hour"}
"""The column name each dimension gets in an answer frame (snake_case, as the engine stores)."""
METRICS = ("clicks", "impressions", "ctr", "position")
_NEGATED = {"notEquals": "equals", "notContains": "contains", "excludingRegex": "includingRegex"}
_VOCABULARY = {"country": COUNTRIES, "device": DEVICES, "searchAppearance": SEARCH_APPEARANCES}
_TIE_SEED = 0x5EED
_SUMS = (pl.col("clicks").sum(), pl.col("impressions").sum(), pl.col("sumpos").sum())


class Filter(NamedTuple):
    """A validated dimension filter."""

    dimension: str
    operator: str
    expression: str


@dataclass(frozen=True)
class View:
    """How a request looks at fine rows (everything but the site, search type and days).

    ``row_cap`` ``None`` means uncapped (a truth, not an answer). ``filters_before_cap`` and
    ``anonymized_dropped_by`` are the simulator settings of the same names.
    """

    dimensions: tuple[str, ...]
    filters: tuple[Filter, ...] = ()
    row_cap: int | None = 50_000
    filters_before_cap: bool = True
    anonymized_dropped_by: str = "query_filter"

    @property
    def keys(self) -> list[str]:
        """Fine-row columns an answer is grouped by (``date`` is implied by the day)."""
        return [COLUMN[d] for d in self.dimensions if d != "date"]

    @property
    def by_time(self) -> bool:
        """Whether rows come in time order (grouped by date or hour) rather than by clicks."""
        return "date" in self.dimensions or "hour" in self.dimensions

    @property
    def hides_anonymized(self) -> bool:
        """Whether anonymized queries are left out of this answer."""
        return "query" in self.dimensions or any(f.dimension == "query" for f in self.filters) or (
            bool(self.filters) and self.anonymized_dropped_by == "any_filter")


def _match(texts: pl.Series, operator: str, expression: str, exact: bool) -> pl.Series:
    """Which texts a positive operator keeps (equals and regexes are case-sensitive for query
    and page; contains never is)."""
    if operator == "equals":
        return texts == expression if exact else texts.str.to_lowercase() == expression.lower()
    if operator == "contains":
        return texts.str.to_lowercase().str.contains(expression.lower(), literal=True)
    return texts.str.contains(expression if exact else f"(?i){expression}")


def _filter_expr(f: Filter, fine: pl.DataFrame, site: str) -> pl.Expr:
    """A fine-row predicate for one filter, matched on the texts of the values present."""
    positive = _NEGATED.get(f.operator, f.operator)
    column = COLUMN[f.dimension]
    if f.dimension == "query":
        values = fine[column].drop_nulls().unique()
        texts = query_text(values, site)
    elif f.dimension == "page":
        values = fine[column].unique()
        texts = page_text(values, site)
    else:
        vocabulary = _VOCABULARY[f.dimension]
        values = pl.Series(range(len(vocabulary)), dtype=fine.schema[column])
        texts = pl.Series(vocabulary)
    match = _match(texts, positive, f.expression, f.dimension in ("query", "page"))
    chosen = values.filter(match if positive == f.operator else ~match)
    expr = pl.col(column).is_in(chosen.implode())
    if f.dimension == "searchAppearance" and positive != f.operator:
        expr = expr | pl.col(column).is_null()
    return expr


def selected(fine: pl.DataFrame, view: View, site: str) -> pl.DataFrame:
    """The fine rows an answer aggregates."""
    predicates = [_filter_expr(f, fine, site) for f in view.filters]
    if view.hides_anonymized:
        predicates.append(pl.col("qr").is_not_null())
    if "searchAppearance" in view.dimensions:
        predicates.append(pl.col("appearance").is_not_null())
    return fine.filter(*predicates) if predicates else fine


def _ranked(frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """Rows ordered by clicks, ties broken by a hash of the key."""
    if not keys:
        return frame
    tie = (pl.struct(*keys).hash(seed=_TIE_SEED) % (1 << 32)).cast(pl.Int64)
    return frame.sort(pl.col("clicks") * (1 << 32) + tie, descending=True)


def _grouped(rows: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """Sums per key, ranked; one row of totals when there are no keys (none without data)."""
    if not keys:
        if rows.height == 0:
            return pl.DataFrame(schema={"clicks": pl.Int64, "impressions": pl.Int64,
                                        "sumpos": pl.Float64})
        return rows.select(*_SUMS)
    return _ranked(rows.group_by(*keys).agg(*_SUMS), keys)


def day_answer(fine: pl.DataFrame, view: View, site: str) -> pl.DataFrame:
    """One day's answer in integer form: key columns, clicks, impressions, sumpos; top rows by
    clicks, capped per the view."""
    keys = view.keys
    grouped = _grouped(selected(fine, view, site), keys)
    if view.row_cap is None:
        return grouped
    if view.filters and not view.filters_before_cap and keys:
        unfiltered = replace(view, filters=())
        allowed = _grouped(selected(fine, unfiltered, site), keys).head(view.row_cap)
        grouped = grouped.join(allowed.select(keys), on=keys, how="semi", maintain_order="left")
    return grouped.head(view.row_cap)


def range_answer(days: Sequence[tuple[date, pl.DataFrame]], view: View) -> pl.DataFrame:
    """The answer over several days from each day's :func:`day_answer`, with a ``day`` column.

    Grouped by date or hour, the days' rows follow one another in time order; otherwise they are
    summed per key over the range, ranked and capped again.
    """
    keys = view.keys
    parts = [frame.with_columns(day=pl.lit(day, dtype=pl.Date)) for day, frame in days]
    if not parts:
        return pl.DataFrame(schema={**{k: pl.Int64 for k in keys}, "clicks": pl.Int64,
                                    "impressions": pl.Int64, "sumpos": pl.Float64,
                                    "day": pl.Date})
    frame = pl.concat(parts, how="vertical_relaxed")
    if view.by_time:
        order = ["day", *(["hour"] if "hour" in keys else [])]
        return frame.sort(order, maintain_order=True)
    if len(parts) == 1:
        return frame
    summed = _grouped(frame, keys)
    summed = summed.head(view.row_cap) if view.row_cap is not None else summed
    return summed.with_columns(day=pl.lit(days[0][0], dtype=pl.Date))


def as_text(frame: pl.DataFrame, view: View, site: str, *, position: bool = True
            ) -> pl.DataFrame:
    """Integer answer rows as the API shows them: one text column per dimension (in request
    order, named as in :data:`NAME`), then clicks, impressions, ctr and (unless the search
    type has none) position."""
    columns: list[pl.Series | pl.Expr] = []
    for dim in view.dimensions:
        name = NAME[dim]
        if dim == "date":
            columns.append(frame["day"].dt.to_string("%Y-%m-%d").alias(name))
        elif dim == "hour":
            columns.append(_hour_text(frame).alias(name))
        elif dim == "query":
            columns.append(query_text(frame["qr"], site).alias(name))
        elif dim == "page":
            columns.append(page_text(frame["page"], site).alias(name))
        else:
            vocabulary = pl.Series(_VOCABULARY[dim])
            columns.append(vocabulary.gather(frame[COLUMN[dim]]).alias(name))
    impressions = pl.col("impressions")
    metrics = [pl.col("clicks"), impressions, (pl.col("clicks") / impressions).alias("ctr")]
    if position:
        metrics.append((pl.col("sumpos") / impressions).alias("position"))
    return frame.select(*columns, *metrics)


def _hour_text(frame: pl.DataFrame) -> pl.Series:
    """Hour keys with each day's own Pacific offset."""
    days = frame["day"].unique().to_list()
    table = pl.DataFrame({
        "day": [d for d in days for _ in range(24)],
        "hour": [h for _ in days for h in range(24)],
        "key": [key for d in days for key in hour_keys(d)],
    }, schema={"day": pl.Date, "hour": frame.schema["hour"], "key": pl.String})
    return frame.select("day", "hour").join(table, on=["day", "hour"], how="left",
                                            maintain_order="left")["key"]


def empty_answer(view: View, *, position: bool = True) -> pl.DataFrame:
    """An answer frame without rows."""
    schema: dict[str, pl.DataType] = {NAME[d]: pl.String() for d in view.dimensions}
    schema.update(clicks=pl.Int64(), impressions=pl.Int64(), ctr=pl.Float64())
    if position:
        schema["position"] = pl.Float64()
    return pl.DataFrame(schema=schema)
