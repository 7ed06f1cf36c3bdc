"""Engine events and the JSON-lines audit log that records them.

The engine emits :class:`Event` objects to listeners (the audit log, progress displays, tests); it
never imports a UI. Event data is built by the engine from an allow-list of plain fields (site, day,
startRow, status, rows, attempt, latency, reason), so no header or token can reach a listener.
A listener that fails is detached with one warning, so a display bug never loses a backfill; a
*critical* listener (the audit log) that fails raises :class:`AuditLogError`, which halts the run:
the audit trail is a promise.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TextIO

from .config import check_writable
from .errors import AuditLogError, ConfigError

EVENT_KINDS = ("freshness", "run_start", "request", "retry", "slowdown", "pause", "resume",
               "site_stopped", "slice_done", "slice_failed", "qpm", "halt", "run_end", "split",
               "split_stopped", "totals")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the engine did: ``kind`` is one of ``EVENT_KINDS``; ``t`` is wall-clock time."""

    kind: str
    data: Mapping[str, Any]
    t: float = field(default_factory=time.time)


Listener = Callable[[Event], None]


class Emitter:
    """Fans events out to listeners.

    A listener that raises is detached with one ``RuntimeWarning``; a critical one (added with
    ``critical=True``) is detached too, and the failure is raised as :class:`AuditLogError`.
    """

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners: list[tuple[Listener, bool]] = [(listener, False)
                                                        for listener in listeners]

    def add(self, listener: Listener, *, critical: bool = False) -> None:
        self._listeners.append((listener, critical))

    def __call__(self, kind: str, **data: Any) -> None:
        event = Event(kind, data)
        for entry in tuple(self._listeners):
            listener, critical = entry
            try:
                listener(event)
            except Exception as exc:
                self._listeners.remove(entry)
                if critical:
                    raise AuditLogError(f"cannot write {listener!r}: {_describe(exc)}") from exc
                # a display bug must not lose a backfill
                warnings.warn(f"gsckit event listener {listener!r} failed and was detached: "
                              f"{exc!r}", RuntimeWarning, stacklevel=2)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def _plain(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return value


class AuditLog:
    """Appends one JSON object per event to a file created with mode 0600."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_writable(path, "audit log")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the audit log {str(self.path)!r}: "
                              f"{exc.strerror}") from None
        self._file: TextIO = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def __call__(self, event: Event) -> None:
        record = {"ts": datetime.fromtimestamp(event.t, UTC).isoformat(timespec="milliseconds"),
                  "event": event.kind}
        record.update(event.data)
        self._file.write(json.dumps(record, default=_plain, separators=(",", ":")) + "\n")

    def close(self) -> None:
        # a write that failed has already halted the run; closing must not hide that report
        with contextlib.suppress(OSError):
            self._file.close()
