"""Bad input and hostile strings: a clear word, the right exit code, nothing stored changed."""

from __future__ import annotations

import copy
import shutil
from datetime import date, datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from modelwatch import pipeline
from modelwatch.config import PROJECT_DIR, Settings
from modelwatch.errors import UsageError
from modelwatch.monitors import BUILT_IN_CHECKS, parse_monitors

from .conftest import FEBRUARY, copy_project, error_line, invoke_cli

DAY = date(2023, 2, 14)


def _stored(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return (
            conn.execute(
                "select batch_date, count(*), sum(fare_amount) from raw.nyc_taxi__rows group by 1 order by 1"
            ).fetchall(),
            conn.execute("select batch_date, status, rows_loaded, file_sha256 from raw.batches order by 1").fetchall(),
            conn.execute("select * from marts.column_quality order by 1, 2, 3").fetchall(),
            conn.execute("select * from marts.model_performance order by 1, 2, 3, 4").fetchall(),
        )


def _project_with_taxi(tmp_path: Path, **changes: object) -> Path:
    """A copy of the dbt project whose taxi monitor (vars.monitors.nyc_taxi) differs: a key
    with __ names a key inside another (features__numeric: features.numeric)."""
    project = copy_project(tmp_path / "project")
    config = yaml.safe_load((project / "dbt_project.yml").read_text())
    for key, value in changes.items():
        *path, last = key.split("__")
        block = config["vars"]["monitors"]["nyc_taxi"]
        for part in path:
            block = block[part]
        block[last] = value
    (project / "dbt_project.yml").write_text(yaml.safe_dump(config))
    return project


@pytest.fixture
def one_batch(trained_settings: Settings) -> Settings:
    pipeline.run_batch(trained_settings, date(2023, 2, 13), FEBRUARY)
    return trained_settings


def _day(table: pa.Table) -> pa.Table:
    days = pc.cast(table["lpep_pickup_datetime"], pa.date32())
    return table.filter(pc.equal(days, pa.scalar(DAY, pa.date32())))


def test_hostile_column_name_in_configuration_never_reaches_sql(one_batch: Settings, tmp_path: Path) -> None:
    before = _stored(one_batch.database_url)
    project = _project_with_taxi(
        tmp_path, features__numeric=["fare_amount", "fare_amount; drop table raw.nyc_taxi__rows; --"]
    )
    result = invoke_cli(one_batch, "run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY), project_dir=project)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"Error: {project / 'dbt_project.yml'}: monitor nyc_taxi: features.numeric: "
        "'fare_amount; drop table raw.nyc_taxi__rows; --' is not a plain column name (lower-case letters, digits, _)"
    )
    assert _stored(one_batch.database_url) == before


def test_monitored_column_the_data_lacks(one_batch: Settings, tmp_path: Path) -> None:
    before = _stored(one_batch.database_url)
    project = _project_with_taxi(tmp_path, features__categorical=["pu_location_id", "driver_rating"])
    result = invoke_cli(one_batch, "run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY), project_dir=project)
    assert result.exit_code == 2
    # A declared feature is a column every file of the monitor must have.
    assert error_line(result) == f"Error: {FEBRUARY}: required column 'driver_rating' is missing"
    assert _stored(one_batch.database_url) == before


def test_hostile_file_name_is_stored_verbatim(trained_settings: Settings, tmp_path: Path) -> None:
    hostile = tmp_path / "it's\"; drop table raw.nyc_taxi__rows; --.parquet"
    shutil.copy(FEBRUARY, hostile)
    result = invoke_cli(trained_settings, "run", "--batch-date", DAY.isoformat(), "--file", str(hostile))
    assert result.exit_code == 0, result.output
    with psycopg.connect(trained_settings.database_url) as conn:
        assert conn.execute("select file_name, rows_loaded from raw.batches").fetchone() == (hostile.name, 2_466)
        assert conn.execute("select count(*) from raw.nyc_taxi__rows").fetchone() == (2_466,)


def test_hostile_strings_in_text_columns_round_trip(trained_settings: Settings, tmp_path: Path) -> None:
    table = _day(pq.read_table(FEBRUARY))
    hostile = ["'); drop table raw.nyc_taxi__rows; --", 'a "quoted", value', "line\nbreak", "\\N", ""]
    flags = pa.array([hostile[i % len(hostile)] for i in range(table.num_rows)], pa.string())
    table = table.set_column(table.schema.get_field_index("store_and_fwd_flag"), "store_and_fwd_flag", flags)
    path = tmp_path / "hostile.parquet"
    pq.write_table(table, path)
    result = invoke_cli(trained_settings, "run", "--batch-date", DAY.isoformat(), "--file", str(path))
    assert result.exit_code == 0, result.output
    with psycopg.connect(trained_settings.database_url) as conn:
        stored = conn.execute("select store_and_fwd_flag from raw.nyc_taxi__rows order by trip_id").fetchall()
    assert [value for (value,) in stored] == flags.to_pylist()


def test_all_null_column_fails_the_contract(one_batch: Settings, tmp_path: Path) -> None:
    before = _stored(one_batch.database_url)
    table = _day(pq.read_table(FEBRUARY))
    table = table.set_column(table.schema.get_field_index("fare_amount"), "fare_amount",
                             pa.nulls(table.num_rows, pa.null()))
    path = tmp_path / "null_fares.parquet"
    pq.write_table(table, path)
    result = invoke_cli(one_batch, "run", "--batch-date", DAY.isoformat(), "--file", str(path))
    assert result.exit_code == 1
    assert "missing_share[fare_amount] = 1, expected <= 0.2 (error)" in result.output
    after = _stored(one_batch.database_url)
    # The earlier batch is untouched everywhere.
    assert [r for r in after[0] if r[0] != DAY] == before[0]
    assert [r for r in after[2] if r[1] != DAY] == before[2]  # marts: (monitor, batch_date, ...)
    assert after[3] == before[3]


def test_timestamps_years_away_and_extreme_values(trained_settings: Settings, tmp_path: Path) -> None:
    table = _day(pq.read_table(FEBRUARY))
    pickups = table["lpep_pickup_datetime"].to_pylist()
    pickups[:5] = [datetime(2009, 1, 1, 0, 5)] * 5  # real files carry such strays
    distances = table["trip_distance"].to_pylist()
    distances[10] = 200_000.0  # real files hold such distances (February 2023: 178,920 miles)
    table = table.set_column(table.schema.get_field_index("lpep_pickup_datetime"), "lpep_pickup_datetime",
                             pa.array(pickups, pa.timestamp("us")))
    table = table.set_column(table.schema.get_field_index("trip_distance"), "trip_distance", pa.array(distances))
    path = tmp_path / "strays.parquet"
    pq.write_table(table, path)
    outcome = pipeline.run_batch(trained_settings, DAY, path)
    assert (outcome.rows_loaded, outcome.rows_outside_period, outcome.status) == (2_461, 5, "passed")
    with psycopg.connect(trained_settings.database_url) as conn:
        assert conn.execute(
            "select max_value from marts.column_quality where column_name = 'trip_distance'"
        ).fetchone() == (200_000.0,)  # kept and visible: a real file's normal quirk, not a failure


def test_unknown_zone_ids_fail_the_referential_check(trained_settings: Settings, tmp_path: Path) -> None:
    table = _day(pq.read_table(FEBRUARY))
    zones = pc.if_else(pc.less(pc.cast(pa.array(range(table.num_rows)), pa.int64()), table.num_rows // 10),
                       pa.scalar(999, pa.int32()), table["PULocationID"])
    table = table.set_column(table.schema.get_field_index("PULocationID"), "PULocationID", zones)
    path = tmp_path / "zones.parquet"
    pq.write_table(table, path)
    result = invoke_cli(trained_settings, "run", "--batch-date", DAY.isoformat(), "--file", str(path))
    assert result.exit_code == 1
    assert "known_zone_share[pu_location_id] = 0.89" in result.output


def _project_vars() -> dict:
    return yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["vars"]


CLASSIFIER = {  # a minimal binary classifier of the tests' own, declared like NannyML's example
    "task": "binary_classification", "id": "id", "timestamp": "ts", "batch_period": "week",
    "features": {"numeric": ["tenure"], "categorical": ["workday"]},
    "prediction": "y_pred", "probability": "y_pred_proba", "target": "y_true",
}


def _declared(monitor: str, block: dict, edit) -> dict:
    """The project's vars with `block` declared as `monitor` after `edit(block)`."""
    dbt_vars = copy.deepcopy(_project_vars())
    block = copy.deepcopy(block)
    edit(block)
    dbt_vars["monitors"][monitor] = block
    return dbt_vars


def test_the_declarations_as_shipped_parse() -> None:
    monitors = parse_monitors(_project_vars())
    taxi = monitors.get(None)
    assert taxi.name == "nyc_taxi" and taxi.task == "regression" and taxi.prediction == "predicted_duration_min"
    assert parse_monitors(_declared("test_clf", CLASSIFIER, lambda block: None)).get("test_clf").probability == \
        "y_pred_proba"


@pytest.mark.parametrize(("monitor", "edit", "message"), [
    ("nyc_taxi", lambda block: block.update(task="forecasting"),
     "task 'forecasting' is not one of regression, binary_classification, multiclass_classification"),
    ("test_clf", lambda block: block.pop("probability"),
     "key 'probability' is missing (a binary classifier's positive-class probability column)"),
    ("test_clf", lambda block: block.update(probability={"0": "p0", "1": "p1"}),
     "key 'probability' must be one column for a binary classifier"),
    ("nyc_taxi", lambda block: block["features"]["numeric"].append("predicted_duration_min"),
     "column 'predicted_duration_min' is declared both as features.numeric and as prediction"),
    ("test_clf", lambda block: block["features"]["categorical"].append("tenure"),
     "column 'tenure' is declared both as features.numeric and as features.categorical"),
    ("test_clf", lambda block: block.update(target="id"),
     "column 'id' is declared both as id and as target"),
    ("nyc_taxi", lambda block: block.pop("target"), "key 'target' is missing"),
    ("nyc_taxi", lambda block: block.update(batch_period="hour"),
     "batch_period 'hour' is not one of day, week, month"),
    ("nyc_taxi", lambda block: block["contract"].update(row_count_max={"max": 10}),
     "contract.row_count_max: no such check (built in: " + ", ".join(BUILT_IN_CHECKS)
     + "; a check of your own goes under 'checks' with a 'where' condition)"),
    ("nyc_taxi", lambda block: block["features"].update(categorical=["pu_location_id", "select"]),
     "features.categorical: 'select' is a reserved word of SQL; give the column another name "
     "(the monitor's rename key maps a file's column to it)"),
], ids=["unknown_task", "binary_without_probability", "binary_with_probabilities", "prediction_as_feature",
        "feature_in_two_kinds", "id_as_target", "no_target", "unknown_period", "unknown_check", "reserved_word"])
def test_a_wrong_declaration_is_one_line_naming_the_monitor_and_key(monitor: str, edit, message: str) -> None:
    base = copy.deepcopy(_project_vars()["monitors"]["nyc_taxi"]) if monitor == "nyc_taxi" else CLASSIFIER
    with pytest.raises(UsageError) as raised:
        parse_monitors(_declared(monitor, base, edit))
    assert str(raised.value) == f"dbt_project.yml: monitor {monitor}: {message}"
    assert raised.value.exit_code == 2


def test_a_default_monitor_not_declared() -> None:
    dbt_vars = {**copy.deepcopy(_project_vars()), "default_monitor": "nyc_taxis"}
    with pytest.raises(UsageError) as raised:
        parse_monitors(dbt_vars)
    assert str(raised.value) == "dbt_project.yml: vars.default_monitor 'nyc_taxis' is not declared under vars.monitors"


def test_a_wrong_declaration_stops_every_command_before_the_database(one_batch: Settings, tmp_path: Path) -> None:
    before = _stored(one_batch.database_url)
    project = _project_with_taxi(tmp_path, features__numeric=["fare_amount", "predicted_duration_min"])
    expected = (f"Error: {project / 'dbt_project.yml'}: monitor nyc_taxi: column 'predicted_duration_min' is "
                "declared both as features.numeric and as prediction")
    for command in (("run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY)), ("init",), ("status",)):
        result = invoke_cli(one_batch, *command, project_dir=project)
        assert result.exit_code == 2, (command, result.output)
        assert error_line(result) == expected, command
    assert _stored(one_batch.database_url) == before


def test_a_column_declared_since_init_is_added_by_init(one_batch: Settings, tmp_path: Path) -> None:
    """A further column declared after the monitor's tables were made: `init` adds it (earlier rows
    hold null there); a file without it gets nulls, and says so."""
    columns = {**_project_vars()["monitors"]["nyc_taxi"]["columns"], "driver_rating": "double precision"}
    project = _project_with_taxi(tmp_path, columns=columns)
    assert invoke_cli(one_batch, "init", project_dir=project).exit_code == 0
    result = invoke_cli(one_batch, "run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY), project_dir=project)
    assert result.exit_code == 0, result.output
    with psycopg.connect(one_batch.database_url) as conn:
        assert conn.execute(
            "select batch_date, count(*), count(driver_rating) from raw.nyc_taxi__rows group by 1 order by 1"
        ).fetchall() == [(date(2023, 2, 13), 2_206, 0), (DAY, 2_466, 0)]
        coercions = conn.execute("select coercions from raw.batches where batch_date = %s", (DAY,)).fetchone()[0]
    assert "driver_rating: absent, filled with nulls" in coercions.split("; ")


def test_a_column_declared_since_init_stops_a_run_until_init(one_batch: Settings, tmp_path: Path) -> None:
    before = _stored(one_batch.database_url)
    columns = {**_project_vars()["monitors"]["nyc_taxi"]["columns"], "driver_rating": "double precision"}
    project = _project_with_taxi(tmp_path, columns=columns)
    result = invoke_cli(one_batch, "run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY), project_dir=project)
    line = error_line(result)
    assert result.exit_code == 2, result.output
    assert "driver_rating" in line and "modelwatch init" in line
    assert _stored(one_batch.database_url) == before
