"""Writing a batch into `raw`: binary COPY encoded from Arrow (modelwatch.pgbinary), one transaction.

The transaction first removes the batch, so a re-run replaces it exactly, and
a crash midway leaves the previous version of the batch intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from . import pgbinary
from .db import TRIP_COLUMNS
from .model import TrainedModel
from .source import TripFile

COPY_CHUNK_ROWS = 100_000
_TRIP_ID_EPOCH = date(2000, 1, 1)
_TRIP_IDS_PER_DAY = 100_000_000


@dataclass(frozen=True)
class LoadedBatch:
    batch_date: date
    rows_loaded: int
    rows_outside_day: int


def rows_of_day(table: pa.Table, batch_date: date) -> pa.Table:
    """The rows whose pickup falls on batch_date."""
    start = datetime.combine(batch_date, time())
    pickup = table["pickup_datetime"]
    in_day = pc.and_(
        pc.greater_equal(pickup, pa.scalar(start, pa.timestamp("us"))),
        pc.less(pickup, pa.scalar(start + timedelta(days=1), pa.timestamp("us"))),
    )
    in_day = pc.fill_null(in_day, False)
    if pc.all(in_day).as_py():  # a file of that one day: no copy (a 3-million-row day is 0.5 GB)
        return table
    return table.filter(in_day)


def pickup_days(table: pa.Table) -> list[date]:
    """The distinct pickup days of a file, in order."""
    days = pc.unique(pc.cast(table["pickup_datetime"], pa.date32())).to_pylist()
    return sorted(day for day in days if day is not None)


def trip_ids(batch_date: date, count: int) -> np.ndarray:
    """Surrogate ids, stable across re-runs of the same file: day number, then row number."""
    base = (batch_date - _TRIP_ID_EPOCH).days * _TRIP_IDS_PER_DAY
    return base + np.arange(1, count + 1, dtype="int64")


def copy_arrow(conn: psycopg.Connection, target: sql.Composable, table: pa.Table) -> None:
    """COPY a table into `target` (same column names and matching types) in binary, by chunks to bound memory.

    psycopg's queued writer sends each chunk from a thread of its own while
    numpy encodes the next one, so the server parses as Python encodes.
    """
    statement = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        target, sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names)
    )
    cursor = conn.cursor()
    with cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy:
        copy.write(pgbinary.HEADER)
        for batch in table.to_batches(max_chunksize=COPY_CHUNK_ROWS):
            copy.write(pgbinary.encode(pa.Table.from_batches([batch])))
        copy.write(pgbinary.TRAILER)


def trip_rows(batch_date: date, day_rows: pa.Table) -> pa.Table:
    """A day's trips as raw.trips holds them: the batch date and trip id, then TRIP_COLUMNS."""
    return pa.Table.from_arrays(
        [pa.array([batch_date] * day_rows.num_rows, pa.date32()), pa.array(trip_ids(batch_date, day_rows.num_rows))]
        + [day_rows[name] for name, _ in TRIP_COLUMNS],
        names=["batch_date", "trip_id"] + [name for name, _ in TRIP_COLUMNS],
    )


def prediction_rows(trips: pa.Table, model: TrainedModel) -> pa.Table:
    """raw.predictions' rows for trip_rows(...) scored by `model`."""
    return pa.table({
        "batch_date": trips["batch_date"],
        "trip_id": trips["trip_id"],
        "model_version": pa.array([model.version] * trips.num_rows, pa.string()),
        "predicted_duration_min": pa.array(model.predict_table(trips), pa.float64()),
    })


def load_batch(
    conn: psycopg.Connection,
    trips: TripFile,
    batch_date: date,
    day_rows: pa.Table,
    model: TrainedModel,
) -> LoadedBatch:
    """Replace the batch's trips and predictions and mark it loaded, atomically."""
    trips_table = trip_rows(batch_date, day_rows)
    predictions = prediction_rows(trips_table, model)
    outside = trips.rows - day_rows.num_rows
    with conn.transaction():
        for table, rows in (("trips", trips_table), ("predictions", predictions)):
            target = sql.SQL("raw.{}").format(sql.Identifier(table))
            conn.execute(sql.SQL("delete from {} where batch_date = %s").format(target), (batch_date,))
            copy_arrow(conn, target, rows)
        conn.execute(
            """update raw.batches set status = 'loaded', rows_loaded = %s, rows_outside_day = %s,
                      model_version = %s
               where batch_date = %s""",
            (day_rows.num_rows, outside, model.version, batch_date),
        )
    return LoadedBatch(batch_date=batch_date, rows_loaded=day_rows.num_rows, rows_outside_day=outside)


def analyze(conn: psycopg.Connection) -> None:
    """Refresh the planner's statistics of the raw tables once batches are loaded.

    A new batch_date lies past the histogram of the last ANALYZE, so PostgreSQL
    estimates one row for it and joins trips to predictions with a nested loop:
    quadratic in the batch's rows, and the cost of a daily batch grew with the
    history (autovacuum analyzes only after 10% of the table changes).
    """
    # Only the columns the joins and filters on a batch use: a tenth of the cost of all of them
    # (1.2 s against 0.3 s on a 3-million-row batch); the others' statistics barely move.
    conn.execute("analyze raw.trips (batch_date, trip_id), raw.predictions (batch_date, trip_id)")


def save_reference(conn: psycopg.Connection, model: TrainedModel, table: pa.Table) -> int:
    """The reference set for drift: the reference file's rows with this model's predictions."""
    reference = pa.Table.from_arrays(
        [pa.array([model.version] * table.num_rows, pa.string()), pa.array(np.arange(1, table.num_rows + 1))]
        + [table[name] for name, _ in TRIP_COLUMNS]
        + [pa.array(model.predict_table(table), pa.float64())],
        names=["model_version", "trip_id"] + [name for name, _ in TRIP_COLUMNS] + ["predicted_duration_min"],
    )
    conn.execute("delete from raw.reference_trips where model_version = %s", (model.version,))
    copy_arrow(conn, sql.SQL("raw.reference_trips"), reference)
    return reference.num_rows


def mark_batch(conn: psycopg.Connection, batch_date: date, status: str, error: str | None = None) -> None:
    conn.execute(
        "update raw.batches set status = %s, error = %s, finished_at = now() where batch_date = %s",
        (status, error, batch_date),
    )


def start_batch(conn: psycopg.Connection, trips: TripFile, batch_date: date) -> None:
    """Record the attempt before touching data, so an interrupted run is visible in the log."""
    conn.execute(
        """
        insert into raw.batches (batch_date, file_name, file_sha256, rows_in_file, coercions, status, started_at)
        values (%s, %s, %s, %s, %s, 'loading', now())
        on conflict (batch_date) do update set
            file_name = excluded.file_name, file_sha256 = excluded.file_sha256,
            rows_in_file = excluded.rows_in_file, coercions = excluded.coercions,
            status = 'loading', started_at = now(), finished_at = null, error = null
        """,
        (batch_date, trips.path.name, trips.sha256, trips.rows, "; ".join(trips.coercions) or None),
    )


def dominant_month_rows(table: pa.Table) -> pa.Table:
    """Rows in the file's most common pickup month (drops strays such as 2008 pickups)."""
    months = pc.strftime(table["pickup_datetime"], format="%Y-%m")
    counts = [item for item in pc.value_counts(months).to_pylist() if item["values"] is not None]
    if not counts:
        return table.slice(0, 0)
    best = max(counts, key=lambda item: item["counts"])["values"]
    return table.filter(pc.fill_null(pc.equal(months, best), False))
