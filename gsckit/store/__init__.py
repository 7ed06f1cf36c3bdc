"""The DuckDB file: day commits by one writer, reads that interleave with them, the schema.

- :mod:`.schema`: tables, the ``search_analytics`` view, versions and migrations;
- :mod:`.locks`: the sidecar lock files through which readers and the writer take turns;
- :mod:`.access`: opening the file, with odd files and lock conflicts reported in one line;
- :mod:`.writer`: :class:`Store`, the single writer (atomic day commits, and the rule that
  keeps final rows from fresh or empty answers);
- :mod:`.days`: the ledger's days and their states (final or fresh), as everything else reads
  them;
- :mod:`.reader`: :class:`Database`, read-only frames and SQL.
"""

from __future__ import annotations

from .days import LedgerDay, Stream
from .reader import DEFAULT_WAIT_S, Database, plain_numbers
from .schema import FINAL, FRESH, LEDGER, ROWS, SCHEMA_VERSION, TABLE
from .writer import (
    FORCE,
    KEPT,
    MISSING,
    NEW,
    PROMOTED,
    RECHECK,
    REFRESHED,
    REPLACED,
    Commit,
    Staged,
    Store,
    outcome,
)

__all__ = ["DEFAULT_WAIT_S", "FINAL", "FORCE", "FRESH", "KEPT", "LEDGER", "MISSING", "NEW",
           "PROMOTED", "RECHECK", "REFRESHED", "REPLACED", "ROWS", "SCHEMA_VERSION", "TABLE",
           "Commit", "Database", "LedgerDay", "Staged", "Store", "Stream", "outcome",
           "plain_numbers"]
