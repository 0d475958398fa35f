"""Drift: Evidently per batch, PSI in SQL, the debugging report. Real PostgreSQL, real Evidently."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from modelwatch import pipeline, transform
from modelwatch.config import Settings
from modelwatch.drift import batch_drift
from modelwatch.monitors import Monitor
from modelwatch.postgres import db

from .chromium import chromium_path, visit
from .conftest import FEBRUARY, TAXI, invoke_cli

DAY = date(2023, 2, 14)
DAY_ROWS = 2_466
WASSERSTEIN, JENSEN_SHANNON = "Wasserstein distance (normed)", "Jensen-Shannon distance"
PREDICTION = "predicted_duration_min"
NUMERIC = ["passenger_count", "trip_distance", "fare_amount", "total_amount", PREDICTION]
CATEGORICAL = ["pu_location_id", "do_location_id"]  # zone ids, stored as text
ROWS, REFERENCE = f"raw.{TAXI}__rows", f"raw.{TAXI}__reference"


def _taxi() -> Monitor:
    return Settings.from_env({}).monitor(TAXI)


# ------------------------------------------------------------------ PSI in SQL vs numpy


def _frame(conn: psycopg.Connection, query: str, params: tuple = ()) -> pd.DataFrame:
    cursor = conn.execute(query, params)
    return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


def _numpy_bins(reference: pd.DataFrame, column: str, min_share: float) -> list:
    """The bins, from the reference alone: distinct inverted-CDF deciles, or categories above min_share."""
    values = reference[column]
    if column in NUMERIC:
        present = values.dropna().astype("float64").to_numpy()
        return sorted(set(np.quantile(present, np.arange(1, 10) / 10, method="inverted_cdf").tolist()))
    shares = values.dropna().astype(str).value_counts() / len(values)
    return sorted(shares[shares >= min_share].index)


def _numpy_shares(values: pd.Series, column: str, bins: list) -> np.ndarray:
    """Shares per bin: the ranges (or categories, then other), then null."""
    present = values.dropna()
    if column in NUMERIC:
        # right-closed: the first upper edge >= the value; past the last edge, the open top bin
        index = np.searchsorted(np.asarray(bins), present.astype("float64").to_numpy(), side="left")
        counts = np.bincount(index, minlength=len(bins) + 1)
    else:
        as_text = present.astype(str)
        counts = np.array([int((as_text == category).sum()) for category in bins]
                          + [int((~as_text.isin(bins)).sum())])
    return np.append(counts, values.isna().sum()) / len(values)


def _numpy_psi(current: np.ndarray, reference: np.ndarray, epsilon: float = 1e-4) -> float:
    current = np.where(current == 0, epsilon, current)
    reference = np.where(reference == 0, epsilon, reference)
    return float(np.sum((current - reference) * np.log(current / reference)))


def test_sql_psi_equals_numpy_psi_for_every_february_batch(demo_conn: psycopg.Connection) -> None:
    (version,) = demo_conn.execute("select version from raw.references where monitor = %s", (TAXI,)).fetchall()[0]
    columns = ", ".join(NUMERIC + CATEGORICAL)  # the prediction is stored with the features
    reference = _frame(demo_conn, f"select {columns} from {REFERENCE} where reference_version = %s", (version,))
    batches = _frame(demo_conn, f"select batch_date, {columns} from {ROWS}")
    stored = _frame(demo_conn, """select column_name, bin_kind, upper_bound, category, reference_share
                                  from staging.int_reference_bins where monitor = %s and reference_version = %s
                                  order by column_name, bin_index""", (TAXI, version))
    sql_psi = {(day, column): score for day, column, score in demo_conn.execute(
        """select batch_date, column_name, score from marts.feature_drift
           where monitor = %s and source = 'sql_psi'""", (TAXI,)).fetchall()}

    assert len(reference) == 68_207 and len(batches) == 64_783
    assert demo_conn.execute("select count(*) from raw.references").fetchone() == (1,)  # the one reference set
    assert len(sql_psi) == 28 * 7
    worst = 0.0
    for column in NUMERIC + CATEGORICAL:
        bins = _numpy_bins(reference, column, min_share=0.005)
        mine = stored[stored.column_name == column]
        # the same bins as numpy finds in the reference, and the same reference shares
        if column in NUMERIC:
            assert mine.upper_bound.dropna().tolist() == bins
        else:
            assert mine.category.dropna().tolist() == sorted(bins)
        reference_shares = _numpy_shares(reference[column], column, bins)
        np.testing.assert_allclose(mine.reference_share.to_numpy(), reference_shares, rtol=0, atol=1e-15)
        for day, rows in batches.groupby("batch_date"):
            expected = _numpy_psi(_numpy_shares(rows[column], column, bins), reference_shares)
            assert abs(sql_psi[(day, column)] - expected) < 1e-9, (day, column)
            worst = max(worst, abs(sql_psi[(day, column)] - expected))
    assert worst < 1e-12
    # bins: passenger_count's deciles are only 1 and 2 (3 ranges and null); fares have 9 distinct deciles
    counts = stored.groupby("column_name").size().to_dict()
    assert counts["passenger_count"] == 4 and counts["fare_amount"] == 11 and counts[PREDICTION] == 11
    assert sql_psi[(DAY, "fare_amount")] == pytest.approx(0.005106841436785912, abs=1e-12)
    assert sql_psi[(DAY, "pu_location_id")] == pytest.approx(0.031018481009631175, abs=1e-12)
    # an ordinary February: no column reaches the PSI threshold on any day
    assert max(sql_psi.values()) < 0.2


# ------------------------------------------------------------------ Evidently in the pipeline


def test_evidently_scores_every_february_batch(demo_conn: psycopg.Connection) -> None:
    rows = demo_conn.execute(
        """select column_name, column_kind, method, threshold, count(*), bool_and(computed),
                  count(*) filter (where drifted), min(evidently_version), max(evidently_version)
           from raw.drift_scores where monitor = %s group by 1, 2, 3, 4 order by 1""", (TAXI,)
    ).fetchall()
    by_column = {row[0]: row[1:] for row in rows}
    assert set(by_column) == set(NUMERIC + CATEGORICAL)
    for column in NUMERIC:  # 68,207 reference rows and many values: Evidently's default for numbers
        assert by_column[column][1:5] == (WASSERSTEIN, 0.1, 28, True)
    for column in CATEGORICAL:  # ~250 zones in ~2,300 rows a day: the distance always exceeds 0.1
        assert by_column[column][1:6] == (JENSEN_SHANNON, 0.1, 28, True, 28)
    assert {row[7] for row in rows} == {row[8] for row in rows} == {"0.7.23"}
    # One numeric alarm in February: a 178,920-mile trip on the 7th moves the normed Wasserstein distance
    # of trip_distance and of its prediction (12,006 minutes) past 0.1; the binned PSI shrugs it off.
    numeric_alarms = demo_conn.execute(
        """select s.batch_date, s.column_name, round(s.score::numeric, 4), round(f.score::numeric, 4)
           from raw.drift_scores s
           join marts.feature_drift f on f.monitor = s.monitor and f.batch_date = s.batch_date
                                     and f.column_name = s.column_name and f.source = 'sql_psi'
           where s.monitor = %s and s.drifted and s.column_kind <> 'categorical' order by 2""", (TAXI,)
    ).fetchall()
    assert numeric_alarms == [(date(2023, 2, 7), PREDICTION, Decimal("0.1546"), Decimal("0.0072")),
                              (date(2023, 2, 7), "trip_distance", Decimal("0.1549"), Decimal("0.0030"))]
    day = dict(demo_conn.execute(
        "select column_name, score from raw.drift_scores where monitor = %s and batch_date = %s", (TAXI, DAY)).fetchall())
    assert day["fare_amount"] == pytest.approx(0.03374573404303935, abs=1e-12)
    assert day["total_amount"] == pytest.approx(0.042749289243216644, abs=1e-12)
    assert day[PREDICTION] == pytest.approx(0.014039147599058695, abs=1e-12)
    assert day["pu_location_id"] == pytest.approx(0.12629325608692918, abs=1e-12)


def test_dataset_drift_agrees_with_the_column_verdicts(demo_conn: psycopg.Connection) -> None:
    rows = demo_conn.execute(
        """select d.batch_date, d.columns_monitored, d.columns_computed, d.columns_drifted, d.share_drifted,
                  d.dataset_drift, d.prediction_drift_score, d.prediction_drifted, d.psi_columns_drifted,
                  d.current_rows, d.evidently_rows,
                  (select count(*) from marts.feature_drift f
                   where f.monitor = d.monitor and f.batch_date = d.batch_date and f.source = 'evidently' and f.drifted)
           from marts.dataset_drift d where d.monitor = %s order by d.batch_date""", (TAXI,)
    ).fetchall()
    rows_per_day = dict(demo_conn.execute(f"select batch_date, count(*) from {ROWS} group by 1").fetchall())
    assert len(rows) == 28
    for day, monitored, computed, drifted, share, flag, prediction, prediction_drifted, psi_drifted, \
            current, used, evidently_drifted in rows:
        assert drifted == evidently_drifted  # the stored count agrees with the verdicts dbt modelled
        assert share == pytest.approx(drifted / 7)
        assert psi_drifted == 0
        assert current == used == rows_per_day[day]  # under 100,000 rows: no sampling
        if day == date(2023, 2, 7):  # the outlier trip: trip_distance and the prediction too
            assert (monitored, computed, drifted, flag, prediction_drifted) == (7, 7, 4, True, True)
        else:  # the two zone columns only
            assert (monitored, computed, drifted, flag, prediction_drifted) == (7, 7, 2, False, False)
            assert prediction < 0.1
    day = {row[0]: row for row in rows}[DAY]
    assert day[6] == pytest.approx(0.014039147599058695, abs=1e-12)


def _report_drift(reference: batch_drift.Rows, current: batch_drift.Rows,
                  columns: tuple[batch_drift.MonitoredColumn, ...]) -> tuple[dict, tuple]:
    """What an Evidently Report with ValueDrift per column and DriftedColumnsCount says."""
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    api = batch_drift.evidently_api()
    names = [column.name for column in columns]
    report = api.Report([ValueDrift(column=name) for name in names]
                        + [DriftedColumnsCount(columns=names, drift_share=0.5)], include_tests=True)
    with batch_drift.quiet_numerics():
        snapshot = report.run(current.dataset(api, list(columns)), reference.dataset(api, list(columns)))
    per_column, dataset = {}, ()
    for result in snapshot.metric_results.values():
        params = result.metric_value_location.metric.params
        failed = "FAIL" in [str(test.status.value) for test in result.tests]
        if params["type"].endswith(":ValueDrift"):
            per_column[params["column"]] = (params["method"], params["threshold"], float(result.value), failed)
        else:
            dataset = (int(result.count.value), float(result.share.value), failed)
    return per_column, dataset


@pytest.mark.parametrize("day, max_rows", [(date(2023, 2, 7), 100_000), (DAY, 100_000), (DAY, 1_000)])
def test_the_step_scores_as_an_evidently_report_does(demo_conn: psycopg.Connection, day: date, max_rows: int) -> None:
    """The step runs Evidently's tests without a Report (3x cheaper): same methods, scores, verdicts, count.
    The scores agree to 12 digits, not to the bit: the step hands Evidently the reference's numeric
    values sorted (batch_drift.Rows.sort_numeric), and their standard deviation is summed in that order."""
    monitor = _taxi()
    columns = batch_drift.monitored_columns(monitor)
    options = batch_drift.DriftOptions(max_rows=max_rows)
    reference = batch_drift.read_reference(demo_conn, monitor, batch_drift.batch_reference_version(demo_conn, monitor, day),
                                     columns, options)
    current = batch_drift.read_batch(demo_conn, monitor, day, columns, options)
    scored, dataset = batch_drift.run_evidently(batch_drift.evidently_api(), reference, current, list(columns), 0.5)
    per_column, report_dataset = _report_drift(reference, current, columns)
    assert {column.column: (column.method, column.threshold, pytest.approx(column.score, rel=1e-12, abs=1e-15),
                            column.drifted) for column in scored} == per_column
    assert (dataset["columns_drifted"], dataset["share_drifted"], dataset["dataset_drift"]) == report_dataset
    assert {column.method for column in scored} == (
        {WASSERSTEIN, JENSEN_SHANNON} if max_rows > 1_000 else {"K-S p_value", "chi-square p_value"})


def _scaled_fares(path: Path, factor: float) -> Path:
    """February with fare_amount and total_amount multiplied by `factor` (the model sees them too)."""
    table = pq.read_table(FEBRUARY)
    for name in ("fare_amount", "total_amount"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.multiply(table[name], factor))
    pq.write_table(table, path)
    return path


def _drift_of(conn: psycopg.Connection, day: date) -> dict[tuple[str, str], tuple]:
    return {(column, source): (method, score, threshold, drifted) for column, source, method, score, threshold, drifted
            in conn.execute("""select column_name, source, method, score, threshold, drifted
                               from marts.feature_drift where monitor = %s and batch_date = %s""",
                            (TAXI, day)).fetchall()}


def test_injected_drift_is_found_by_both_methods(trained_settings: Settings, tmp_path: Path) -> None:
    plain = pipeline.run_batch(trained_settings, DAY, FEBRUARY)
    with psycopg.connect(trained_settings.database_url, autocommit=True) as conn:
        before = _drift_of(conn, DAY)
        scaled = pipeline.run_batch(trained_settings, DAY, _scaled_fares(tmp_path / "fares_x1.5.parquet", 1.5))
        after = _drift_of(conn, DAY)
        dataset = conn.execute(
            """select columns_drifted, share_drifted, dataset_drift, prediction_drifted, psi_columns_drifted
               from marts.dataset_drift where monitor = %s and batch_date = %s""", (TAXI, DAY)).fetchone()
        counts = conn.execute(
            """select (select count(*) from raw.drift_scores), (select count(*) from raw.drift_datasets),
                      (select count(*) from marts.feature_drift), (select count(*) from marts.dataset_drift)"""
        ).fetchone()
    assert plain.status == scaled.status == "passed" and plain.rows_loaded == scaled.rows_loaded == DAY_ROWS
    shifted = ("fare_amount", "total_amount", PREDICTION)
    for column in shifted:
        assert before[(column, "evidently")][3] is False and before[(column, "sql_psi")][3] is False
        assert after[(column, "evidently")][3] is True and after[(column, "sql_psi")][3] is True
    # Evidently: normed Wasserstein distance against its 0.1 threshold (the prediction's reference spread is
    # wide, outliers included, so its normed shift is smaller than the fares')
    assert [round(before[(c, "evidently")][1], 4) for c in shifted] == [0.0337, 0.0427, 0.0140]
    assert [round(after[(c, "evidently")][1], 4) for c in shifted] == [0.6462, 0.7421, 0.1238]
    assert {before[(c, "evidently")][0] for c in shifted} == {WASSERSTEIN}
    # PSI in SQL against 0.2
    assert [round(before[(c, "sql_psi")][1], 4) for c in shifted] == [0.0051, 0.0048, 0.0045]
    assert [round(after[(c, "sql_psi")][1], 4) for c in shifted] == [0.6895, 0.6698, 0.5867]
    # columns left alone stay as they were (to the float: sums may add in another order)
    for column in ("passenger_count", "trip_distance", "pu_location_id", "do_location_id"):
        for source in ("evidently", "sql_psi"):
            method, score, threshold, drifted = after[(column, source)]
            assert (method, pytest.approx(score, abs=1e-12), threshold, drifted) == before[(column, source)]
    # 5 of 7 columns drifted (the two zones always do): dataset drift; re-running replaced, never added
    assert dataset == (5, pytest.approx(5 / 7), True, True, 3)
    assert counts == (7, 1, 14, 1)


def _february_with(path: Path, **columns: pa.Array) -> Path:
    """February with some columns replaced, as a parquet file."""
    table = pq.read_table(FEBRUARY)
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, values)
    pq.write_table(table, path)
    return path


def _constant(value: float) -> pa.Array:
    return pa.array([value] * pq.read_metadata(FEBRUARY).num_rows, pa.float64())


def test_empty_and_constant_columns_are_recorded_not_computed(trained_settings: Settings, tmp_path: Path) -> None:
    rows = pq.read_metadata(FEBRUARY).num_rows
    degenerate = _february_with(tmp_path / "degenerate.parquet", passenger_count=pa.nulls(rows, pa.float64()),
                                trip_distance=_constant(2.5))
    outcome = pipeline.run_batch(trained_settings, DAY, degenerate)
    # the batch ran to the end: the contract (not the drift step) fails it for the missing passenger counts
    assert outcome.status == "failed" and outcome.rows_loaded == DAY_ROWS
    assert any(check.startswith("missing_share[passenger_count] = 1") for check in outcome.failing_checks)
    with psycopg.connect(trained_settings.database_url) as conn:
        scores = {row[0]: row[1:] for row in conn.execute(
            """select column_name, computed, method, score, drifted, reason from raw.drift_scores
               where monitor = %s and batch_date = %s""", (TAXI, DAY)).fetchall()}
        dataset = conn.execute(
            """select columns_monitored, columns_computed, columns_drifted, current_rows
               from raw.drift_datasets where monitor = %s and batch_date = %s""", (TAXI, DAY)).fetchone()
    assert scores["passenger_count"] == (False, None, None, None, f"empty in the batch: all {DAY_ROWS} values are null")
    assert scores["trip_distance"] == (False, None, None, None, "constant in the batch: every value is 2.5")
    computed = {column for column, row in scores.items() if row[0]}
    assert computed == {"fare_amount", "total_amount", "pu_location_id", "do_location_id", PREDICTION}
    assert all(scores[column][2] is not None for column in computed)
    assert dataset == (7, 5, 2, DAY_ROWS)  # DriftedColumnsCount over the 5 scorable columns


def test_a_constant_column_in_a_passing_batch_reaches_feature_drift(trained_settings: Settings, tmp_path: Path) -> None:
    constant = _february_with(tmp_path / "constant.parquet", trip_distance=_constant(2.5))
    outcome = pipeline.run_batch(trained_settings, DAY, constant)
    assert outcome.status == "passed"
    with psycopg.connect(trained_settings.database_url) as conn:
        found = _drift_of(conn, DAY)
        reason = conn.execute("""select reason from marts.feature_drift
                                 where monitor = %s and batch_date = %s and column_name = 'trip_distance'
                                   and source = 'evidently'""", (TAXI, DAY)).fetchone()[0]
    assert found[("trip_distance", "evidently")] == (None, None, None, None)
    assert reason == "constant in the batch: every value is 2.5"
    # PSI still sees it: every trip in the (2.27, 2.82] decile bin, against 10% of the reference
    method, score, threshold, drifted = found[("trip_distance", "sql_psi")]
    assert (method, threshold, drifted) == ("PSI", 0.2, True) and score > 5


# ------------------------------------------------------------------ the step's mechanics


def test_sampling_above_max_rows_is_seeded_and_recorded(demo_conn: psycopg.Connection) -> None:
    monitor = _taxi()
    columns = batch_drift.monitored_columns(monitor)
    options = batch_drift.DriftOptions(max_rows=1_000, sample_seed=7)
    first = batch_drift.read_batch(demo_conn, monitor, DAY, columns, options)
    again = batch_drift.read_batch(demo_conn, monitor, DAY, columns, options)
    other_seed = batch_drift.read_batch(demo_conn, monitor, DAY, columns, batch_drift.DriftOptions(max_rows=1_000, sample_seed=8))
    version = batch_drift.batch_reference_version(demo_conn, monitor, DAY)
    reference = batch_drift.read_reference(demo_conn, monitor, version, columns, options)
    assert (first.total, first.used, reference.total, reference.used) == (DAY_ROWS, 1_000, 68_207, 1_000)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    # The hash bound that spares PostgreSQL the sort of every row picks the very rows a full sort does.
    smallest_hashes = [fare for (fare,) in demo_conn.execute(
        f"select fare_amount from {ROWS} where batch_date = %s order by hashint8extended(trip_id, 7) limit 1000",
        (DAY,)).fetchall()]
    assert first.frame["fare_amount"].tolist() == smallest_hashes
    assert not first.frame.equals(other_seed.frame)
    result = batch_drift.score_batch(batch_drift.evidently_api(), TAXI, DAY, version, reference, first, columns, options)
    assert (result.monitor, result.reference_version) == (TAXI, version)
    assert (result.current_rows, result.current_rows_used, result.reference_rows_used, result.sampled) == (
        DAY_ROWS, 1_000, 1_000, True)
    # 1,000 reference rows: Evidently switches to tests (K-S for numbers, chi-square for zones)
    assert {(column.column, column.method, column.threshold) for column in result.columns} == (
        {(name, "K-S p_value", 0.05) for name in NUMERIC}
        | {(name, "chi-square p_value", 0.05) for name in CATEGORICAL})
    assert [column.column for column in result.columns if column.drifted] == CATEGORICAL


def test_evidently_is_not_imported_with_the_package() -> None:
    code = ("import sys, modelwatch.cli, modelwatch.pipeline, modelwatch.drift.batch_drift, modelwatch.drift.report, "
            "modelwatch.examples.nyc_taxi.model; "
            "print('evidently' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_psi_unit_tests_pass(demo_settings: Settings) -> None:
    names = ["reference_bins_at_distinct_deciles_categories_other_and_null",
             "feature_drift_psi_by_hand_and_evidently_rows_gated"]
    result = transform.invoke(demo_settings, db.database_url(demo_settings), ["test"], select=" ".join(names))
    assert {r.node.name: str(r.status) for r in result.result.results} == {name: "pass" for name in names}


# ------------------------------------------------------------------ the debugging report


def test_report_writes_html_that_chromium_opens_cleanly(demo_settings: Settings, tmp_path: Path) -> None:
    result = invoke_cli(demo_settings, "report", "--batch-date", DAY.isoformat(), home=tmp_path / "home")
    expected = tmp_path / "home" / "reports" / f"drift_{TAXI}_{DAY.isoformat()}.html"
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(expected)
    html = expected.read_text()
    assert len(html) > 1_000_000  # Evidently's script and data, inlined
    binary = chromium_path()
    if binary is None:
        pytest.skip("chromium not installed: run `make browser`")
    page = visit(expected, tmp_path / "chromium-profile")
    assert page.problems == []
    assert "Drift is detected for 28.571% of columns (2 out of 7)." in page.text
    assert "Share of Drifted Columns" in page.text and "number of rows\t2466\t68207" in page.text


def test_report_to_a_chosen_file_and_its_errors(demo_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out" / "feb14.html"
    result = invoke_cli(demo_settings, "report", "--batch-date", DAY.isoformat(), "--out", str(out),
                        home=tmp_path / "home")
    assert result.exit_code == 0 and result.output.strip() == str(out) and out.stat().st_size > 1_000_000
    missing = invoke_cli(demo_settings, "report", "--batch-date", "2023-03-14", home=tmp_path / "home")
    assert missing.exit_code == 2
    assert missing.output.strip() == (f"Error: monitor {TAXI}: batch 2023-03-14 has not been loaded: "
                                      f"run `modelwatch run --monitor {TAXI} --batch-date 2023-03-14` first")
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = invoke_cli(demo_settings, "report", "--batch-date", DAY.isoformat(),
                            "--out", str(blocked / "r.html"), home=tmp_path / "home")
    assert unwritable.exit_code == 2
    assert unwritable.output.strip().startswith(f"Error: {blocked / 'r.html'}: cannot write the report (")
