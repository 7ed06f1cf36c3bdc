"""Sidecar lock files that let readers and the one writer of a gsckit file take turns.

DuckDB lets one process write a file, or several read it, never both. gsckit's writer keeps its
connection while nobody else wants the file (reopening it for every commit costs a backfill 1.6
times the CPU, benchmarks/readers.py) and gives it up between commits when a reader asks. They
coordinate through ``flock`` locks on small files next to the database (``flock`` locks belong to
an open file, so they also work between threads of one process):

- ``<db>.gsckit-writer``: the writer holds it exclusively for its whole life and writes who it is
  (kind, PID, start) into it; a second writer fails fast, and readers name the holder.
- ``<db>.gsckit-want``: a reader holds it shared from the moment it wants the file until it is
  done; the writer tries it exclusively without blocking between commits and when idle.
- ``<db>.gsckit-access``: the writer holds it exclusively while its connection is open, a reader
  shared while it reads.
- ``<db>.gsckit-turnstile``: the writer holds it while it takes the file back, so a stream of
  readers cannot starve it; readers only pass through.

Every wait is a poll with a deadline, so no one blocks longer than they asked to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import DatabaseLocked

SUFFIXES = (".gsckit-writer", ".gsckit-want", ".gsckit-access", ".gsckit-turnstile")


def sidecars(db: Path) -> list[Path]:
    """The lock files of ``db`` (they may not exist)."""
    return [db.with_name(db.name + suffix) for suffix in SUFFIXES]


class Timeout(Exception):
    """A lock was not granted before the deadline."""


class LockFile:
    """One sidecar file and the ``flock`` this object holds on it (if any)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.mode = 0

    def _open(self) -> int:
        if self._fd is None:
            old = os.umask(0o077)
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            finally:
                os.umask(old)
        return self._fd

    def try_lock(self, exclusive: bool) -> bool:
        """Take the lock without waiting; True if granted."""
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(self._open(), mode | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        self.mode = mode
        return True

    def lock(self, exclusive: bool, deadline: float) -> None:
        """Take the lock, polling until ``deadline`` (``time.monotonic``); raise Timeout."""
        delay = 0.002
        while not self.try_lock(exclusive):
            if time.monotonic() >= deadline:
                raise Timeout(self.path.name)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.05)

    def unlock(self) -> None:
        if self._fd is not None and self.mode:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.mode = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also drops the lock
            self._fd = None
            self.mode = 0

    def write(self, text: str) -> None:
        fd = self._open()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError:
            return ""


@dataclass(frozen=True)
class Holder:
    """Who is writing a gsckit file: what kind of run, its PID and when it started."""

    kind: str
    pid: int
    started: str
    host: str

    def describe(self) -> str:
        here = self.host == socket.gethostname()
        if here and self.pid == os.getpid():
            return f"another {self.kind} in this process (started {self.started})"
        where = "" if here else f" on {self.host}"
        return f"a gsckit {self.kind} (PID {self.pid}{where}, started {self.started})"


def current_writer(db: Path) -> Holder | None:
    """The live gsckit writer of ``db``, if any (a stale identity file is ignored)."""
    path = sidecars(db)[0]
    if not path.exists():
        return None
    probe = LockFile(path)
    try:
        if probe.try_lock(exclusive=False):
            return None  # nobody holds it: whatever it says is stale
        return _parse_holder(probe.read())
    except OSError:
        return None
    finally:
        probe.close()


def _parse_holder(text: str) -> Holder:
    try:
        data = json.loads(text)
        return Holder(str(data["kind"]), int(data["pid"]), str(data["started"]),
                      str(data.get("host", "")))
    except (ValueError, KeyError, TypeError):
        return Holder("writer", 0, "?", socket.gethostname())


class WriterSide:
    """The writer's locks: identity for its life, and the file access it lends to readers."""

    def __init__(self, db: Path, kind: str) -> None:
        self.db = db
        writer, want, access, turnstile = (LockFile(p) for p in sidecars(db))
        self._writer, self._want, self._access, self._turnstile = writer, want, access, turnstile
        self.kind = kind

    def claim(self) -> None:
        """Become the file's only gsckit writer, or raise DatabaseLocked naming the other."""
        if not self._writer.try_lock(exclusive=True):
            self._writer.close()
            holder = current_writer(self.db)
            who = holder.describe() if holder else "another gsckit writer"
            raise DatabaseLocked(f"database {str(self.db)!r} is being written by {who}; wait "
                                 "for it to finish, then re-run")
        started = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        self._writer.write(json.dumps({"kind": self.kind, "pid": os.getpid(),
                                       "started": started, "host": socket.gethostname()}))

    def take(self, deadline: float) -> None:
        """Take the file back from readers: new ones queue behind the turnstile meanwhile."""
        self._turnstile.lock(exclusive=True, deadline=deadline)
        try:
            self._access.lock(exclusive=True, deadline=deadline)
        finally:
            self._turnstile.unlock()

    def wanted(self) -> bool:
        """True if a reader is waiting for (or reading) the file."""
        if self._want.try_lock(exclusive=True):
            self._want.unlock()
            return False
        return True

    def lend(self) -> None:
        """Let readers in (the caller has closed its connection)."""
        self._access.unlock()

    def close(self) -> None:
        for lock in (self._access, self._turnstile, self._want):
            lock.close()
        with contextlib.suppress(OSError):
            self._writer.write("")
        self._writer.close()


@contextlib.contextmanager
def reader_pass(db: Path, deadline: float) -> Iterator[None]:
    """Hold the file for reading: signal the writer, pass the turnstile, share the access.

    Raises :class:`Timeout` if the writer did not let go before ``deadline``. Without a
    writable folder for the sidecars (a read-only share) there is nobody to coordinate with,
    and the caller reads directly.
    """
    _, want, access, turnstile = (LockFile(p) for p in sidecars(db))
    try:
        try:
            want.lock(exclusive=False, deadline=deadline)
        except PermissionError:
            yield
            return
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES):
                yield
                return
            raise
        turnstile.lock(exclusive=False, deadline=deadline)
        try:
            access.lock(exclusive=False, deadline=deadline)
        finally:
            turnstile.unlock()
        yield
    finally:
        for lock in (access, turnstile, want):
            lock.close()
