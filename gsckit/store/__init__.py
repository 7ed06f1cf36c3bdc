"""The DuckDB file: day commits by one writer, reads that interleave with them, the schema.

- :mod:`.schema`: tables, the ``search_analytics`` view, versions and migrations;
- :mod:`.locks`: the sidecar lock files through which readers and the writer take turns;
- :mod:`.access`: opening the file, with odd files and lock conflicts reported in one line;
- :mod:`.writer`: :class:`Store`, the single writer (atomic day commits);
- :mod:`.reader`: :class:`Database`, read-only frames and SQL.
"""

from __future__ import annotations

from .reader import DEFAULT_WAIT_S, Database, plain_numbers
from .schema import LEDGER, ROWS, SCHEMA_VERSION, TABLE
from .writer import Commit, Staged, Store

__all__ = ["DEFAULT_WAIT_S", "LEDGER", "ROWS", "SCHEMA_VERSION", "TABLE", "Commit", "Database",
           "Staged", "Store", "plain_numbers"]
