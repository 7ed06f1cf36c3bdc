"""Opening the DuckDB file: odd files refused in one line, lock conflicts waited out, then named.

Every command and :func:`gsckit.open` goes through :func:`connect`, so a directory, a file that
is not DuckDB, or a file locked by another process gets the same message (and exit code)
everywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import duckdb

from ..errors import ConfigError, DatabaseLocked, StoreError
from .locks import current_writer

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")
_LOCKED = ("Conflicting lock", "Could not set lock")
_OTHER_CONFIG = "different configuration"


def check_path(path: Path) -> None:
    """Refuse a path that cannot be a database file before DuckDB sees it."""
    if path.is_dir():
        raise ConfigError(f"the database path {str(path)!r} is a directory; choose a file "
                          "such as gsc.duckdb")


def holder(path: Path, duckdb_text: str = "") -> str:
    """Name whoever holds ``path``: a gsckit writer from its sidecar, else what DuckDB says."""
    match = _LOCK_HOLDER.search(duckdb_text)
    pid = int(match.group(2)) if match else None
    writer = current_writer(path)
    # our own identity file is no answer: the writer asking is this process
    if writer is not None and writer.pid != os.getpid() and pid in (None, writer.pid):
        return writer.describe()
    if match:
        program = Path(match.group(1)).name
        return f"another process ({program}, PID {pid})"
    return "another process"


def busy(path: Path, waited: float, who: str) -> DatabaseLocked:
    return DatabaseLocked(f"database {str(path)!r} is busy: held by {who}; waited {waited:g} s "
                          "(raise --wait, or retry when it is done)")


def connect(path: Path, *, read_only: bool, deadline: float, waited: float
            ) -> duckdb.DuckDBPyConnection:
    """Open ``path``, retrying while another process holds it until ``deadline``.

    Raises :class:`ConfigError` for a directory or a file that is not DuckDB (exit 2),
    :class:`DatabaseLocked` naming the holder once the wait is over (exit 75), and
    :class:`StoreError` for anything else, always in one line.
    """
    check_path(path)
    delay = 0.005
    while True:
        old = os.umask(0o077)
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            text = str(exc)
            if not any(marker in text for marker in _LOCKED):
                raise _classify(path, text) from None
            if time.monotonic() >= deadline:
                raise busy(path, waited, holder(path, text)) from None
        finally:
            os.umask(old)
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)


def in_utc(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Show TIMESTAMPTZ values (``hour``, ``fetched_at``) in UTC, whatever the machine's zone.

    DuckDB converts them to the session's time zone, by default the local one, so the same
    file would read differently on two machines. Without the ICU extension they are UTC anyway.
    """
    with contextlib.suppress(duckdb.Error):
        con.execute("SET TimeZone = 'UTC'")
    return con


def _classify(path: Path, text: str) -> Exception:
    first = text.splitlines()[0] if text else "unknown error"
    if "not a valid DuckDB database file" in text:
        return ConfigError(f"{str(path)!r} is not a DuckDB database file; choose another "
                           "--db path")
    if "Is a directory" in text:
        return ConfigError(f"the database path {str(path)!r} is a directory")
    if _OTHER_CONFIG in text:
        return DatabaseLocked(
            f"database {str(path)!r} is already open in this process with other settings (a "
            "duckdb.connect() of your own?); close that connection, or read through "
            "gsckit.open()")
    if "database has been invalidated" in text:
        return StoreError(f"database {str(path)!r} was invalidated by an earlier failure in "
                          "this process; restart the process (the file itself is intact)")
    return StoreError(f"cannot open database {str(path)!r}: {first}")
