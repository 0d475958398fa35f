"""The CLI for scripts and first use: --version, JSON on stdout, a database initialised on first use."""

from __future__ import annotations

import json
from datetime import date

import psycopg
import pyarrow.parquet as pq
from click.testing import CliRunner

from modelwatch import __version__
from modelwatch.cli import main
from modelwatch.config import Settings
from modelwatch.postgres import schema

from .conftest import invoke_cli, nannyml_file

CAR = "car_price"


def test_progress_bar_shows_the_total_and_the_phase() -> None:
    """What a terminal shows of a range: batches loaded of the total, the phase running."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from modelwatch.cli import _Bar, PROGRESS_COLUMNS

    screen = Console(file=io.StringIO(), force_terminal=True, width=120)
    with Progress(*PROGRESS_COLUMNS, console=screen, auto_refresh=False) as bar:
        progress = _Bar(bar)
        progress.total(28)
        for day in range(1, 4):
            progress.loaded(date(2023, 2, day))
        progress.phase("dbt build: the drift marts and their tests")
        bar.refresh()
        shown = screen.file.getvalue()
        assert not bar.tasks[0].finished  # the build is a step of its own: the clock goes on
        progress.done()
        assert bar.tasks[0].finished
    assert "3/28" in shown and "dbt build: the drift marts and their tests" in shown


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"modelwatch {__version__}\n"


def test_the_installed_command_exits_with_the_commands_status(tmp_path) -> None:
    """The `modelwatch` executable skips the interpreter's clean-up at exit (cli.entry_point): its
    output still arrives whole, an atexit handler still runs, and the exit status is the command's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    command = str(Path(sys.executable).with_name("modelwatch"))
    version = subprocess.run([command, "--version"], capture_output=True, text=True)
    assert (version.returncode, version.stdout, version.stderr) == (0, f"modelwatch {__version__}\n", "")
    helped = subprocess.run([command, "run", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.rstrip().endswith(
        CliRunner().invoke(main, ["run", "--help"]).stdout.rstrip().splitlines()[-1])
    refused = subprocess.run([command, "run", "--monitor", "no_such_monitor", "--batch-date", "2024-01-01",
                              "--file", str(tmp_path / "none.parquet")], capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr.startswith("Error: unknown monitor 'no_such_monitor'") and refused.stderr.count("\n") == 1
    # an atexit handler of the process (here registered by a sitecustomize) still runs
    (tmp_path / "sitecustomize.py").write_text(
        "import atexit, os\n"
        f"atexit.register(lambda: open({str(tmp_path / 'exited')!r}, 'w').write('yes'))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    assert subprocess.run([command, "--version"], capture_output=True, env=env).returncode == 0
    assert (tmp_path / "exited").read_text() == "yes"


def _rows_per_day(path, days: list[date]) -> dict[date, int]:
    stamps = pq.read_table(path, columns=["timestamp"])["timestamp"].to_pandas().dt.date
    return {day: int((stamps == day).sum()) for day in days}


def test_first_use_then_json_outcomes(fresh_settings: Settings) -> None:
    """On a database never initialised, `reference` initialises it (one line on stderr); then
    backfill, run and status print JSON on stdout and nothing else there."""
    reference_file = nannyml_file("regression_synthetic_reference.parquet")
    analysis_file = nannyml_file("regression_synthetic_analysis.parquet")
    url = fresh_settings.database_url
    with psycopg.connect(url) as conn:
        assert conn.execute("select to_regclass('raw.schema_version')").fetchone() == (None,)

    stored = invoke_cli(fresh_settings, "reference", "--monitor", CAR, "--file", str(reference_file))
    assert stored.exit_code == 0, stored.output
    notices = [line for line in stored.stderr.splitlines() if line.startswith("initialised ")]
    assert len(notices) == 1 and notices[0].endswith("(first use: schemas, roles, tables, seeds)"), stored.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("select max(version) from raw.schema_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert conn.execute("select row_count from raw.references where monitor = %s", (CAR,)).fetchall() == [
            (60_000,)]
    again = invoke_cli(fresh_settings, "reference", "--monitor", CAR, "--file", str(reference_file))
    assert again.exit_code == 0 and "initialised" not in again.stderr  # only the first time

    days = [date(2017, 2, 26), date(2017, 2, 27), date(2017, 2, 28)]
    expected = _rows_per_day(analysis_file, days)
    backfill = invoke_cli(fresh_settings, "backfill", "--monitor", CAR, "--file", str(analysis_file),
                       "--start", "2017-02-26", "--end", "2017-02-28", "--json")
    assert backfill.exit_code == 0, backfill.output
    outcome = json.loads(backfill.stdout)  # the whole of stdout is one JSON document
    assert outcome["monitor"] == CAR and outcome["rows_in_file"] == 60_000
    assert [b["batch_date"] for b in outcome["batches"]] == [day.isoformat() for day in days]
    assert [b["rows_loaded"] for b in outcome["batches"]] == [expected[day] for day in days]
    assert outcome["rows_in_no_batch"] == 60_000 - sum(expected.values())
    assert {b["status"] for b in outcome["batches"]} <= {"passed", "warned"}
    assert outcome["skipped"] == []
    assert backfill.stderr == ""  # a script's stderr (not a terminal) gets no progress bar

    run = invoke_cli(fresh_settings, "run", "--monitor", CAR, "--batch-date", "2017-03-01", "--file", str(analysis_file),
                  "--json")
    assert run.exit_code == 0, run.output
    single = json.loads(run.stdout)
    assert single["batch_date"] == "2017-03-01"
    assert single["rows_loaded"] == _rows_per_day(analysis_file, [date(2017, 3, 1)])[date(2017, 3, 1)]
    assert single["rows_outside_period"] == 60_000 - single["rows_loaded"]

    shown = invoke_cli(fresh_settings, "status", "--monitor", CAR, "--json")
    assert shown.exit_code == 0, shown.output
    listed = json.loads(shown.stdout)
    with psycopg.connect(url) as conn:
        logged = conn.execute(
            "select batch_date, status, rows_loaded, error, started_at, finished_at from raw.batches"
            " where monitor = %s order by batch_date desc", (CAR,)).fetchall()
    assert len(listed) == 4
    for entry, (day, state, rows, error, started, finished) in zip(listed, logged, strict=True):
        assert entry["monitor"] == CAR
        assert entry["batch_date"] == day.isoformat() and entry["status"] == state and entry["rows_loaded"] == rows
        assert entry["failing_checks"] == (error.split("; ") if error else [])
        assert entry["started_at"] == started.isoformat() and entry["finished_at"] == finished.isoformat()
        assert entry["seconds"] == (finished - started).total_seconds()


def test_failed_batch_json_and_exit_1(fresh_settings: Settings, tmp_path) -> None:
    """A batch that fails its contract: its JSON names the failing check, stdout holds only
    that, the one-line error goes to stderr, exit 1."""
    import pyarrow as pa

    reference_file = nannyml_file("regression_synthetic_reference.parquet")
    table = pq.read_table(nannyml_file("regression_synthetic_analysis.parquet"))
    day = table.filter(pa.compute.equal(pa.compute.cast(table["timestamp"], pa.date32()), date(2017, 2, 20)))
    ids = day["id"].to_pylist()
    ids[1] = ids[0]  # one duplicate id: the contract's duplicate_ids check (max 0, error)
    broken = day.set_column(day.schema.get_field_index("id"), "id", pa.array(ids, day["id"].type))
    path = tmp_path / "duplicated.parquet"
    pq.write_table(broken, path)
    assert invoke_cli(fresh_settings, "reference", "--monitor", CAR, "--file", str(reference_file)).exit_code == 0
    run = invoke_cli(fresh_settings, "run", "--monitor", CAR, "--batch-date", "2017-02-20", "--file", str(path), "--json")
    assert run.exit_code == 1, run.output
    outcome = json.loads(run.stdout)
    assert outcome["status"] == "failed" and outcome["rows_loaded"] == day.num_rows
    assert [check for check in outcome["failing_checks"] if check.startswith("duplicate_ids")] == [
        "duplicate_ids = 1, expected <= 0 (error)"], outcome["failing_checks"]
    assert run.stderr.splitlines()[-1].startswith("Error: batch 2017-02-20 failed its data contract: ")


def _owners(url: str, schemas: tuple[str, ...]) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(
            """select distinct pg_get_userbyid(c.relowner) from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = any(%s) and c.relkind in ('r', 'v', 'p')""", (list(schemas),))}


def test_dbt_by_hand_then_run(fresh_settings: Settings) -> None:
    """`modelwatch dbt build` acts as the pipeline role on modelwatch's database: what it makes
    belongs to modelwatch_pipeline, and the next `modelwatch run` replaces it without a complaint;
    a `dev` target builds schemas of its own and leaves the pipeline's alone."""
    reference_file = nannyml_file("regression_synthetic_reference.parquet")
    analysis_file = nannyml_file("regression_synthetic_analysis.parquet")
    url = fresh_settings.database_url
    assert invoke_cli(fresh_settings, "reference", "--monitor", CAR, "--file", str(reference_file)).exit_code == 0
    first = invoke_cli(fresh_settings, "run", "--monitor", CAR, "--batch-date", "2017-02-20", "--file", str(analysis_file))
    assert first.exit_code == 0, first.output

    built = invoke_cli(fresh_settings, "dbt", "build", "--vars", '{"monitor": "car_price"}')
    assert built.exit_code == 0, built.output
    assert "Completed successfully" in built.stdout and "ERROR=0" in built.stdout
    assert _owners(url, ("staging", "marts", "audit")) == {"modelwatch_pipeline"}

    again = invoke_cli(fresh_settings, "run", "--monitor", CAR, "--batch-date", "2017-02-21", "--file",
                    str(analysis_file), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rows_loaded"] == _rows_per_day(analysis_file, [date(2017, 2, 21)])[
        date(2017, 2, 21)]
    with psycopg.connect(url) as conn:
        # both batches' marts survive the build by hand and the run after it
        assert conn.execute("select batch_date, status from marts.batch_health where monitor = %s order by 1",
                            (CAR,)).fetchall() == [(date(2017, 2, 20), first_status(url, "2017-02-20")),
                                                   (date(2017, 2, 21), first_status(url, "2017-02-21"))]

    dev = invoke_cli(fresh_settings, "dbt", "run", "--target", "dev", "--select", "stg_batches")
    assert dev.exit_code == 0, dev.output
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from dev_staging.stg_batches").fetchone() == (2,)
    nothing = invoke_cli(fresh_settings, "dbt", "run", "--select", "no_such_model_anywhere")
    assert nothing.exit_code == 0 and "Nothing to do" in nothing.stdout
    broken = invoke_cli(fresh_settings, "dbt", "no-such-command")
    assert broken.exit_code == 2


def first_status(url: str, day: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select status from raw.batches where monitor = %s and batch_date = %s",
                            (CAR, day)).fetchone()[0]


def test_parse_has_no_deprecation_warning(tmp_path) -> None:
    """dbt parses the project without one deprecation warning (no database needed)."""
    from dbt.cli.main import dbtRunner

    from modelwatch.config import PROJECT_DIR

    lines: list[str] = []
    result = dbtRunner(callbacks=[lambda event: lines.append(f"{event.info.name}: {event.info.msg}")]).invoke(
        ["parse", "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR / "profiles"),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"), "--no-partial-parse",
         "--show-all-deprecations"])
    assert result.success, lines
    assert [line for line in lines if "Deprecation" in line.split(":")[0]] == []


def _readme_cli_usages() -> list[str]:
    """The first column of the README's CLI table: `modelwatch COMMAND [options]`, one a row."""
    from modelwatch.config import PROJECT_DIR

    text = (PROJECT_DIR / "README.md").read_text()
    table = text.split("## CLI", 1)[1].split("\n| command |", 1)[1].split("\n\n", 1)[0]
    return [line.split("`")[1].replace("\\|", "|") for line in table.splitlines()[2:]]


def test_readme_cli_table_matches_the_commands() -> None:
    """Every command is in the README's table with exactly the options its --help lists."""
    import re

    import click

    rows: dict[str, set[str]] = {}
    for usage in _readme_cli_usages():
        words = usage.split()
        assert words[0] == "modelwatch", usage
        rows[words[1]] = set(re.findall(r"--[a-z-]+", usage))
        if words[1] == "db":
            assert words[2].split("|") == list(main.commands["db"].commands), usage
    assert sorted(rows) == sorted(main.commands)
    for name, command in main.commands.items():
        if isinstance(command, click.Group):
            continue
        options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts
                   if opt.startswith("--") and opt != "--help"}
        assert rows[name] == options, name
