"""A Search Console simulator on 127.0.0.1 that behaves like the Search Analytics API.

Tests, the demo and the benchmarks run the whole pipeline against it, offline. It serves
``POST /webmasters/v3/sites/{siteUrl}/searchAnalytics/query`` with Google's paging rules (rowLimit
1-25,000, an empty page has no ``rows`` key, at most ``row_cap`` rows per day and search type,
sorted by clicks), Google-shaped errors, a per-site and per-token sliding-window quota, seeded and
scripted faults (errors, resets, truncated and invalid bodies, stalls) and upstream revisions.

Rows are a pure function of (seed, site, search type, dimensions, filters, day, revision), generated
columnar with polars, so :meth:`Simulator.ground_truth` is exactly what the pages return and a
25,000-row page costs a few milliseconds: the simulator is never the bottleneck of a benchmark.
:meth:`Simulator.stats` reports what the server saw (peak requests per window, duplicates, faults),
which is how benchmarks judge quota safety and data integrity from the server side.
"""


from .clock import DayState
from .config import FAULT_KINDS, RATE_FAULTS, SCRIPT_ONLY_FAULTS, Faults, SimConfig
from .keys import COUNTRIES, DEVICES, SEARCH_APPEARANCES
from .model import Anomaly
from .server import RequestRecord, Simulator, serve
from .thread import SimulatorThread
from .truth import Totals

__all__ = [
    "COUNTRIES",
    "DEVICES",
    "FAULT_KINDS",
    "RATE_FAULTS",
    "SCRIPT_ONLY_FAULTS",
    "SEARCH_APPEARANCES",
    "Anomaly",
    "DayState",
    "Faults",
    "RequestRecord",
    "SimConfig",
    "Simulator",
    "SimulatorThread",
    "Totals",
    "serve",
]
