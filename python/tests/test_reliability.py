"""Faults: processes killed mid-load and mid-build, concurrent runs, resumed backfills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import psycopg
import pytest
from psycopg import sql

from modelwatch import db, pipeline, status
from modelwatch.config import Settings

from .conftest import FEBRUARY

DAY = date(2023, 2, 14)
NEXT_DAY = date(2023, 2, 15)


def _cli(settings: Settings, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MODELWATCH_DATABASE_URL": settings.database_url, "MODELWATCH_HOME": str(settings.home)}
    return subprocess.Popen([sys.executable, "-m", "modelwatch.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _state(url: str) -> tuple:
    """Everything a batch leaves behind, in one comparable value."""
    with psycopg.connect(url) as conn:
        return tuple(
            conn.execute(query).fetchall()
            for query in (
                "select batch_date, count(*), count(distinct trip_id), sum(fare_amount) from raw.trips group by 1 order by 1",
                "select batch_date, count(*), sum(predicted_duration_min) from raw.predictions group by 1 order by 1",
                "select batch_date, status, rows_loaded from raw.batches order by 1",
                "select batch_date, column_name, row_count, missing_count, p50 from marts.column_quality order by 1, 2",
                "select batch_date, check_name, column_name, measured_value, passed from marts.batch_checks order by 1, 2, 3",
                "select batch_date, scored_trips, mae from marts.model_performance order by 1",
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


def _wait_until_blocked(url: str, query_start: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the process ended before blocking: {process.communicate()}")
            waiting = conn.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query ilike %s",
                (query_start + "%",),
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.1)
    raise AssertionError(f"no process blocked on {query_start!r} within {timeout_s}s")


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _killed_while_blocked(settings: Settings, table: str, query_start: str) -> tuple:
    """Run DAY once, then again in a child process killed (SIGKILL) while it waits on a lock
    held on `table` in a statement starting with `query_start`; returns the first run's state."""
    url = settings.database_url
    pipeline.run_batch(settings, DAY, FEBRUARY)
    before = _state(url)
    with _blocking(url, table):
        process = _cli(settings, "run", "--batch-date", DAY.isoformat(), "--file", str(FEBRUARY))
        _wait_until_blocked(url, query_start, process)
        _kill(process)
    return before


def _status(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select status from raw.batches where batch_date = %s", (DAY,)).fetchone()[0]


def test_sigkill_mid_load_leaves_no_partial_batch(trained_settings: Settings) -> None:
    url = trained_settings.database_url
    # The load transaction has deleted and re-copied the trips and now waits on predictions.
    before = _killed_while_blocked(trained_settings, "raw.predictions", "delete from")
    after = _state(url)
    assert after[0] == before[0] and after[1] == before[1]  # the previous version of the batch, whole
    assert after[3:] == before[3:]
    assert _status(url) == "loading"
    with psycopg.connect(url) as conn:
        shown = {row.batch_date: row.status for row in status.recent_batches(conn)}
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
    single_run = _killed_while_blocked(trained_settings, "marts.daily_trips", "")  # dbt waits on the locked mart
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
        assert conn.execute("select count(*) from marts.model_performance").fetchone() == (2,)


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


def test_an_older_database_is_refused_before_loading_then_upgraded_by_init(trained_settings: Settings) -> None:
    """A database from before publishing (no published_batches, no row-level security): a run stops
    before touching anything and asks for `init`; init publishes its finished batches."""
    url = trained_settings.database_url
    pipeline.run_batch(trained_settings, DAY, FEBRUARY)
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute("drop table marts.published_batches cascade")  # and the policies that read it
        for mart in MARTS:
            owner.execute(sql.SQL("alter table marts.{} disable row level security").format(sql.Identifier(mart)))
    before = _state(url)
    with pytest.raises(psycopg.errors.UndefinedTable):
        pipeline.run_batch(trained_settings, NEXT_DAY, FEBRUARY)
    assert _state(url) == before  # nothing loaded, no batch logged
    pipeline.init(trained_settings)
    pipeline.run_batch(trained_settings, NEXT_DAY, FEBRUARY)  # its build puts the policies back
    with psycopg.connect(url) as owner, db.connect_as_reader(url) as reader:
        published = owner.execute("select batch_date from marts.published_batches order by 1").fetchall()
        assert published == [(DAY,), (NEXT_DAY,)]
        assert _rows_of_day(reader) == _rows_of_day(owner)
        assert reader.execute("select count(*) from marts.daily_trips").fetchone() == (2,)
        secured = owner.execute(
            """select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = 'marts' and c.relname = any(%s) and c.relrowsecurity""", (list(MARTS),)).fetchone()
        assert secured == (len(MARTS),)
