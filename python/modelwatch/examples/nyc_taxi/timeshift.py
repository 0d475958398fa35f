"""Real rows moved onto other dates: a year of daily batches from a few months.

The load test and the benchmarks need more history than the data has; moving
real days (times of day, durations, fares, the dirt included) keeps every
figure as real as the months they come from. Written for the TLC months of the
taxi's monitor (the default `monitor` of every function), it works for any
monitor: every timestamp column of a row moves with its timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelwatch.config import Settings
from modelwatch.monitors import Monitor
from modelwatch.periods import batch_of
from modelwatch.pipeline import load
from modelwatch.pipeline.source import read_batch_file

TAXI = "nyc_taxi"  # the TLC files' monitor


@cache
def taxi_monitor() -> Monitor:
    """The taxi's monitor as the package's dbt project declares it."""
    return Settings(home=Path(".modelwatch")).monitor(TAXI)


def _monitor(monitor: Monitor | None) -> Monitor:
    return monitor if monitor is not None else taxi_monitor()


def timestamp_columns(monitor: Monitor | None = None) -> tuple[str, ...]:
    """The monitor's stored timestamp columns, its batch timestamp first."""
    monitor = _monitor(monitor)
    others = tuple(name for name, pg_type in monitor.stored_columns
                   if pg_type == "timestamp" and name != monitor.timestamp)
    return (monitor.timestamp, *others)


def month_rows(path: Path | str, monitor: Monitor | None = None) -> pa.Table:
    """A file's rows in the monitor's stored schema (as read_batch_file coerces them), strays
    outside its main months dropped."""
    monitor = _monitor(monitor)
    return load.main_period_rows(read_batch_file(path, monitor).table, monitor)


def rows_of_day(table: pa.Table, day: date, monitor: Monitor | None = None) -> pa.Table:
    """The rows whose timestamp falls on `day`."""
    monitor = _monitor(monitor)
    return load.rows_in(table, monitor, batch_of(monitor.name, "day", day))


def days_of(table: pa.Table, monitor: Monitor | None = None) -> list[date]:
    """The distinct days of the rows' timestamps, in order."""
    monitor = _monitor(monitor)
    return sorted(day for day in pc.unique(pc.cast(table[monitor.timestamp], pa.date32())).to_pylist()
                  if day is not None)


def source_days(months: Sequence[pa.Table], monitor: Monitor | None = None) -> list[tuple[date, pa.Table]]:
    """Every day of the given months with its rows, in order."""
    return [(day, rows_of_day(table, day, monitor)) for table in months for day in days_of(table, monitor)]


def shift_rows(table: pa.Table, delta: timedelta, monitor: Monitor | None = None) -> pa.Table:
    """Every timestamp column (pickup and dropoff for the taxi) moved by `delta` (durations unchanged)."""
    shift = pa.scalar(int(delta / timedelta(microseconds=1)), pa.duration("us"))
    for name in timestamp_columns(monitor):
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, pc.add(table[name], shift))
    return table


def replay_days(days: Sequence[tuple[date, pa.Table]], first: date, count: int,
                monitor: Monitor | None = None) -> list[tuple[date, pa.Table]]:
    """`count` consecutive days from `first`, each a source day (cycled) shifted onto it."""
    replayed = []
    for index in range(count):
        target = first + timedelta(days=index)
        source_day, rows = days[index % len(days)]
        replayed.append((target, shift_rows(rows, target - source_day, monitor)))
    return replayed


def onto_day(table: pa.Table, day: date, monitor: Monitor | None = None) -> pa.Table:
    """Every row moved to `day`, keeping its time of day, and its other timestamps moved with it
    (the taxi's durations unchanged)."""
    names = timestamp_columns(monitor)
    stamp = table[names[0]]
    day_start = pc.cast(pc.floor_temporal(stamp, unit="day"), pa.timestamp("us"))
    moved = pc.add(pa.scalar(datetime.combine(day, datetime.min.time()), pa.timestamp("us")),
                   pc.subtract(stamp, day_start))
    shift = pc.subtract(moved, stamp)  # per row
    for name in names:
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name,
                                     moved if name == names[0] else pc.add(table[name], shift))
    return table


def write_tlc_parquet(table: pa.Table, path: Path, monitor: Monitor | None = None) -> Path:
    """Our column names back to the file's (the monitor's `rename` reversed: the TLC's for the
    taxi), so `modelwatch` reads it as any file of the monitor."""
    ours_to_theirs = {ours: theirs for theirs, ours in _monitor(monitor).rename.items()}
    pq.write_table(table.rename_columns([ours_to_theirs.get(name, name) for name in table.column_names]), path)
    return path
