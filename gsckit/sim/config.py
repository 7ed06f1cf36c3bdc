"""The simulator's settings: one frozen :class:`SimConfig`, and :class:`Faults` to inject."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType

from ..errors import ConfigError

RATE_FAULTS = ("429", "403_quota", "403_rate", "500", "503", "reset", "truncate", "invalid_json",
               "stall")
SCRIPT_ONLY_FAULTS = ("403_permission", "404", "401", "400")
FAULT_KINDS = RATE_FAULTS + SCRIPT_ONLY_FAULTS
MAX_ROW_LIMIT = 25_000
DEFAULT_ROW_LIMIT = 1_000


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

    ``rows_per_day``: rows a property has for (site, search type, day) before the cap, an int or
    ``f(site, search_type, day)``; clamped to the key combinations the dimensions allow.
    ``latency_s`` / ``latency_jitter``: latency per query, uniform in ``latency_s*(1±jitter)``.
    ``quota_qpm`` / ``window_s``: query requests allowed per site and per token in any ``window_s``
    window (more get 429); ``window_s`` is also the stats window. ``row_cap``: rows per day and
    search type ever exposed. ``tokens`` / ``sites``: ``None`` accepts any bearer token / property.
    ``forbidden_sites``: properties answered with 403 "sufficient permission".
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

    def __post_init__(self) -> None:
        if self.latency_s < 0 or not 0.0 <= self.latency_jitter <= 1.0:
            raise ConfigError("latency_s must be >= 0 and latency_jitter within [0, 1]")
        if self.quota_qpm < 1 or self.window_s <= 0:
            raise ConfigError("quota_qpm must be >= 1 and window_s > 0")
        if self.row_cap < 0:
            raise ConfigError("row_cap must not be negative")
        for name in ("tokens", "sites"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, frozenset(value))
        object.__setattr__(self, "forbidden_sites", frozenset(self.forbidden_sites))

