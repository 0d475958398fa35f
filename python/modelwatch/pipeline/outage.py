"""A database server lost mid-run: the cause in words, and the batch log mended afterwards.

When the server stops, is killed or runs out of disk while a batch loads or builds,
every later statement fails with a vague "the connection is closed", and the
batches cannot be marked: the server is gone. The run's error names the first
cause instead, and the batches it left unfinished are noted in a file under
MODELWATCH_HOME, to be marked with that error by the next command that reaches
the server.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import psycopg

from modelwatch.config import Settings
from modelwatch.postgres.db import describe

NOTES_FILE = "unrecorded_errors.json"
# Free space below this on the data directory's disk means the server stopped for want of it.
LOW_SPACE_BYTES = 16 * 1024 * 1024
NO_SPACE = "no space left on device"


def lost(conn: psycopg.Connection) -> bool:
    """True when the connection no longer reaches a server (it stopped, crashed or restarted)."""
    if conn.closed or conn.broken:
        return True
    try:
        conn.execute("select 1")
    except psycopg.Error:
        return True
    return False


def cause(settings: Settings, url: str, error: BaseException) -> str:
    """The first cause of `error`, in words, when it is the server's lost disk or life; else ''."""
    text = " ".join(str(error).split())
    pgdata = settings.pgdata if not settings.database_url else None
    if NO_SPACE in text.lower() or (pgdata is not None and _low_on_space(pgdata)):
        where = f"in {pgdata}" if pgdata is not None else f"on the server of {describe(url)}"
        return f"{NO_SPACE} {where}: PostgreSQL could not write (free space, then run again)"
    return ""


def _low_on_space(pgdata: Path) -> bool:
    try:
        return shutil.disk_usage(pgdata).free < LOW_SPACE_BYTES
    except OSError:
        return False


def server_stopped(settings: Settings, url: str, error: BaseException, step: str) -> str:
    """The one line for a run whose server went away during `step`."""
    first = cause(settings, url, error)
    if first:
        return f"{first}; the server stopped while {step}"
    return (f"the database server stopped while {step} (PostgreSQL at {describe(url)}: "
            f"{_first_line(error)}); run again once it is back")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def note(settings: Settings, url: str, monitor: str, days: list[date], error: str) -> None:
    """Remember that these batches failed with `error`, for the next command to record."""
    notes = _read(settings)
    notes.append({"database": _database(settings, url), "monitor": monitor, "days": [d.isoformat() for d in days],
                  "error": error})
    path = settings.home / NOTES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notes, indent=1))


def record_noted(settings: Settings, conn: psycopg.Connection, url: str) -> int:
    """Mark the noted batches of this database that are still unfinished with their error, and
    forget the notes; returns the batches marked. A batch finished since keeps its new status."""
    notes = _read(settings)
    if not notes:
        return 0
    here = _database(settings, url)
    marked = 0
    kept = []
    for entry in notes:
        if entry.get("database") != here:
            kept.append(entry)
            continue
        marked += conn.execute(
            """update raw.batches set status = 'error', error = %s, finished_at = now()
               where monitor = %s and batch_date = any(%s) and status in ('loading', 'loaded', 'building')""",
            (entry["error"], entry["monitor"], [date.fromisoformat(d) for d in entry["days"]]),
        ).rowcount
    if not conn.autocommit:
        conn.commit()
    path = settings.home / NOTES_FILE
    if kept:
        path.write_text(json.dumps(kept, indent=1))
    else:
        path.unlink(missing_ok=True)
    return marked


def _database(settings: Settings, url: str) -> str:
    """Which database a note is for: the embedded server's socket may move when it restarts."""
    return describe(url) if settings.database_url else f"embedded {settings.pgdata}"


def _read(settings: Settings) -> list[dict]:
    path = settings.home / NOTES_FILE
    try:
        notes = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return notes if isinstance(notes, list) else []
