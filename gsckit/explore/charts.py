"""Charts for the analyses' frames (Vega-Altair), and rendering to PNG or SVG (vl-convert).

One door: :func:`chart` recognises which analysis made a frame by its columns and draws what an
analyst would: the overview as lines with the previous period faded, movers as diverging bars,
the CTR curve as points against the site's curve, and Google's position/CTR bubble chart (CTR
on x, position on an inverted y, log scales, bubble = clicks, colour = a dimension) for a
:func:`~gsckit.explore.breakdown`. Altair and vl-convert are imported here only, lazily: the
analyses never need them, and a missing one gives a one-line "install gsckit[notebook]" error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import polars as pl

from ..errors import ConfigError
from .metrics import METRICS

KINDS = ("overview", "movers", "striking_distance", "cannibalization", "ctr_curve",
         "brand_split", "page_groups", "anomalies", "bubble")
_SIGNATURES = (  # the columns that identify each analysis's frame; the generic bubble is last
    ("overview", {"period", "clicks_previous", "position_change"}),
    ("movers", {"delta", "delta_pct"}),
    ("striking_distance", {"best_page", "opportunity"}),
    ("cannibalization", {"share", "competing_pages"}),
    ("ctr_curve", {"bucket", "site_ctr", "missed_clicks"}),
    ("brand_split", {"period", "segment", "clicks_share"}),
    ("page_groups", {"folder", "pages"}),
    ("anomalies", {"expected", "lower", "upper", "anomaly"}),
    ("bubble", {"ctr", "position", "clicks"}),
)
_UP, _DOWN, _MAIN, _FADED = "#1a7f37", "#cf222e", "#1f6feb", "#9ab8e8"
_INSTALL = "pip install 'gsckit[notebook]'"


def chart(frame: pl.DataFrame, kind: str | None = None, *, top: int = 25,
          title: str | None = None) -> Any:
    """The chart for an analysis's frame, as an Altair chart (display it, or :func:`render`).

    ``kind`` is recognised from the columns unless given: one of ``overview``, ``movers``,
    ``striking_distance``, ``cannibalization``, ``ctr_curve``, ``brand_split``,
    ``page_groups``, ``anomalies`` or ``bubble`` (any frame with ``ctr``, ``position`` and
    ``clicks``). Bar charts show the first ``top`` keys of the frame's order.
    """
    if not isinstance(frame, pl.DataFrame):
        raise ConfigError(f"chart() takes an analysis's polars DataFrame, not "
                          f"{type(frame).__name__}")
    if kind is None:
        kind = next((name for name, cols in _SIGNATURES if cols <= set(frame.columns)), None)
        if kind is None:
            raise ConfigError("this frame is not one of gsckit.explore's analyses; pass kind=")
    elif kind not in KINDS:
        raise ConfigError(f"unknown chart kind {kind!r}; choose from {', '.join(KINDS)}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"top must be a positive integer, not {top!r}")
    missing = dict(_SIGNATURES)[kind] - set(frame.columns)
    if missing:
        raise ConfigError(f"a {kind} chart needs the columns {', '.join(sorted(missing))}")
    alt = _import("altair")
    drawn = _DRAW[kind](alt, frame, top)
    return drawn.properties(title=title) if title else drawn


def render(figure: Any, format: str = "png", *, scale: float = 2.0) -> bytes:
    """A chart as PNG or SVG bytes, drawn without a browser by vl-convert."""
    if format not in ("png", "svg"):
        raise ConfigError(f"unknown format {format!r}; choose from png, svg")
    vlc = _import("vl_convert")
    spec = figure.to_dict()
    if format == "png":
        return bytes(vlc.vegalite_to_png(spec, scale=scale))
    return str(vlc.vegalite_to_svg(spec)).encode()


def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise ConfigError(f"charts need {name.replace('_', '-')}: {_INSTALL}") from None


def _key(frame: pl.DataFrame, options: Sequence[str]) -> str:
    return next(c for c in options if c in frame.columns)


def _overview(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    # the legend says where each range starts, so the faded line says which days it is
    ranges = [f"current (from {_first(frame['period'])})",
              f"previous (from {_first(frame['previous_period'])})"]
    panels = []
    for metric in METRICS:
        long = pl.concat([
            frame.select("period", pl.col(metric).alias("value"),
                         pl.lit(ranges[0]).alias("range")),
            frame.select("period", pl.col(f"{metric}_previous").alias("value"),
                         pl.lit(ranges[1]).alias("range")),
        ])
        value_format = ".1%" if metric == "ctr" else ",.4~f"
        panels.append(alt.Chart(long).mark_line(point=frame.height <= 60).encode(
            x=alt.X("period:T", title=None, axis=alt.Axis(format="%b %d", labelOverlap=True)),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(
                reverse=metric == "position", zero=metric in ("clicks", "impressions")),
                axis=alt.Axis(format=".1%") if metric == "ctr" else alt.Axis()),
            color=alt.Color("range:N", scale=alt.Scale(domain=ranges, range=[_MAIN, _FADED]),
                            title=None, legend=alt.Legend(orient="top")),
            tooltip=["period:T", "range:N", alt.Tooltip("value:Q", format=value_format)],
        ).properties(width=560, height=110))
    return alt.vconcat(*panels)


def _first(days: pl.Series) -> str:
    """The first day of a range, as "Oct 05, 2026" ("no days" for none)."""
    first = days.drop_nulls().min()
    return first.strftime("%b %d, %Y") if isinstance(first, date) else "no days"


def _movers(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    key = frame.columns[0]
    data = frame.head(top).with_columns(
        direction=pl.when(pl.col("delta") >= 0).then(pl.lit("up")).otherwise(pl.lit("down")))
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("delta:Q", title=f"change in {frame.columns[1].removesuffix('_current')}"),
        y=alt.Y(f"{key}:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        color=alt.Color("direction:N", scale=alt.Scale(domain=["up", "down"],
                                                       range=[_UP, _DOWN]), legend=None),
        tooltip=list(frame.columns),
    ).properties(width=420)


def _striking(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    return alt.Chart(frame.head(top)).mark_bar().encode(
        x=alt.X("opportunity:Q", title="extra clicks at a top-3 CTR"),
        y=alt.Y("query:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        color=alt.Color("position:Q", scale=alt.Scale(scheme="blues", reverse=True)),
        tooltip=list(frame.columns),
    ).properties(width=420)


def _cannibalization(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    queries = frame.select("query").unique(maintain_order=True).head(top)
    data = frame.join(queries, on="query").with_columns(
        rank=pl.col("share").rank("ordinal", descending=True).over("query").cast(pl.Int64))
    order = queries["query"].to_list()
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("share:Q", title="share of the query's clicks", axis=alt.Axis(format="%")),
        y=alt.Y("query:N", sort=order, title=None, axis=alt.Axis(labelLimit=320)),
        color=alt.Color("rank:O", title="page rank"),
        tooltip=["query:N", "page:N", alt.Tooltip("share:Q", format=".1%"), "clicks:Q",
                 "position:Q"],
    ).properties(width=420)


def _ctr_curve(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    points = frame.sort("impressions", descending=True).head(4000).with_columns(
        against=pl.when(pl.col("missed_clicks") > 0).then(pl.lit("below the site curve"))
        .otherwise(pl.lit("at or above")))
    curve = frame.select("bucket", "site_ctr").unique().sort("bucket")
    dots = alt.Chart(points).mark_circle(opacity=0.5).encode(
        x=alt.X("position:Q", title="average position"),
        y=alt.Y("ctr:Q", title="CTR", axis=alt.Axis(format="%")),
        size=alt.Size("impressions:Q", legend=None),
        color=alt.Color("against:N", scale=alt.Scale(
            domain=["below the site curve", "at or above"], range=[_DOWN, _FADED]), title=None),
        tooltip=["query:N", "clicks:Q", "impressions:Q", alt.Tooltip("ctr:Q", format=".2%"),
                 alt.Tooltip("position:Q", format=".1f"), alt.Tooltip("missed_clicks:Q",
                                                                      format=",.0f")],
    )
    line = alt.Chart(curve).mark_line(point=True, color="black").encode(
        x="bucket:Q", y="site_ctr:Q",
        tooltip=["bucket:Q", alt.Tooltip("site_ctr:Q", format=".2%")])
    return (dots + line).properties(width=560, height=320)


def _brand_split(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    return alt.Chart(frame).mark_area().encode(
        x=alt.X("period:T", title=None),
        y=alt.Y("clicks:Q", stack=True),
        color=alt.Color("segment:N", scale=alt.Scale(domain=["brand", "non-brand"],
                                                     range=[_MAIN, _FADED]), title=None),
        tooltip=["period:T", "segment:N", "clicks:Q",
                 alt.Tooltip("clicks_share:Q", format=".1%")],
    ).properties(width=560, height=240)


def _page_groups(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    return alt.Chart(frame.head(top)).mark_bar(color=_MAIN).encode(
        x=alt.X("clicks:Q"),
        y=alt.Y("folder:N", sort="-x", title=None, axis=alt.Axis(labelLimit=360)),
        tooltip=list(frame.columns),
    ).properties(width=420)


def _anomalies(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    metric = _key(frame, METRICS)
    base = alt.Chart(frame).encode(x=alt.X("date:T", title=None))
    band = base.mark_area(color=_FADED, opacity=0.4).encode(
        y=alt.Y("lower:Q", title=metric), y2="upper:Q")
    line = base.mark_line(color=_MAIN).encode(y=f"{metric}:Q")
    marks = base.transform_filter(alt.datum.anomaly).mark_point(
        color=_DOWN, size=90, filled=True).encode(
        y=f"{metric}:Q", tooltip=["date:T", f"{metric}:Q", "expected:Q",
                                  alt.Tooltip("score:Q", format=".1f")])
    return (band + line + marks).properties(width=560, height=240)


def _bubble(alt: Any, frame: pl.DataFrame, top: int) -> Any:
    dims = [c for c in frame.columns if c not in (*METRICS, "opportunity", "best_page")
            and frame.schema[c] == pl.String]
    key, color = [*dims, None, None][:2]
    data = (frame.filter(pl.col("ctr") > 0, pl.col("position") > 0)
            .sort("clicks", descending=True).head(4000))
    encoding: dict[str, Any] = {
        "x": alt.X("ctr:Q", title="CTR", scale=alt.Scale(type="log"),
                   axis=alt.Axis(format="%")),
        "y": alt.Y("position:Q", title="average position",
                   scale=alt.Scale(type="log", reverse=True, nice=False)),
        "size": alt.Size("clicks:Q"),
        "tooltip": [c for c in data.columns],
    }
    if color is not None:
        encoding["color"] = alt.Color(f"{color}:N")
    elif key is None:
        encoding["color"] = alt.value(_MAIN)
    return alt.Chart(data).mark_circle(opacity=0.6).encode(**encoding).properties(
        width=480, height=360)


_DRAW: dict[str, Callable[[Any, pl.DataFrame, int], Any]] = {
    "overview": _overview, "movers": _movers, "striking_distance": _striking,
    "cannibalization": _cannibalization, "ctr_curve": _ctr_curve, "brand_split": _brand_split,
    "page_groups": _page_groups, "anomalies": _anomalies, "bubble": _bubble,
}
