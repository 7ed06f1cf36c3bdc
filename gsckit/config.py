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
GOOGLE_QPM = 1_200  # Search Console's quota per site and per user, per minute


@dataclass(frozen=True)
class RetryPolicy:
    """How retryable failures are retried.

    ``max_attempts``: HTTP attempts per page before the day is given up (resumable on re-run);
    429s count.
    ``base_s`` / ``max_backoff_s``: full-jitter exponential backoff,
    ``uniform(0, min(max, base * 2**n))``; a ``Retry-After`` header wins (capped at the max).
    ``quota_pause_s``: how long a site pauses at its first 403 ``quotaExceeded`` (Google's load
    quota: "wait 15 minutes"); if the load quota persists after the pause, the site stops.
    """

    max_attempts: int = 6
    base_s: float = 1.0
    max_backoff_s: float = 32.0
    quota_pause_s: float = 900.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("retry max_attempts must be at least 1")
        if self.base_s < 0 or self.max_backoff_s < 0 or self.quota_pause_s < 0:
            raise ConfigError("retry delays must not be negative")


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
    and per credential (default 960 = 80% of Google's 1,200/min); retries count. ``qpm`` may not
    exceed Google's 1,200. A window shorter than 60 s scales time for tests against the
    simulator: 12 per 1.5 s stands for 12 per minute (it sends 480 per real minute).
    ``rate_decrease`` / ``rate_increase``: after a 429 the site's and credential's limit becomes
    ``rate_decrease`` times what they were granted in the last window; each whole window without
    another 429 gives back ``rate_increase`` requests (default ``qpm // 20``) until ``qpm``.
    ``queue_size``: bound of the batch queue. ``max_unpersisted_pages``: pages queued, being
    fetched, or fetched but not yet committed; bounds memory (a page holds up to ``row_limit``
    rows). Default (``None``): twice ``max_concurrency``, at least 16, so that every worker can
    have a request in flight while as many pages wait for their commit. The oldest day in
    progress may always fetch its next page, so no setting can deadlock.
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
    rate_decrease: float = 0.5
    rate_increase: int | None = None
    queue_size: int = 1000
    max_unpersisted_pages: int | None = None
    row_limit: int = MAX_ROW_LIMIT
    prefetch: bool = True
    base_url: str = DEFAULT_BASE_URL
    qpm_report_s: float = 2.0
    db_memory_limit: str = "64MB"
    db_wait_s: float = 5.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrency <= 256:
            raise ConfigError(f"max_concurrency must be 1..256, got {self.max_concurrency}")
        if not 1 <= self.qpm <= GOOGLE_QPM:
            raise ConfigError(f"qpm must be 1..{GOOGLE_QPM} (Google's quota per site and per "
                              f"user), got {self.qpm}")
        if not 0.01 <= self.qpm_window_s <= 3600:
            raise ConfigError(f"qpm_window_s must be 0.01..3600, got {self.qpm_window_s}")
        if not 0.0 < self.rate_decrease < 1.0:
            raise ConfigError(f"rate_decrease must be between 0 and 1, got {self.rate_decrease}")
        if self.rate_increase is not None and self.rate_increase < 1:
            raise ConfigError(f"rate_increase must be at least 1, got {self.rate_increase}")
        if self.max_unpersisted_pages is not None and self.max_unpersisted_pages < 1:
            raise ConfigError("max_unpersisted_pages must be at least 1")
        if self.queue_size < 2 * self.unpersisted_pages:
            # every queued batch holds one unpersisted page, so a put never waits
            raise ConfigError("queue_size must be at least twice max_unpersisted_pages")
        if not 1 <= self.row_limit <= MAX_ROW_LIMIT:
            raise ConfigError(f"row_limit must be 1..{MAX_ROW_LIMIT}, got {self.row_limit}")
        if self.qpm_report_s <= 0:
            raise ConfigError("qpm_report_s must be positive")
        object.__setattr__(self, "base_url", check_base_url(self.base_url))
        check_size(self.db_memory_limit)
        if not 0 <= self.db_wait_s <= 86_400:
            raise ConfigError(f"db_wait_s must be 0..86400 seconds, got {self.db_wait_s}")


    @property
    def unpersisted_pages(self) -> int:
        """The page bound in force: ``max_unpersisted_pages``, or its default for the workers."""
        if self.max_unpersisted_pages is not None:
            return self.max_unpersisted_pages
        return max(16, 2 * self.max_concurrency)


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
