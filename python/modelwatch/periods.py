"""Batch periods: a batch is one day, ISO week (from Monday) or month of a monitor,
named by its first day (its batch_date)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from modelwatch.errors import UsageError


@dataclass(frozen=True, order=True)
class Batch:
    """One batch of one monitor: its period [start, end] (both days included)."""

    monitor: str
    start: date
    end: date

    @property
    def batch_date(self) -> date:
        return self.start

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        """[from, until) as timestamps: the rows whose timestamp falls in the period."""
        return datetime.combine(self.start, time()), datetime.combine(self.end, time()) + timedelta(days=1)

    def __str__(self) -> str:
        return self.start.isoformat()


def period_start(period: str, day: date) -> date:
    """The first day of the period holding `day`."""
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise UsageError(f"unknown batch period {period!r}")


def period_end(period: str, start: date) -> date:
    """The last day of the period that starts on `start`; UsageError past the calendar's end."""
    try:
        if period == "day":
            return start
        if period == "week":
            return start + timedelta(days=6)
        if period == "month":
            following = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
                month=start.month + 1)
            return following - timedelta(days=1)
    except (OverflowError, ValueError):
        pass
    if period not in ("day", "week", "month"):
        raise UsageError(f"unknown batch period {period!r}")
    raise UsageError(f"{start}: a {period} that starts there ends past the last date modelwatch can store")


def batch_of(monitor: str, period: str, day: date) -> Batch:
    """The batch of `monitor` whose period holds `day`."""
    start = period_start(period, day)
    try:
        end = period_end(period, start)
    except UsageError:
        end = date.max
    if end >= date.max:  # its end bound (the next day's midnight) would not exist
        raise UsageError(f"{day}: the {period} holding it reaches the calendar's last day ({date.max}); "
                         "no batch can be cut there")
    return Batch(monitor, start, end)


def period_starts(period: str, timestamps: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The period start (date32) of each timestamp; nulls stay null."""
    days = pc.cast(timestamps, pa.date32())
    if period == "day":
        return days
    if period == "week":
        weekday = pc.cast(pc.day_of_week(days), pa.int32())  # Monday = 0
        return pc.cast(pc.subtract(pc.cast(days, pa.int32()), weekday), pa.date32())
    if period == "month":
        return pc.cast(pc.strptime(pc.strftime(timestamps, format="%Y-%m-01"), format="%Y-%m-%d", unit="s"),
                       pa.date32())
    raise UsageError(f"unknown batch period {period!r}")
