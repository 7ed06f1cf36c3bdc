"""The Parquet hand-off: ``search_analytics`` as a Hive-partitioned Parquet folder, incrementally.

DuckDB writes the files itself (``COPY … TO … (FORMAT parquet, PARTITION_BY …)``), so Spark,
Trino, BigQuery, MotherDuck or DuckLake can take over where one machine stops. A manifest in the
folder, ``_gsckit_export.json`` (a leading underscore, which Hive, Spark and Trino skip), records
every partition with what the ledger said about its days when it was written: the newest
``fetched_at``, the number of days and the rows. A re-export compares that with the ledger and
rewrites only partitions whose days changed (re-fetched, promoted, new), removes partitions whose
days are gone, and leaves the rest untouched.

A changed partition is written beside the folder first, then swapped in. The manifest is
rewritten before the swap without the partitions being replaced and after it with them, so an
export that dies half-way leaves no stale entry: the next run redoes those partitions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .errors import ConfigError
from .store import LEDGER, TABLE

if TYPE_CHECKING:
    from .store import Database

MANIFEST = "_gsckit_export.json"
FORMAT = 1
# partition key -> the SQL giving its value as text (the ledger and the rows both have these)
PARTITION_KEYS = {
    "site": "site",
    "search_type": "search_type",
    "dimensions": "dimensions",
    "year": "year(date)::VARCHAR",
    "month": "strftime(date, '%Y-%m')",
}
_DERIVED = {"year": "year(date) AS year", "month": "strftime(date, '%Y-%m') AS month"}
_SEP = "\x1f"  # joins a partition's key values; never in a site URL or a dimension list


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: partitions rewritten, left as they were and removed, and rows."""

    to: Path
    partition_by: tuple[str, ...]
    written: int
    unchanged: int
    removed: int
    rows: int
    wall_s: float
    paths: tuple[str, ...] = field(default=(), repr=False)  # the partitions written

    def summary(self) -> str:
        return (f"exported {self.rows:,} rows in {self.written} partitions to {self.to} "
                f"({self.unchanged} unchanged, {self.removed} removed) in {self.wall_s:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"to": str(self.to), "partition_by": list(self.partition_by),
                "written": self.written, "unchanged": self.unchanged, "removed": self.removed,
                "rows": self.rows, "wall_s": self.wall_s}


def check_partition_by(partition_by: str | Sequence[str]) -> tuple[str, ...]:
    """Partition keys from ``"site,month"`` or a sequence; one line for anything else."""
    keys = tuple(k.strip() for k in (partition_by.split(",") if isinstance(partition_by, str)
                                     else partition_by))
    if not keys or not all(keys):
        raise ConfigError("partition_by needs at least one key, e.g. 'site,month'")
    for key in keys:
        if key not in PARTITION_KEYS:
            raise ConfigError(f"unknown partition key {key!r}; choose from "
                              f"{', '.join(PARTITION_KEYS)}")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"partition_by {','.join(keys)!r} repeats a key")
    return keys


def export_parquet(db: Database, to: str | os.PathLike[str], *,
                   partition_by: str | Sequence[str] = ("site", "month"),
                   full: bool = False) -> ExportReport:
    """Write the rows as Hive-partitioned Parquet under ``to``, rewriting only what changed.

    ``partition_by``: any of ``site``, ``search_type``, ``dimensions``, ``year``, ``month``
    (``month`` is ``YYYY-MM``; ``year`` and ``month`` are added as columns). ``full=True``
    rewrites every partition, and is how to change the partitioning of an existing folder.
    Read it back with ``pl.scan_parquet(f"{to}/**/*.parquet", hive_partitioning=True)``.
    """
    started = time.perf_counter()
    keys = check_partition_by(partition_by)
    folder = Path(to)
    old = _load_manifest(folder)
    if old is not None and tuple(old["partition_by"]) != keys and not full:
        raise ConfigError(f"{str(folder)!r} was exported with partition_by "
                          f"{','.join(old['partition_by'])!r}; use the same keys, another "
                          "folder, or full=True (--full) to rewrite it")
    previous: dict[str, dict[str, Any]] = {} if old is None else old["partitions"]
    if old is not None and tuple(old["partition_by"]) != keys:
        for entry in previous.values():  # another layout: clear it before writing this one
            _remove(folder, entry["path"])
        previous = {}
    known = {} if full else previous
    current = _signatures(db, keys)
    changed = [k for k, entry in current.items()
               if k not in known or known[k]["signature"] != entry["signature"]
               or (known[k]["path"] and not (folder / known[k]["path"]).is_dir())]
    kept = {k: v for k, v in known.items() if k in current and k not in changed}
    folder.mkdir(exist_ok=True)
    _save_manifest(folder, keys, kept)
    rows, written = _write(db, folder, keys, changed, current) if changed else (0, {})
    for key, entry in previous.items():  # gone from the ledger, or now without rows
        if key not in kept and key not in written:
            _remove(folder, entry["path"])
    exported_at = datetime.now(UTC).isoformat()
    for key in changed:
        kept[key] = {**current[key], "path": written.get(key, ""), "exported_at": exported_at}
    _save_manifest(folder, keys, kept)
    removed = sum(1 for k in previous if k not in current)
    return ExportReport(folder, keys, len(written), len(current) - len(changed), removed, rows,
                        time.perf_counter() - started, tuple(sorted(written.values())))


def _signatures(db: Database, keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per partition, from the ledger: newest fetch, days and rows, and the date span."""
    joined = ", ".join(PARTITION_KEYS[k] for k in keys)
    frame = db.sql(
        f"SELECT concat_ws('{_SEP}', {joined}) AS key, max(fetched_at)::VARCHAR AS fetched, "
        f"count(*)::BIGINT AS days, sum(rows)::BIGINT AS rows, min(date) AS first, "
        f"max(date) AS last FROM {LEDGER} GROUP BY 1")
    return {row["key"]: {"signature": f"{row['fetched']}|{row['days']}|{row['rows']}",
                         "days": row["days"], "rows": row["rows"],
                         "first": row["first"].isoformat(), "last": row["last"].isoformat()}
            for row in frame.iter_rows(named=True)}


def _write(db: Database, folder: Path, keys: tuple[str, ...], changed: list[str],
           current: dict[str, dict[str, Any]]) -> tuple[int, dict[str, str]]:
    """COPY the changed partitions into a staging folder beside ``folder``, then swap each in."""
    staging = folder.parent / f".{folder.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    joined = ", ".join(PARTITION_KEYS[k] for k in keys)
    derived = "".join(f", {_DERIVED[k]}" for k in keys if k in _DERIVED)
    first = min(current[k]["first"] for k in changed)
    last = max(current[k]["last"] for k in changed)
    try:
        rows = _copy(db, f"COPY (SELECT *{derived} FROM {TABLE} WHERE date BETWEEN ?::DATE AND "
                     f"?::DATE AND concat_ws('{_SEP}', {joined}) IN (SELECT unnest(?::VARCHAR[]))"
                     f") TO '{_quote(staging)}' (FORMAT parquet, PARTITION_BY ({', '.join(keys)}))",
                     [first, last, changed])
        written: dict[str, str] = {}
        for leaf in _leaves(staging, len(keys)):
            relative = leaf.relative_to(staging)
            values = [unquote(part.split("=", 1)[1]) for part in relative.parts]
            target = folder / relative
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            leaf.rename(target)
            written[_SEP.join(values)] = relative.as_posix()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return rows, written


def _remove(folder: Path, relative: str) -> None:
    """Delete one partition and the folders above it that it leaves empty."""
    if not relative:
        return
    target = folder / relative
    shutil.rmtree(target, ignore_errors=True)
    for parent in target.parents:
        if parent == folder or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()


def _copy(db: Database, query: str, params: list[Any]) -> int:
    """Run ``COPY … TO`` in the reader's read-only view of the file; returns rows written.

    ``Database.sql`` takes SELECTs only, so the COPY goes through the read path it uses
    itself (``Database._read``: it waits for a backfill's commit and never blocks one).
    """
    row = db._read(lambda con: con.execute(query, params).fetchone())
    return int(row[0]) if row else 0


def _leaves(root: Path, depth: int) -> list[Path]:
    level = [root] if root.is_dir() else []
    for _ in range(depth):
        level = [child for parent in level for child in sorted(parent.iterdir())
                 if child.is_dir() and "=" in child.name]
    return level


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _load_manifest(folder: Path) -> dict[str, Any] | None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"export target {str(folder)!r} is a file, not a folder")
    if not folder.parent.is_dir():
        raise ConfigError(f"the folder {str(folder.parent)!r} does not exist")
    manifest = folder / MANIFEST
    if not manifest.exists():
        if folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{str(folder)!r} is not empty and holds no gsckit export; "
                              "choose an empty or new folder")
        return None
    try:
        data: dict[str, Any] = json.loads(manifest.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        return data
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{str(manifest)!r} is not a gsckit export manifest ({exc}); "
                          "export to a new folder") from None


def _save_manifest(folder: Path, keys: tuple[str, ...],
                   partitions: dict[str, dict[str, Any]]) -> None:
    data = {"format": FORMAT, "partition_by": list(keys),
            "saved_at": datetime.now(UTC).isoformat(),
            "partitions": dict(sorted(partitions.items()))}
    scratch = folder / f"{MANIFEST}.tmp"
    scratch.write_text(json.dumps(data, indent=1))
    scratch.replace(folder / MANIFEST)
