"""The batch pipeline end to end, on real PostgreSQL and the real TLC months."""

from __future__ import annotations

from datetime import date

import math

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelwatch import pipeline
from modelwatch.config import Settings

from .conftest import FEBRUARY, JANUARY


def _pickups_per_day(path) -> dict[date, int]:
    """Independent count: rows of the file per pickup day, straight from parquet."""
    table = pq.read_table(path, columns=["lpep_pickup_datetime"])
    days = pc.cast(table["lpep_pickup_datetime"], "date32")
    counts = pc.value_counts(days).to_pylist()
    return {item["values"]: item["counts"] for item in counts}


def test_demo_loads_every_february_day_exactly(demo_conn) -> None:
    expected = {day: n for day, n in _pickups_per_day(FEBRUARY).items() if day.year == 2023 and day.month == 2}
    loaded = dict(demo_conn.execute("select batch_date, count(*) from raw.trips group by 1").fetchall())
    assert len(loaded) == 28
    assert loaded == expected
    assert sum(loaded.values()) == 64_783  # 64,809 rows, 26 pickups outside February
    predictions = demo_conn.execute("select count(*) from raw.predictions").fetchone()[0]
    assert predictions == 64_783


def test_batch_log_records_file_and_counts(demo_conn) -> None:
    row = demo_conn.execute(
        """select file_name, file_sha256, rows_in_file, rows_loaded, rows_outside_day, status
           from raw.batches where batch_date = '2023-02-14'"""
    ).fetchone()
    assert row == (
        "green_tripdata_2023-02.parquet",
        "bcc2821d639197cbb09aeb8994121a7004f2a6568a64bf4839015db802f62743",
        64_809, 2_466, 64_809 - 2_466, "passed",
    )


def test_registry_row(demo_conn) -> None:
    version, features, train_rows, validation_rows, train_mae, validation_mae, reference_rows = demo_conn.execute(
        """select m.version, m.features, m.train_rows, m.validation_rows, m.train_mae, m.validation_mae,
                  (select count(*) from raw.reference_trips r where r.model_version = m.version)
           from raw.models m"""
    ).fetchone()
    assert len(version) == 12
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
    assert reference_rows == 68_207  # January's rows with a January pickup


def test_rerunning_a_batch_changes_no_count(trained_settings: Settings) -> None:
    day = date(2023, 2, 14)
    first = pipeline.run_batch(trained_settings, day, FEBRUARY)
    second = pipeline.run_batch(trained_settings, day, FEBRUARY)
    assert first.rows_loaded == second.rows_loaded == 2_466
    assert first.status == second.status == "passed"
    import psycopg

    with psycopg.connect(trained_settings.database_url) as conn:
        counts = conn.execute(
            """select (select count(*) from raw.trips), (select count(*) from raw.predictions),
                      (select count(*) from raw.batches), (select count(*) from marts.column_quality),
                      (select count(*) from marts.batch_checks), (select count(*) from marts.model_performance),
                      (select count(*) from marts.daily_trips), (select count(*) from marts.batch_health),
                      (select count(distinct trip_id) from raw.trips)"""
        ).fetchone()
    assert counts == (2_466, 2_466, 1, 8, 17, 1, 1, 1, 2_466)
