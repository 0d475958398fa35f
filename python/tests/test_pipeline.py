"""The batch pipeline end to end, on real PostgreSQL and the real TLC months."""

from __future__ import annotations

from datetime import date

import math

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelwatch import pipeline
from modelwatch.config import Settings

from .conftest import FEBRUARY, JANUARY, TAXI


def _pickups_per_day(path) -> dict[date, int]:
    """Independent count: rows of the file per pickup day, straight from parquet."""
    table = pq.read_table(path, columns=["lpep_pickup_datetime"])
    days = pc.cast(table["lpep_pickup_datetime"], "date32")
    counts = pc.value_counts(days).to_pylist()
    return {item["values"]: item["counts"] for item in counts}


def test_demo_loads_every_february_day_exactly(demo_conn) -> None:
    expected = {day: n for day, n in _pickups_per_day(FEBRUARY).items() if day.year == 2023 and day.month == 2}
    loaded = dict(demo_conn.execute("select batch_date, count(*) from raw.nyc_taxi__rows group by 1").fetchall())
    assert len(loaded) == 28
    assert loaded == expected
    assert sum(loaded.values()) == 64_783  # 64,809 rows, 26 pickups outside February
    # Every row is scored: the prediction is stored with it.
    predictions = demo_conn.execute("select count(predicted_duration_min) from raw.nyc_taxi__rows").fetchone()[0]
    assert predictions == 64_783
    # Every batch is the taxi's, a day long, and passed.
    assert demo_conn.execute(
        """select monitor, count(*), count(*) filter (where batch_end = batch_date), count(*) filter (where status = 'passed')
           from raw.batches group by 1"""
    ).fetchall() == [(TAXI, 28, 28, 28)]


def test_batch_log_records_file_and_counts(demo_conn) -> None:
    row = demo_conn.execute(
        """select file_name, file_sha256, rows_in_file, rows_loaded, rows_outside_period, status, batch_end,
                  reference_version = (select version from raw.references where monitor = %s),
                  model_version = (select version from raw.models where monitor = %s)
           from raw.batches where monitor = %s and batch_date = '2023-02-14'""",
        (TAXI, TAXI, TAXI),
    ).fetchone()
    assert row == (
        "green_tripdata_2023-02.parquet",
        "bcc2821d639197cbb09aeb8994121a7004f2a6568a64bf4839015db802f62743",
        64_809, 2_466, 64_809 - 2_466, "passed", date(2023, 2, 14), True, True,
    )


def test_registry_row(demo_conn) -> None:
    (monitor, version, features, train_rows, validation_rows, train_mae, validation_mae,
     reference_version, reference_count, reference_rows) = demo_conn.execute(
        """select m.monitor, m.version, m.features, m.train_rows, m.validation_rows, m.train_mae, m.validation_mae,
                  r.version, r.row_count,
                  (select count(*) from raw.nyc_taxi__reference t where t.reference_version = r.version)
           from raw.models m join raw.references r on r.monitor = m.monitor and r.model_version = m.version"""
    ).fetchone()
    assert monitor == TAXI
    assert len(version) == 12 and len(reference_version) == 12
    assert features == ["passenger_count", "trip_distance", "fare_amount", "total_amount",
                        "pu_location_id", "do_location_id"]
    # January 2023 after the course's filters (computed here in pandas), split 80/20.
    january = pd.read_parquet(JANUARY)
    minutes = (january.lpep_dropoff_datetime - january.lpep_pickup_datetime).dt.total_seconds() / 60
    kept = int(((minutes > 0) & (minutes <= 60) & (january.passenger_count > 0) & (january.passenger_count <= 8)).sum())
    assert kept == 62_903
    assert train_rows + validation_rows == kept
    assert validation_rows == math.ceil(0.2 * kept)
    assert 3.0 < validation_mae < 4.5 and 3.0 < train_mae < 4.5
    assert round(validation_mae, 2) == 3.70
    january_pickups = int(((january.lpep_pickup_datetime.dt.year == 2023)
                           & (january.lpep_pickup_datetime.dt.month == 1)).sum())
    assert reference_rows == reference_count == january_pickups == 68_207  # January's rows with a January pickup
    # The reference rows are scored by the model they came with.
    assert demo_conn.execute(
        "select count(predicted_duration_min) from raw.nyc_taxi__reference where reference_version = %s",
        (reference_version,),
    ).fetchone() == (68_207,)


def test_rerunning_a_batch_changes_no_count(trained_settings: Settings) -> None:
    day = date(2023, 2, 14)
    first = pipeline.run_batch(trained_settings, day, FEBRUARY)
    second = pipeline.run_batch(trained_settings, day, FEBRUARY)
    assert first.monitor == second.monitor == TAXI
    assert first.rows_loaded == second.rows_loaded == 2_466
    assert first.rows_outside_period == second.rows_outside_period == 64_809 - 2_466
    assert first.status == second.status == "passed"
    import psycopg

    with psycopg.connect(trained_settings.database_url) as conn:
        counts = conn.execute(
            """select (select count(*) from raw.nyc_taxi__rows), (select count(predicted_duration_min) from raw.nyc_taxi__rows),
                      (select count(*) from raw.batches), (select count(*) from marts.column_quality),
                      (select count(*) from marts.batch_checks), (select count(*) from marts.model_performance),
                      (select count(*) from marts.daily_trips), (select count(*) from marts.batch_health),
                      (select count(distinct trip_id) from raw.nyc_taxi__rows)"""
        ).fetchone()
        metrics = conn.execute(
            "select metric, class_name, batch_rows, labelled_rows from marts.model_performance order by metric"
        ).fetchall()
    # column_quality: 4 numeric features, prediction, target, 2 zones. batch_checks: 5 per-batch checks,
    # missing_share of 6 features + pickup + prediction, non_finite_share of 4 numeric features + prediction
    # + target, unseen_category_share of 2 zones, out_of_reference_range_share of 4 numeric features,
    # 3 custom share checks, known_zone_share of 2 zones.
    assert counts == (2_466, 2_466, 1, 8, 30, 4, 1, 1, 2_466)
    assert metrics == [(name, "", 2_466, 2_466) for name in ("bias", "mae", "r2", "rmse")]
