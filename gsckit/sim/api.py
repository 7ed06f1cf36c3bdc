"""The wire format: validate a searchAnalytics request body, encode answers and Google's errors.

Validation follows the API's rules and answers the first fault with Google's 400 shape: names are
case-insensitive, ``startDate <= endDate``, rowLimit 1-25,000, no repeated dimension,
``searchAppearance`` grouped alone, ``hour`` only with ``dataState=hourly_all``, the dimensions
``discover`` and ``googleNews`` refuse, and the ``aggregationType`` rules of the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, NamedTuple

import polars as pl

from ..planner import DATA_STATES, DIMENSIONS, FILTER_DIMENSIONS, OPERATORS, SEARCH_TYPES
from .config import DEFAULT_ROW_LIMIT, MAX_ROW_LIMIT
from .grouping import NAME, Filter

AGGREGATION_TYPES = ("auto", "byPage", "byProperty", "byNewsShowcasePanel")
RESTRICTED_TYPES = ("discover", "googleNews")
"""Search types without position whose answers refuse some dimensions."""
_CANON = {name.lower(): name for name in (*SEARCH_TYPES, *DIMENSIONS, *DATA_STATES, *OPERATORS,
                                          *AGGREGATION_TYPES)}
_CANON.update(by_page="byPage", by_property="byProperty",
              by_news_showcase_panel="byNewsShowcasePanel")
_ERROR_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_METADATA_KEYS = {"camel": ("firstIncompleteDate", "firstIncompleteHour"),
                  "snake": ("first_incomplete_date", "first_incomplete_hour")}


class Request(NamedTuple):
    """A validated query request body."""

    start: date
    end: date
    dimensions: tuple[str, ...]
    search_type: str
    data_state: str
    filters: tuple[Filter, ...]
    start_row: int
    row_limit: int
    aggregation_type: str = "auto"

    @property
    def response_aggregation(self) -> str:
        """The ``responseAggregationType`` Google reports for this request."""
        if self.aggregation_type != "auto":
            return self.aggregation_type
        by_page = "page" in self.dimensions or any(f.dimension == "page" for f in self.filters)
        return "byPage" if by_page else "byProperty"


class ApiFailure(Exception):
    """An error answer, raised while validating a request."""

    def __init__(self, status: int, reason: str, message: str, *, domain: str = "global",
                 location: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location


def _encode_rows(page: pl.DataFrame, dims: Sequence[str], metrics: Sequence[str]) -> str:
    """The ``rows`` array items of a page, comma-joined JSON objects.

    Keys come from a fixed vocabulary and an escape-free site root, so plain concatenation is
    valid JSON and about three times faster than a generic encoder.
    """
    parts: list[pl.Expr] = [pl.lit("{")]
    if dims:
        parts.append(pl.lit('"keys":["'))
        for k, dim in enumerate(dims):
            if k:
                parts.append(pl.lit('","'))
            parts.append(pl.col(NAME[dim]))
        parts.append(pl.lit('"],'))
    for k, metric in enumerate(metrics):
        parts.extend([pl.lit(f'{"," if k else ""}"{metric}":'), pl.col(metric).cast(pl.Utf8)])
    parts.append(pl.lit("}"))
    return str(page.select(pl.concat_str(parts).str.join(",")).item())


def response_body(page: pl.DataFrame, request: Request, *,
                  metadata: Mapping[str, str] | None = None) -> str:
    """The JSON body of a 200 answer; an empty page has no ``rows`` key. Rows carry the metrics
    the frame has (no ``position`` for Discover and Google News)."""
    tail = f'"responseAggregationType":"{request.response_aggregation}"'
    if metadata:
        items = ",".join(f'"{key}":"{value}"' for key, value in metadata.items())
        tail += ',"metadata":{' + items + "}"
    if page.height == 0:
        return "{" + tail + "}"
    metrics = [m for m in ("clicks", "impressions", "ctr", "position") if m in page.columns]
    return '{"rows":[' + _encode_rows(page, request.dimensions, metrics) + "]," + tail + "}"


def metadata_keys(style: str) -> tuple[str, str]:
    """The (first incomplete date, first incomplete hour) metadata names in ``style``."""
    return _METADATA_KEYS[style]


def _canonical(value: object, allowed: Sequence[str], what: str, location: str) -> str:
    if isinstance(value, str):
        name = _CANON.get(value.lower())
        if name is not None and name in allowed:
            return name
    raise ApiFailure(400, "invalidParameter", f"Invalid {what} value: {value!r}. Allowed: "
                     f"{', '.join(allowed)}.", location=location)


def _dimensions(values: object) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise ApiFailure(400, "invalidParameter", "dimensions must be a list.",
                         location="dimensions")
    dims = tuple(_canonical(v, DIMENSIONS, "dimension", f"dimensions[{k}]")
                 for k, v in enumerate(values))
    for dim in dims:
        if dims.count(dim) > 1:
            raise ApiFailure(400, "invalidParameter",
                             f"Dimension {dim!r} is requested more than once.",
                             location="dimensions")
    if "searchAppearance" in dims and len(dims) > 1:
        raise ApiFailure(400, "badRequest", "Cannot group by search appearance dimension "
                         "together with another dimension.")
    return dims


def _one_filter(raw: object, where: str) -> Filter:
    if not isinstance(raw, dict):
        raise ApiFailure(400, "invalidParameter", f"{where} must be an object.", location=where)
    dimension = _canonical(raw.get("dimension"), FILTER_DIMENSIONS, "filter dimension",
                           f"{where}.dimension")
    operator = _canonical(raw.get("operator", "equals"), OPERATORS, "filter operator",
                          f"{where}.operator")
    expression = raw.get("expression")
    if not isinstance(expression, str) or not expression or len(expression) > 4096:
        raise ApiFailure(400, "invalidParameter", "A filter expression must be a string of "
                         "1 to 4096 characters.", location=f"{where}.expression")
    if operator.endswith("Regex"):
        try:
            pl.select(pl.lit("").str.contains(expression))
        except pl.exceptions.PolarsError:
            raise ApiFailure(400, "invalidParameter", f"Invalid regular expression "
                             f"{expression!r}.", location=f"{where}.expression") from None
    return Filter(dimension, operator, expression)


def _filters(groups: object) -> tuple[Filter, ...]:
    if groups is None:
        return ()
    if not isinstance(groups, list):
        raise ApiFailure(400, "invalidParameter", "dimensionFilterGroups must be a list.",
                         location="dimensionFilterGroups")
    found: list[Filter] = []
    for g, group in enumerate(groups):
        where = f"dimensionFilterGroups[{g}]"
        if not isinstance(group, dict) or str(group.get("groupType", "and")).lower() != "and":
            raise ApiFailure(400, "invalidParameter", "Only groupType 'and' is supported.",
                             location=f"{where}.groupType")
        raw_filters = group.get("filters", [])
        if not isinstance(raw_filters, list):
            raise ApiFailure(400, "invalidParameter", "filters must be a list.",
                             location=f"{where}.filters")
        found.extend(_one_filter(f, f"{where}.filters[{k}]") for k, f in enumerate(raw_filters))
    return tuple(found)


def _integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int | None
             ) -> int:
    value = body.get(name)
    if value is None or (value == 0 and name == "rowLimit"):  # proto3: 0 means unset
        return default
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f"[{low}, ...]"
        raise ApiFailure(400, "invalidParameter", f"Invalid value '{value}' for {name}. "
                         f"Values must be within the range: {bounds}", location=name)
    return value


def _day(body: Mapping[str, Any], name: str) -> date:
    value = body.get(name)
    if value is None:
        raise ApiFailure(400, "required", f"Required field {name} is missing.", location=name)
    try:
        if isinstance(value, str) and len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ApiFailure(400, "invalidParameter", f"Invalid {name} {value!r}: expected YYYY-MM-DD.",
                     location=name)


def parse_request(body: object, restricted: frozenset[str] = frozenset({"query"})) -> Request:
    """Validate a searchAnalytics query body the way the API does (400 on the first fault).

    ``restricted``: the dimensions ``discover`` and ``googleNews`` refuse.
    """
    if not isinstance(body, dict):
        raise ApiFailure(400, "parseError", "Invalid JSON payload received: expected an object.")
    start, end = _day(body, "startDate"), _day(body, "endDate")
    if start > end:
        raise ApiFailure(400, "invalidParameter", "startDate must be on or before endDate.")
    search_type = body.get("type", body.get("searchType", "web"))
    request = Request(
        start=start,
        end=end,
        dimensions=_dimensions(body.get("dimensions")),
        search_type=_canonical(search_type, SEARCH_TYPES, "type", "type"),
        data_state=_canonical(body.get("dataState", "final"), DATA_STATES, "dataState",
                              "dataState"),
        filters=_filters(body.get("dimensionFilterGroups")),
        start_row=_integer(body, "startRow", 0, 0, None),
        row_limit=_integer(body, "rowLimit", DEFAULT_ROW_LIMIT, 1, MAX_ROW_LIMIT),
        aggregation_type=_canonical(body.get("aggregationType", "auto"), AGGREGATION_TYPES,
                                    "aggregationType", "aggregationType"),
    )
    _check_combination(request, restricted)
    return request


def _check_combination(request: Request, restricted: frozenset[str]) -> None:
    """The rules that tie dimensions, filters, search types and aggregation types together."""
    if "hour" in request.dimensions and request.data_state != "hourly_all":
        raise ApiFailure(400, "invalidParameter", "The hour dimension requires dataState "
                         "HOURLY_ALL.", location="dimensions")
    search_type, aggregation = request.search_type, request.aggregation_type
    if search_type in RESTRICTED_TYPES:
        for dim in (*request.dimensions, *(f.dimension for f in request.filters)):
            if dim in restricted:
                raise ApiFailure(400, "badRequest", f"The {dim} dimension is not supported for "
                                 f"search type {search_type}.", location="dimensions")
        if aggregation == "byProperty":
            raise ApiFailure(400, "badRequest", f"Aggregation type byProperty is not supported "
                             f"for search type {search_type}.", location="aggregationType")
    page_used = "page" in request.dimensions or any(
        f.dimension == "page" for f in request.filters)
    if aggregation == "byProperty" and page_used:
        raise ApiFailure(400, "badRequest", "Cannot aggregate by property when grouping or "
                         "filtering by page; use aggregationType auto or byPage.",
                         location="aggregationType")
    if aggregation == "byNewsShowcasePanel":
        showcase = any(f.dimension == "searchAppearance" and f.operator == "equals"
                       and f.expression.upper() == "NEWS_SHOWCASE" for f in request.filters)
        if (search_type not in RESTRICTED_TYPES or not showcase or page_used
                or "searchAppearance" in request.dimensions):
            raise ApiFailure(400, "badRequest", "Aggregation type byNewsShowcasePanel needs "
                             "type discover or googleNews and a searchAppearance equals "
                             "NEWS_SHOWCASE filter, without page or another appearance.",
                             location="aggregationType")


def as_filter(value: object) -> dict[str, Any]:
    """A ``gsckit.planner.Filter``-like object or a dict, as an API filter dict."""
    if isinstance(value, Mapping):
        return dict(value)
    return {"dimension": getattr(value, "dimension", None),
            "operator": getattr(value, "operator", None),
            "expression": getattr(value, "expression", None)}


def error_body(failure: ApiFailure) -> dict[str, Any]:
    """Google's error envelope."""
    item: dict[str, Any] = {"message": failure.message, "domain": failure.domain,
                            "reason": failure.reason}
    if failure.location:
        item.update(location=failure.location, locationType="parameter")
    return {"error": {"code": failure.status, "message": failure.message, "errors": [item],
                      "status": _ERROR_STATUS[failure.status]}}


def unauthenticated() -> ApiFailure:
    return ApiFailure(401, "authError", "Request had invalid authentication credentials. "
                      "Expected OAuth 2 access token, login cookie or other valid authentication "
                      "credential. See https://developers.google.com/identity/sign-in/web/"
                      "devconsole-project.", location="Authorization")


def fault_failure(kind: str, site: str) -> ApiFailure:
    """The error answer of an error-kind fault."""
    if kind == "429":
        return ApiFailure(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    if kind == "403_quota":
        return ApiFailure(403, "quotaExceeded", "Search Analytics load quota exceeded. Learn "
                          "about usage limits: https://developers.google.com/webmaster-tools/v3/"
                          "limits.", domain="usageLimits")
    if kind == "403_rate":
        return ApiFailure(403, "userRateLimitExceeded", "User Rate Limit Exceeded",
                          domain="usageLimits")
    if kind == "500":
        return ApiFailure(500, "backendError", "Backend Error")
    if kind == "503":
        return ApiFailure(503, "backendError", "The service is currently unavailable.")
    if kind == "504":
        return ApiFailure(504, "backendError", "Deadline exceeded.")
    if kind == "403_permission":
        return ApiFailure(403, "forbidden", f"User does not have sufficient permission for site "
                          f"'{site}'. See also: https://support.google.com/webmasters/answer/"
                          "2451999.")
    if kind == "404":
        return ApiFailure(404, "notFound", f"'{site}' is not a verified Search Console site in "
                          "this account.", location="siteUrl")
    if kind == "401":
        return unauthenticated()
    return ApiFailure(400, "badRequest", "Request contains an invalid argument.")


BAD_GATEWAY_PAGE = (
    '<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n'
    '  <title>Error 502 (Server Error)!!1</title>\n'
    '  <p><b>502.</b> <ins>That\u2019s an error.</ins>\n'
    '  <p>The server encountered a temporary error and could not complete your request.'
    '<p>Please try again in 30 seconds.  <ins>That\u2019s all we know.</ins>\n')
"""What Google's front end answers for a 502: an HTML page, not the API's JSON error envelope."""
