"""Labels that land after their batch: `modelwatch labels` stores a file of (id, target) in
raw.<monitor>__labels and rebuilds the marts of exactly the batches whose rows it labelled.

Labels live apart from raw.<monitor>__rows, keyed by the row's id, so a re-run of a batch
(which replaces its rows) keeps them; int_batch_rows reads a row's target as the file's
where it had one, else the label's.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pyarrow as pa
from psycopg import sql

from modelwatch.config import Settings
from modelwatch.errors import InputError, UsageError
from modelwatch.monitors import Monitor
from modelwatch.periods import Batch
from modelwatch.pipeline import load
from modelwatch.pipeline.source import _cast, ARROW_TYPES, read_table
from modelwatch.postgres import db, publish, schema


@dataclass(frozen=True)
class LabelsOutcome:
    monitor: str
    file: Path
    rows_in_file: int
    labelled: int
    unknown_ids: int
    batches: tuple[date, ...]
    statuses: dict[date, str]


def read_labels(path: Path | str, monitor: Monitor) -> tuple[Path, pa.Table]:
    """The file's id and target columns cast to the monitor's types; InputError names the file and
    the missing column."""
    path, table = read_table(path)
    theirs = {ours: source for source, ours in monitor.rename.items()}
    columns = []
    for name in (monitor.id, monitor.target):
        source = theirs.get(name, name) if theirs.get(name, name) in table.column_names else name
        if source not in table.column_names:
            raise InputError(f"{path}: required column {source!r} is missing")
        column = table.column(source)
        wanted = ARROW_TYPES[monitor.column_type(name)]
        if column.type != wanted:
            column = _cast(column, wanted, str(path), source)
        columns.append(column)
    ids = columns[0]
    if ids.null_count:
        raise InputError(f"{path}: column {monitor.id!r} has {ids.null_count} empty ids")
    if len(set(ids.to_pylist())) != len(ids):
        raise InputError(f"{path}: column {monitor.id!r} repeats ids (one label per row)")
    return path, pa.table({monitor.id: ids, monitor.target: columns[1]})


def store_labels(settings: Settings, monitor_name: str | None, file: Path | str) -> LabelsOutcome:
    """Store the file's labels for rows already loaded (replacing earlier ones), count the ids no
    batch holds, then rebuild the marts of the batches touched."""
    from modelwatch.pipeline import build_batches  # pipeline imports this module's neighbours: import at use

    monitor = settings.monitor(monitor_name)
    if monitor.target in monitor.derived:
        raise UsageError(f"monitor {monitor.name}: its target {monitor.target!r} is derived in SQL, not labelled")
    path, table = read_labels(file, monitor)
    url = db.database_url(settings)
    rows = sql.Identifier("raw", monitor.rows_table)
    target = sql.Identifier("raw", schema.labels_table(monitor))
    id_column, target_column = sql.Identifier(monitor.id), sql.Identifier(monitor.target)
    with db.connect(url, autocommit=True) as conn:
        schema.check_version(conn)
        schema.check_monitor_tables(conn, monitor)
        with conn.transaction():
            conn.execute(sql.SQL("create temporary table incoming (like {} including defaults) on commit drop")
                         .format(target))
            conn.execute("alter table incoming drop column labelled_at")
            load.copy_arrow(conn, sql.Identifier("incoming"), table)
            touched = [day for (day,) in conn.execute(sql.SQL(
                "select distinct r.batch_date from {} as r join incoming as i on i.{} = r.{} order by 1").format(
                rows, id_column, id_column))]
            unknown = conn.execute(sql.SQL(
                "select count(*) from incoming as i where not exists (select 1 from {} as r where r.{} = i.{})")
                .format(rows, id_column, id_column)).fetchone()[0]
            labelled = conn.execute(sql.SQL(
                """insert into {target} ({id}, {label})
                   select i.{id}, i.{label} from incoming as i
                   where exists (select 1 from {rows} as r where r.{id} = i.{id})
                   on conflict ({id}) do update set {label} = excluded.{label}, labelled_at = now()""").format(
                target=target, id=id_column, label=target_column, rows=rows)).rowcount
        statuses = rebuild(settings, conn, url, monitor, touched, build_batches)
    return LabelsOutcome(monitor.name, path, table.num_rows, labelled, unknown, tuple(touched), statuses)


def rebuild(settings: Settings, conn: psycopg.Connection, url: str, monitor: Monitor, days: list[date],
            build_batches) -> dict[date, str]:  # noqa: ANN001 - pipeline.build_batches
    """Build the finished batches among `days`, each run of neighbouring batches in one build (a
    build covers every batch between its first and last, so runs keep it to exactly these)."""
    logged = conn.execute(
        "select batch_date, batch_end, status from raw.batches where monitor = %s order by batch_date",
        (monitor.name,)).fetchall()
    wanted = set(days)
    runs: list[list[Batch]] = [[]]
    for start, end, status in logged:
        if start in wanted and status in publish.FINISHED:
            runs[-1].append(Batch(monitor.name, start, end))
        elif runs[-1]:
            runs.append([])
    statuses: dict[date, str] = {}
    for run in (run for run in runs if run):
        with ExitStack() as stack:
            for batch in run:  # in order, as run_range takes them: no deadlock with a backfill
                stack.enter_context(db.batch_lock(conn, monitor.name, batch.start))
            done, _ = build_batches(settings, conn, url, monitor, run)
        statuses.update(done)
    return statuses
