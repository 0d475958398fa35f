"""A database made by the one-monitor modelwatch (schema version 1) is migrated by `init`:
its batches become the nyc_taxi monitor's, nothing lost, and its marts are rebuilt."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql

from modelwatch import pipeline
from modelwatch.config import Settings
from modelwatch.errors import UsageError
from modelwatch.examples.nyc_taxi import model
from modelwatch.periods import batch_of
from modelwatch.pipeline import load
from modelwatch.pipeline.source import read_batch_file
from modelwatch.postgres import db, schema

from .conftest import FEBRUARY, JANUARY, TAXI, scratch_name

V1_DDL = Path(__file__).parent / "fixtures" / "schema_v1.sql"
DAYS = (date(2023, 2, 7), date(2023, 2, 8))
V1_TRIP_COLUMNS = (  # raw.trips of version 1, after batch_date and trip_id
    "vendor_id", "pickup_datetime", "dropoff_datetime", "store_and_fwd_flag", "ratecode_id", "pu_location_id",
    "do_location_id", "passenger_count", "trip_distance", "fare_amount", "extra", "mta_tax", "tip_amount",
    "tolls_amount", "ehail_fee", "improvement_surcharge", "total_amount", "payment_type", "trip_type",
    "congestion_surcharge")


def _v1_trips(rows: pa.Table, day: date) -> pa.Table:
    """A day's trips as version 1 stored them: zone ids as numbers."""
    arrays = {"batch_date": pa.array([day] * rows.num_rows, pa.date32()),
              "trip_id": pa.array(load.generated_ids(batch_of(TAXI, "day", day), rows.num_rows))}
    for name in V1_TRIP_COLUMNS:
        column = rows[name]
        arrays[name] = pc.cast(column, pa.int64()) if name in ("pu_location_id", "do_location_id") else column
    return pa.table(arrays)


def _older_database(url: str, settings: Settings) -> dict:
    """Version 1's tables holding two days of February, their predictions, a model and its
    reference set, drift scores and test runs, as the one-monitor modelwatch left them."""
    taxi = settings.monitor(TAXI)
    trained = model.train(read_batch_file(JANUARY, taxi))
    february = read_batch_file(FEBRUARY, taxi)
    reference = load.main_period_rows(read_batch_file(JANUARY, taxi).table, taxi)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(V1_DDL.read_text())
        conn.execute(
            """insert into raw.models (version, algorithm, features, target, reference_file, reference_sha256,
                   train_rows, validation_rows, train_mae, validation_mae, artifact)
               values (%s, 'sklearn.linear_model.LinearRegression', %s, 'duration_min', %s, 'x', %s, %s, %s, %s, %s)""",
            (trained.version, json.dumps(list(trained.features)), JANUARY.name, trained.train_rows, trained.validation_rows, trained.train_mae,
             trained.validation_mae, trained.artifact))
        reference_v1 = _v1_trips(reference, DAYS[0]).drop_columns(["batch_date"]).append_column(
            "predicted_duration_min", pa.array(trained.predict_table(reference), pa.float64()))
        reference_v1 = reference_v1.set_column(0, "trip_id", pa.array(np.arange(1, reference.num_rows + 1)))
        reference_v1 = reference_v1.add_column(0, "model_version", pa.array([trained.version] * reference.num_rows))
        load.copy_arrow(conn, sql.SQL("raw.reference_trips"), reference_v1)
        predictions: dict[date, np.ndarray] = {}
        for day in DAYS:
            rows = load.rows_in(february.table, taxi, batch_of(TAXI, "day", day))
            trips = _v1_trips(rows, day)
            predictions[day] = trained.predict_table(rows)
            load.copy_arrow(conn, sql.SQL("raw.trips"), trips)
            load.copy_arrow(conn, sql.SQL("raw.predictions"), pa.table({
                "batch_date": trips["batch_date"], "trip_id": trips["trip_id"],
                "model_version": pa.array([trained.version] * rows.num_rows),
                "predicted_duration_min": pa.array(predictions[day], pa.float64())}))
            conn.execute(
                """insert into raw.batches (batch_date, file_name, file_sha256, rows_in_file, rows_loaded,
                       rows_outside_day, model_version, status, started_at, finished_at)
                   values (%s, %s, %s, %s, %s, %s, %s, 'passed', now(), now())""",
                (day, FEBRUARY.name, february.sha256, february.rows, rows.num_rows, february.rows - rows.num_rows,
                 trained.version))
            conn.execute(
                """insert into raw.drift_scores (batch_date, column_name, column_kind, computed, method, threshold,
                       score, drifted, evidently_version)
                   values (%s, 'fare_amount', 'numeric', true, 'Wasserstein distance (normed)', 0.1, 0.05, false,
                           '0.7.23')""", (day,))
            conn.execute(
                """insert into raw.drift_datasets (batch_date, model_version, reference_rows, reference_rows_used,
                       current_rows, current_rows_used, columns_monitored, columns_computed, columns_drifted,
                       share_drifted, drift_share, dataset_drift, evidently_version, seconds)
                   values (%s, %s, %s, %s, %s, %s, 7, 7, 0, 0, 0.5, false, '0.7.23', 0.1)""",
                (day, trained.version, reference.num_rows, reference.num_rows, rows.num_rows, rows.num_rows))
            conn.execute(
                """insert into raw.dbt_test_runs (invocation_id, executed_at, batch_date, test_name, status, failures)
                   values ('v1-run', now(), %s, 'contract_negative_fare_share', 'pass', 0)""", (day,))
    return {"model": trained, "predictions": predictions}


def test_init_migrates_a_version_1_database_and_keeps_every_batch(server_url: str, tmp_path: Path) -> None:
    with db.scratch_database(server_url, scratch_name("mw_v1")) as url:
        settings = Settings(home=tmp_path / "home", database_url=url)
        older = _older_database(url, settings)
        with psycopg.connect(url, autocommit=True) as conn:
            assert schema.stored_version(conn) == 1
            with pytest.raises(UsageError, match=r"run `modelwatch init` to migrate it"):
                schema.check_version(conn)
        pipeline.init(settings)
        with psycopg.connect(url, autocommit=True) as conn:
            assert schema.stored_version(conn) == schema.SCHEMA_VERSION
            assert conn.execute("select to_regclass('raw.trips'), to_regclass('raw.predictions'), "
                                "to_regclass('raw.reference_trips'), to_regclass('raw.batches_v1')").fetchone() == (
                None, None, None, None)
            batches = conn.execute("select monitor, batch_date, status, model_version, reference_version "
                                   "from raw.batches order by 2").fetchall()
            version = older["model"].version
            assert batches == [(TAXI, day, "passed", version, version) for day in DAYS]
            for day in DAYS:
                stored = np.array([value for (value,) in conn.execute(
                    "select predicted_duration_min from raw.nyc_taxi__rows where batch_date = %s order by trip_id",
                    (day,))])
                assert np.array_equal(stored, older["predictions"][day])  # to the bit
            zones = conn.execute("select pu_location_id from raw.nyc_taxi__rows limit 1").fetchone()[0]
            assert isinstance(zones, str) and zones.isdigit()  # categories are text now
            assert conn.execute("select count(*) from raw.nyc_taxi__reference where reference_version = %s",
                                (version,)).fetchone()[0] == conn.execute(
                "select row_count from raw.references where monitor = %s", (TAXI,)).fetchone()[0] > 60_000
            # The marts were rebuilt from raw: every batch, the old test runs kept beside the new ones.
            health = conn.execute("select batch_date, status from marts.batch_health order by 1").fetchall()
            assert health == [(day, "passed") for day in DAYS]
            assert conn.execute("select count(*) from marts.model_performance where metric = 'mae'").fetchone() == (2,)
            assert conn.execute("select count(*) from raw.dbt_test_runs where invocation_id = 'v1-run'"
                                ).fetchone() == (2,)
            assert conn.execute("select count(*) from marts.feature_drift where source = 'evidently'").fetchone() == (2,)
            assert conn.execute("select count(*) from marts.published_batches").fetchone() == (2,)
        # And it carries on: the next day runs with the migrated model and reference.
        outcome = pipeline.run_batch(settings, date(2023, 2, 9), FEBRUARY)
        assert (outcome.status, outcome.rows_loaded) == ("passed", 2644)
        pipeline.init(settings)  # idempotent once migrated
