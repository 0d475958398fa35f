"""Prefect flows: a monitor's batches run unattended (`pip install 'modelwatch[prefect]'`).

`monitor_batch` runs one batch as two tasks with states of their own: reading
the file (bad input fails it, never retried) and running the batch (load, drift,
dbt build, recorded outcome; retried when the database could not be reached,
which a retry can fix). A batch that fails its data contract is a Failed flow
run whose message names the failing checks, and is not retried: the data is
wrong, not the run. `monitor_folder` runs every batch of every file in a folder
that has not been run from that same file yet, so a schedule picks up new files
and an interrupted run resumes. `serve_folder` serves it on a cron schedule
(`modelwatch schedule`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from modelwatch import pipeline
from modelwatch.config import Settings
from modelwatch.errors import DatabaseError
from modelwatch.periods import batch_of
from modelwatch.pipeline.source import BatchFile, read_batch_file

DATABASE_RETRIES = 3
DATABASE_RETRY_DELAY_S = 10


def _database_unreachable(task: Any, task_run: Any, state: State) -> bool:
    """Retry only what a retry can fix: the database could not be reached or failed."""
    try:
        state.result()
    except DatabaseError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is the input's or the contract's
        return False
    return False


@task(name="read batch file", cache_policy=NO_CACHE)
def read_file(monitor: str, batch_date: date, file: str) -> BatchFile:
    settings = Settings.from_env()
    declared = settings.monitor(monitor)
    read = read_batch_file(file, declared)
    batch = batch_of(declared.name, declared.batch_period, batch_date)
    pipeline.require_rows(read, declared, batch)
    return read


@task(name="load, drift, build", cache_policy=NO_CACHE, retries=DATABASE_RETRIES,
      retry_delay_seconds=DATABASE_RETRY_DELAY_S, retry_condition_fn=_database_unreachable)
def run_batch(monitor: str, batch_date: date, read: BatchFile) -> pipeline.BatchOutcome:
    settings = Settings.from_env()
    declared = settings.monitor(monitor)
    batch = batch_of(declared.name, declared.batch_period, batch_date)
    return pipeline.run_range(settings, declared, read, [batch]).batches[0]


@task(name="run file", cache_policy=NO_CACHE, retries=DATABASE_RETRIES,
      retry_delay_seconds=DATABASE_RETRY_DELAY_S, retry_condition_fn=_database_unreachable)
def run_file(monitor: str, file: Path) -> pipeline.RangeOutcome:
    return pipeline.backfill(Settings.from_env(), file, monitor_name=monitor)


def _contract_failure(outcomes: list[pipeline.BatchOutcome]) -> State | None:
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if not failed:
        return None
    return Failed(message="; ".join(
        f"{outcome.monitor} batch {outcome.batch_date} failed its data contract: "
        + ", ".join(outcome.failing_checks) for outcome in failed))


@flow(name="monitor-batch")
def monitor_batch(monitor: str, batch_date: date, file: str) -> Any:
    """One batch of `monitor`: the rows of `file` in the period holding `batch_date`."""
    read = read_file(monitor, batch_date, file)
    outcome = run_batch(monitor, batch_date, read)
    return _contract_failure([outcome]) or asdict(outcome)


@flow(name="monitor-folder")
def monitor_folder(monitor: str, folder: str, pattern: str = "*.parquet") -> Any:
    """Every batch of every file in `folder` (name order) not yet run from that same file."""
    files = sorted(Path(folder).glob(pattern))
    if not files:
        return {"files": 0, "batches_run": 0, "batches_skipped": 0}
    outcomes = [run_file(monitor, file) for file in files]
    batches = [batch for outcome in outcomes for batch in outcome.batches if batch.batch_date not in outcome.skipped]
    summary = {"files": len(files), "batches_run": len(batches),
               "batches_skipped": sum(len(outcome.skipped) for outcome in outcomes)}
    return _contract_failure(batches) or summary


def serve_folder(monitor: str, folder: Path, cron: str, pattern: str = "*.parquet") -> None:
    """Serve `monitor_folder` for the monitor and folder on a cron schedule until interrupted."""
    monitor_folder.serve(name=f"{monitor}-{folder.name or 'folder'}", cron=cron,
                         parameters={"monitor": monitor, "folder": str(folder), "pattern": pattern})
