"""Cross-check with a peer: column_quality's medians and missing counts equal
Evidently's QuantileValue and MissingValueCount on the same rows, per batch."""

from __future__ import annotations

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from modelwatch.config import Settings
from modelwatch.monitors import Monitor

from .conftest import TAXI

TOLERANCE = 1e-9


def _batch_frame(conn: psycopg.Connection, monitor: Monitor) -> pd.DataFrame:
    """The batch rows as stored (raw.nyc_taxi__rows, the prediction among them), with the target
    (the monitor's derived duration_min) computed in pandas, not SQL."""
    stored = ["batch_date", "pickup_datetime", "dropoff_datetime", *monitor.features, monitor.prediction]
    cursor = conn.execute(sql.SQL("select {} from {}").format(
        sql.SQL(", ").join(map(sql.Identifier, stored)), sql.Identifier("raw", monitor.rows_table)))
    frame = pd.DataFrame(cursor.fetchall(), columns=stored)
    assert monitor.target in monitor.derived and monitor.target not in frame
    frame[monitor.target] = (frame.dropoff_datetime - frame.pickup_datetime).dt.total_seconds() / 60.0
    return frame


def test_column_quality_matches_evidently(demo_settings: Settings, demo_conn) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MissingValueCount, QuantileValue

    monitor = demo_settings.monitor(TAXI)
    numeric = list(monitor.numeric_columns)  # the features, the prediction and the target
    categorical = list(monitor.categorical_columns)  # the zones, as text
    assert len(numeric) + len(categorical) == 8
    frame = _batch_frame(demo_conn, monitor)
    marts = {
        (day, column): (p50, missing)
        for day, column, p50, missing in demo_conn.execute(
            "select batch_date, column_name, p50, missing_count from marts.column_quality where monitor = %s",
            (TAXI,)).fetchall()
    }
    assert len(marts) == 28 * (len(numeric) + len(categorical))
    metrics = [QuantileValue(column=c, quantile=0.5) for c in numeric] + [
        MissingValueCount(column=c) for c in numeric + categorical
    ]
    compared = 0
    for day, batch in frame.groupby("batch_date"):
        data = Dataset.from_pandas(
            batch[numeric + categorical].astype({c: "float64" for c in numeric}),
            data_definition=DataDefinition(numerical_columns=numeric, categorical_columns=categorical),
        )
        results = Report(metrics).run(current_data=data, reference_data=None).dict()["metrics"]
        values = {r["metric_name"]: r["value"] for r in results}
        for column in numeric:
            p50, missing = marts[(day, column)]
            assert p50 == pytest.approx(values[f"QuantileValue(column={column},quantile=0.5)"], abs=TOLERANCE)
            assert missing == values[f"MissingValueCount(column={column})"]["count"]
            compared += 1
        for column in categorical:
            assert marts[(day, column)][1] == values[f"MissingValueCount(column={column})"]["count"]
            compared += 1
    assert compared == 28 * 8
    # Real missingness is there to compare: passenger_count is null in about 7% of February's trips.
    missing_passengers = sum(m for (d, c), (_, m) in marts.items() if c == "passenger_count")
    assert missing_passengers == int(frame.passenger_count.isna().sum()) > 4_000


def test_daily_trips_match_pandas(demo_settings: Settings, demo_conn) -> None:
    """daily_trips takes the means and medians of monitored columns from column_quality: they must
    still be the day's own figures, as pandas computes them from the stored rows."""
    frame = _batch_frame(demo_conn, demo_settings.monitor(TAXI))
    columns = ["duration_min", "trip_distance", "fare_amount", "total_amount"]
    marts = {row[0]: row[1:] for row in demo_conn.execute(
        f"select batch_date, trips, {', '.join(f'mean_{c}, p50_{c}' for c in columns)} from marts.daily_trips"
        " where monitor = %s", (TAXI,)).fetchall()}
    assert len(marts) == 28
    for day, batch in frame.groupby("batch_date"):
        expected = [len(batch)]
        for column in columns:
            expected += [batch[column].mean(), batch[column].median()]
        assert marts[day] == pytest.approx(expected, abs=TOLERANCE), day


def test_quantiles_from_counts_equal_percentile_cont_on_the_rows(demo_settings: Settings, demo_conn) -> None:
    """column_quality reads its quantiles off the batch's frequency table: every one of them, for
    every batch and numeric column, is exactly (==, not approximately) what percentile_cont gives
    on the batch's rows, and its min, max and missing counts too. The rows: the stored ones,
    with the monitor's derived columns (duration_min) by its declared SQL, as double precision."""
    monitor = demo_settings.monitor(TAXI)
    numeric = monitor.numeric_columns
    demo_conn.execute(sql.SQL("create temporary view scored_rows as select batch_date, {} from {}").format(
        sql.SQL(", ").join(
            sql.SQL("cast({} as double precision) as {}").format(
                sql.SQL("({})").format(sql.SQL(monitor.derived[column])) if column in monitor.derived
                else sql.Identifier(column), sql.Identifier(column))
            for column in numeric),
        sql.Identifier("raw", monitor.rows_table)))
    selects = " union all ".join(
        f"""select batch_date, '{column}', count(*) - count({column}), min({column}),
                   percentile_cont(array[0.05, 0.25, 0.5, 0.75, 0.95]) within group (order by {column}),
                   max({column})
            from scored_rows group by batch_date"""
        for column in numeric)
    on_rows = {(day, column): (missing, low, *quantiles, high)
               for day, column, missing, low, quantiles, high in demo_conn.execute(selects).fetchall()}
    in_mart = {(day, column): tuple(rest) for day, column, *rest in demo_conn.execute(
        """select batch_date, column_name, missing_count, min_value, p05, p25, p50, p75, p95, max_value
           from marts.column_quality where monitor = %s and column_kind = 'numeric'""", (TAXI,)).fetchall()}
    assert len(on_rows) == 28 * len(numeric) == len(in_mart) == 28 * 6
    assert in_mart == on_rows
