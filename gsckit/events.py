"""Engine events and the JSON-lines audit log that records them.

The engine emits :class:`Event` objects to listeners (the audit log, progress displays, tests); it
never imports a UI. Event data is built by the engine from an allow-list of plain fields (site, day,
startRow, status, rows, attempt, latency, reason), so no header or token can reach a listener.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TextIO

from .config import check_writable
from .errors import ConfigError

EVENT_KINDS = ("run_start", "request", "retry", "pause", "slice_done", "slice_failed", "qpm",
               "halt", "run_end")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the engine did: ``kind`` is one of ``EVENT_KINDS``; ``t`` is wall-clock time."""

    kind: str
    data: Mapping[str, Any]
    t: float = field(default_factory=time.time)


Listener = Callable[[Event], None]


class Emitter:
    """Fans events out to listeners; a failing listener is reported once and never stops a run."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self._listeners = list(listeners)
        self._broken: set[int] = set()

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def __call__(self, kind: str, **data: Any) -> None:
        event = Event(kind, data)
        for index, listener in enumerate(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # a display bug must not lose a backfill
                if index not in self._broken:
                    self._broken.add(index)
                    warnings.warn(f"gsckit event listener {listener!r} failed: {exc!r}",
                                  RuntimeWarning, stacklevel=2)


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
        self._file.close()
