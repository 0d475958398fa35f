"""The `modelwatch` command: parses arguments, calls one library function, prints.

Errors from the library (ModelwatchError) become `Error: ...` and its exit code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import db, embedded, outage, pipeline, schema, status
from .config import Settings
from .errors import ModelwatchError

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)


def handle_errors(func: F) -> F:
    """Library errors -> one line on stderr and their exit code (--debug shows the traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return func(*args, **kwargs)
        except ModelwatchError as exc:
            if debug:
                raise
            err_console.print(f"Error: {exc}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except psycopg.Error as exc:
            if debug:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)):
                first += " (run `modelwatch init` to create or upgrade the schema)"
            err_console.print(f"Error: database: {first}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(3)
        except Exception as exc:  # noqa: BLE001 - a defect of modelwatch's still gets one line, not a traceback
            if debug:
                raise
            first = " ".join(str(exc).split())[:300]
            err_console.print(f"Error: internal error, {type(exc).__name__}: {first} (--debug shows where)",
                              markup=False, highlight=False, soft_wrap=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


class IsoDate(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return datetime.strptime(str(value), "%Y-%m-%d").date()
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


ISO_DATE = IsoDate()

MONITOR_OPTION = click.option(
    "--monitor", "monitor", default=None, metavar="NAME",
    help="The monitor (a key of vars.monitors in dbt_project.yml; default: vars.default_monitor).")


def settings() -> Settings:
    return Settings.from_env()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """modelwatch: batch model monitoring on PostgreSQL and dbt."""


@main.group(name="db")
def db_group() -> None:
    """The embedded PostgreSQL server (under MODELWATCH_HOME)."""


@db_group.command(name="start")
@handle_errors
def db_start() -> None:
    """Start the embedded server and print its URL."""
    console.print(embedded.start(settings().pgdata), soft_wrap=True, highlight=False)


@db_group.command(name="stop")
@handle_errors
def db_stop() -> None:
    """Stop the embedded server."""
    stopped = embedded.stop(settings().pgdata)
    console.print("stopped" if stopped else "not running")


@db_group.command(name="url")
@handle_errors
def db_url() -> None:
    """Print the database URL in use (starts the embedded server if needed)."""
    console.print(db.database_url(settings()), soft_wrap=True, highlight=False)


@db_group.command(name="status")
@handle_errors
def db_status() -> None:
    """Say which database is in use and whether it answers."""
    current = settings()
    if current.database_url:
        db.check_database(current.database_url)
        console.print(f"external server {db.describe(current.database_url)}: up")
        return
    url = embedded.running_url(current.pgdata)
    console.print(f"embedded server in {current.pgdata}: " + ("running, " + url if url else "stopped"),
                  soft_wrap=True, highlight=False)


@main.command()
@handle_errors
def init() -> None:
    """Create schemas, roles, shared tables and each declared monitor's tables; load the dbt seeds (idempotent)."""
    url = pipeline.init(settings())
    console.print(f"initialised {db.describe(url)}")


@main.command()
@click.option("--reference", "reference", required=True, type=click.Path(path_type=Path),
              help="File (parquet or CSV) to train on; its rows become the drift reference.")
@MONITOR_OPTION
@handle_errors
def train(reference: Path, monitor: str | None) -> None:
    """Train the model a monitor declares (its `model` key) and register it with its reference set."""
    trained = pipeline.train(settings(), reference, monitor)
    console.print(
        f"model {trained.version}: {trained.train_rows} training rows, train MAE {trained.train_mae:.3f}, "
        f"validation MAE {trained.validation_mae:.3f} ({trained.validation_rows} rows)"
    )


@main.command()
@click.option("--file", "file", required=True, type=click.Path(path_type=Path),
              help="File (parquet or CSV) with the monitor's features, predictions (and targets, where known).")
@MONITOR_OPTION
@handle_errors
def reference(file: Path, monitor: str | None) -> None:
    """Store the monitor's reference set, which its batches' drift is measured against."""
    stored = pipeline.reference(settings(), monitor, file)
    console.print(f"monitor {stored.monitor}: reference {stored.version} stored, {stored.rows:,} rows from "
                  f"{stored.file.name}", soft_wrap=True, highlight=False)
    if stored.coercions:
        console.print("coerced: " + "; ".join(stored.coercions), soft_wrap=True, highlight=False)


@main.command()
@click.option("--batch-date", required=True, type=ISO_DATE,
              help="The batch: any day of its period (the monitor's batch_period).")
@click.option("--file", "file", required=True, type=click.Path(path_type=Path), help="File (parquet or CSV).")
@MONITOR_OPTION
@handle_errors
def run(batch_date: date, file: Path, monitor: str | None) -> None:
    """Load, score, build and test one batch."""
    outcome = pipeline.run_batch(settings(), batch_date, file, monitor)
    _print_batches([outcome])
    if outcome.status == "failed":
        raise_contract(outcome)


def raise_contract(outcome: pipeline.BatchOutcome) -> None:
    from .errors import ContractFailed

    raise ContractFailed(f"batch {outcome.batch_date} failed its data contract: " + "; ".join(outcome.failing_checks))


@main.command()
@click.option("--file", "file", required=True, type=click.Path(path_type=Path), help="File (parquet or CSV).")
@click.option("--start", type=ISO_DATE, default=None,
              help="First batch (default: the first of the file's main months).")
@click.option("--end", type=ISO_DATE, default=None, help="Last batch (default: the last of the file's main months).")
@click.option("--force", is_flag=True, help="Redo batches already finished from this same file.")
@click.option("--pace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Replay: one batch every SECONDS, each its own build, to watch Grafana fill (redoes batches).")
@MONITOR_OPTION
@handle_errors
def backfill(file: Path, start: date | None, end: date | None, force: bool, pace: float | None,
             monitor: str | None) -> None:
    """Run every batch of a file, in order (resuming: finished batches are skipped)."""
    if pace is not None:
        outcome = _with_progress(
            lambda progress: pipeline.replay(settings(), file, pace, start, end, progress, monitor_name=monitor))
        _finish_range(outcome)
        return
    outcome = _with_progress(
        lambda progress: pipeline.backfill(settings(), file, start, end, progress=progress, force=force,
                                           monitor_name=monitor)
    )
    _finish_range(outcome)


@main.command(name="status")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(min=0),
              help="How many recent batches.")
@MONITOR_OPTION
@handle_errors
def status_command(limit: int, monitor: str | None) -> None:
    """The monitor's recent batches."""
    current = settings()
    name = current.monitor(monitor).name
    url = db.database_url(current)
    with db.connect(url) as conn:
        schema.check_version(conn)
        outage.record_noted(current, conn, url)  # batches a lost server left unmarked
        rows = status.recent_batches(conn, name, limit)
    table = Table("batch", "status", "rows loaded", "rows in file", "file", "seconds", "error")
    for row in rows:
        table.add_row(str(row.batch_date), row.status, _n(row.rows_loaded), _n(row.rows_in_file), row.file_name,
                      f"{row.seconds:.1f}" if row.seconds is not None else "", (row.error or "")[:80])
    console.print(table)


@main.command()
@handle_errors
def demo() -> None:
    """Train on January 2023 and run February 2023 as 28 daily batches (embedded database)."""
    from .examples.nyc_taxi.demo import run_demo

    current = settings()
    outcome = _with_progress(
        lambda progress: run_demo(current, on_step=lambda text: console.print(f"- {text}"), progress=progress)
    )
    _finish_range(outcome, exit_on_failure=False)
    _print_dashboard(_render_dashboard(current, current.reports_dir / "dashboard.html"))
    console.print(
        "\nNext: `modelwatch status`; the marts are in schema `marts` of "
        f"{db.describe(db.database_url(current))} (`modelwatch db url` prints the URL); "
        "docker compose up -d gives Grafana on http://localhost:3000 (see README)."
    )


@main.command()
@click.argument("month")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder to write to (default: MODELWATCH_HOME/data).")
@click.option("--base-url", default=None, help="Where the monthly files live (default: the TLC's address).")
@handle_errors
def fetch(month: str, out_dir: Path | None, base_url: str | None) -> None:
    """Download a month of the nyc_taxi monitor's data (TLC files), e.g. `modelwatch fetch 2024-05`."""
    from .examples.nyc_taxi.fetch import TLC_BASE_URL, fetch_month

    path = fetch_month(month, out_dir or settings().home / "data", base_url or TLC_BASE_URL)
    console.print(str(path), soft_wrap=True, highlight=False)


@main.command()
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="HTML file to write (default: MODELWATCH_HOME/reports/dashboard.html).")
@MONITOR_OPTION
@handle_errors
def dashboard(out: Path | None, monitor: str | None) -> None:
    """The Grafana overview's charts as one static HTML page (same SQL, no Grafana needed)."""
    current = settings()
    _print_dashboard(_render_dashboard(current, out or current.reports_dir / "dashboard.html", monitor))


def _render_dashboard(current: Settings, out: Path, monitor: str | None = None) -> Any:
    from .dashboard import render_overview  # plotly loads only for this command

    return render_overview(current, out, current.monitor(monitor).name)


def _print_dashboard(page: Any) -> None:
    for panel in page.failed:
        err_console.print(f"not drawn: {panel.query.title} ({panel.error})", markup=False, highlight=False)
    console.print(f"dashboard: {page.path}", soft_wrap=True, highlight=False)


@main.command()
@click.option("--batch-date", required=True, type=ISO_DATE, help="The batch to report on (any day of its period).")
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="HTML file to write (default: MODELWATCH_HOME/reports/drift_<monitor>_<date>.html).")
@MONITOR_OPTION
@handle_errors
def report(batch_date: date, out: Path | None, monitor: str | None) -> None:
    """Write Evidently's HTML report (drift, data summary, tests) for a batch against its reference."""
    from .report import write_report

    console.print(str(write_report(settings(), batch_date, out, monitor)), soft_wrap=True, highlight=False)


def _with_progress(work: Callable[[pipeline.Progress], pipeline.RangeOutcome]) -> pipeline.RangeOutcome:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("loading batches", total=None)

        def step(day: date) -> None:
            bar.update(task, advance=1, description=f"loaded {day}")

        outcome = work(step)
        bar.update(task, description="built and tested")
    return outcome


def _finish_range(outcome: pipeline.RangeOutcome, exit_on_failure: bool = True) -> None:
    _print_batches(list(outcome.batches))
    console.print(
        f"{len(outcome.batches)} batches of {outcome.monitor} from {outcome.file.name}: {outcome.rows_in_file} "
        f"rows in the file, {outcome.rows_in_file - outcome.rows_in_no_batch} loaded, {outcome.rows_in_no_batch} "
        "in no batch (outside the periods processed)."
    )
    if outcome.skipped:
        console.print(f"{len(outcome.skipped)} batches were already done from this file and were skipped "
                      "(--force redoes them).")
    if outcome.coercions:
        console.print("coerced: " + "; ".join(outcome.coercions), soft_wrap=True)
    if outcome.failed and exit_on_failure:
        from .errors import ContractFailed

        raise ContractFailed(
            f"{len(outcome.failed)} batch(es) failed their data contract: "
            + "; ".join(f"{b.batch_date}: {', '.join(b.failing_checks)}" for b in outcome.failed)
        )


def _print_batches(batches: list[pipeline.BatchOutcome]) -> None:
    table = Table("batch", "rows loaded", "gate", "seconds", "failing checks")
    colours = {"passed": "green", "warned": "yellow", "failed": "red"}
    for batch in batches:
        table.add_row(str(batch.batch_date), _n(batch.rows_loaded),
                      f"[{colours.get(batch.status, 'white')}]{batch.status}[/]", f"{batch.seconds:.2f}",
                      "; ".join(batch.failing_checks))
    console.print(table)


def _n(value: int | None) -> str:
    return f"{value:,}" if value is not None else ""


if __name__ == "__main__":
    main()
