"""Real TLC trips moved onto other dates: a year of daily batches from two months.

The load test and the benchmarks need more history than the data has; moving
real days (times of day, durations, fares, the dirt included) keeps every
figure as real as the months they come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import load
from .source import TLC_NAMES, read_trip_file


def month_rows(path: Path | str) -> pa.Table:
    """A TLC month's trips in the declared schema, strays outside its main month dropped."""
    return load.dominant_month_rows(read_trip_file(path).table)


def source_days(months: Sequence[pa.Table]) -> list[tuple[date, pa.Table]]:
    """Every day of the given months with its rows, in order."""
    return [(day, load.rows_of_day(table, day)) for table in months for day in load.pickup_days(table)]


def shift_rows(table: pa.Table, delta: timedelta) -> pa.Table:
    """Pickup and dropoff moved by `delta` (durations unchanged)."""
    shift = pa.scalar(int(delta / timedelta(microseconds=1)), pa.duration("us"))
    for name in ("pickup_datetime", "dropoff_datetime"):
        table = table.set_column(table.column_names.index(name), name, pc.add(table[name], shift))
    return table


def replay_days(days: Sequence[tuple[date, pa.Table]], first: date, count: int) -> list[tuple[date, pa.Table]]:
    """`count` consecutive days from `first`, each a source day (cycled) shifted onto it."""
    replayed = []
    for index in range(count):
        target = first + timedelta(days=index)
        source_day, rows = days[index % len(days)]
        replayed.append((target, shift_rows(rows, target - source_day)))
    return replayed


def onto_day(table: pa.Table, day: date) -> pa.Table:
    """Every row moved to `day`, keeping its time of day and duration."""
    pickup = table["pickup_datetime"]
    day_start = pc.cast(pc.floor_temporal(pickup, unit="day"), pa.timestamp("us"))
    new_pickup = pc.add(pa.scalar(datetime.combine(day, datetime.min.time()), pa.timestamp("us")),
                        pc.subtract(pickup, day_start))
    duration = pc.subtract(table["dropoff_datetime"], pickup)
    table = table.set_column(table.column_names.index("pickup_datetime"), "pickup_datetime", new_pickup)
    return table.set_column(table.column_names.index("dropoff_datetime"), "dropoff_datetime",
                            pc.add(new_pickup, duration))


def write_tlc_parquet(table: pa.Table, path: Path) -> Path:
    """Our schema back to the TLC's column names, so `modelwatch` reads it as any TLC file."""
    ours_to_tlc = {ours: theirs for theirs, ours in TLC_NAMES.items()}
    pq.write_table(table.rename_columns([ours_to_tlc[name] for name in table.column_names]), path)
    return path
