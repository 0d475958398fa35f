"""Faults: processes killed mid-load and mid-build, concurrent runs, resumed backfills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from functools import partial
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from modelwatch import pipeline
from modelwatch.config import Settings
from modelwatch.pipeline import status
from modelwatch.postgres import db, schema

from .conftest import FEBRUARY, JANUARY, TAXI, error_line, invoke_cli

DAY = date(2023, 2, 14)


def _cli(settings: Settings, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MODELWATCH_DATABASE_URL": settings.database_url, "MODELWATCH_HOME": str(settings.home)}
    return subprocess.Popen([sys.executable, "-m", "modelwatch.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(url: str) -> tuple:
    """Everything a batch leaves behind, in one comparable value: its rows (prediction included),
    the batch log, then the marts."""
    with psycopg.connect(url) as conn:
        return tuple(
            conn.execute(query).fetchall()
            for query in (
                """select batch_date, count(*), count(distinct trip_id), round(cast(sum(fare_amount) as numeric), 6),
                          count(predicted_duration_min), round(cast(sum(predicted_duration_min) as numeric), 6)
                   from raw.nyc_taxi__rows group by 1 order by 1""",
                "select monitor, batch_date, status, rows_loaded from raw.batches order by 1, 2",
                "select batch_date, column_name, row_count, missing_count, p50 from marts.column_quality order by 1, 2",
                "select batch_date, check_name, column_name, measured_value, passed from marts.batch_checks order by 1, 2, 3",
                # sums rounded: their last bits follow the order the scan meets the rows, which is
                # where the heap put them (a replaced batch's rows may land in freed pages)
                "select batch_date, metric, class_name, n, round(cast(value as numeric), 12)"
                " from marts.model_performance order by 1, 2, 3",
                "select batch_date, trips from marts.daily_trips order by 1",
                "select batch_date, status, rows_loaded, tests_failed from marts.batch_health order by 1",
            )
        )


@contextmanager
def _blocking(url: str, table: str) -> Iterator[psycopg.Connection]:
    """Hold an exclusive lock on `table` so a writer blocks there until released."""
    conn = psycopg.connect(url)
    conn.execute(f"lock table {table} in exclusive mode")  # noqa: S608 (fixed names)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


GATE_KEY = (4_242, 1)  # an advisory lock of the tests' own (modelwatch's: db.LOCK_CLASS, and from 2**30 up)


@contextmanager
def _gated_copy(url: str, table: str) -> Iterator[None]:
    """Make every COPY (or INSERT) into `table` wait, once all its rows are in, on an advisory
    lock held here: a statement-level AFTER INSERT trigger takes it. A load then blocks inside
    its transaction, with the batch's rows deleted and copied but not committed."""
    gate = psycopg.connect(url, autocommit=True)
    try:
        gate.execute("select pg_advisory_lock(%s, %s)", GATE_KEY)
        gate.execute(f"""create function public.test_gate() returns trigger language plpgsql as $$
                         begin perform pg_advisory_xact_lock({GATE_KEY[0]}, {GATE_KEY[1]}); return null; end $$""")
        gate.execute(f"create trigger test_gate after insert on {table} for each statement "  # noqa: S608 (fixed names)
                     "execute function public.test_gate()")
        yield
    finally:
        gate.execute("select pg_advisory_unlock(%s, %s)", GATE_KEY)
        gate.execute(f"drop trigger if exists test_gate on {table}")  # waits for the killed load's session to end
        gate.execute("drop function if exists public.test_gate()")
        gate.close()


def _wait_until_blocked(url: str, query_start: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the process ended before blocking: {process.communicate()}")
            waiting = conn.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query ilike %s"
                " and datname = current_database()",
                (query_start + "%",),
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.1)
    raise AssertionError(f"no process blocked on {query_start!r} within {timeout_s}s")


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _killed_while_blocked(settings: Settings, blocker: Callable[[str], AbstractContextManager],
                          query_start: str) -> tuple:
    """Run DAY once, then again in a child process killed (SIGKILL) while it waits on a lock
    `blocker` holds, in a statement starting with `query_start`; returns the first run's state."""
    url = settings.database_url
    pipeline.run_batch(settings, DAY, FEBRUARY)
    before = _state(url)
    with blocker(url):
        process = _cli(settings, "run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY))
        _wait_until_blocked(url, query_start, process)
        _kill(process)
    return before


def _status(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select status from raw.batches where monitor = %s and batch_date = %s", (TAXI, DAY)
        ).fetchone()[0]


def test_sigkill_mid_load_leaves_no_partial_batch(trained_settings: Settings) -> None:
    url = trained_settings.database_url
    # The load transaction has deleted the batch's rows and copied them again, and waits at the COPY's end.
    before = _killed_while_blocked(trained_settings, partial(_gated_copy, table="raw.nyc_taxi__rows"), "copy ")
    after = _state(url)
    assert after[0] == before[0]  # the previous version of the batch, whole, predictions included
    assert after[2:] == before[2:]
    assert _status(url) == "loading"
    with psycopg.connect(url) as conn:
        shown = {row.batch_date: row.status for row in status.recent_batches(conn, TAXI)}
    assert shown[DAY] == "interrupted (loading)"
    pipeline.run_batch(trained_settings, DAY, FEBRUARY)
    assert _state(url) == before


MARTS = ("column_quality", "daily_trips", "batch_checks", "model_performance", "feature_drift", "dataset_drift",
         "test_results", "batch_health")


def _rows_of_day(conn: psycopg.Connection) -> dict[str, int]:
    return {mart: conn.execute(sql.SQL("select count(*) from marts.{} where batch_date = %s").format(
        sql.Identifier(mart)), (DAY,)).fetchone()[0] for mart in MARTS}


def test_sigkill_mid_build_then_rerun_completes(trained_settings: Settings) -> None:
    url = trained_settings.database_url
    # dbt waits on the locked mart
    single_run = _killed_while_blocked(trained_settings, partial(_blocking, table="marts.daily_trips"), "")
    assert _status(url) == "building"
    # The marts hold a mix of the two runs' rows for DAY; the reader (Grafana) sees none of them.
    with psycopg.connect(url) as owner, db.connect_as_reader(url) as reader:
        assert all(_rows_of_day(owner).values())
        assert _rows_of_day(reader) == dict.fromkeys(MARTS, 0)
    pipeline.run_batch(trained_settings, DAY, FEBRUARY)
    assert _state(url) == single_run
    with psycopg.connect(url) as owner, db.connect_as_reader(url) as reader:
        seen = _rows_of_day(reader)
        assert seen == _rows_of_day(owner)
        assert seen["column_quality"] == 8  # 4 numeric features, prediction, target, 2 zones


def test_same_batch_twice_at_once_equals_one_run(trained_settings: Settings) -> None:
    url = trained_settings.database_url
    processes = [
        _cli(trained_settings, "run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY)) for _ in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    concurrent = _state(url)
    pipeline.run_batch(trained_settings, DAY, FEBRUARY)
    assert _state(url) == concurrent
    assert concurrent[0][0][1] == 2_466


def test_two_batches_at_once_both_complete(trained_settings: Settings) -> None:
    url = trained_settings.database_url
    days = [date(2023, 2, 14), date(2023, 2, 15)]
    processes = [_cli(trained_settings, "run", "--batch-date", d.isoformat(), "--file", str(FEBRUARY)) for d in days]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    with psycopg.connect(url) as conn:
        assert conn.execute("select batch_date, rows_loaded, status from raw.batches order by 1").fetchall() == [
            (days[0], 2_466, "passed"), (days[1], 2_565, "passed"),
        ]
        assert conn.execute(
            "select batch_date, count(*), min(batch_rows), max(batch_rows) from marts.model_performance group by 1 order by 1"
        ).fetchall() == [(days[0], 4, 2_466, 2_466), (days[1], 4, 2_565, 2_565)]  # mae, rmse, bias, r2
        assert conn.execute(
            "select batch_date, count(*) from raw.nyc_taxi__rows group by 1 order by 1"
        ).fetchall() == [(days[0], 2_466), (days[1], 2_565)]


def test_interrupted_backfill_resumes_without_redoing(trained_settings: Settings) -> None:
    first = pipeline.backfill(trained_settings, FEBRUARY, end=date(2023, 2, 10))
    assert len(first.batches) == 10
    with psycopg.connect(trained_settings.database_url) as conn:
        finished_at = dict(conn.execute("select batch_date, finished_at from raw.batches").fetchall())
    resumed = pipeline.backfill(trained_settings, FEBRUARY)
    assert len(resumed.batches) == 28 and len(resumed.skipped) == 10
    assert resumed.rows_in_no_batch == 26
    with psycopg.connect(trained_settings.database_url) as conn:
        again = dict(conn.execute("select batch_date, finished_at from raw.batches").fetchall())
    assert all(again[day] == finished_at[day] for day in finished_at)  # not redone
    forced = pipeline.backfill(trained_settings, FEBRUARY, end=date(2023, 2, 2), force=True)
    assert forced.skipped == ()
    with psycopg.connect(trained_settings.database_url) as conn:
        redone = dict(conn.execute("select batch_date, finished_at from raw.batches").fetchall())
    assert redone[date(2023, 2, 1)] > finished_at[date(2023, 2, 1)]


def test_database_down_exits_3_quickly(tmp_path) -> None:
    env = {**os.environ, "MODELWATCH_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/modelwatch",
           "MODELWATCH_HOME": str(tmp_path)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "modelwatch.cli", "run", "--batch-date", "2023-02-14",
                             "--file", str(FEBRUARY)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert result.stderr.strip().startswith("Error: cannot connect to PostgreSQL at 127.0.0.1:9/modelwatch")
    assert time.monotonic() - started < 10


# A database of the one-monitor modelwatch (schema version 1, which recorded no version): its DDL
# (tests/fixtures/schema_v1.sql, from that version's code), one finished batch of two trips and
# one of its marts as its dbt build left it.
V1_DDL = Path(__file__).parent / "fixtures" / "schema_v1.sql"
V1_DAY = date(2023, 2, 20)  # after DAY: not in the volume band of DAY, which the test runs after the migration
V1_ROWS = f"""
create table marts.batch_health (
    batch_date date not null, status text, rows_loaded bigint, tests_passed bigint, tests_warned bigint,
    tests_failed bigint, failing_tests text, model_version text, tested_at timestamptz
);
insert into raw.batches (batch_date, file_name, file_sha256, rows_in_file, rows_loaded, rows_outside_day,
                         model_version, status, finished_at)
values ('{V1_DAY}', 'green_tripdata_2023-02.parquet', 'bcc2821d', 64809, 2, 64807, 'abc', 'passed', now());
insert into raw.trips (batch_date, trip_id, pickup_datetime, dropoff_datetime, pu_location_id, do_location_id,
                       passenger_count, trip_distance, fare_amount, total_amount)
values ('{V1_DAY}', 1, '{V1_DAY} 08:00', '{V1_DAY} 08:12', 132, 7, 1, 2.5, 12.5, 15.0),
       ('{V1_DAY}', 2, '{V1_DAY} 09:00', '{V1_DAY} 09:06', 74, 75, 2, 1.1, 7.0, 8.5);
insert into raw.predictions values ('{V1_DAY}', 1, 'abc', 11.0), ('{V1_DAY}', 2, 'abc', 6.5);
insert into marts.batch_health values ('{V1_DAY}', 'passed', 2, 17, 0, 0, null, 'abc', now());
insert into marts.published_batches (batch_date) values ('{V1_DAY}');
"""


def _one_monitor_database(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(V1_DDL.read_text())
        conn.execute(V1_ROWS)


def _catalog(url: str, *queries: str) -> tuple:
    """What the database holds: modelwatch's schemas' relations and their columns, then what `queries` read."""
    with psycopg.connect(url) as conn:
        relations = conn.execute(
            """select n.nspname, c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
               left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
               where n.nspname in ('raw', 'staging', 'marts', 'audit') order by 1, 2, 4"""
        ).fetchall()
        return (relations, *(conn.execute(query).fetchall() for query in queries))


ONE_MONITOR_ROWS = ("select * from raw.batches order by batch_date",
                    "select count(*), sum(fare_amount), sum(pu_location_id) from raw.trips",
                    "select * from marts.published_batches")


ONE_MONITOR_REFUSED = ("Error: the database holds the schema of an older modelwatch (version 1): run "
                       "`modelwatch init` to migrate it (its batches become monitor nyc_taxi's)")


def test_a_database_of_the_one_monitor_schema_is_refused_before_loading_then_migrated_by_init(
        fresh_settings: Settings) -> None:
    """The one-monitor modelwatch's database (raw.trips, raw.predictions, no schema version):
    every command but `init` stops with one line saying to run it, exit 2, before touching
    anything; init migrates it (tests/test_migration.py checks the migration in full), and the
    run that was refused then passes."""
    url = fresh_settings.database_url
    _one_monitor_database(url)
    before = _catalog(url, *ONE_MONITOR_ROWS)
    assert {("raw", "trips"), ("raw", "predictions"), ("raw", "batches"), ("marts", "batch_health")} <= {
        (schema_name, table) for schema_name, table, *_ in before[0]}
    assert before[2] == [(2, 19.5, 206)]
    run = ("run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY))
    commands = (
        run,
        ("backfill", "--file", str(FEBRUARY), "--end", "2023-02-02"),
        ("train", "--reference", str(JANUARY)),
        ("reference", "--file", str(JANUARY)),
        ("status",),
    )
    for command in commands:
        result = invoke_cli(fresh_settings, *command)
        assert result.exit_code == 2, (command, result.output)
        assert error_line(result) == ONE_MONITOR_REFUSED, command
    assert _catalog(url, *ONE_MONITOR_ROWS) == before
    with psycopg.connect(url) as conn:
        assert schema.stored_version(conn) == 1

    migrated = invoke_cli(fresh_settings, "init")
    assert migrated.exit_code == 0, migrated.output
    with psycopg.connect(url) as conn:
        assert schema.stored_version(conn) == schema.SCHEMA_VERSION
        assert conn.execute("select to_regclass('raw.trips'), to_regclass('raw.predictions')").fetchone() == (
            None, None)
        assert conn.execute(
            "select monitor, batch_date, rows_loaded, rows_outside_period, model_version from raw.batches"
        ).fetchall() == [(TAXI, V1_DAY, 2, 64_807, "abc")]
        assert conn.execute(
            "select trip_id, pu_location_id, predicted_duration_min from raw.nyc_taxi__rows order by 1"
        ).fetchall() == [(1, "132", 11.0), (2, "74", 6.5)]  # zone ids are categories (text) now
    assert invoke_cli(fresh_settings, "train", "--reference", str(JANUARY)).exit_code == 0
    result = invoke_cli(fresh_settings, *run)
    assert result.exit_code == 0, result.output
    with psycopg.connect(url) as conn:
        assert conn.execute("select batch_date, rows_loaded from raw.batches where status = 'passed'").fetchall() == [
            (DAY, 2_466)]
        assert {day for (day,) in conn.execute("select batch_date from marts.batch_health")} == {V1_DAY, DAY}
        assert [row.batch_date for row in status.recent_batches(conn, TAXI)] == [V1_DAY, DAY]


@pytest.mark.parametrize("command", [("report", "--batch-date", V1_DAY.isoformat()), ("dashboard",)],
                         ids=lambda command: command[0])
def test_a_database_of_the_one_monitor_schema_is_refused_by_the_readers(
        fresh_settings: Settings, command: tuple[str, ...]) -> None:
    _one_monitor_database(fresh_settings.database_url)
    result = invoke_cli(fresh_settings, *command)
    assert (result.exit_code, error_line(result)) == (2, ONE_MONITOR_REFUSED), result.output
    assert not fresh_settings.reports_dir.exists()


def test_a_database_of_a_newer_schema_is_refused_untouched(fresh_settings: Settings) -> None:
    url = pipeline.init(fresh_settings)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into raw.schema_version (version) values (%s)", (schema.SCHEMA_VERSION + 1,))
    rows = ("select version from raw.schema_version order by 1", "select * from raw.batches",
            "select * from marts.published_batches")
    before = _catalog(url, *rows)
    assert before[1] == [(schema.SCHEMA_VERSION,), (schema.SCHEMA_VERSION + 1,)]
    refused = (f"Error: the database holds schema version {schema.SCHEMA_VERSION + 1}, newer than this "
               f"modelwatch's ({schema.SCHEMA_VERSION}): upgrade modelwatch")
    for command in (("init",), ("run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY)), ("status",)):
        result = invoke_cli(fresh_settings, *command)
        assert result.exit_code == 2, (command, result.output)
        assert error_line(result) == refused, command
    assert _catalog(url, *rows) == before
