"""The data contract as a quality gate, on corrupted copies of a real February batch."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from modelwatch import pipeline
from modelwatch.cli import main
from modelwatch.config import Settings

from .conftest import FEBRUARY, TAXI, copy_project

DAY = date(2023, 2, 14)
MARTS = ("column_quality", "daily_trips", "batch_checks", "model_performance", "test_results", "batch_health")


def _day_table() -> pa.Table:
    table = pq.read_table(FEBRUARY)
    pickup = table["lpep_pickup_datetime"]
    return table.filter(pc.equal(pc.cast(pickup, pa.date32()), pa.scalar(DAY, pa.date32())))


def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def _null_fares(table: pa.Table, share: float) -> pa.Table:
    rng = np.random.default_rng(7)
    mask = pa.array(rng.random(table.num_rows) < share)
    fares = pc.if_else(mask, pa.scalar(None, pa.float64()), table["fare_amount"])
    return table.set_column(table.schema.get_field_index("fare_amount"), "fare_amount", fares)


def _in_domain(table: pa.Table) -> int:
    """Trips of 0 to 60 minutes (the taxi's performance_where), counted from the file."""
    seconds = pc.divide(pc.cast(pc.subtract(table["lpep_dropoff_datetime"], table["lpep_pickup_datetime"]),
                                pa.int64()), 1_000_000)
    return pc.sum(pc.and_(pc.greater(seconds, 0), pc.less_equal(seconds, 3600))).as_py()


def _negate_fares(table: pa.Table) -> pa.Table:
    return table.set_column(
        table.schema.get_field_index("fare_amount"), "fare_amount", pc.negate(table["fare_amount"])
    )


def _other_batches(url: str) -> dict[str, list[tuple]]:
    """Every mart's rows (and raw's counts) for the batches other than DAY, in an order of their own."""
    with psycopg.connect(url) as conn:
        snapshot = {
            mart: sorted(conn.execute(
                f"select * from marts.{mart} where batch_date <> %s", (DAY,)  # noqa: S608 (fixed names)
            ).fetchall(), key=repr)
            for mart in MARTS
        }
        snapshot["raw"] = conn.execute(
            """select batch_date, count(*), sum(fare_amount), sum(predicted_duration_min) from raw.nyc_taxi__rows
               where batch_date <> %s group by 1 order by 1""",
            (DAY,),
        ).fetchall()
    assert all(snapshot.values())  # ten batches: none of these is empty
    return snapshot


@pytest.fixture
def history(trained_settings: Settings) -> Settings:
    """Ten normal February batches before DAY, so the volume band has history."""
    outcome = pipeline.backfill(trained_settings, FEBRUARY, date(2023, 2, 4), date(2023, 2, 13))
    assert [b.status for b in outcome.batches] == ["passed"] * 10
    return trained_settings


def _run(settings: Settings, file: Path) -> tuple[int, str]:
    env = {"MODELWATCH_DATABASE_URL": settings.database_url, "MODELWATCH_HOME": str(settings.home)}
    result = CliRunner().invoke(main, ["run", "--batch-date", DAY.isoformat(), "--file", str(file)], env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("corruption", "failing_tests", "message_parts"),
    [
        (lambda t: _null_fares(t, 0.3), {"contract_missing_share"}, ["missing_share[fare_amount] = 0.3"]),
        (_negate_fares, {"contract_negative_fare_share"}, ["negative_fare_share = 0.99"]),
        (
            lambda t: t.slice(0, int(t.num_rows * 0.05)),
            {"contract_row_count_min", "contract_row_count_vs_trailing_median"},
            ["row_count_min = 123, expected >= 500", "row_count_vs_trailing_median = 0.04996"]  # 123 / median 2,462,
        ),
    ],
    ids=["30pct_null_fares", "negated_fares", "5pct_of_rows"],
)
def test_corrupted_batch_fails_named_tests_and_leaves_other_batches(
    history: Settings, tmp_path: Path, corruption, failing_tests: set[str], message_parts: list[str]
) -> None:
    before = _other_batches(history.database_url)
    code, output = _run(history, _write(corruption(_day_table()), tmp_path / "corrupt.parquet"))
    assert code == 1, output
    assert f"Error: batch {DAY} failed its data contract" in output
    for part in message_parts:
        assert part in output
    with psycopg.connect(history.database_url) as conn:
        status, failing, failed_count = conn.execute(
            "select status, failing_tests, tests_failed from marts.batch_health where monitor = %s and batch_date = %s",
            (TAXI, DAY),
        ).fetchone()
        assert status == "failed"
        assert set(failing.split(", ")) == failing_tests
        assert failed_count == len(failing_tests)
        recorded = conn.execute(
            "select test_name from marts.test_results where batch_date = %s and test_status = 'fail'", (DAY,)
        ).fetchall()
        assert {name for (name,) in recorded} == failing_tests
        # The gate: a failing batch never reaches the gated marts.
        assert conn.execute("select count(*) from marts.model_performance where batch_date = %s", (DAY,)).fetchone() == (0,)
        # ... while the quality marts show why.
        assert conn.execute("select count(*) from marts.column_quality where batch_date = %s", (DAY,)).fetchone() == (8,)
        assert conn.execute(
            "select status from raw.batches where monitor = %s and batch_date = %s", (TAXI, DAY)
        ).fetchone() == ("failed",)
    assert _other_batches(history.database_url) == before


def test_clean_rerun_after_a_failure_passes_and_reaches_gated_marts(history: Settings, tmp_path: Path) -> None:
    code, _ = _run(history, _write(_negate_fares(_day_table()), tmp_path / "bad.parquet"))
    assert code == 1
    code, output = _run(history, FEBRUARY)
    assert code == 0, output
    with psycopg.connect(history.database_url) as conn:
        assert conn.execute(
            "select status, tests_failed from marts.batch_health where batch_date = %s", (DAY,)
        ).fetchone() == ("passed", 0)
        # Every trip of the batch counted, those in the model's domain scored (counted here from the file).
        assert conn.execute(
            "select batch_rows, labelled_rows, n from marts.model_performance where batch_date = %s and metric = 'mae'",
            (DAY,),
        ).fetchone() == (2_466, 2_466, _in_domain(_day_table()))
        # History of the contract survives: the failing run is still in test_results.
        runs = conn.execute(
            "select count(distinct invocation_id) from marts.test_results where batch_date = %s", (DAY,)
        ).fetchone()
        assert runs == (2,)


def test_backfill_gate_decides_batch_by_batch(trained_settings: Settings, tmp_path: Path) -> None:
    """One dbt build for a range holding a bad day: only the bad day is kept out of the gated marts."""
    table = pq.read_table(FEBRUARY)
    days = pc.cast(table["lpep_pickup_datetime"], pa.date32())
    bad = pc.equal(days, pa.scalar(date(2023, 2, 3), pa.date32()))
    fares = pc.if_else(bad, pc.negate(table["fare_amount"]), table["fare_amount"])
    table = table.set_column(table.schema.get_field_index("fare_amount"), "fare_amount", fares)
    outcome = pipeline.backfill(trained_settings, _write(table, tmp_path / "feb.parquet"),
                                date(2023, 2, 1), date(2023, 2, 5))
    assert [b.status for b in outcome.batches] == ["passed", "passed", "failed", "passed", "passed"]
    with psycopg.connect(trained_settings.database_url) as conn:
        kept = conn.execute(
            "select batch_date, string_agg(metric, ',' order by metric) from marts.model_performance group by 1 order by 1"
        ).fetchall()
    assert kept == [(day, "bias,mae,r2,rmse") for day in
                    (date(2023, 2, 1), date(2023, 2, 2), date(2023, 2, 4), date(2023, 2, 5))]


def test_a_drift_marts_test_counts_in_the_batchs_health_with_the_contract(trained_settings: Settings,
                                                                          tmp_path: Path) -> None:
    """A test of a drift mart runs in the build's second invocation, after the contract's outcomes
    are recorded: its outcome is recorded after it, at the same time as theirs, so batch_health
    reads them as one run (the contract's checks passed, this test failed) and the batch fails."""
    project = copy_project(tmp_path / "project")
    (project / "tests").mkdir(exist_ok=True)
    (project / "tests" / "feature_drift_has_no_rows.sql").write_text(
        "select * from {{ ref('feature_drift') }} where monitor = '{{ var(\"monitor\", \"\") }}'\n")
    settings = Settings(home=trained_settings.home, database_url=trained_settings.database_url,
                        project_dir=project, environ={})
    outcome = pipeline.run_batch(settings, date(2023, 2, 14), FEBRUARY)
    assert outcome.status == "failed"
    with psycopg.connect(trained_settings.database_url) as conn:
        status, failing, failed, passed, warned = conn.execute(
            "select status, failing_tests, tests_failed, tests_passed, tests_warned from marts.batch_health"
            " where monitor = %s and batch_date = %s", (TAXI, date(2023, 2, 14))).fetchone()
        contract_checks = conn.execute(
            "select count(*) from marts.batch_checks where monitor = %s and batch_date = %s",
            (TAXI, date(2023, 2, 14))).fetchone()[0]
        times = conn.execute("select count(distinct executed_at) from raw.dbt_test_runs"
                             " where monitor = %s and batch_date = %s", (TAXI, date(2023, 2, 14))).fetchone()[0]
    assert (status, failing, failed) == ("failed", "feature_drift_has_no_rows", 1)
    assert passed + warned >= contract_checks > 0  # the contract's checks are in the same run
    assert times == 1
