"""Every engine knob, in one frozen object with its default documented once.

Override with :func:`dataclasses.replace` or by keyword in :func:`gsckit.backfill`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError

GOOGLE_ROOTS = ("https://searchconsole.googleapis.com/", "https://www.googleapis.com/")
DEFAULT_BASE_URL = GOOGLE_ROOTS[0]
MAX_ROW_LIMIT = 25_000


@dataclass(frozen=True)
class RetryPolicy:
    """How retryable failures are retried.

    ``max_attempts``: HTTP attempts per page before the day is given up (resumable on re-run).
    ``base_s`` / ``max_backoff_s``: full-jitter exponential backoff,
    ``uniform(0, min(max, base * 2**n))``; a ``Retry-After`` header wins (capped at the max).
    ``quota_pause_after``: consecutive quota errors on one site that pause the whole site.
    ``quota_pause_s``: length of that pause (Google: "wait 15 minutes"); cancellable.
    """

    max_attempts: int = 6
    base_s: float = 1.0
    max_backoff_s: float = 32.0
    quota_pause_after: int = 3
    quota_pause_s: float = 900.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("retry max_attempts must be at least 1")
        if self.base_s < 0 or self.max_backoff_s < 0 or self.quota_pause_s < 0:
            raise ConfigError("retry delays must not be negative")
        if self.quota_pause_after < 1:
            raise ConfigError("quota_pause_after must be at least 1")


@dataclass(frozen=True)
class Timeouts:
    """aiohttp timeouts in seconds; ``sock_read`` bounds a stalled response."""

    total: float = 120.0
    connect: float = 10.0
    sock_read: float = 60.0

    def __post_init__(self) -> None:
        if min(self.total, self.connect, self.sock_read) <= 0:
            raise ConfigError("timeouts must be positive")
        if self.total < max(self.connect, self.sock_read):
            raise ConfigError("the total timeout must be at least the connect and read timeouts")


@dataclass(frozen=True)
class EngineConfig:
    """The backfill engine's settings.

    ``max_concurrency``: worker tasks (1 = sequential mode, same code path).
    ``qpm`` / ``qpm_window_s``: at most ``qpm`` requests in ANY ``qpm_window_s`` window, per site
    and per credential (default 960 = 80% of Google's 1,200/min); retries count.
    ``queue_size``: bound of the batch queue. ``max_unpersisted``: days fetched (or being fetched)
    but not yet committed; bounds memory.
    ``row_limit``: rows per page (Google's maximum, 25,000).
    ``prefetch``: when the previous day of a stream needed several pages, ask for the first two
    pages of the next day at once (halves a big day's latency; costs at most one empty page).
    ``base_url``: API root; Google's hosts, or a loopback URL (the simulator) given explicitly.
    ``qpm_report_s``: seconds between ``qpm`` audit lines.
    ``db_memory_limit``: DuckDB's buffer memory; without it DuckDB keeps up to 80% of RAM of table
    blocks and a long backfill's memory grows with the file.
    ``db_wait_s``: seconds to wait for the database while another process holds it (a reader
    of a dry run waits for a backfill's next commit; a backfill waits for a process outside
    gsckit's lock protocol) before :class:`DatabaseLocked` (exit 75).
    """

    max_concurrency: int = 8
    qpm: int = 960
    qpm_window_s: float = 60.0
    queue_size: int = 1000
    max_unpersisted: int = 10
    row_limit: int = MAX_ROW_LIMIT
    prefetch: bool = True
    base_url: str = DEFAULT_BASE_URL
    qpm_report_s: float = 2.0
    db_memory_limit: str = "128MB"
    db_wait_s: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrency <= 256:
            raise ConfigError(f"max_concurrency must be 1..256, got {self.max_concurrency}")
        if not 1 <= self.qpm <= 40_000:
            raise ConfigError(f"qpm must be 1..40000, got {self.qpm}")
        if not 0.01 <= self.qpm_window_s <= 3600:
            raise ConfigError(f"qpm_window_s must be 0.01..3600, got {self.qpm_window_s}")
        if self.max_unpersisted < 1:
            raise ConfigError("max_unpersisted must be at least 1")
        if self.queue_size < 2 * self.max_unpersisted:
            # each unpersisted day has at most two queued pages, so a put can never block
            raise ConfigError("queue_size must be at least twice max_unpersisted")
        if not 1 <= self.row_limit <= MAX_ROW_LIMIT:
            raise ConfigError(f"row_limit must be 1..{MAX_ROW_LIMIT}, got {self.row_limit}")
        if self.qpm_report_s <= 0:
            raise ConfigError("qpm_report_s must be positive")
        object.__setattr__(self, "base_url", check_base_url(self.base_url))
        check_size(self.db_memory_limit)
        if not 0 <= self.db_wait_s <= 86_400:
            raise ConfigError(f"db_wait_s must be 0..86400 seconds, got {self.db_wait_s}")


_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB)$", re.IGNORECASE)


def check_size(text: str) -> str:
    """Return a DuckDB memory size such as ``'256MB'``, or raise :class:`ConfigError`."""
    if not isinstance(text, str) or not _SIZE.match(text.strip()):
        raise ConfigError(f"memory size {text!r} must look like '256MB' or '1GB'")
    return text.strip()


def check_base_url(url: str) -> str:
    """Return ``url`` with a trailing slash if it is a Google API root or a loopback URL.

    Any other host would receive the bearer token, so it is refused before a request is made.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError("base_url must be a URL")
    normal = url if url.endswith("/") else url + "/"
    if normal in GOOGLE_ROOTS:
        return normal
    parts = urlsplit(normal)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"base_url {url!r} is not a plain http(s) URL")
    if host == "localhost" or _is_loopback(host):
        return normal
    raise ConfigError(
        f"base_url {url!r} is refused: only {', '.join(GOOGLE_ROOTS)} or a loopback "
        "address (the simulator) may receive your token"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_writable(path: str | os.PathLike[str], what: str) -> Path:
    """Raise :class:`ConfigError` unless ``path`` can be created or appended to as a file."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"the {what} path {str(file)!r} is a directory")
    folder = file.absolute().parent
    if not folder.is_dir():
        raise ConfigError(f"the folder for the {what} {str(file)!r} does not exist")
    if not os.access(file if file.exists() else folder, os.W_OK):
        raise ConfigError(f"the {what} {str(file)!r} is not writable")
    return file
