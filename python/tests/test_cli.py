"""The CLI: exit codes and the one-line messages people see."""

from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from modelwatch.cli import main
from modelwatch.config import Settings

from .conftest import FEBRUARY, JANUARY, error_line, invoke_cli, nannyml_file, shared_file


def test_missing_file(trained_settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    result = invoke_cli(trained_settings, "run", "--batch-date", "2023-02-14", "--file", str(missing))
    assert result.exit_code == 2
    assert error_line(result) == f"Error: {missing}: no such file"


def test_file_that_is_not_parquet(trained_settings: Settings, tmp_path: Path) -> None:
    bogus = tmp_path / "trips.parquet"
    bogus.write_text("VendorID,fare_amount\n1,2.5\n")
    result = invoke_cli(trained_settings, "run", "--batch-date", "2023-02-14", "--file", str(bogus))
    assert result.exit_code == 2
    assert error_line(result).startswith(f"Error: {bogus}: not a readable parquet file (")


def test_truncated_parquet(trained_settings: Settings, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(FEBRUARY.read_bytes()[: 500_000])
    result = invoke_cli(trained_settings, "run", "--batch-date", "2023-02-14", "--file", str(truncated))
    assert result.exit_code == 2
    assert error_line(result).startswith(f"Error: {truncated}: not a readable parquet file (")


def test_file_lacking_a_required_column(trained_settings: Settings, tmp_path: Path) -> None:
    table = pq.read_table(FEBRUARY).drop_columns(["fare_amount"])
    path = tmp_path / "no_fare.parquet"
    pq.write_table(table, path)
    result = invoke_cli(trained_settings, "run", "--batch-date", "2023-02-14", "--file", str(path))
    assert result.exit_code == 2
    assert error_line(result) == f"Error: {path}: required column 'fare_amount' is missing"
    import psycopg

    with psycopg.connect(trained_settings.database_url) as conn:
        assert conn.execute("select count(*) from raw.batches").fetchone() == (0,)


def test_text_in_a_numeric_column(trained_settings: Settings, tmp_path: Path) -> None:
    import pyarrow as pa

    table = pq.read_table(FEBRUARY).slice(0, 100)
    fares = pa.array(["12.5"] * 99 + ["twelve"])
    table = table.set_column(table.schema.get_field_index("fare_amount"), "fare_amount", fares)
    path = tmp_path / "text_fare.parquet"
    pq.write_table(table, path)
    result = invoke_cli(trained_settings, "run", "--batch-date", "2023-02-01", "--file", str(path))
    assert result.exit_code == 2
    assert error_line(result).startswith(
        f"Error: {path}: column 'fare_amount' has type string and cannot be read as double"
    )


def test_batch_date_that_is_not_a_date(trained_settings: Settings) -> None:
    result = invoke_cli(trained_settings, "run", "--batch-date", "2023-02-30", "--file", str(FEBRUARY))
    assert result.exit_code == 2
    assert "'2023-02-30' is not a date (YYYY-MM-DD)" in result.output


def test_unreachable_database_exits_3_naming_the_address(tmp_path: Path) -> None:
    env = {"MODELWATCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "MODELWATCH_HOME": str(tmp_path)}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 3
    line = error_line(result)
    assert line.startswith("Error: cannot connect to PostgreSQL at 127.0.0.1:1/none")
    assert "MODELWATCH_DATABASE_URL" in line


def test_status_lists_batches(demo_settings: Settings) -> None:
    result = invoke_cli(demo_settings, "status", "--limit", "3")
    assert result.exit_code == 0
    assert "2023-02-28" in result.output and "2023-02-26" in result.output
    assert "2023-02-25" not in result.output


@pytest.fixture
def tlc_mirror(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server laid out like the TLC's trip-data folder."""
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "green_tripdata_2024-01.parquet").write_bytes(shared_file("green_tripdata_2024-01.parquet").read_bytes())
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
        pass


def test_fetch_downloads_a_month(tlc_mirror: str, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = CliRunner().invoke(main, ["fetch", "2024-01", "--out", str(out), "--base-url", tlc_mirror],
                                env={"MODELWATCH_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    fetched = out / "green_tripdata_2024-01.parquet"
    assert pq.read_metadata(fetched).num_rows == 56_551
    assert not list(out.glob("*.part"))


def test_fetch_missing_month_names_the_url(tlc_mirror: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["fetch", "2024-05", "--out", str(tmp_path), "--base-url", tlc_mirror],
                                env={"MODELWATCH_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert error_line(result) == f"Error: {tlc_mirror}/green_tripdata_2024-05.parquet: HTTP 404 File not found"
    assert list(tmp_path.glob("*.parquet*")) == []


def test_fetch_rejects_a_bad_month(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["fetch", "2024-13"], env={"MODELWATCH_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert error_line(result) == "Error: month '2024-13' is not YYYY-MM"


def test_day_with_no_rows_in_the_file(trained_settings: Settings) -> None:
    result = invoke_cli(trained_settings, "run", "--batch-date", "2023-03-05", "--file", str(FEBRUARY))
    assert result.exit_code == 2
    assert error_line(result) == (
        f"Error: {FEBRUARY}: no rows with a pickup_datetime in the day of 2023-03-05 "
        "(its rows' days run from 2023-02-01 to 2023-02-28)"
    )


@pytest.fixture
def server_home() -> Iterator[Path]:
    """A folder outside pytest's basetemp, which another pytest session may make 0700 (and so
    lock the embedded server's own user out) while this test runs."""
    home = Path(tempfile.mkdtemp(prefix="modelwatch-test-db-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_embedded_server_commands(server_home: Path) -> None:
    """db start / url / status / stop on an embedded server of this test's own."""
    tmp_path = server_home
    env = {"MODELWATCH_HOME": str(tmp_path / "home"), "MODELWATCH_DATABASE_URL": ""}
    runner = CliRunner()
    stopped = runner.invoke(main, ["db", "status"], env=env)
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    started = runner.invoke(main, ["db", "start"], env=env)
    try:
        assert started.exit_code == 0, started.output
        url = started.output.strip()
        assert url.endswith(f"/modelwatch?host={tmp_path / 'home' / 'pgdata'}")
        assert runner.invoke(main, ["db", "url"], env=env).output.strip() == url
        assert f"running, {url}" in runner.invoke(main, ["db", "status"], env=env).output
        import psycopg

        with psycopg.connect(url) as conn:
            assert conn.execute("select current_database()").fetchone() == ("modelwatch",)
    finally:
        assert runner.invoke(main, ["db", "stop"], env=env).output.strip() == "stopped"
    assert runner.invoke(main, ["db", "stop"], env=env).output.strip() == "not running"


def _declared_monitors() -> list[str]:
    import yaml

    from modelwatch.config import PROJECT_DIR

    return sorted(yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["vars"]["monitors"])


@pytest.mark.parametrize("command", [
    ("run", "--batch-date", "2023-02-14", "--file", str(FEBRUARY)),
    ("backfill", "--file", str(FEBRUARY)),
    ("train", "--reference", str(JANUARY)),
    ("reference", "--file", str(JANUARY)),
    ("status",),
    ("report", "--batch-date", "2023-02-14"),
    ("dashboard",),
], ids=lambda command: command[0])
def test_unknown_monitor_names_the_known_ones(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Before anything else, the database included: an unreachable one would exit 3."""
    env = {"MODELWATCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "MODELWATCH_HOME": str(tmp_path)}
    result = CliRunner().invoke(main, [*command, "--monitor", "nyc_taxis"], env=env)
    assert result.exit_code == 2, result.output
    known = _declared_monitors()
    assert "nyc_taxi" in known and len(known) > 1
    assert error_line(result) == (
        f"Error: unknown monitor 'nyc_taxis' (declared in dbt_project.yml vars.monitors: {', '.join(known)})"
    )
    assert not (tmp_path / "reports").exists()


def test_status_limit_must_not_be_negative(trained_settings: Settings) -> None:
    result = invoke_cli(trained_settings, "status", "--limit", "-1")
    assert result.exit_code == 2
    assert "Invalid value for '--limit': -1 is not in the range x>=0." in result.output


def test_status_shows_the_monitor_asked_for(demo_settings: Settings) -> None:
    """The demo's batches are the taxi's (the default monitor); another monitor has none of them."""
    assert "2023-02-28" in invoke_cli(demo_settings, "status", "--monitor", "nyc_taxi", "--limit", "1").output
    other = invoke_cli(demo_settings, "status", "--monitor", "car_price")
    assert other.exit_code == 0, other.output
    assert "2023-02" not in other.output


def test_reference_of_a_monitor_whose_files_bring_predictions(fresh_settings: Settings) -> None:
    """car_price (NannyML's regression example): no model of modelwatch's, so no `train`; its
    reference file, with predictions and targets, is stored as it is, and its batches are
    compared with it."""
    import psycopg

    from modelwatch import pipeline

    reference_file = nannyml_file("regression_synthetic_reference.parquet")
    analysis_file = nannyml_file("regression_synthetic_analysis.parquet")
    pipeline.init(fresh_settings)
    url = fresh_settings.database_url

    untrained = invoke_cli(fresh_settings, "train", "--monitor", "car_price", "--reference", str(reference_file))
    assert untrained.exit_code == 2
    assert error_line(untrained) == (
        "Error: monitor car_price declares no model for modelwatch to train: its files bring their predictions "
        "(store its reference with `modelwatch reference --monitor car_price --file FILE`)"
    )
    unreferenced = invoke_cli(fresh_settings, "run", "--monitor", "car_price", "--batch-date", "2017-02-20",
                           "--file", str(analysis_file))
    assert unreferenced.exit_code == 2
    assert error_line(unreferenced) == (
        "Error: monitor car_price has no reference set: store one with "
        "`modelwatch reference --monitor car_price --file FILE`"
    )
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from raw.batches").fetchone() == (0,)

    stored = invoke_cli(fresh_settings, "reference", "--monitor", "car_price", "--file", str(reference_file))
    assert stored.exit_code == 0, stored.output
    with psycopg.connect(url) as conn:
        version, file_name, row_count, model_version = conn.execute(
            "select version, file_name, row_count, model_version from raw.references where monitor = 'car_price'"
        ).fetchone()
        rows, predictions, targets, mean_prediction = conn.execute(
            "select count(*), count(y_pred), count(y_true), avg(y_pred) from raw.car_price__reference"
            " where reference_version = %s", (version,)
        ).fetchone()
    assert stored.output.splitlines()[0] == (
        f"monitor car_price: reference {version} stored, 60,000 rows from regression_synthetic_reference.parquet"
    )
    assert (file_name, row_count, model_version) == ("regression_synthetic_reference.parquet", 60_000, None)
    expected = pq.read_table(reference_file, columns=["y_pred"])["y_pred"].to_numpy()
    assert (rows, predictions, targets) == (60_000, 60_000, 60_000)
    assert abs(mean_prediction - expected.mean()) < 1e-6 * abs(expected.mean())

    run = invoke_cli(fresh_settings, "run", "--monitor", "car_price", "--batch-date", "2017-02-20",
                  "--file", str(analysis_file))
    assert run.exit_code == 0, run.output
    shown = invoke_cli(fresh_settings, "status", "--monitor", "car_price")
    assert "2017-02-20" in shown.output
    assert "2017-02-20" not in invoke_cli(fresh_settings, "status").output  # the default monitor: the taxi
    analysis_day = pq.read_table(analysis_file, columns=["timestamp"])["timestamp"].to_pandas().dt.date
    with psycopg.connect(url) as conn:
        assert conn.execute(
            """select monitor, batch_date, batch_end, rows_loaded, model_version, reference_version
               from raw.batches"""
        ).fetchall() == [("car_price", date(2017, 2, 20), date(2017, 2, 20),
                          int((analysis_day == date(2017, 2, 20)).sum()), None, version)]
        assert conn.execute("select count(*) from raw.nyc_taxi__rows").fetchone() == (0,)


def test_reference_of_the_taxi_is_scored_by_its_model(trained_settings: Settings) -> None:
    """`modelwatch reference` for a monitor with a model of modelwatch's: every row of the file,
    scored by the latest model; later batches are compared with it."""
    import psycopg

    with psycopg.connect(trained_settings.database_url) as conn:
        (trained_reference, model_version), = conn.execute(
            "select version, model_version from raw.references where monitor = 'nyc_taxi'").fetchall()
    result = invoke_cli(trained_settings, "reference", "--file", str(JANUARY))
    assert result.exit_code == 0, result.output
    with psycopg.connect(trained_settings.database_url) as conn:
        version, row_count, scored_by = conn.execute(
            "select version, row_count, model_version from raw.references where monitor = 'nyc_taxi'"
            " order by created_at desc limit 1").fetchone()
        stored = conn.execute(
            "select count(*), count(predicted_duration_min) from raw.nyc_taxi__reference where reference_version = %s",
            (version,)).fetchone()
    assert result.output.splitlines()[0] == (
        f"monitor nyc_taxi: reference {version} stored, 68,211 rows from green_tripdata_2023-01.parquet"
    )
    # Every row of the file (training keeps January's pickups only: 68,207), each scored.
    assert pq.read_metadata(JANUARY).num_rows == row_count == 68_211
    assert stored == (68_211, 68_211)
    assert scored_by == model_version and version != trained_reference
    run = invoke_cli(trained_settings, "run", "--batch-date", "2023-02-14", "--file", str(FEBRUARY))
    assert run.exit_code == 0, run.output
    with psycopg.connect(trained_settings.database_url) as conn:
        assert conn.execute("select reference_version, model_version from raw.batches").fetchone() == (
            version, model_version)
        assert conn.execute("select reference_version from raw.drift_datasets").fetchone() == (version,)
