"""A monitor's batch, or a range of them, end to end: read, load (and score, for a monitor
with a model of modelwatch's), build, record.

Each batch is loaded in its own transaction; the drift worker (its own process)
scores them with Evidently while dbt builds the whole range (two invocations:
the marts that do not read drift, then those that do), and the contract still
decides batch by batch.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from modelwatch import transform
from modelwatch.config import Settings
from modelwatch.drift import estimation, worker as drift_worker
from modelwatch.errors import DatabaseError, InputError, ModelwatchError, UsageError
from modelwatch.monitors import Monitor
from modelwatch.periods import Batch, batch_of
from modelwatch.pipeline import load, outage
from modelwatch.pipeline.progress import Progress, SILENT
from modelwatch.pipeline.source import BatchFile, read_batch_file
from modelwatch.postgres import db, publish, schema
from modelwatch.transform import results


@dataclass(frozen=True)
class BatchOutcome:
    monitor: str
    batch_date: date
    status: str  # passed | warned | failed
    rows_loaded: int
    rows_outside_period: int
    seconds: float
    failing_checks: tuple[str, ...] = ()
    coercions: tuple[str, ...] = ()  # what reading the file changed (types, time zones), for `run` to say


@dataclass(frozen=True)
class RangeOutcome:
    monitor: str
    batches: tuple[BatchOutcome, ...]
    file: Path
    rows_in_file: int
    rows_in_no_batch: int
    coercions: tuple[str, ...] = field(default=())
    skipped: tuple[date, ...] = field(default=())  # finished before, not redone

    @classmethod
    def of(cls, monitor: Monitor, file: BatchFile, batches: list[BatchOutcome] | tuple[BatchOutcome, ...],
           skipped: tuple[date, ...] = ()) -> RangeOutcome:
        ordered = tuple(sorted(batches, key=lambda batch: batch.batch_date))
        return cls(
            monitor=monitor.name,
            batches=ordered,
            file=file.path,
            rows_in_file=file.rows,
            rows_in_no_batch=file.rows - sum(batch.rows_loaded for batch in ordered),
            coercions=file.coercions,
            skipped=skipped,
        )

    @property
    def failed(self) -> tuple[BatchOutcome, ...]:
        return tuple(batch for batch in self.batches if batch.status == "failed")


def init(settings: Settings) -> str:
    """Schemas, shared tables, every declared monitor's tables, roles, the dbt seeds and views;
    idempotent. Returns the database URL."""
    monitors = list(settings.monitors)  # a wrong declaration fails here, before anything is created
    if not monitors:
        raise UsageError(f"{settings.project_dir / 'dbt_project.yml'}: declares no monitor under vars.monitors "
                         "(uncomment the example or add one)")
    for monitor in monitors:
        model_module(monitor)
    url = db.database_url(settings)
    with db.connect(url, as_pipeline=False) as conn:  # the login's own rights: it manages the roles
        schema.init_schema(conn, monitors, settings.reader_password, settings.pipeline_password)
        outage.record_noted(settings, conn, url)  # batches a lost server left unmarked
    transform.seed(settings, url)
    with db.connect(url, autocommit=True) as conn, db.build_lock(conn):  # builds re-create views too
        transform.create_views(settings, url, conn)
    for monitor in monitors:
        rebuild_marts(settings, monitor)
    return url


def initialise_if_new(settings: Settings) -> str | None:
    """`init` for a database that holds no modelwatch schema yet (first use needs no ceremony);
    returns its URL when it did, None when the database was initialised already."""
    url = db.database_url(settings)
    with db.connect(url, as_pipeline=False) as conn:
        if schema.stored_version(conn) is not None:
            return None
    return init(settings)


def rebuild_marts(settings: Settings, monitor: Monitor) -> int:
    """Build the marts of the monitor's finished batches that have none (after a migration, which
    keeps raw and drops the derived marts; or after a rebuild that failed) from what raw holds;
    returns how many."""
    url = db.database_url(settings)
    with db.connect(url, autocommit=True) as conn:
        if conn.execute("select to_regclass('marts.batch_health')").fetchone()[0] is None:
            health = "select monitor, batch_date from raw.batches where false"
        else:
            health = "select monitor, batch_date from marts.batch_health"
        rows = conn.execute(
            f"""select batch_date, batch_end from raw.batches
                where monitor = %s and status = any(%s) and (monitor, batch_date) not in ({health})
                order by 1""",
            (monitor.name, list(publish.FINISHED))).fetchall()
        batches = [Batch(monitor.name, start, end) for start, end in rows]
        for first in range(0, len(batches), BACKFILL_CHUNK_BATCHES):
            build_batches(settings, conn, url, monitor, batches[first:first + BACKFILL_CHUNK_BATCHES])
    return len(batches)


def model_module(monitor: Monitor) -> ModuleType | None:
    """The module of the monitor's model (its `model` key), or None: its predictions are in its files."""
    if not monitor.model:
        return None
    try:
        module = importlib.import_module(monitor.model)
    except ImportError as exc:
        raise UsageError(f"monitor {monitor.name}: model {monitor.model!r} cannot be imported ({exc})") from None
    for name in ("train", "save", "load_latest"):
        if not callable(getattr(module, name, None)):
            raise UsageError(f"monitor {monitor.name}: model module {monitor.model!r} has no function {name}()")
    return module


def train(settings: Settings, reference: Path | str, monitor_name: str | None = None) -> Any:
    """Train the monitor's model on a reference file; store the artifact, its registry row and
    the reference set (the file's rows of its main months) scored by it."""
    monitor = settings.monitor(monitor_name)
    module = model_module(monitor)
    if module is None:
        raise UsageError(f"monitor {monitor.name} declares no model for modelwatch to train: its files bring "
                         f"their predictions (store its reference with `modelwatch reference --monitor "
                         f"{monitor.name} --file FILE`)")
    url = db.database_url(settings)
    with db.connect(url) as conn:
        schema.check_version(conn)
        schema.check_monitor_tables(conn, monitor)
    file = read_batch_file(reference, monitor)
    trained = module.train(file)
    reference_rows = load.main_period_rows(file.table, monitor)
    with db.connect(url) as conn, conn.transaction():
        module.save(conn, monitor.name, trained, file)
        version, _ = load.save_reference(conn, monitor, file, reference_rows, trained)
        estimation.fit_reference(conn, monitor, version)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / f"{trained.version}.pkl").write_bytes(trained.artifact)
    _bin_references(settings, url, monitor)
    return trained


@dataclass(frozen=True)
class StoredReference:
    monitor: str
    version: str
    rows: int
    file: Path
    coercions: tuple[str, ...]


def reference(settings: Settings, monitor_name: str | None, file: Path | str) -> StoredReference:
    """Store the monitor's reference set from a file (every row; scored by its latest model
    for a monitor with one) and bin it for PSI; its batches are compared with it from now on."""
    monitor = settings.monitor(monitor_name)
    module = model_module(monitor)
    url = db.database_url(settings)
    with db.connect(url) as conn:
        schema.check_version(conn)
        schema.check_monitor_tables(conn, monitor)
        read = read_batch_file(file, monitor)
        if read.rows == 0:
            raise InputError(f"{read.path}: the file holds no rows")
        trained = module.load_latest(conn, monitor.name) if module else None
        with conn.transaction():
            version, rows = load.save_reference(conn, monitor, read, read.table, trained)
            estimation.fit_reference(conn, monitor, version)  # what estimation needs: once per reference
    _bin_references(settings, url, monitor)
    return StoredReference(monitor.name, version, rows, read.path, read.coercions)


def _bin_references(settings: Settings, url: str, monitor: Monitor) -> None:
    with db.connect(url, autocommit=True) as conn, db.build_lock(conn):  # no build runs dbt meanwhile
        transform.bin_references(settings, url, monitor.name)  # its PSI bins, before its first batch


def run_batch(settings: Settings, batch_date: date, file: Path | str, monitor_name: str | None = None,
              progress: Progress = SILENT) -> BatchOutcome:
    """One batch: the rows of `file` whose timestamp falls in the period holding `batch_date`."""
    monitor = settings.monitor(monitor_name)
    batch = batch_of(monitor.name, monitor.batch_period, batch_date)
    with drift_worker.started(settings) as scorer:  # imports while the file is read
        read = read_batch_file(file, monitor)
        require_rows(read, monitor, batch)
        progress.total(1)
        outcome = run_range(settings, monitor, read, [batch], progress, scorer=scorer)
    return replace(outcome.batches[0], coercions=read.coercions)


def require_rows(read: BatchFile, monitor: Monitor, batch: Batch) -> None:
    """InputError when the file holds no row of the batch, saying where its rows are."""
    if load.rows_in(read.table, monitor, batch).num_rows == 0:
        starts = load.batch_starts(load.main_period_rows(read.table, monitor), monitor)
        span = (f"its rows' {monitor.batch_period}s run from {starts[0]} to {starts[-1]}" if starts
                else f"it holds no {monitor.timestamp}")
        raise InputError(f"{read.path}: no rows with a {monitor.timestamp} in the {monitor.batch_period} of "
                         f"{batch} ({span})")


BACKFILL_CHUNK_BATCHES = 31  # batches per dbt build: one invocation per month of days, resumable by chunk


def backfill(
    settings: Settings,
    file: Path | str,
    start: date | None = None,
    end: date | None = None,
    progress: Progress = SILENT,
    force: bool = False,
    monitor_name: str | None = None,
) -> RangeOutcome:
    """Every batch of the file (by default, those of its main months) from start to end, in order.

    Batches already finished from this same file (same sha256) are skipped unless
    `force`, so an interrupted backfill started again resumes where it stopped.
    """
    monitor = settings.monitor(monitor_name)
    with drift_worker.started(settings) as scorer:  # one for every chunk
        read = read_batch_file(file, monitor)
        batches = backfill_batches(monitor, read, start, end)
        done = {} if force else finished_batches(settings, monitor, read, batches)
        todo = [batch for batch in batches if batch.start not in done]
        outcomes: list[BatchOutcome] = [done[batch.start] for batch in batches if batch.start in done]
        progress.total(len(batches))
        for day in sorted(done):
            progress.loaded(day)
        for first in range(0, len(todo), BACKFILL_CHUNK_BATCHES):
            chunk = todo[first:first + BACKFILL_CHUNK_BATCHES]
            outcomes += run_range(settings, monitor, read, chunk, progress, scorer=scorer).batches
    return RangeOutcome.of(monitor, read, outcomes, skipped=tuple(sorted(done)))


def backfill_batches(monitor: Monitor, read: BatchFile, start: date | None, end: date | None) -> list[Batch]:
    """The file's batches from start to end; by default those of its main months, so strays
    (a few rows of 2008 in a file of 2023) are counted, not run as batches."""
    main = load.batch_starts(load.main_period_rows(read.table, monitor), monitor)
    if not main:
        raise InputError(f"{read.path}: the file holds no rows with a {monitor.timestamp}")
    first = batch_of(monitor.name, monitor.batch_period, start).start if start else main[0]
    last = batch_of(monitor.name, monitor.batch_period, end).start if end else main[-1]
    starts = [day for day in load.batch_starts(read.table, monitor) if first <= day <= last]
    if not starts:
        raise InputError(f"{read.path}: no rows with a {monitor.timestamp} between {start or first} and "
                         f"{end or last}")
    return [batch_of(monitor.name, monitor.batch_period, day) for day in starts]


def finished_batches(settings: Settings, monitor: Monitor, read: BatchFile,
                     batches: list[Batch]) -> dict[date, BatchOutcome]:
    """Batches already built from this very file (passed, warned or failed)."""
    with db.connect(db.database_url(settings)) as conn:
        schema.check_version(conn)
        rows = conn.execute(
            """select batch_date, status, rows_loaded, rows_outside_period,
                      extract(epoch from finished_at - started_at), error
               from raw.batches
               where monitor = %s and batch_date = any(%s) and file_sha256 = %s and status = any(%s)""",
            (monitor.name, [batch.start for batch in batches], read.sha256, list(publish.FINISHED)),
        ).fetchall()
    return {
        day: BatchOutcome(monitor.name, day, status, loaded, outside, float(seconds or 0.0),
                          tuple((error or "").split("; ")) if error else ())
        for day, status, loaded, outside, seconds, error in rows
    }


def run_range(
    settings: Settings,
    monitor: Monitor,
    file: Path | str | BatchFile,
    batches: list[Batch],
    progress: Progress = SILENT,
    scorer: drift_worker.DriftWorker | None = None,
) -> RangeOutcome:
    """Load (and score) `batches` of the file, each in its own transaction and handed to the
    drift step as soon as it is committed, then build them together. `scorer`: the drift
    step's process, when the caller started it earlier."""
    url = db.database_url(settings)
    module = model_module(monitor)
    started: dict[date, float] = {}
    loaded: dict[date, load.LoadedBatch] = {}
    batches = sorted(batches)
    with ExitStack() as stack:
        if scorer is None:
            scorer = stack.enter_context(drift_worker.started(settings))
        read = file if isinstance(file, BatchFile) else read_batch_file(file, monitor)
        conn = stack.enter_context(db.connect(url, autocommit=True))
        schema.check_version(conn)  # an older database fails here, before anything is loaded
        schema.check_monitor_tables(conn, monitor)
        outage.record_noted(settings, conn, url)  # batches a lost server left unmarked
        trained = module.load_latest(conn, monitor.name) if module else None
        reference_version = load.latest_reference(conn, monitor)
        if reference_version is None:
            raise UsageError(f"monitor {monitor.name} has no reference set: store one with `modelwatch reference "
                             f"--monitor {monitor.name} --file FILE`" + (" (or `modelwatch train`)" if module else ""))
        scorer.prepare(url, monitor.name, reference_version)  # read while the batches load
        if not estimation.fitted(conn, monitor, reference_version):  # a reference stored before schema 3
            with conn.transaction():
                estimation.fit_reference(conn, monitor, reference_version)
        for batch in batches:  # in order, so two ranges never deadlock on their locks
            stack.enter_context(db.batch_lock(conn, monitor.name, batch.start))
        # Before the locks go: a failing range stops the worker, so it writes no drift for batches others may take.
        stack.push(lambda exc_type, *_: exc_type is not None and scorer.abandon())
        warming = threading.Thread(target=_warm_dbt, args=(settings, url), name="modelwatch-imports", daemon=True)
        warming.start()  # dbt imports and reads the project while the batches load, mostly waiting on COPY
        stack.callback(warming.join)  # never left importing while the process exits on an error
        first_runs: set[date] = set()  # batches with no log row before this run
        try:
            for batch in batches:
                progress.phase(f"loading {batch.start}")
                clock = time.perf_counter()
                rows = load.rows_in(read.table, monitor, batch)
                previous = load.batch_log_row(conn, batch)
                if previous is None:
                    first_runs.add(batch.start)
                load.start_batch(conn, read, batch, getattr(trained, "version", None), reference_version)
                try:
                    stored = load.batch_rows(monitor, batch, rows, trained)
                    drift_rows = drift_worker.rows_to_hand_over(settings, monitor, stored)
                    # the drift step's file of the rows is written while they are copied
                    handing_over = None if drift_rows is None else scorer.hand_over(monitor.name, batch.start,
                                                                                    drift_rows)
                    done = load.load_batch(conn, monitor, read, batch, stored)
                except Exception as exc:
                    _restore_log(conn, batch, previous, exc)
                    raise
                # committed: Evidently scores it while the next loads (its rows handed over, not read back)
                scorer.score(url, monitor.name, [batch.start], handing_over)
                loaded[batch.start] = done
                started[batch.start] = time.perf_counter() - clock
                progress.loaded(batch.start)
            progress.phase("dbt reads the project")
            clock = time.perf_counter()
            warming.join()
        except (ModelwatchError, psycopg.Error) as exc:
            # the batches whose rows were replaced, or that had no log before, take the error;
            # the others keep their log (restored)
            _fail(settings, conn, url, monitor, batches, exc, "loading",
                  marked=[batch for batch in batches if batch.start in loaded or batch.start in first_runs])
            raise
        statuses, failing = build_batches(settings, conn, url, monitor, batches, drift_scored=scorer.wait,
                                          phase=progress.phase)
        build_share = (time.perf_counter() - clock) / len(batches)
    outcomes = tuple(
        BatchOutcome(
            monitor=monitor.name,
            batch_date=batch.start,
            status=statuses[batch.start],
            rows_loaded=loaded[batch.start].rows_loaded,
            rows_outside_period=loaded[batch.start].rows_outside_period,
            seconds=started[batch.start] + build_share,
            failing_checks=tuple(failing.get(batch.start, ())),
        )
        for batch in batches
    )
    return RangeOutcome.of(monitor, read, outcomes)


def build_batches(settings: Settings, conn: psycopg.Connection, url: str, monitor: Monitor, batches: list[Batch],
                  drift_scored: Callable[[], None] = lambda: None,
                  phase: Callable[[str], None] = SILENT.phase) -> tuple[dict[date, str], dict[date, list[str]]]:
    """The dbt half of a range whose batches are loaded: build and test them (the drift marts once
    `drift_scored` returns), record each batch's verdict and failing checks, then show them to
    readers. Returns both."""
    days = [batch.start for batch in batches]
    first, last = min(days), max(days)
    try:
        with _recording_errors(conn, monitor, batches, "building"), db.build_lock(conn):
            # Fresh statistics for the new batch dates and the profiling's choice of columns, taken
            # under the lock: no other run's ANALYZE changes them while this build reads them.
            load.analyze(conn, monitor)
            if not transform.references_binned(conn, monitor.name, first, last):
                transform.bin_references(settings, url, monitor.name)
            publish.withdraw(conn, monitor.name, days)  # readers see these batches again once rebuilt whole
            seeds = tuple(lookup["seed"] for lookup in monitor.lookups.values())
            # the build's outcomes, recorded as they come (two calls), as one run and one verdict a batch
            tested_at = conn.execute("select now()").fetchone()[0]
            statuses = {batch.start: "passed" for batch in batches}
            transform.build(settings, url, conn, monitor.name, first, last, drift_scored, phase,
                            record=lambda outcomes: results.record_tests(conn, monitor.name, outcomes, batches,
                                                                         seeds, tested_at, statuses))
        failing = results.failing_checks(conn, monitor.name, first, last)
        with conn.transaction():
            for batch in batches:
                load.mark_batch(conn, batch, statuses[batch.start], "; ".join(failing.get(batch.start, ())) or None)
            publish.publish(conn, monitor.name, days)
    except (ModelwatchError, psycopg.Error) as exc:
        _fail(settings, conn, url, monitor, batches, exc, "building")
        raise
    return statuses, failing


def _restore_log(conn: psycopg.Connection, batch: Batch, previous: dict[str, Any] | None,
                 exc: Exception) -> None:
    """The log row of a batch whose load failed, back as it was; the load's own error stays the
    one raised even when the connection is gone."""
    try:
        load.restore_batch_log(conn, batch, previous, str(exc).strip().splitlines()[0] if str(exc).strip()
                               else type(exc).__name__)
    except psycopg.Error:
        pass


def _fail(settings: Settings, conn: psycopg.Connection, url: str, monitor: Monitor, batches: list[Batch],
          exc: BaseException, step: str, marked: list[Batch] | None = None) -> None:
    """Record a failed step in the batch log, and raise the error the user reads instead of
    `exc` when its cause is the server's (stopped, killed, out of disk space). A lost server
    cannot take the record: it is noted for the next command (modelwatch.pipeline.outage). `marked`:
    the batches whose log takes the error (default: all of them)."""
    marked = batches if marked is None else marked
    days = [batch.start for batch in batches]
    what = f"{step} batch{'es' if len(days) > 1 else ''} {min(days)}" + (f"..{max(days)}" if len(days) > 1 else "")
    if outage.lost(conn):
        message = outage.server_stopped(settings, url, exc, what)
        outage.note(settings, url, monitor.name, days, message)
        raise DatabaseError(message) from exc
    # A refused input is the file's fault, whatever the disk holds.
    first = "" if isinstance(exc, UsageError) else outage.cause(settings, url, exc)
    if first:
        message = f"{first} ({what}: {' '.join(str(exc).split())})"
        _mark_all(conn, monitor, marked, "error", message)
        raise DatabaseError(message) from exc
    if isinstance(exc, ModelwatchError):
        _mark_all(conn, monitor, marked, "error", str(exc))


def _warm_dbt(settings: Settings, url: str) -> None:
    """Import dbt and parse the project ahead of their use; a failure surfaces where they are used."""
    try:
        transform.warm(settings, url)
    except Exception:  # noqa: BLE001 - reported by the step that needs the library or the project
        pass


@contextmanager
def _recording_errors(conn: psycopg.Connection, monitor: Monitor, batches: list[Batch], status: str) -> Iterator[None]:
    """Mark the batches with `status` while a step runs, so a crash leaves a trace in the log."""
    _mark_all(conn, monitor, batches, status, None, finished=False)
    yield


def _mark_all(conn: psycopg.Connection, monitor: Monitor, batches: list[Batch], status: str, error: str | None,
              finished: bool = True) -> None:
    conn.execute(
        "update raw.batches set status = %s, error = %s, finished_at = case when %s then now() end"
        " where monitor = %s and batch_date = any(%s)",
        (status, error, finished, monitor.name, [batch.start for batch in batches]),
    )


def replay(
    settings: Settings,
    file: Path | str,
    pace_s: float,
    start: date | None = None,
    end: date | None = None,
    progress: Progress = SILENT,
    monitor_name: str | None = None,
) -> RangeOutcome:
    """The batches of a file one at a time, one every `pace_s` seconds, each its own build.

    For watching Grafana fill batch by batch, as the course's loop did; batches
    already finished are redone. The pace is start to start: a batch that
    takes longer than `pace_s` is followed at once.
    """
    monitor = settings.monitor(monitor_name)
    with drift_worker.started(settings) as scorer:
        read = read_batch_file(file, monitor)
        batches = backfill_batches(monitor, read, start, end)
        outcomes: list[BatchOutcome] = []
        progress.total(len(batches))
        began = time.monotonic()
        for index, batch in enumerate(batches):
            time.sleep(max(0.0, began + index * pace_s - time.monotonic()))
            outcomes += run_range(settings, monitor, read, [batch], progress, scorer=scorer).batches
    return RangeOutcome.of(monitor, read, outcomes)
