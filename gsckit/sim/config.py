"""The simulator's settings: one frozen :class:`SimConfig`, and :class:`Faults` to inject."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from types import MappingProxyType

from ..errors import ConfigError
from .clock import as_pacific

RATE_FAULTS = ("429", "403_quota", "403_rate", "500", "502", "503", "504", "reset", "truncate",
               "invalid_json", "stall")
SCRIPT_ONLY_FAULTS = ("403_permission", "404", "401", "400")
FAULT_KINDS = RATE_FAULTS + SCRIPT_ONLY_FAULTS
MAX_ROW_LIMIT = 25_000
DEFAULT_ROW_LIMIT = 1_000
METADATA_STYLES = ("camel", "snake")
ANONYMIZED_DROPPED_BY = ("query_filter", "any_filter")


@dataclass(frozen=True)
class Faults:
    """Injected failures: seeded per-request ``rates`` and a deterministic ``script``.

    ``rates`` maps a kind from :data:`RATE_FAULTS` to its probability per query request;
    ``script`` maps the 1-based index of a query request to any kind in :data:`FAULT_KINDS` and
    wins over ``rates`` (the seeded draw still happens, so a script entry never shifts later
    draws). ``stall`` holds ``stall_s`` before answering normally; when ``retry_after_s`` is set,
    every 429 carries ``Retry-After``.
    """

    seed: int = 0
    rates: Mapping[str, float] = field(default_factory=dict)
    script: Mapping[int, str] = field(default_factory=dict)
    stall_s: float = 30.0
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        for kind, rate in self.rates.items():
            if kind not in RATE_FAULTS:
                raise ConfigError(f"fault kind {kind!r} cannot be drawn at a rate; choose from "
                                  f"{', '.join(RATE_FAULTS)} (fatal kinds go in script)")
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"fault rate for {kind!r} must be within [0, 1], got {rate}")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ConfigError("fault rates must add up to at most 1")
        for index, kind in self.script.items():
            if kind not in FAULT_KINDS:
                raise ConfigError(f"unknown fault kind {kind!r}; choose from "
                                  f"{', '.join(FAULT_KINDS)}")
            if index < 1:
                raise ConfigError(f"fault script indices start at 1, got {index}")
        if self.stall_s < 0 or (self.retry_after_s is not None and self.retry_after_s < 0):
            raise ConfigError("stall_s and retry_after_s must not be negative")
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))
        object.__setattr__(self, "script", MappingProxyType(dict(self.script)))


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator does, in one frozen object (change it with ``Simulator.configure``).

    Volume and transport:
    ``rows_per_day``: distinct query-attributable (query, page) keys a final day holds before the
    cap, an int or ``f(site, search_type, day)`` (so a ``date,query,page`` request sees exactly
    that many rows, capped at ``row_cap``); each key has one or more fine rows by country and
    device. ``latency_s`` / ``latency_jitter``: latency per query, uniform in
    ``latency_s*(1±jitter)``. ``quota_qpm`` / ``window_s``: query requests allowed per site and
    per token in any ``window_s`` window (more get 429); ``window_s`` is also the stats window.
    ``row_cap``: rows per day and search type ever exposed. ``tokens`` / ``sites``: ``None``
    accepts any bearer token / property. ``forbidden_sites``: properties answered with 403
    "sufficient permission".

    Time (see ``clock.py``): ``now`` starts a frozen clock at that moment (a date means noon
    Pacific); ``None`` follows the real clock. ``final_lag_days``: days are final through today
    minus this. ``all_final``: every day up to today is final and data never changes with time
    (the old, kinder behaviour some tests rely on). ``hourly_days``: hourly rows exist for this
    many days back. ``metadata_style``: ``"camel"`` sends ``firstIncompleteDate`` (the discovery
    document's spelling), ``"snake"`` sends ``first_incomplete_date`` (the reference page's).

    Completeness: ``anonymized_share``: the share of clicks from anonymized queries, which count
    in groupings without ``query`` and never appear with it. ``anonymized_dropped_by``:
    ``"query_filter"`` drops them only from answers filtered by query (Google's blog),
    ``"any_filter"`` from every filtered answer. ``filters_before_cap``: filters apply before
    the daily cap (default); ``False`` applies them after it, so a filtered answer only holds
    keys from the unfiltered top ``row_cap``. ``restricted_dimensions``: dimensions that
    ``discover`` and ``googleNews`` refuse with a 400 (as a grouping or a filter).
    ``anomaly_every_days``: one planted drop or spike per block of this many days (0: none).

    Load quota (Google publishes no numbers, so it is off by default): ``load_budget`` query
    requests per site in any ``load_window_s`` (10 minutes, Google's short-term bucket); the
    request over it and every request to that site for ``load_penalty_s`` after it (15 minutes,
    "wait 15 minutes and try again") get 403 ``quotaExceeded``. ``load_quota_sites``: properties
    whose every query gets that 403 (a load quota that persists: no budget, never recovering).
    """

    seed: int = 1
    rows_per_day: int | Callable[[str, str, date], int] = 1000
    latency_s: float = 0.0
    latency_jitter: float = 0.5
    quota_qpm: int = 1200
    window_s: float = 60.0
    row_cap: int = 50_000
    tokens: frozenset[str] | None = None
    sites: frozenset[str] | None = None
    forbidden_sites: frozenset[str] = frozenset()
    faults: Faults = Faults()
    now: datetime | date | str | None = None
    final_lag_days: int = 3
    all_final: bool = False
    hourly_days: int = 10
    metadata_style: str = "camel"
    anonymized_share: float = 0.2
    anonymized_dropped_by: str = "query_filter"
    filters_before_cap: bool = True
    restricted_dimensions: frozenset[str] = frozenset({"query"})
    anomaly_every_days: int = 42
    load_budget: int | None = None
    load_window_s: float = 600.0
    load_penalty_s: float = 900.0
    load_quota_sites: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.latency_s < 0 or not 0.0 <= self.latency_jitter <= 1.0:
            raise ConfigError("latency_s must be >= 0 and latency_jitter within [0, 1]")
        if self.quota_qpm < 1 or self.window_s <= 0:
            raise ConfigError("quota_qpm must be >= 1 and window_s > 0")
        if self.row_cap < 0:
            raise ConfigError("row_cap must not be negative")
        if self.final_lag_days < 0 or self.hourly_days < 0 or self.anomaly_every_days < 0:
            raise ConfigError("final_lag_days, hourly_days and anomaly_every_days must not be "
                              "negative")
        if (self.load_budget is not None and self.load_budget < 0) or (
                self.load_window_s <= 0 or self.load_penalty_s < 0):
            raise ConfigError("load_budget must be >= 0, load_window_s > 0 and "
                              "load_penalty_s >= 0")
        if self.metadata_style not in METADATA_STYLES:
            raise ConfigError(f"metadata_style must be one of {', '.join(METADATA_STYLES)}")
        if not 0.0 <= self.anonymized_share < 1.0:
            raise ConfigError("anonymized_share must be within [0, 1)")
        if self.anonymized_dropped_by not in ANONYMIZED_DROPPED_BY:
            raise ConfigError("anonymized_dropped_by must be one of "
                              f"{', '.join(ANONYMIZED_DROPPED_BY)}")
        for name in ("tokens", "sites"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozenset(value))
        object.__setattr__(self, "forbidden_sites", frozenset(self.forbidden_sites))
        object.__setattr__(self, "restricted_dimensions", frozenset(self.restricted_dimensions))
        object.__setattr__(self, "load_quota_sites", frozenset(self.load_quota_sites))
        if self.now is not None:
            object.__setattr__(self, "now", as_pacific(self.now))
