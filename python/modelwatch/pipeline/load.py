"""Writing a batch into `raw`: binary COPY encoded from Arrow (modelwatch.postgres.pgbinary), one transaction.

The transaction first removes the batch, so a re-run replaces it exactly, and
a crash midway leaves the previous version of the batch intact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from modelwatch import periods
from modelwatch.monitors import Monitor
from modelwatch.periods import Batch
from modelwatch.pipeline.source import BatchFile
from modelwatch.postgres import pgbinary

COPY_CHUNK_ROWS = 100_000
COPY_CHUNK_BYTES = 64 << 20  # and at most about this much of Arrow data per chunk (long text)
_ID_EPOCH = date(2000, 1, 1)
_IDS_PER_DAY = 100_000_000


@dataclass(frozen=True)
class LoadedBatch:
    batch: Batch
    rows_loaded: int
    rows_outside_period: int


def rows_in(table: pa.Table, monitor: Monitor, batch: Batch) -> pa.Table:
    """The rows whose timestamp falls in the batch's period."""
    start, until = batch.bounds
    stamps = table[monitor.timestamp]
    inside = pc.and_(
        pc.greater_equal(stamps, pa.scalar(start, pa.timestamp("us"))),
        pc.less(stamps, pa.scalar(until, pa.timestamp("us"))),
    )
    inside = pc.fill_null(inside, False)
    if pc.all(inside).as_py():  # a file of that one period: no copy (a 3-million-row day is 0.5 GB)
        return table
    return table.filter(inside)


def batch_starts(table: pa.Table, monitor: Monitor) -> list[date]:
    """The distinct period starts of a file's rows, in order."""
    starts = pc.unique(periods.period_starts(monitor.batch_period, table[monitor.timestamp])).to_pylist()
    return sorted(start for start in starts if start is not None)


def generated_ids(batch: Batch, count: int) -> np.ndarray:
    """Surrogate ids, stable across re-runs of the same file: the period's first day number, then
    the row number."""
    base = (batch.start - _ID_EPOCH).days * _IDS_PER_DAY
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
        for chunk in chunks(table):
            copy.write(pgbinary.encode(chunk))
        copy.write(pgbinary.TRAILER)


def chunks(table: pa.Table) -> Iterator[pa.Table]:
    """The table in slices of at most COPY_CHUNK_ROWS rows and about COPY_CHUNK_BYTES of values
    (a row longer than that is a slice of its own), so the encoding of a slice (a few copies
    of its bytes) stays small beside the table itself, however long its text."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            sizes += np.asarray(pc.fill_null(pc.binary_length(column), 0), dtype=np.int64)
        else:
            sizes += 8
    ends = np.cumsum(sizes)
    start = 0
    while start < table.num_rows:
        before = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, before + COPY_CHUNK_BYTES, side="right"))
        stop = min(max(stop, start + 1), start + COPY_CHUNK_ROWS)
        yield table.slice(start, stop - start)
        start = stop


def stored_rows(monitor: Monitor, rows: pa.Table, model: Any | None, first_column: tuple[str, pa.Array],
                ids: np.ndarray | None = None) -> pa.Table:
    """Rows as the monitor's raw tables hold them: `first_column` (batch_date or reference_version),
    then the stored columns, the id generated and the prediction made by `model` where the
    monitor says so."""
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {first_column[0]: first_column[1]}
    for name, _ in monitor.stored_columns:
        if name == monitor.id and monitor.generate_id:
            arrays[name] = pa.array(ids if ids is not None else np.arange(1, rows.num_rows + 1, dtype="int64"))
        elif name == monitor.prediction and monitor.model:
            arrays[name] = pa.array(model.predict_table(rows), pa.float64())
        else:
            arrays[name] = rows[name]
    return pa.table(arrays)


def batch_rows(monitor: Monitor, batch: Batch, rows: pa.Table, model: Any | None) -> pa.Table:
    """A batch's rows as raw.<monitor>__rows holds them."""
    return stored_rows(monitor, rows, model, ("batch_date", pa.array([batch.start] * rows.num_rows, pa.date32())),
                       generated_ids(batch, rows.num_rows))


def load_batch(conn: psycopg.Connection, monitor: Monitor, file: BatchFile, batch: Batch,
               stored: pa.Table) -> LoadedBatch:
    """Replace the batch's rows with `stored` (batch_rows: the file's rows of the batch as the
    monitor's table holds them) and mark it loaded, atomically."""
    outside = file.rows - stored.num_rows
    target = sql.Identifier("raw", monitor.rows_table)
    with conn.transaction():
        conn.execute(sql.SQL("delete from {} where batch_date = %s").format(target), (batch.start,))
        copy_arrow(conn, target, stored)
        conn.execute(
            """update raw.batches set status = 'loaded', rows_loaded = %s, rows_outside_period = %s
               where monitor = %s and batch_date = %s""",
            (stored.num_rows, outside, monitor.name, batch.start),
        )
    return LoadedBatch(batch=batch, rows_loaded=stored.num_rows, rows_outside_period=outside)


# Statistics of the numeric columns from this many rows (ANALYZE samples 300 per unit), which
# tell as well as the usual 30,000 whether a column has few distinct values or about one per row.
NUMERIC_STATISTICS_TARGET = 10


def analyze(conn: psycopg.Connection, monitor: Monitor) -> None:
    """Refresh the planner's statistics of the monitor's rows once batches are loaded.

    A new batch_date lies past the histogram of the last ANALYZE, so PostgreSQL
    estimates one row for it and may plan a nested loop: quadratic in the batch's
    rows, and the cost of a batch grew with the history (autovacuum analyzes only
    after 10% of the table changes). The stored numeric columns' distinct counts
    say which are profiled from their rows and which counted by value
    (macros/value_counts.sql: numeric_columns_from_rows).
    """
    table = sql.Identifier("raw", monitor.rows_table)
    # Only the column the filters on a batch use, on the usual sample: a fraction of the cost of all of them.
    conn.execute(sql.SQL("analyze {} (batch_date)").format(table))
    numeric = [name for name in monitor.numeric_columns if name not in monitor.derived]
    if numeric:
        with conn.transaction():
            conn.execute(sql.SQL("set local default_statistics_target = {}").format(
                sql.Literal(NUMERIC_STATISTICS_TARGET)))
            conn.execute(sql.SQL("analyze {} ({})").format(
                table, sql.SQL(", ").join(sql.Identifier(name) for name in numeric)))


def reference_version(table: pa.Table) -> str:
    """A reference set's version: the hash of its rows as stored (the same rows, the same version)."""
    digest = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()[:12]


def save_reference(conn: psycopg.Connection, monitor: Monitor, file: BatchFile, rows: pa.Table,
                   model: Any | None = None, version: str | None = None) -> tuple[str, int]:
    """Store a reference set for drift (its rows, scored by `model` where the monitor has one) and
    register it; returns its version and rows. The same rows again replace themselves."""
    placeholder = ("reference_version", pa.array([""] * rows.num_rows, pa.string()))
    stored = stored_rows(monitor, rows, model, placeholder)
    version = version or reference_version(stored)
    stored = stored.set_column(0, "reference_version", pa.array([version] * rows.num_rows, pa.string()))
    target = sql.Identifier("raw", monitor.reference_table)
    conn.execute(sql.SQL("delete from {} where reference_version = %s").format(target), (version,))
    copy_arrow(conn, target, stored)
    conn.execute(
        """insert into raw.references (monitor, version, file_name, file_sha256, row_count, model_version)
           values (%s, %s, %s, %s, %s, %s)
           on conflict (monitor, version) do update set file_name = excluded.file_name,
               file_sha256 = excluded.file_sha256, created_at = now(), model_version = excluded.model_version""",
        (monitor.name, version, file.path.name, file.sha256, rows.num_rows, getattr(model, "version", None)),
    )
    return version, rows.num_rows


def latest_reference(conn: psycopg.Connection, monitor: Monitor) -> str | None:
    row = conn.execute("select version from raw.references where monitor = %s order by created_at desc limit 1",
                       (monitor.name,)).fetchone()
    return row[0] if row else None


def mark_batch(conn: psycopg.Connection, batch: Batch, status: str, error: str | None = None) -> None:
    conn.execute(
        "update raw.batches set status = %s, error = %s, finished_at = now() where monitor = %s and batch_date = %s",
        (status, error, batch.monitor, batch.start),
    )


def batch_log_row(conn: psycopg.Connection, batch: Batch) -> dict[str, Any] | None:
    """The batch's row of raw.batches as it is (None before its first attempt)."""
    cursor = conn.execute("select * from raw.batches where monitor = %s and batch_date = %s",
                          (batch.monitor, batch.start))
    row = cursor.fetchone()
    return None if row is None else {column.name: value for column, value in zip(cursor.description, row)}


def restore_batch_log(conn: psycopg.Connection, batch: Batch, previous: dict[str, Any] | None,
                      error: str) -> None:
    """After a load that failed (its transaction rolled back, the batch's rows are those of
    before): the log row as it was, so `status` shows the version still stored; a batch
    never stored before is marked with the error."""
    if previous is None:
        mark_batch(conn, batch, "error", error)
        return
    names = [name for name in previous if name not in ("monitor", "batch_date")]
    conn.execute(
        sql.SQL("update raw.batches set ({}) = row({}) where monitor = %s and batch_date = %s").format(
            sql.SQL(", ").join(sql.Identifier(name) for name in names),
            sql.SQL(", ").join(sql.Placeholder() for _ in names)),
        [previous[name] for name in names] + [batch.monitor, batch.start],
    )


def start_batch(conn: psycopg.Connection, file: BatchFile, batch: Batch, model_version: str | None,
                reference: str | None) -> None:
    """Record the attempt before touching data, so an interrupted run is visible in the log."""
    conn.execute(
        """
        insert into raw.batches (monitor, batch_date, batch_end, file_name, file_sha256, rows_in_file, coercions,
                                 model_version, reference_version, status, started_at)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'loading', now())
        on conflict (monitor, batch_date) do update set
            batch_end = excluded.batch_end, file_name = excluded.file_name, file_sha256 = excluded.file_sha256,
            rows_in_file = excluded.rows_in_file, coercions = excluded.coercions,
            model_version = excluded.model_version, reference_version = excluded.reference_version,
            status = 'loading', started_at = now(), finished_at = null, error = null
        """,
        (batch.monitor, batch.start, batch.end, file.path.name, file.sha256, file.rows,
         "; ".join(file.coercions) or None, model_version, reference),
    )


def main_period_rows(table: pa.Table, monitor: Monitor) -> pa.Table:
    """The rows of the file that are not strays: those of the file's busiest month and the
    months next to it that hold at least a tenth as many rows (a month's file may hold a few
    rows of 2008; a file of a year of weekly batches holds all its months)."""
    months = pc.strftime(table[monitor.timestamp], format="%Y-%m")
    counts = {item["values"]: item["counts"] for item in pc.value_counts(months).to_pylist()
              if item["values"] is not None}
    if not counts:
        return table.slice(0, 0)
    ordered = sorted(counts)
    busiest = max(ordered, key=lambda month: counts[month])
    floor = counts[busiest] / 10
    first = last = ordered.index(busiest)
    while first > 0 and counts[ordered[first - 1]] >= floor and _adjacent(ordered[first - 1], ordered[first]):
        first -= 1
    while last < len(ordered) - 1 and counts[ordered[last + 1]] >= floor and _adjacent(ordered[last], ordered[last + 1]):
        last += 1
    kept = pa.array(ordered[first:last + 1], pa.string())
    return table.filter(pc.fill_null(pc.is_in(months, value_set=kept), False))


def _adjacent(month: str, following: str) -> bool:
    year, number = int(month[:4]), int(month[5:])
    return following == (f"{year + 1}-01" if number == 12 else f"{year}-{number + 1:02d}")
