"""gsckit: fast, quota-safe, crash-safe Google Search Console backfills into DuckDB.

    report = await gsckit.backfill_async("sc-domain:example.com", "2026-06-01", "2026-06-30")
    report = await gsckit.sync_async("sc-domain:example.com")   # daily: what changed since
    frame = gsckit.open("gsc.duckdb").frame(site="sc-domain:example.com")
"""

from __future__ import annotations

import os as _os
from importlib.metadata import PackageNotFoundError, version

from . import explore
from .auth import CallableToken, Credentials, GoogleCredentials, StaticToken, login
from .completeness import Completeness
from .config import EngineConfig, RetryPolicy, Timeouts
from .coordinator import Report
from .doctor import Diagnosis, doctor, doctor_async
from .errors import (
    ApiError,
    AuditLogError,
    BadRequest,
    CommitError,
    ConfigError,
    CredentialRefused,
    CredentialsError,
    DatabaseLocked,
    GsckitError,
    InternalError,
    PermissionDenied,
    RateLimited,
    RunHalted,
    ServerError,
    SiteNotFound,
    SiteNotReadable,
    SiteUnserved,
    StoreError,
    TransportError,
    Unauthorized,
)
from .events import AuditLog, Event
from .export import ExportReport
from .jobs import Job, JobProgress, start, start_sync
from .planner import Filter, HorizonWarning, Query, Slice, make_query, plan
from .runner import (
    Preview,
    backfill,
    backfill_async,
    preview,
    preview_sync,
    run_sync,
    sync,
    sync_async,
)
from .sites import sites, sites_async
from .store import DEFAULT_WAIT_S as _DEFAULT_WAIT_S
from .store import Database

try:
    __version__ = version("gsckit")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"


def open(path: str | _os.PathLike[str] = "gsc.duckdb", *, wait: float = _DEFAULT_WAIT_S
         ) -> Database:
    """Open a gsckit DuckDB file for reading: ``gsckit.open("gsc.duckdb").frame()``.

    ``wait``: seconds a read may wait while another process is backfilling into the file.
    """
    return Database(path, wait=wait)


__all__ = [
    "ApiError",
    "AuditLog",
    "AuditLogError",
    "BadRequest",
    "CallableToken",
    "CommitError",
    "Completeness",
    "ConfigError",
    "CredentialRefused",
    "Credentials",
    "CredentialsError",
    "Database",
    "DatabaseLocked",
    "Diagnosis",
    "EngineConfig",
    "Event",
    "ExportReport",
    "Filter",
    "GoogleCredentials",
    "GsckitError",
    "HorizonWarning",
    "InternalError",
    "Job",
    "JobProgress",
    "PermissionDenied",
    "Preview",
    "Query",
    "RateLimited",
    "Report",
    "RetryPolicy",
    "RunHalted",
    "ServerError",
    "SiteNotFound",
    "SiteNotReadable",
    "SiteUnserved",
    "Slice",
    "StaticToken",
    "StoreError",
    "Timeouts",
    "TransportError",
    "Unauthorized",
    "__version__",
    "backfill",
    "backfill_async",
    "doctor",
    "doctor_async",
    "explore",
    "login",
    "make_query",
    "open",
    "plan",
    "preview",
    "preview_sync",
    "run_sync",
    "sites",
    "sites_async",
    "start",
    "start_sync",
    "sync",
    "sync_async",
]

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = "gsckit"
del _name, _obj
