"""One batch, or a range of them, end to end: read, load and score, build, record.

Each day is loaded in its own transaction; the drift worker (its own process)
scores them with Evidently while dbt builds the whole range (two invocations:
the marts that do not read drift, then those that do), and the contract still
decides batch by batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

from . import db, drift_worker, load, model, publish, transform
from .config import Settings
from .errors import InputError, ModelwatchError, UsageError
from .source import TripFile, read_trip_file

Progress = Callable[[date], None]


@dataclass(frozen=True)
class BatchOutcome:
    batch_date: date
    status: str  # passed | warned | failed
    rows_loaded: int
    rows_outside_day: int
    seconds: float
    failing_checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class RangeOutcome:
    batches: tuple[BatchOutcome, ...]
    file: Path
    rows_in_file: int
    rows_in_no_batch: int
    coercions: tuple[str, ...] = field(default=())
    skipped: tuple[date, ...] = field(default=())  # finished before, not redone

    @classmethod
    def of(cls, trips: TripFile, batches: list[BatchOutcome] | tuple[BatchOutcome, ...],
           skipped: tuple[date, ...] = ()) -> RangeOutcome:
        ordered = tuple(sorted(batches, key=lambda batch: batch.batch_date))
        return cls(
            batches=ordered,
            file=trips.path,
            rows_in_file=trips.rows,
            rows_in_no_batch=trips.rows - sum(batch.rows_loaded for batch in ordered),
            coercions=trips.coercions,
            skipped=skipped,
        )

    @property
    def failed(self) -> tuple[BatchOutcome, ...]:
        return tuple(batch for batch in self.batches if batch.status == "failed")


def init(settings: Settings) -> str:
    """Schemas, raw tables, roles, the dbt seed and views; idempotent. Returns the database URL."""
    url = db.database_url(settings)
    with db.connect(url, as_pipeline=False) as conn:  # the login's own rights: it manages the roles
        db.init_schema(conn, settings.reader_password, settings.pipeline_password)
    transform.seed(settings, url)
    with db.connect(url, autocommit=True) as conn, db.build_lock(conn):  # builds re-create views too
        transform.create_views(settings, url, conn)
    return url


def train(settings: Settings, reference: Path | str) -> model.TrainedModel:
    """Train the baseline on a reference file; store artifact, registry row and reference set."""
    url = db.database_url(settings)
    trips = read_trip_file(reference)
    trained = model.train(trips)
    reference_rows = load.dominant_month_rows(trips.table)
    with db.connect(url) as conn, conn.transaction():
        model.save(conn, trained, trips)
        load.save_reference(conn, trained, reference_rows)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / f"{trained.version}.pkl").write_bytes(trained.artifact)
    with db.connect(url, autocommit=True) as conn, db.build_lock(conn):  # no build runs dbt meanwhile
        transform.bin_references(settings, url)  # the model's PSI bins, before its first batch
    return trained


def run_batch(settings: Settings, batch_date: date, file: Path | str) -> BatchOutcome:
    """One batch: the rows of `file` whose pickup falls on `batch_date`."""
    with drift_worker.started(settings) as scorer:  # imports while the file is read
        trips = read_trip_file(file)
        if load.rows_of_day(trips.table, batch_date).num_rows == 0:
            days = load.pickup_days(load.dominant_month_rows(trips.table))
            span = f"its pickups run from {days[0]} to {days[-1]}" if days else "it holds no pickups"
            raise InputError(f"{trips.path}: no trips with a pickup on {batch_date} ({span})")
        outcome = run_range(settings, trips, [batch_date], scorer=scorer)
    return outcome.batches[0]


BACKFILL_CHUNK_DAYS = 31  # days per dbt build: one invocation per month, resumable by month


def backfill(
    settings: Settings,
    file: Path | str,
    start: date | None = None,
    end: date | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> RangeOutcome:
    """Every day of the file (by default, of its main month) from start to end, in order.

    Days already finished from this same file (same sha256) are skipped unless
    `force`, so an interrupted backfill started again resumes where it stopped.
    """
    with drift_worker.started(settings) as scorer:  # one for every chunk
        trips = read_trip_file(file)
        days = backfill_days(trips, start, end)
        done = {} if force else finished_batches(settings, trips, days)
        todo = [day for day in days if day not in done]
        outcomes: list[BatchOutcome] = [done[day] for day in days if day in done]
        if progress:
            for day in sorted(done):
                progress(day)
        for first in range(0, len(todo), BACKFILL_CHUNK_DAYS):
            chunk = todo[first:first + BACKFILL_CHUNK_DAYS]
            outcomes += run_range(settings, trips, chunk, progress, scorer=scorer).batches
    return RangeOutcome.of(trips, outcomes, skipped=tuple(sorted(done)))


def backfill_days(trips: TripFile, start: date | None, end: date | None) -> list[date]:
    """The file's pickup days from start to end; by default its main month, so strays
    (pickups in 2008 in a 2023 file) are counted, not run as batches."""
    main_month = load.pickup_days(load.dominant_month_rows(trips.table))
    if not main_month:
        raise InputError(f"{trips.path}: the file holds no trips with a pickup time")
    start = start or main_month[0]
    end = end or main_month[-1]
    days = [day for day in load.pickup_days(trips.table) if start <= day <= end]
    if not days:
        raise InputError(f"{trips.path}: no pickups between {start} and {end}")
    return days


def finished_batches(settings: Settings, trips: TripFile, days: list[date]) -> dict[date, BatchOutcome]:
    """Batches of `days` already built from this very file (passed, warned or failed)."""
    with db.connect(db.database_url(settings)) as conn:
        rows = conn.execute(
            """select batch_date, status, rows_loaded, rows_outside_day,
                      extract(epoch from finished_at - started_at), error
               from raw.batches
               where batch_date = any(%s) and file_sha256 = %s and status = any(%s)""",
            (days, trips.sha256, list(publish.FINISHED)),
        ).fetchall()
    return {
        day: BatchOutcome(day, status, loaded, outside, float(seconds or 0.0), tuple((error or "").split("; ")) if error else ())
        for day, status, loaded, outside, seconds, error in rows
    }


# Columns the staging and intermediate models derive (dbt), beside raw.trips' own.
DERIVED_COLUMNS = ("duration_min", "predicted_duration_min")


def check_monitoring(settings: Settings) -> None:
    """Every monitored column in dbt_project.yml must be a plain name the data has, before any SQL runs."""
    available = {name for name, _ in db.TRIP_COLUMNS} | set(DERIVED_COLUMNS)
    monitoring = settings.monitoring  # raises UsageError for a name that is not a plain identifier
    for column in (monitoring.timestamp, *monitoring.features, monitoring.prediction, monitoring.target,
                   *monitoring.zone_columns):
        if column not in available:
            raise UsageError(
                f"{settings.project_dir / 'dbt_project.yml'}: monitored column '{column}' is not a column of the "
                f"data (known: {', '.join(sorted(available))})"
            )


def run_range(
    settings: Settings,
    file: Path | str | TripFile,
    days: list[date],
    progress: Progress | None = None,
    scorer: drift_worker.DriftWorker | None = None,
) -> RangeOutcome:
    """Load and score `days` of the file, each in its own transaction and handed to the drift
    step as soon as it is committed, then build them together. `scorer`: the drift step's
    process, when the caller started it earlier."""
    check_monitoring(settings)
    url = db.database_url(settings)
    started: dict[date, float] = {}
    loaded: dict[date, load.LoadedBatch] = {}
    with ExitStack() as stack:
        if scorer is None:
            scorer = stack.enter_context(drift_worker.started(settings))
        trips = file if isinstance(file, TripFile) else read_trip_file(file)
        conn = stack.enter_context(db.connect(url, autocommit=True))
        publish.check_initialised(conn)  # an older database fails here, before anything is loaded
        trained = model.load_latest(conn)
        for day in sorted(days):  # in order, so two ranges never deadlock on their locks
            stack.enter_context(db.batch_lock(conn, day))
        # Before the locks go: a failing range stops the worker, so it writes no drift for batches others may take.
        stack.push(lambda exc_type, *_: exc_type is not None and scorer.abandon())
        warming = threading.Thread(target=_import_dbt, name="modelwatch-imports", daemon=True)
        warming.start()  # dbt imports (~1.2 s) while the batches load, mostly waiting on COPY
        stack.callback(warming.join)  # never left importing while the process exits on an error
        try:
            for day in days:
                clock = time.perf_counter()
                day_rows = load.rows_of_day(trips.table, day)
                load.start_batch(conn, trips, day)
                loaded[day] = load.load_batch(conn, trips, day, day_rows, trained)
                scorer.score(url, [day])  # committed: Evidently scores it in its process while the next load
                started[day] = time.perf_counter() - clock
                if progress:
                    progress(day)
            clock = time.perf_counter()
            load.analyze(conn)  # fresh statistics for the new batch dates, or the joins below go quadratic
            warming.join()
        except ModelwatchError as exc:
            _mark_all(conn, days, "error", str(exc))
            raise
        statuses, failing = build_batches(settings, conn, url, days, drift_scored=scorer.wait)
        build_share = (time.perf_counter() - clock) / len(days)
    outcomes = tuple(
        BatchOutcome(
            batch_date=day,
            status=statuses[day],
            rows_loaded=loaded[day].rows_loaded,
            rows_outside_day=loaded[day].rows_outside_day,
            seconds=started[day] + build_share,
            failing_checks=tuple(failing.get(day, ())),
        )
        for day in days
    )
    return RangeOutcome.of(trips, outcomes)


def build_batches(settings: Settings, conn: psycopg.Connection, url: str, days: list[date],
                  drift_scored: Callable[[], None] = lambda: None) -> tuple[dict[date, str], dict[date, list[str]]]:
    """The dbt half of a range whose batches are loaded: build and test them (the drift marts once
    `drift_scored` returns), record each batch's verdict and failing checks, then show them to
    readers. Returns both."""
    try:
        with _recording_errors(conn, days, "building"), db.build_lock(conn):
            publish.withdraw(conn, days)  # readers see these batches again once rebuilt whole
            build = transform.build(settings, url, conn, min(days), max(days), drift_scored)
            statuses = record_tests(conn, build, days)
            transform.build_run_results(settings, url, min(days), max(days))
    except ModelwatchError as exc:
        _mark_all(conn, days, "error", str(exc))
        raise
    failing = failing_checks(conn, min(days), max(days))
    with conn.transaction():
        for day in days:
            load.mark_batch(conn, day, statuses[day], "; ".join(failing.get(day, ())) or None)
        publish.publish(conn, days)
    return statuses, failing


def _import_dbt() -> None:
    """Import dbt ahead of its use; a failure surfaces where it is used."""
    try:
        transform.dbt_runner()
    except Exception:  # noqa: BLE001 - reported by the step that needs the library
        pass


@contextmanager
def _recording_errors(conn: psycopg.Connection, days: list[date], status: str) -> Iterator[None]:
    """Mark the batches with `status` while a step runs, so a crash leaves a trace in the log."""
    _mark_all(conn, days, status, None, finished=False)
    yield


def _mark_all(conn: psycopg.Connection, days: list[date], status: str, error: str | None, finished: bool = True) -> None:
    conn.execute(
        "update raw.batches set status = %s, error = %s, finished_at = case when %s then now() end"
        " where batch_date = any(%s)",
        (status, error, finished, days),
    )


def record_tests(conn: psycopg.Connection, build: transform.BuildResult, days: list[date]) -> dict[date, str]:
    """Store each test's outcome per batch in raw.dbt_test_runs; return each batch's verdict."""
    rows: list[tuple] = []
    verdict = {day: "passed" for day in days}
    for test in build.tests:
        per_batch = _failures_per_batch(conn, test, days)
        for day in days:
            failures = per_batch[day]
            # A failing or warning test passes for the batches it found nothing in.
            status = test.status if failures or test.status in ("error", "skipped") else "pass"
            rows.append((test.invocation_id, day, test.name, test.column, status, failures, test.message))
            if status in ("fail", "error"):
                verdict[day] = "failed"
            elif status == "warn" and verdict[day] == "passed":
                verdict[day] = "warned"
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(
            """insert into raw.dbt_test_runs
               (invocation_id, executed_at, batch_date, test_name, column_name, status, failures, message)
               values (%s, now(), %s, %s, %s, %s, %s, %s)""",
            rows,
        )
    return verdict


def _failures_per_batch(conn: psycopg.Connection, test: transform.TestOutcome, days: list[date]) -> dict[date, int]:
    """A contract test's failing rows carry their batch; other tests count for every batch."""
    counts = {day: 0 for day in days}
    if test.status not in ("fail", "warn"):
        return counts
    if test.relation is None:
        return {day: test.failures for day in days}
    schema, table = (part.strip('"') for part in test.relation.split(".")[-2:])
    query = sql.SQL("select batch_date, count(*) from {}.{} group by batch_date").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    for day, count in conn.execute(query).fetchall():
        if day in counts:
            counts[day] = int(count)
    return counts


def failing_checks(conn: psycopg.Connection, start: date, end: date) -> dict[date, list[str]]:
    """Human-readable failing checks per batch, from marts.batch_checks."""
    rows = conn.execute(
        """select batch_date, check_name, column_name, measured_value, lower_bound, upper_bound, severity
           from marts.batch_checks
           where batch_date between %s and %s and not passed
           order by batch_date, severity, check_name, column_name""",
        (start, end),
    ).fetchall()
    found: dict[date, list[str]] = {}
    for day, check, column, measured, lower, upper, severity in rows:
        name = f"{check}[{column}]" if column else check
        bound = " and ".join(part for part in (
            f">= {lower:g}" if lower is not None else "", f"<= {upper:g}" if upper is not None else "") if part)
        found.setdefault(day, []).append(f"{name} = {measured:.4g}, expected {bound} ({severity})")
    return found


def replay(
    settings: Settings,
    file: Path | str,
    pace_s: float,
    start: date | None = None,
    end: date | None = None,
    progress: Progress | None = None,
) -> RangeOutcome:
    """The days of a file one at a time, one every `pace_s` seconds, each its own build.

    For watching Grafana fill batch by batch, as the course's loop did; days
    already finished are redone. The pace is start to start: a batch that
    takes longer than `pace_s` is followed at once.
    """
    with drift_worker.started(settings) as scorer:
        trips = read_trip_file(file)
        days = backfill_days(trips, start, end)
        batches: list[BatchOutcome] = []
        began = time.monotonic()
        for index, day in enumerate(days):
            time.sleep(max(0.0, began + index * pace_s - time.monotonic()))
            batches += run_range(settings, trips, [day], progress, scorer=scorer).batches
    return RangeOutcome.of(trips, batches)
