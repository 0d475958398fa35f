"""Migrating a database made by an older modelwatch to this one's schema (run by `init`).

Version 1, the one-monitor modelwatch, held the taxi's trips in raw.trips and its
predictions in raw.predictions; its batches become the `nyc_taxi` monitor's,
nothing lost: rows, reference sets, models, test runs and drift scores are
copied into the shared tables and the monitor's own, and the marts (derived, so
dropped) are rebuilt from them by `init` afterwards (pipeline.rebuild_marts).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from modelwatch.errors import UsageError
from modelwatch.monitors import Monitor

V1_MONITOR = "nyc_taxi"  # whose batches a version-1 database holds
# The version-1 tables that move, each renamed aside first (with its primary key's name).
_V1_TABLES = ("batches", "models", "dbt_test_runs", "drift_scores", "drift_datasets")


def set_aside_v1(conn: psycopg.Connection) -> None:
    """Rename the version-1 tables whose names the new schema takes, and drop what dbt
    derived from them (staging, marts, audit: rebuilt afterwards)."""
    for table in _V1_TABLES:
        conn.execute(sql.SQL("alter table {} rename to {}").format(
            sql.Identifier("raw", table), sql.Identifier(f"{table}_v1")))
        for (constraint,) in conn.execute(
                "select conname from pg_constraint where conrelid = %s::regclass and contype = 'p'",
                (f"raw.{table}_v1",)).fetchall():
            conn.execute(sql.SQL("alter table {} rename constraint {} to {}").format(
                sql.Identifier("raw", f"{table}_v1"), sql.Identifier(constraint),
                sql.Identifier(f"{table}_v1_pkey")))
    for schema in ("staging", "marts", "audit"):
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))


def copy_v1(conn: psycopg.Connection, monitors: list[Monitor]) -> None:
    """Copy the set-aside version-1 data into the new tables (made already), then drop it."""
    taxi = next((monitor for monitor in monitors if monitor.name == V1_MONITOR), None)
    if taxi is None:
        raise UsageError(f"the database holds the batches of an older modelwatch, which belong to monitor "
                         f"{V1_MONITOR}: declare it in dbt_project.yml vars.monitors to migrate them")
    old = {row[0] for row in conn.execute(
        "select column_name from information_schema.columns where table_schema = 'raw' and table_name = 'trips'")}
    columns = [(name, pg_type) for name, pg_type in taxi.stored_columns if name != taxi.prediction]
    missing = [name for name, _ in columns if name not in old]
    if missing:
        raise UsageError(f"monitor {V1_MONITOR}: columns {', '.join(missing)} are not in the older database's "
                         "raw.trips; migrate with the taxi's declaration as shipped")
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
    casts = sql.SQL(", ").join(
        sql.SQL("cast(t.{} as {})").format(sql.Identifier(name), sql.SQL(pg_type)) for name, pg_type in columns)
    prediction = sql.Identifier(taxi.prediction)
    conn.execute(sql.SQL(
        "insert into {} (batch_date, {}, {}) select t.batch_date, {}, p.predicted_duration_min"
        " from raw.trips as t left join raw.predictions as p on p.batch_date = t.batch_date and p.trip_id = t.trip_id"
    ).format(sql.Identifier("raw", taxi.rows_table), names, prediction, casts))
    conn.execute(sql.SQL(
        "insert into {} (reference_version, {}, {}) select t.model_version, {}, t.predicted_duration_min"
        " from raw.reference_trips as t"
    ).format(sql.Identifier("raw", taxi.reference_table), names, prediction, casts))
    # A version-1 reference set belonged to the model trained on it: its version names it.
    conn.execute("""
        insert into raw.references (monitor, version, file_name, file_sha256, row_count, model_version, created_at)
        select %(m)s, r.model_version, m.reference_file, m.reference_sha256, r.row_count, r.model_version, m.trained_at
        from (select model_version, count(*) as row_count from raw.reference_trips group by model_version) as r
        join raw.models_v1 as m on m.version = r.model_version""", {"m": V1_MONITOR})
    conn.execute("""
        insert into raw.models (monitor, version, trained_at, algorithm, features, target, reference_file,
                                reference_sha256, train_rows, validation_rows, train_mae, validation_mae, artifact)
        select %(m)s, version, trained_at, algorithm, features, target, reference_file, reference_sha256,
               train_rows, validation_rows, train_mae, validation_mae, artifact
        from raw.models_v1""", {"m": V1_MONITOR})
    conn.execute("""
        insert into raw.batches (monitor, batch_date, batch_end, file_name, file_sha256, rows_in_file, rows_loaded,
                                 rows_outside_period, model_version, reference_version, coercions, status,
                                 started_at, finished_at, error)
        select %(m)s, batch_date, batch_date, file_name, file_sha256, rows_in_file, rows_loaded, rows_outside_day,
               model_version, model_version, coercions, status, started_at, finished_at, error
        from raw.batches_v1""", {"m": V1_MONITOR})
    conn.execute("""
        insert into raw.dbt_test_runs (monitor, invocation_id, executed_at, batch_date, test_name, column_name,
                                       status, failures, message)
        select %(m)s, invocation_id, executed_at, batch_date, test_name, column_name, status, failures, message
        from raw.dbt_test_runs_v1""", {"m": V1_MONITOR})
    conn.execute("""
        insert into raw.drift_scores (monitor, batch_date, column_name, column_kind, computed, method, threshold,
                                      score, drifted, reason, evidently_version, computed_at)
        select %(m)s, batch_date, column_name, column_kind, computed, method, threshold, score, drifted, reason,
               evidently_version, computed_at
        from raw.drift_scores_v1""", {"m": V1_MONITOR})
    conn.execute("""
        insert into raw.drift_datasets (monitor, batch_date, reference_version, reference_rows, reference_rows_used,
                                        current_rows, current_rows_used, sample_seed, columns_monitored,
                                        columns_computed, columns_drifted, share_drifted, drift_share, dataset_drift,
                                        evidently_version, seconds, computed_at)
        select %(m)s, batch_date, model_version, reference_rows, reference_rows_used, current_rows, current_rows_used,
               sample_seed, columns_monitored, columns_computed, columns_drifted, share_drifted, drift_share,
               dataset_drift, evidently_version, seconds, computed_at
        from raw.drift_datasets_v1""", {"m": V1_MONITOR})
    conn.execute("drop table raw.trips, raw.predictions, raw.reference_trips, "
                 + ", ".join(f"raw.{table}_v1" for table in _V1_TABLES))
