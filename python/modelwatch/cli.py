"""The `modelwatch` command: parses arguments, calls one library function, prints.

Errors from the library (ModelwatchError) become `Error: ...` and its exit code.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shlex
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelwatch import __version__, pipeline, transform
from modelwatch.config import Settings
from modelwatch.errors import ModelwatchError, UsageError
from modelwatch.pipeline import outage, status
from modelwatch.postgres import db, embedded, schema

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
            elif isinstance(exc, psycopg.errors.InsufficientPrivilege):  # e.g. a view dbt made as another role
                first += " (`modelwatch init` hands modelwatch's tables and views back to modelwatch_pipeline)"
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


JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True,
    help="Print the outcome as JSON on stdout, and nothing else there (progress and errors go to stderr).")


def settings() -> Settings:
    """The environment's settings, with the project of the command line's --project."""
    context = click.get_current_context(silent=True)
    return Settings.from_env(project=context.find_root().params.get("project") if context else None)


def first_use(current: Settings, monitor: str | None) -> None:
    """Initialise a database that was never initialised, saying so in one line (stderr); an
    unknown monitor is refused first, before the database is reached."""
    current.monitor(monitor)
    url = pipeline.initialise_if_new(current)
    if url:
        err_console.print(f"initialised {db.describe(url)} (first use: schemas, roles, tables, seeds)",
                          markup=False, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


class OneLineErrors(click.Group):
    """Click's usage errors (a bad option value, an unknown command) as the one line and exit 2
    of every other error of the command, not click's usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            returned = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            command = exc.ctx.command_path.split(" ", 1)[1] if exc.ctx and " " in exc.ctx.command_path else ""
            where = f"modelwatch {command}: " if command else ""
            err_console.print(f"Error: {where}{exc.format_message()} (--help shows the usage)", markup=False,
                              highlight=False, soft_wrap=True)
            sys.exit(2)
        except click.ClickException as exc:
            err_console.print(f"Error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            err_console.print("Aborted!", markup=False, highlight=False)
            sys.exit(1)
        sys.exit(returned if isinstance(returned, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="modelwatch", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--project", default=None, metavar="DIR",
              help="The dbt project (default: MODELWATCH_PROJECT_DIR, else the current folder when it holds a "
                   "dbt_project.yml, else the taxi demo's, shipped with modelwatch).")
def main(debug: bool, project: str | None) -> None:
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


@db_group.command(name="env")
@handle_errors
def db_env() -> None:
    """Print `export` lines for plain dbt in the project folder: `eval "$(modelwatch db env)"`."""
    current = settings()
    values = {**db.dbt_env(db.database_url(current)), "DBT_PROFILES_DIR": str(current.profiles_dir)}
    for name, value in values.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@main.command(name="dbt", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                            "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def dbt_command(args: tuple[str, ...]) -> None:
    """Run any dbt command (`modelwatch dbt build`, `... dbt docs generate`) on the project and
    modelwatch's database, as the pipeline role; exits with dbt's code."""
    current = settings()
    url = db.database_url(current) if transform.is_subcommand(list(args)) else None
    sys.exit(transform.by_hand(current, url, list(args)))


@main.command(name="new")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def new_command(folder: Path) -> None:
    """Make a monitoring project of your own in DIR: its dbt project, which uses modelwatch's models
    as a dbt package, with one commented example monitor."""
    from modelwatch.scaffold import new_project

    for path in new_project(folder):
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)
    console.print(f"Next: declare your monitor in {folder / 'dbt_project.yml'}, then `cd {folder}` and "
                  "`modelwatch reference ...` (see its README.md).", soft_wrap=True, highlight=False)


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
    current = settings()
    first_use(current, monitor)
    trained = pipeline.train(current, reference, monitor)
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
    current = settings()
    first_use(current, monitor)
    stored = pipeline.reference(current, monitor, file)
    console.print(f"monitor {stored.monitor}: reference {stored.version} stored, {stored.rows:,} rows from "
                  f"{stored.file.name}", soft_wrap=True, highlight=False)
    if stored.coercions:
        console.print("coerced: " + "; ".join(stored.coercions), soft_wrap=True, highlight=False, markup=False)


@main.command()
@click.option("--batch-date", required=True, type=ISO_DATE,
              help="The batch: any day of its period (the monitor's batch_period).")
@click.option("--file", "file", required=True, type=click.Path(path_type=Path), help="File (parquet or CSV).")
@MONITOR_OPTION
@JSON_OPTION
@handle_errors
def run(batch_date: date, file: Path, monitor: str | None, as_json: bool) -> None:
    """Load, score, build and test one batch."""
    current = settings()
    first_use(current, monitor)
    with _progress_bar() as progress:
        outcome = pipeline.run_batch(current, batch_date, file, monitor, progress)
    if as_json:
        print_json(_batch_json(outcome))
    else:
        _print_batches([outcome])
        if outcome.coercions:
            console.print("coerced: " + "; ".join(outcome.coercions), soft_wrap=True, highlight=False, markup=False)
    if outcome.status == "failed":
        raise_contract(outcome)


def raise_contract(outcome: pipeline.BatchOutcome) -> None:
    from modelwatch.errors import ContractFailed

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
@JSON_OPTION
@handle_errors
def backfill(file: Path, start: date | None, end: date | None, force: bool, pace: float | None,
             monitor: str | None, as_json: bool) -> None:
    """Run every batch of a file, in order (resuming: finished batches are skipped)."""
    current = settings()
    first_use(current, monitor)
    with _progress_bar() as progress:
        if pace is not None:
            outcome = pipeline.replay(current, file, pace, start, end, progress, monitor_name=monitor)
        else:
            outcome = pipeline.backfill(current, file, start, end, progress=progress, force=force,
                                        monitor_name=monitor)
    _finish_range(outcome, as_json=as_json)


@main.command()
@click.option("--file", "file", required=True, type=click.Path(path_type=Path),
              help="File (parquet or CSV) with the monitor's id and target columns, rows of any batches.")
@MONITOR_OPTION
@handle_errors
def labels(file: Path, monitor: str | None) -> None:
    """Store late labels for rows already loaded and rebuild the marts of the batches they touch."""
    from modelwatch.pipeline.labels import store_labels

    outcome = store_labels(settings(), monitor, file)
    console.print(f"monitor {outcome.monitor}: {outcome.labelled:,} labels stored from {outcome.file.name}, "
                  f"{len(outcome.batches)} batches rebuilt", soft_wrap=True, highlight=False)
    if outcome.unknown_ids:
        console.print(f"{outcome.unknown_ids:,} ids are in no loaded batch: not loaded", soft_wrap=True,
                      highlight=False)


@main.command(name="status")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(min=0),
              help="How many recent batches.")
@MONITOR_OPTION
@click.option("--json", "as_json", is_flag=True,
              help="Print the batches as a JSON list (monitor, batch_date, status, rows_loaded, failing_checks, "
                   "times), newest first.")
@handle_errors
def status_command(limit: int, monitor: str | None, as_json: bool) -> None:
    """The monitor's recent batches."""
    current = settings()
    name = current.monitor(monitor).name
    url = db.database_url(current)
    with db.connect(url) as conn:
        schema.check_version(conn)
        outage.record_noted(current, conn, url)  # batches a lost server left unmarked
        rows = status.recent_batches(conn, name, limit)
        fresh = status.freshness(conn, name)
    if as_json:
        print_json([row.as_json() for row in rows])
        return
    table = Table("batch", "status", "rows loaded", "rows in file", "file", "seconds", "error")
    for row in rows:
        table.add_row(str(row.batch_date), row.status, _n(row.rows_loaded), _n(row.rows_in_file), row.file_name,
                      f"{row.seconds:.1f}" if row.seconds is not None else "", (row.error or "")[:80])
    console.print(table)
    for state in fresh:
        click.echo(state.describe())  # one line each, for scripts too (never wrapped)


@main.command(name="check-freshness")
@MONITOR_OPTION
@handle_errors
def check_freshness(monitor: str | None) -> None:
    """Exit 1 when a monitor's batches stopped arriving (every monitor, or --monitor's)."""
    current = settings()
    name = current.monitor(monitor).name if monitor else None
    with db.connect(db.database_url(current)) as conn:
        schema.check_version(conn)
        states = status.freshness(conn, name)
    for state in states:
        click.echo(state.describe())
    if any(state.stale for state in states):
        sys.exit(1)


@main.command()
@MONITOR_OPTION
@click.option("--cron", required=True, metavar="CRON", help='When to look for new files, e.g. "0 6 * * *".')
@click.option("--folder", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The folder new batch files arrive in.")
@click.option("--pattern", default="*.parquet", show_default=True, help="Which files of the folder.")
@handle_errors
def schedule(monitor: str | None, cron: str, folder: Path, pattern: str) -> None:
    """Serve the monitor's folder flow on a schedule (Prefect): every new file's batches, until stopped."""
    name = settings().monitor(monitor).name
    try:
        from modelwatch.pipeline import flows
    except ImportError as exc:
        raise UsageError(f"modelwatch schedule needs Prefect ({exc.name} is missing): "
                         "pip install 'modelwatch[prefect]'") from None
    flows.serve_folder(name, folder.resolve(), cron, pattern)


@main.command()
@handle_errors
def demo() -> None:
    """Train on January 2023 and run February 2023 as 28 daily batches (embedded database)."""
    from modelwatch.examples.nyc_taxi.demo import run_demo

    current = settings()
    with _progress_bar() as progress:
        outcome = run_demo(current, on_step=lambda text: console.print(f"- {text}"), progress=progress)
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
    from modelwatch.examples.nyc_taxi.fetch import fetch_month, TLC_BASE_URL

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
    from modelwatch.dashboards.static_page import render_overview  # plotly loads only for this command

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
    from modelwatch.drift.report import write_report

    console.print(str(write_report(settings(), batch_date, out, monitor)), soft_wrap=True, highlight=False)


class _Bar:
    """pipeline's Progress drawn on stderr: batches loaded of the total, and the phase running.
    The task counts one step more than the batches, the build, so that it is not finished (its
    spinner and clock stop then) while dbt builds."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._loaded = 0
        self._task = bar.add_task("starting", total=None, loaded=0, batches="?")

    def total(self, batches: int) -> None:
        self._bar.update(self._task, total=batches + 1, batches=batches)

    def loaded(self, day: date) -> None:
        self._loaded += 1
        self._bar.update(self._task, advance=1, loaded=self._loaded, description=f"loaded {day}")

    def phase(self, text: str) -> None:
        self._bar.update(self._task, description=text)

    def done(self) -> None:
        task = self._bar.tasks[self._task]
        self._bar.update(self._task, description="built and tested", completed=task.total or task.completed)


PROGRESS_COLUMNS = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.fields[loaded]}/{task.fields[batches]}"), TimeElapsedColumn())


@contextmanager
def _progress_bar() -> Iterator[_Bar]:
    """The bar on stderr when it is a terminal; a script's stderr gets only the errors."""
    with Progress(*PROGRESS_COLUMNS, console=err_console, transient=False,
                  disable=not err_console.is_terminal) as bar:
        progress = _Bar(bar)
        yield progress
        progress.done()


def _batch_json(batch: pipeline.BatchOutcome) -> dict[str, Any]:
    return {"monitor": batch.monitor, "batch_date": batch.batch_date.isoformat(), "status": batch.status,
            "rows_loaded": batch.rows_loaded, "rows_outside_period": batch.rows_outside_period,
            "failing_checks": list(batch.failing_checks), "seconds": round(batch.seconds, 3)}


def _range_json(outcome: pipeline.RangeOutcome) -> dict[str, Any]:
    return {"monitor": outcome.monitor, "file": str(outcome.file), "rows_in_file": outcome.rows_in_file,
            "rows_in_no_batch": outcome.rows_in_no_batch,
            "skipped": [day.isoformat() for day in outcome.skipped], "coercions": list(outcome.coercions),
            "batches": [_batch_json(batch) for batch in outcome.batches]}


def _finish_range(outcome: pipeline.RangeOutcome, exit_on_failure: bool = True, as_json: bool = False) -> None:
    if as_json:
        print_json(_range_json(outcome))
    else:
        _print_range(outcome)
    if outcome.failed and exit_on_failure:
        from modelwatch.errors import ContractFailed

        raise ContractFailed(
            f"{len(outcome.failed)} batch(es) failed their data contract: "
            + "; ".join(f"{b.batch_date}: {', '.join(b.failing_checks)}" for b in outcome.failed)
        )


def _print_range(outcome: pipeline.RangeOutcome) -> None:
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
        console.print("coerced: " + "; ".join(outcome.coercions), soft_wrap=True, highlight=False, markup=False)


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


def entry_point() -> None:
    """The `modelwatch` command: main(), then the process ends without the interpreter's own
    clean-up, which frees every object one by one: with dbt, pandas and psycopg loaded, about a
    second after the work is done (docs/performance.md). What an exit must do still happens:
    the threads are joined and the atexit handlers run (the drift worker stops, temporary
    folders go), and the output is flushed. (Tests call main(), which exits as usual.)"""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    threading._shutdown()  # noqa: SLF001 - what the interpreter runs first at exit: joins the threads
    atexit._run_exitfuncs()  # noqa: SLF001 - and then this
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader gone: nothing more can be said
            pass
    os._exit(code)


def _exit_code(code: object) -> int:
    """The process's exit status for SystemExit's code, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    entry_point()
