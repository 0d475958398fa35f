"""Reference sets as the drift step reads them, kept as Arrow files in the home.

A reference version's rows never change (the version is their hash), yet every
`modelwatch run` starts a drift worker of its own, which read the whole set
back from PostgreSQL: seconds for a wide one, in each run. A file is keyed by
everything the frame depends on: the server and database, the monitor, the
version and when it was stored, the query (columns, casts, derived SQL), the
sampling options and modelwatch's version; a changed key is a miss, and a
file that cannot be read is read from the database again. Beside it, the drift
method Evidently picks for each column of the set (picking one counts its
distinct values), by Evidently version.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import psycopg

from modelwatch import __version__

KEPT_PER_MONITOR = 2  # files in a monitor's folder (one database): the current reference and the one before
_TOTAL = b"modelwatch.rows_total"


def path_for(folder: Path, conn: psycopg.Connection, monitor: str, version: str | None,
             query: str, options: object) -> Path | None:
    """The file of this reference read, or None when the version is not registered."""
    row = conn.execute("select created_at from raw.references where monitor = %s and version = %s",
                       (monitor, version)).fetchone()
    if row is None:
        return None
    database = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
    key = json.dumps([database, monitor, version, row[0].isoformat(), query, repr(options), __version__])
    return folder / _monitor_folder(database, monitor) / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.arrow"


def load(path: Path) -> tuple[pd.DataFrame, int] | None:
    """The frame and the set's row count, or None (no file, or one that cannot be read)."""
    import pyarrow.feather as feather

    try:
        table = feather.read_table(path)
        return table.to_pandas(), int(table.schema.metadata[_TOTAL])
    except (OSError, KeyError, ValueError):
        path.unlink(missing_ok=True)
        return None


def save(path: Path, frame: pd.DataFrame, total: int) -> None:
    """Write the file (whole or not at all), and drop the monitor's older ones; a failure to write
    costs the next run a read, nothing more."""
    import pyarrow as pa
    import pyarrow.feather as feather

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _TOTAL: str(total).encode()})
        partial = path.with_suffix(f".{os.getpid()}.partial")
        feather.write_feather(table, partial, compression="lz4")
        partial.replace(path)
        older = sorted((other for other in path.parent.glob("*.arrow") if other != path),
                       key=lambda other: other.stat().st_mtime, reverse=True)
        for other in older[KEPT_PER_MONITOR - 1:]:
            other.unlink(missing_ok=True)
            _methods_path(other).unlink(missing_ok=True)
    except OSError:
        pass


def load_methods(path: Path, evidently_version: str) -> dict[str, str]:
    """The drift method Evidently chose for each column of this reference (by its name), as
    save_methods kept them for this Evidently version; {} when there are none."""
    try:
        kept = json.loads(_methods_path(path).read_text())
        return dict(kept["methods"]) if kept["evidently"] == evidently_version else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def save_methods(path: Path, evidently_version: str, methods: dict[str, str]) -> None:
    """Keep the methods beside the reference's file (choosing one reads every value of a column);
    a failure to write costs the next run the choice, nothing more."""
    try:
        partial = path.with_suffix(f".methods.{os.getpid()}.partial")
        partial.write_text(json.dumps({"evidently": evidently_version, "methods": methods}))
        partial.replace(_methods_path(path))
    except OSError:
        pass


def _methods_path(path: Path) -> Path:
    return path.with_suffix(".methods.json")


def _monitor_folder(database: str, monitor: str) -> str:
    """The folder of one monitor's files in one database: `<database hash>-<monitor hash>`."""
    return f"{hashlib.sha256(database.encode()).hexdigest()[:12]}-{hashlib.sha256(monitor.encode()).hexdigest()[:8]}"
