"""Values the contract cannot judge: NaN, +-Infinity and huge finite numbers are counted per
column (non_finite_share) and enter no figure, on the taxi and on a NannyML example monitor."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sklearn.metrics as sk
import yaml

from modelwatch import pipeline
from modelwatch.config import Settings

from .conftest import FEBRUARY, copy_project, error_line, invoke_cli, nannyml_file

TAXI_DAY = date(2023, 2, 14)
TAXI_ROWS = 2_466  # trips of 2023-02-14 in the packaged February file
CAR_DAY = date(2017, 2, 20)


def _others(url: str, monitor: str, day: date) -> dict[str, list[str]]:
    """Every stored row of the monitor's other batches (raw tables and marts), as text."""
    stored: dict[str, list[str]] = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            """select table_schema, table_name,
                      bool_or(column_name = 'monitor') as has_monitor
               from information_schema.columns
               where table_schema in ('raw', 'marts') and table_name not like '%%reference%%'
               group by table_schema, table_name
               having bool_or(column_name = 'batch_date')"""
        ).fetchall()
        for schema, table, has_monitor in tables:
            if table.endswith("__rows") and not table.startswith(f"{monitor}__"):
                continue
            where = "batch_date <> %s" + (" and monitor = %s" if has_monitor else "")
            params = (day, monitor) if has_monitor else (day,)
            rows = conn.execute(
                f'select t::text from "{schema}"."{table}" as t where {where} order by 1', params).fetchall()
            stored[f"{schema}.{table}"] = [row for (row,) in rows]
    return stored


def _project(tmp_path: Path, monitor: str, contract: dict) -> Path:
    """A copy of the dbt project whose monitor bounds its contract otherwise."""
    project = copy_project(tmp_path / "project")
    config = yaml.safe_load((project / "dbt_project.yml").read_text())
    config["vars"]["monitors"][monitor]["contract"] = {
        **(config["vars"]["monitors"][monitor].get("contract") or {}), **contract}
    (project / "dbt_project.yml").write_text(yaml.safe_dump(config))
    return project


def _quality(url: str, monitor: str, day: date, column: str) -> dict:
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "select * from marts.column_quality where monitor = %s and batch_date = %s and column_name = %s",
            (monitor, day, column))
        return dict(zip([c.name for c in cursor.description], cursor.fetchone(), strict=True))


def _checks(url: str, monitor: str, day: date, column: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """select measured_value, upper_bound, severity, passed from marts.batch_checks
               where monitor = %s and batch_date = %s and check_name = 'non_finite_share' and column_name = %s""",
            (monitor, day, column)).fetchone()


def _metrics(url: str, monitor: str, day: date) -> dict[str, tuple[float, int]]:
    with psycopg.connect(url) as conn:
        return {metric: (value, n) for metric, value, n in conn.execute(
            "select metric, value, n from marts.model_performance where monitor = %s and batch_date = %s",
            (monitor, day)).fetchall()}


def _regression_expected(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"mae": sk.mean_absolute_error(y, p), "rmse": float(np.sqrt(sk.mean_squared_error(y, p))),
            "bias": float((p - y).mean()), "r2": sk.r2_score(y, p)}


# ---------------------------------------------------------------- the taxi


@pytest.fixture
def taxi(trained_settings: Settings) -> Settings:
    """The taxi trained, with one good batch, 2023-02-13."""
    pipeline.run_batch(trained_settings, date(2023, 2, 13), FEBRUARY)
    return trained_settings


def _taxi_day(path: Path, column: str, values: pa.Array | None = None, rows: list[int] | None = None,
              value: float | None = None) -> tuple[Path, pa.Table]:
    table = pq.read_table(FEBRUARY)
    table = table.filter(pc.equal(pc.cast(table["lpep_pickup_datetime"], pa.date32()),
                                  pa.scalar(TAXI_DAY, pa.date32())))
    if values is None:
        changed = table[column].to_numpy(zero_copy_only=False).astype("float64")
        changed[rows] = value
        values = pa.array(changed, pa.float64())
    table = table.set_column(table.schema.get_field_index(column), column, values)
    pq.write_table(table, path)
    return path, table


def test_taxi_all_nan_column_fails_the_contract(taxi: Settings, tmp_path: Path) -> None:
    url = taxi.database_url
    before = _others(url, "nyc_taxi", TAXI_DAY)
    path, _ = _taxi_day(tmp_path / "nan_fares.parquet", "fare_amount",
                        values=pa.array(np.full(TAXI_ROWS, np.nan), pa.float64()))
    result = invoke_cli(taxi, "run", "--batch-date", TAXI_DAY.isoformat(), "--file", str(path))
    assert result.exit_code == 1, result.output
    assert error_line(result).startswith("Error: batch 2023-02-14 failed its data contract: ")
    assert "non_finite_share[fare_amount] = 1, expected <= 0 (error)" in error_line(result)
    quality = _quality(url, "nyc_taxi", TAXI_DAY, "fare_amount")
    assert (quality["row_count"], quality["missing_count"], quality["non_finite_count"]) == (TAXI_ROWS, 0, TAXI_ROWS)
    assert quality["non_finite_share"] == 1.0
    # No figure is computed from NaN: there is no finite value.
    assert [quality[k] for k in ("min_value", "p50", "max_value", "mean_value", "stddev_value")] == [None] * 5
    assert _checks(url, "nyc_taxi", TAXI_DAY, "fare_amount") == (1.0, 0.0, "error", False)
    assert _metrics(url, "nyc_taxi", TAXI_DAY) == {}  # gated
    with psycopg.connect(url) as conn:
        assert conn.execute("select status from raw.batches where batch_date = %s", (TAXI_DAY,)).fetchone() == (
            "failed",)
    assert _others(url, "nyc_taxi", TAXI_DAY) == before


def test_taxi_infinities_and_huge_values_are_counted_not_aggregated(taxi: Settings, tmp_path: Path) -> None:
    """+-inf in 10 fares and 1e308 in 5 passenger counts: counted per column; the figures and
    metrics are those of the finite rows (the contract's bound, loosened, lets the batch pass)."""
    url = taxi.database_url
    before = _others(url, "nyc_taxi", TAXI_DAY)
    table = pq.read_table(FEBRUARY)
    table = table.filter(pc.equal(pc.cast(table["lpep_pickup_datetime"], pa.date32()),
                                  pa.scalar(TAXI_DAY, pa.date32())))
    fares = table["fare_amount"].to_numpy(zero_copy_only=False).astype("float64")
    fares[:5], fares[5:10] = np.inf, -np.inf
    passengers = table["passenger_count"].to_numpy(zero_copy_only=False).astype("float64")
    passengers[100:105] = 1e308
    table = table.set_column(table.schema.get_field_index("fare_amount"), "fare_amount", pa.array(fares))
    table = table.set_column(table.schema.get_field_index("passenger_count"), "passenger_count",
                             pa.array(passengers, mask=np.isnan(passengers)))
    path = tmp_path / "infinite.parquet"
    pq.write_table(table, path)

    strict = invoke_cli(taxi, "run", "--batch-date", TAXI_DAY.isoformat(), "--file", str(path))
    assert strict.exit_code == 1, strict.output
    assert "non_finite_share[fare_amount] = 0.004055, expected <= 0 (error)" in error_line(strict)
    assert "non_finite_share[passenger_count] = 0.002028, expected <= 0 (error)" in error_line(strict)

    project = _project(tmp_path, "nyc_taxi", {"non_finite_share": {"max": 0.01}})
    result = invoke_cli(taxi, "run", "--batch-date", TAXI_DAY.isoformat(), "--file", str(path), project_dir=project)
    assert result.exit_code == 0, result.output

    fare = _quality(url, "nyc_taxi", TAXI_DAY, "fare_amount")
    finite_fares = fares[np.isfinite(fares)]
    assert (fare["row_count"], fare["missing_count"], fare["non_finite_count"]) == (TAXI_ROWS, 0, 10)
    assert fare["max_value"] == finite_fares.max() and fare["min_value"] == finite_fares.min()
    assert fare["mean_value"] == pytest.approx(finite_fares.mean(), rel=1e-12)
    assert fare["stddev_value"] == pytest.approx(finite_fares.std(ddof=1), rel=1e-9)
    assert fare["p50"] == pytest.approx(np.median(finite_fares), rel=1e-12)
    count = _quality(url, "nyc_taxi", TAXI_DAY, "passenger_count")
    finite_counts = passengers[np.isfinite(passengers) & (np.abs(passengers) <= 1e100)]
    assert (count["missing_count"], count["non_finite_count"]) == (int(np.isnan(passengers).sum()), 5)
    assert count["max_value"] == finite_counts.max()
    assert count["mean_value"] == pytest.approx(finite_counts.mean(), rel=1e-12)
    assert _checks(url, "nyc_taxi", TAXI_DAY, "fare_amount") == (pytest.approx(10 / TAXI_ROWS), 0.01, "error", True)
    assert _checks(url, "nyc_taxi", TAXI_DAY, "passenger_count") == (pytest.approx(5 / TAXI_ROWS), 0.01, "error",
                                                                      True)

    with psycopg.connect(url) as conn:
        stored = pd.DataFrame(conn.execute(
            """select predicted_duration_min, duration
               from (select predicted_duration_min,
                            extract(epoch from (dropoff_datetime - pickup_datetime)) / 60.0 as duration
                     from raw.nyc_taxi__rows where batch_date = %s) as rows
               where duration > 0 and duration <= 60""", (TAXI_DAY,)).fetchall(),
            columns=["prediction", "target"]).astype("float64")
        scores = conn.execute(
            """select source, count(*), count(score), count(*) filter (where score = 'NaN' or abs(score) = 'Infinity')
               from marts.feature_drift where batch_date = %s group by 1 order by 1""", (TAXI_DAY,)).fetchall()
    # A huge passenger count makes a huge prediction: beyond 1e100 it is no measurement either.
    finite = (stored["prediction"].abs() <= 1e100) & (stored["target"].abs() <= 1e100)
    assert int((stored["prediction"].abs() > 1e100).sum()) > 0
    expected = _regression_expected(stored["target"][finite].to_numpy(), stored["prediction"][finite].to_numpy())
    metrics = _metrics(url, "nyc_taxi", TAXI_DAY)
    assert set(metrics) == set(expected)
    for metric, value in expected.items():
        assert metrics[metric][0] == pytest.approx(value, rel=1e-9, abs=1e-9), metric
        assert metrics[metric][1] == int(finite.sum())
    # Every drift column (4 numeric features, 2 zones, the prediction) scored by Evidently and
    # by PSI, no score NaN or infinite.
    assert scores == [("evidently", 7, 7, 0), ("sql_psi", 7, 7, 0)]
    assert _others(url, "nyc_taxi", TAXI_DAY) == before


# ---------------------------------------------------------------- a NannyML example: car_price


@pytest.fixture
def car_price(initialised_settings: Settings, tmp_path: Path) -> tuple[Settings, pd.DataFrame]:
    """car_price with its reference and one good batch, 2017-02-19; the labelled analysis rows."""
    pipeline.reference(initialised_settings, "car_price", nannyml_file("regression_synthetic_reference.parquet"))
    frame = pd.read_parquet(nannyml_file("regression_synthetic_analysis.parquet")).merge(
        pd.read_parquet(nannyml_file("regression_synthetic_analysis_targets.parquet")), on="id", validate="one_to_one")
    path = tmp_path / "labelled.parquet"
    frame.to_parquet(path, index=False)
    pipeline.run_batch(initialised_settings, date(2017, 2, 19), path, monitor_name="car_price")
    return initialised_settings, frame[frame["timestamp"].dt.date == CAR_DAY].reset_index(drop=True)


def test_car_price_non_finite_prediction_target_and_feature(car_price: tuple[Settings, pd.DataFrame],
                                                            tmp_path: Path) -> None:
    settings, day = car_price
    url = settings.database_url
    rows = len(day)
    before = _others(url, "car_price", CAR_DAY)
    day = day.copy()
    day.loc[0:9, "y_pred"] = np.inf
    day.loc[10:14, "y_true"] = np.nan
    day.loc[15:19, "km_driven"] = 1e308
    path = tmp_path / "car_day.parquet"
    # NaN kept as NaN (pandas' own writer would store the labels' NaN as nulls: missing labels)
    pq.write_table(pa.table({name: pa.array(day[name], from_pandas=False) if day[name].dtype == "float64"
                             else pa.Array.from_pandas(day[name]) for name in day.columns}), path)

    strict = invoke_cli(settings, "run", "--monitor", "car_price", "--batch-date", CAR_DAY.isoformat(),
                     "--file", str(path))
    assert strict.exit_code == 1, strict.output
    line = error_line(strict)
    for column, count in (("km_driven", 5), ("y_pred", 10), ("y_true", 5)):
        assert f"non_finite_share[{column}] = {count / rows:.4g}, expected <= 0 (error)" in line
    assert _metrics(url, "car_price", CAR_DAY) == {}

    project = _project(tmp_path, "car_price", {"non_finite_share": {"max": 0.01}})
    result = invoke_cli(settings, "run", "--monitor", "car_price", "--batch-date", CAR_DAY.isoformat(),
                     "--file", str(path), project_dir=project)
    assert result.exit_code == 0, result.output
    for column, count in (("km_driven", 5), ("y_pred", 10), ("y_true", 5), ("car_age", 0)):
        quality = _quality(url, "car_price", CAR_DAY, column)
        assert (quality["row_count"], quality["missing_count"], quality["non_finite_count"]) == (rows, 0, count)
        assert _checks(url, "car_price", CAR_DAY, column)[0] == pytest.approx(count / rows)
    km = day["km_driven"][day["km_driven"] < 1e100]
    quality = _quality(url, "car_price", CAR_DAY, "km_driven")
    assert quality["mean_value"] == pytest.approx(km.mean(), rel=1e-12)
    assert quality["stddev_value"] == pytest.approx(km.std(ddof=1), rel=1e-9)
    assert quality["max_value"] == km.max()

    finite = np.isfinite(day["y_pred"]) & np.isfinite(day["y_true"])
    expected = _regression_expected(day["y_true"][finite].to_numpy(), day["y_pred"][finite].to_numpy())
    metrics = _metrics(url, "car_price", CAR_DAY)
    assert set(metrics) == set(expected)
    for metric, value in expected.items():
        assert metrics[metric] == (pytest.approx(value, rel=1e-9, abs=1e-9), rows - 15), metric
    assert _others(url, "car_price", CAR_DAY) == before
