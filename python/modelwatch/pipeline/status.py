"""The batch log, read back for people and scripts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from modelwatch.postgres.db import locked_batches
from modelwatch.postgres.publish import FINISHED

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
    monitor: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    published: bool = True  # whether the marts' readers (Grafana) see the batch

    @property
    def failing_checks(self) -> list[str]:
        """A finished batch's error column holds its failing checks ("; "-joined); any other's, its error."""
        return self.error.split("; ") if self.error and self.status in FINISHED else []

    def as_json(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "batch_date": self.batch_date.isoformat(),
            "status": self.status,
            "rows_loaded": self.rows_loaded,
            "rows_in_file": self.rows_in_file,
            "file_name": self.file_name,
            "failing_checks": self.failing_checks,
            "error": None if self.status in FINISHED else self.error,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": self.seconds,
        }


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
                 error, monitor, started, finished, shown)
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


@dataclass(frozen=True)
class Freshness:
    """Whether a monitor's batches still arrive (marts.monitor_freshness, read now)."""

    monitor: str
    stale_after: timedelta
    batches: int
    latest_batch_date: date | None
    silent_for: timedelta | None
    stale: bool

    def describe(self) -> str:
        if not self.batches:
            return f"{self.monitor}: no batch yet"
        state = "STALE" if self.stale else "fresh"
        return (f"{self.monitor}: {state}: latest batch {self.latest_batch_date} finished "
                f"{_duration(self.silent_for)} ago (stale after {_duration(self.stale_after)})")


def freshness(conn: psycopg.Connection, monitor: str | None = None) -> list[Freshness]:
    """Each declared monitor's freshness (or `monitor`'s alone); none before the first build."""
    if conn.execute("select to_regclass('marts.monitor_freshness')").fetchone()[0] is None:
        return []
    rows = conn.execute(
        """select monitor, stale_after, batches, latest_batch_date, now() - last_batch_at,
                  coalesce(now() - last_batch_at > stale_after, false)
           from marts.monitor_freshness where %(monitor)s::text is null or monitor = %(monitor)s
           order by monitor""",
        {"monitor": monitor},
    ).fetchall()
    return [Freshness(*row) for row in rows]


def _duration(span: timedelta | None) -> str:
    if span is None:
        return "?"
    hours = span.total_seconds() / 3600
    if hours < 48:
        return f"{hours:.0f} hours" if round(hours) != 1 else "1 hour"
    return f"{hours / 24:.0f} days"
