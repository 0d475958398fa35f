"""The batch log, read back for people."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import psycopg

from .db import locked_batches

# A batch left in one of these with no process holding its lock was interrupted.
IN_PROGRESS = ("loading", "loaded", "building")


@dataclass(frozen=True)
class BatchRow:
    batch_date: date
    status: str
    rows_loaded: int | None
    rows_in_file: int
    file_name: str
    seconds: float | None
    error: str | None
    published: bool = True  # whether the marts' readers (Grafana) see the batch


def recent_batches(conn: psycopg.Connection, monitor: str, limit: int = 30) -> list[BatchRow]:
    """The monitor's latest `limit` batches, newest first."""
    published = "exists (select 1 from marts.published_batches as p where p.monitor = b.monitor" \
                " and p.batch_date = b.batch_date)" if _has_published(conn) else "true"
    rows = conn.execute(
        f"""select batch_date, status, rows_loaded, rows_in_file, file_name, started_at, finished_at, error,
                   {published}
           from raw.batches as b where monitor = %s order by batch_date desc limit %s""",
        (monitor, limit),
    ).fetchall()
    busy = locked_batches(conn, monitor)
    return [
        BatchRow(day, _shown_status(status, day in busy, shown), loaded, in_file, name, _seconds(started, finished),
                 error, shown)
        for day, status, loaded, in_file, name, started, finished, error, shown in rows
    ]


def _has_published(conn: psycopg.Connection) -> bool:
    return conn.execute("select to_regclass('marts.published_batches') is not null").fetchone()[0]


def _shown_status(status: str, locked: bool, published: bool) -> str:
    if status in IN_PROGRESS and not locked:
        return f"interrupted ({status}, withdrawn)" if not published else f"interrupted ({status})"
    if status == "error" and not published:
        # a failed rebuild took the batch's earlier version off the dashboards: say so
        return "error (withdrawn)"
    return status


def _seconds(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()
