"""Monitors other than the taxi: NannyML's three example models through the whole pipeline,
a monitor declared with only the minimum keys, and two monitors at once in one database.

Batches are NannyML's analysis periods with their late labels joined in (the frames the
tests build); every metric is checked against scikit-learn's on the same rows.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml
from click.testing import CliRunner
from sklearn import metrics as sk

from modelwatch import pipeline, transform
from modelwatch.cli import main
from modelwatch.config import Settings
from modelwatch.postgres import db

from .conftest import Templates, copy_project, initialised_database, nannyml_file, scratch_name

TOLERANCE = 1e-9

# monitor -> (reference file, analysis file, its targets, the batches run: first and last day)
EXAMPLES = {
    "car_price": ("regression_synthetic_reference", "regression_synthetic_analysis",
                  "regression_synthetic_analysis_targets", date(2017, 2, 17), date(2017, 3, 10)),
    "work_from_home": ("synthetic_sample_reference", "synthetic_sample_analysis",
                       "synthetic_sample_analysis_gt", date(2018, 1, 1), date(2018, 6, 24)),
    "credit_card": ("mc_reference", "mc_analysis", "mc_analysis_gt", date(2020, 10, 1), date(2020, 10, 21)),
}


def labelled_analysis(monitor: str, folder: Path) -> Path:
    """The monitor's analysis period with its targets joined in, as one parquet file."""
    _, analysis, targets, _, _ = EXAMPLES[monitor]
    frame = pd.read_parquet(nannyml_file(f"{analysis}.parquet")).merge(
        pd.read_parquet(nannyml_file(f"{targets}.parquet")), on="id", how="left", validate="one_to_one")
    path = folder / f"{monitor}_labelled.parquet"
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def examples(templates: Templates, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict]]:
    """One database holding the three example monitors: reference, then their labelled analysis
    batches, two monitors backfilled at the same time."""
    folder = tmp_path_factory.mktemp("examples")
    with initialised_database(templates, server_url, folder / "home", "examples") as settings:
        files = {name: labelled_analysis(name, folder) for name in EXAMPLES}
        for name, (reference, *_rest) in EXAMPLES.items():
            pipeline.reference(settings, name, nannyml_file(f"{reference}.parquet"))
        outcomes: dict[str, pipeline.RangeOutcome] = {}
        errors: list[BaseException] = []

        def backfill(name: str) -> None:
            try:
                _, _, _, first, last = EXAMPLES[name]
                outcomes[name] = pipeline.backfill(settings, files[name], first, last, monitor_name=name)
            except BaseException as exc:  # noqa: BLE001 - re-raised by the fixture
                errors.append(exc)

        # Two monitors at once: their loads run side by side, their builds one after the other.
        threads = [threading.Thread(target=backfill, args=(name,)) for name in ("car_price", "credit_card")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        backfill("work_from_home")
        if errors:
            raise errors[0]
        yield settings, {"outcomes": outcomes, "files": files}


def _frame(conn: psycopg.Connection, query: str, params: tuple = ()) -> pd.DataFrame:
    cursor = conn.execute(query, params)
    return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


def _batches_of(frame: pd.DataFrame, period: str) -> pd.Series:
    days = frame["timestamp"].dt.normalize()
    if period == "week":
        days = days - pd.to_timedelta(days.dt.weekday, unit="D")
    return days.dt.date


def _expected_metrics(monitor: str, rows: pd.DataFrame) -> dict[tuple[str, str], float]:
    if monitor == "car_price":
        y, p = rows["y_true"], rows["y_pred"]
        return {("mae", ""): sk.mean_absolute_error(y, p), ("rmse", ""): float(np.sqrt(sk.mean_squared_error(y, p))),
                ("bias", ""): float((p - y).mean()), ("r2", ""): sk.r2_score(y, p)}
    if monitor == "work_from_home":
        y, p, proba = rows["work_home_actual"], rows["y_pred"], rows["y_pred_proba"]
        return {("roc_auc", ""): sk.roc_auc_score(y, proba), ("accuracy", ""): sk.accuracy_score(y, p),
                ("precision", ""): sk.precision_score(y, p), ("recall", ""): sk.recall_score(y, p),
                ("f1", ""): sk.f1_score(y, p), ("log_loss", ""): sk.log_loss(y, proba)}
    y, p = rows["y_true"], rows["y_pred"]
    labels = sorted(set(y))
    expected = {("accuracy", ""): sk.accuracy_score(y, p),
                ("macro_precision", ""): sk.precision_score(y, p, average="macro", zero_division=0),
                ("macro_recall", ""): sk.recall_score(y, p, average="macro", zero_division=0),
                ("macro_f1", ""): sk.f1_score(y, p, average="macro", zero_division=0)}
    for label, recall in zip(labels, sk.recall_score(y, p, labels=labels, average=None, zero_division=0)):
        expected[("recall", label)] = recall
    return expected


@pytest.mark.parametrize("monitor", list(EXAMPLES))
def test_every_batch_passes_and_its_metrics_equal_scikit_learns(examples, monitor: str) -> None:
    settings, context = examples
    outcome = context["outcomes"][monitor]
    declared = settings.monitor(monitor)
    frame = pd.read_parquet(context["files"][monitor])
    _, _, _, first, last = EXAMPLES[monitor]
    frame["batch"] = _batches_of(frame, declared.batch_period)
    frame = frame[(frame["batch"] >= _batches_of(pd.DataFrame({"timestamp": [pd.Timestamp(first)]}),
                                                 declared.batch_period)[0]) & (frame["batch"] <= last)]
    assert [batch.status for batch in outcome.batches] == ["passed"] * frame["batch"].nunique()
    assert sum(batch.rows_loaded for batch in outcome.batches) == len(frame)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        mart = _frame(conn, "select batch_date, metric, class_name, value, n from marts.model_performance "
                            "where monitor = %s", (monitor,))
    compared = 0
    for batch, rows in frame.groupby("batch"):
        found = mart[mart["batch_date"] == batch]
        expected = _expected_metrics(monitor, rows)
        assert set(zip(found["metric"], found["class_name"])) == set(expected), batch
        for row in found.itertuples():
            assert row.value == pytest.approx(expected[(row.metric, row.class_name)], abs=TOLERANCE), (batch, row)
            compared += 1
        assert set(found[found["class_name"] == ""]["n"]) == {len(rows)}
    assert compared == len(mart) > 0


@pytest.mark.parametrize("monitor", list(EXAMPLES))
def test_drift_by_both_sources_and_quality_for_every_column(examples, monitor: str) -> None:
    settings, context = examples
    declared = settings.monitor(monitor)
    batches = len(context["outcomes"][monitor].batches)
    drifted = {name for name, _ in declared.drift_columns}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        drift = _frame(conn, "select batch_date, column_name, source, score from marts.feature_drift "
                             "where monitor = %s", (monitor,))
        quality = _frame(conn, "select batch_date, column_name, row_count from marts.column_quality "
                               "where monitor = %s", (monitor,))
        checks = _frame(conn, "select distinct check_name from marts.batch_checks where monitor = %s", (monitor,))
    assert len(drift) == batches * len(drifted) * 2
    for source in ("evidently", "sql_psi"):
        assert set(drift[drift["source"] == source]["column_name"]) == drifted
    assert drift[drift["source"] == "sql_psi"]["score"].notna().all()
    profiled = set(declared.numeric_columns) | set(declared.categorical_columns)
    assert set(quality["column_name"]) == profiled
    assert len(quality) == batches * len(profiled)
    expected_checks = {"schema_mismatches", "row_count_min", "row_count_vs_trailing_median", "missing_share",
                       "non_finite_share", "duplicate_ids", "outside_period_share", "unseen_category_share",
                       "out_of_reference_range_share"}
    if declared.classifier:
        expected_checks.add("probability_out_of_range_share")
    if declared.task == "multiclass_classification":
        expected_checks.add("probability_sum_off_share")
    assert set(checks["check_name"]) == expected_checks


def test_a_monitor_touches_no_other_monitors_rows(examples) -> None:
    settings, context = examples
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        per_monitor = dict(conn.execute(
            "select monitor, count(*) from marts.batch_health group by monitor").fetchall())
        taxi_rows = conn.execute("select count(*) from raw.nyc_taxi__rows").fetchone()[0]
        daily_trips = conn.execute("select to_regclass('marts.daily_trips')").fetchone()[0]
    assert per_monitor == {name: len(context["outcomes"][name].batches) for name in EXAMPLES}
    assert taxi_rows == 0
    assert daily_trips is None  # the taxi's own mart: left out of the other monitors' builds


def test_a_build_selects_no_other_monitors_own_models(examples) -> None:
    """selectors.yml is rendered with a build's vars: a build of car_price selects none of the
    taxi's own models (models/monitors/nyc_taxi) nor their tests; the taxi's selects them. (Seeds'
    tests run in every build: a lookup may use a seed of any folder, and the recording keeps
    those of the monitor's lookups only.)"""
    settings, _ = examples

    def selected(monitor: str) -> set[str]:
        listed = transform.invoke(settings, db.database_url(settings),
                                  ["ls", "--selector", "before_drift", "--resource-type", "model",
                                   "--resource-type", "test", "--output", "name"],
                                  vars=transform.monitor_vars(monitor))
        return set(listed.result)

    car_price, taxi = selected("car_price"), selected("nyc_taxi")
    seed_tests = {"not_null_taxi_zones_location_id", "unique_taxi_zones_location_id"}
    assert {"int_value_counts", "batch_checks"} | seed_tests <= car_price
    assert "daily_trips" not in car_price
    assert {"daily_trips"} | seed_tests <= taxi


# ---------------------------------------------------------------- a monitor with the minimum keys

MINIMAL = {
    "task": "binary_classification",
    "id": "id",
    "timestamp": "timestamp",
    "batch_period": "month",
    "features": {
        "numeric": ["distance_from_office", "gas_price_per_litre", "public_transportation_cost", "tenure"],
        "categorical": ["salary_range", "wfh_prev_workday", "workday"],
    },
    "prediction": "y_pred",
    "probability": "y_pred_proba",
    "target": "work_home_actual",
}


def _snapshot(conn: psycopg.Connection, monitor: str, excluded: date) -> dict[str, list[tuple]]:
    """Every batch mart's rows of the monitor's other batches, and their raw rows (marts per monitor,
    such as monitor_freshness, change with every build: they are not a batch's)."""
    tables = [name for (name,) in conn.execute(
        "select table_name from information_schema.columns where table_schema = 'marts'"
        " and column_name in ('monitor', 'batch_date') group by table_name having count(*) = 2 order by 1")]
    shot = {}
    for table in tables + ["raw.wfh_monthly__rows"]:
        relation = table if "." in table else f"marts.{table}"
        extra = "" if "." in table else " and monitor = 'wfh_monthly'"
        shot[relation] = sorted(map(repr, conn.execute(
            f"select * from {relation} where batch_date <> %s{extra}", (excluded,)).fetchall()))
    return shot


def test_minimal_monitor_reference_backfill_and_a_month_that_fails(server_url: str, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    config = yaml.safe_load((project / "dbt_project.yml").read_text())
    config["vars"]["monitors"] = {"wfh_monthly": MINIMAL}
    config["vars"]["default_monitor"] = "wfh_monthly"
    (project / "dbt_project.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    analysis = pd.read_parquet(nannyml_file("synthetic_sample_analysis.parquet")).merge(
        pd.read_parquet(nannyml_file("synthetic_sample_analysis_gt.parquet")), on="id")
    analysis = analysis[(analysis["timestamp"] >= "2018-01-01") & (analysis["timestamp"] < "2019-01-01")]
    batches_file = tmp_path / "2018.parquet"
    analysis.to_parquet(batches_file, index=False)
    with db.scratch_database(server_url, scratch_name("mw_minimal")) as url:
        env = {"MODELWATCH_DATABASE_URL": url, "MODELWATCH_HOME": str(tmp_path / "home"),
               "MODELWATCH_PROJECT_DIR": str(project)}
        runner = CliRunner()
        for args in (["init"], ["reference", "--file", str(nannyml_file("synthetic_sample_reference.parquet"))],
                     ["backfill", "--file", str(batches_file)]):
            result = runner.invoke(main, args, env=env)
            assert result.exit_code == 0, result.output
        with psycopg.connect(url, autocommit=True) as conn:
            months = conn.execute("select batch_date, status from raw.batches order by 1").fetchall()
            assert months == [(date(2018, month, 1), "passed") for month in range(1, 13)]
            auc = dict(conn.execute("select batch_date, value from marts.model_performance "
                                    "where metric = 'roc_auc'").fetchall())
            before = _snapshot(conn, "wfh_monthly", date(2018, 6, 1))
        june = analysis[analysis["timestamp"].dt.month == 6]
        assert auc[date(2018, 6, 1)] == pytest.approx(sk.roc_auc_score(june["work_home_actual"], june["y_pred_proba"]),
                                                      abs=TOLERANCE)
        # June again with 30% of one feature missing: the gate fails it (exit 1), the other months stay.
        corrupted = june.copy()
        corrupted.loc[corrupted.sample(frac=0.3, random_state=7).index, "tenure"] = np.nan
        bad_file = tmp_path / "june_bad.parquet"
        corrupted.to_parquet(bad_file, index=False)
        result = runner.invoke(main, ["run", "--batch-date", "2018-06-15", "--file", str(bad_file)], env=env)
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, result.output
        measured = re.search(r"batch 2018-06-01 failed its data contract: missing_share\[tenure\] = ([0-9.]+), "
                             r"expected <= 0\.2 \(error\)", errors[0])
        assert measured and float(measured.group(1)) == pytest.approx(0.3, abs=0.001), errors[0]
        with psycopg.connect(url, autocommit=True) as conn:
            assert _snapshot(conn, "wfh_monthly", date(2018, 6, 1)) == before
            assert conn.execute("select status from raw.batches where batch_date = '2018-06-01'").fetchone() == (
                "failed",)
            assert conn.execute("select count(*) from marts.model_performance where batch_date = '2018-06-01'"
                                ).fetchone() == (0,)
            after_failure = _snapshot(conn, "wfh_monthly", date(1900, 1, 1))
        # One more monitor declared and `init` again: it gets its tables, nothing else changes.
        config["vars"]["monitors"]["second"] = {**MINIMAL, "batch_period": "week"}
        (project / "dbt_project.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        result = runner.invoke(main, ["init"], env=env)
        assert result.exit_code == 0, result.output
        with psycopg.connect(url, autocommit=True) as conn:
            assert _snapshot(conn, "wfh_monthly", date(1900, 1, 1)) == after_failure
            assert conn.execute("select count(*) from raw.second__rows").fetchone() == (0,)
            assert conn.execute("select count(*) from raw.second__reference").fetchone() == (0,)


# ---------------------------------------------------------------- the generic checks, each on a batch built to fail it

def _credit_card_day(day: date) -> pd.DataFrame:
    frame = pd.read_parquet(nannyml_file("mc_analysis.parquet")).merge(
        pd.read_parquet(nannyml_file("mc_analysis_gt.parquet")), on="id")
    return frame[frame["timestamp"].dt.date == day].reset_index(drop=True)


def _corrupt(frame: pd.DataFrame, how: str) -> pd.DataFrame:
    frame = frame.copy()
    part = frame.sample(frac=0.1, random_state=3).index
    if how == "duplicate_ids":
        frame.loc[part, "id"] = frame["id"].iloc[0]
    elif how == "probability_out_of_range_share":
        frame.loc[part, "y_pred_proba_upmarket_card"] = 1.5
    elif how == "probability_sum_off_share":
        for name in ("y_pred_proba_prepaid_card", "y_pred_proba_highstreet_card", "y_pred_proba_upmarket_card"):
            frame.loc[part, name] = frame.loc[part, name] * 0.8  # each still in [0, 1], their sum 0.8
    elif how == "unseen_category_share":
        frame.loc[part, "acq_channel"] = "Carrier pigeon"
    elif how == "out_of_reference_range_share":
        frame.loc[part, "stated_income"] = frame["stated_income"].max() * 100
    return frame


# check -> (severity, the failing column or '', the measured value)
FAILURES = {
    "duplicate_ids": ("error", "", None),
    "probability_out_of_range_share": ("error", "y_pred_proba_upmarket_card", 0.1),
    "probability_sum_off_share": ("error", "", 0.1),
    "unseen_category_share": ("warn", "acq_channel", 0.1),
    "out_of_reference_range_share": ("warn", "stated_income", 0.1),
}


def test_each_generic_check_fails_the_batch_built_to_fail_it(templates: Templates, server_url: str,
                                                             tmp_path: Path) -> None:
    with initialised_database(templates, server_url, tmp_path / "home", "checks") as settings:
        url = settings.database_url
        pipeline.reference(settings, "credit_card", nannyml_file("mc_reference.parquet"))
        first = date(2020, 10, 1)
        good = tmp_path / "good.parquet"
        _credit_card_day(first).to_parquet(good, index=False)
        assert pipeline.run_batch(settings, first, good, "credit_card").status == "passed"
        for offset, (check, (severity, column, share)) in enumerate(FAILURES.items(), start=1):
            day = date(2020, 10, 1 + offset)
            path = tmp_path / f"{check}.parquet"
            rows = _credit_card_day(day)
            corrupted = _corrupt(rows, check)
            corrupted.to_parquet(path, index=False)
            outcome = pipeline.run_batch(settings, day, path, "credit_card")
            assert outcome.status == ("failed" if severity == "error" else "warned"), (check, outcome)
            with psycopg.connect(url, autocommit=True) as conn:
                failing = conn.execute(
                    "select check_name, column_name, measured_value from marts.batch_checks "
                    "where monitor = 'credit_card' and batch_date = %s and not passed", (day,)).fetchall()
                recorded = conn.execute(
                    "select test_name, column_name, test_status from marts.test_results "
                    "where monitor = 'credit_card' and batch_date = %s and test_status <> 'pass'", (day,)).fetchall()
            also = [("probability_sum_off_share", "")] if check == "probability_out_of_range_share" else []  # 1.5 too
            assert [(name, col) for name, col, _ in failing] == [(check, column)] + also, (check, failing)
            if share is not None:
                assert failing[0][2] == pytest.approx(round(len(rows) * share) / len(rows)), check
            else:
                assert failing[0][2] == len(corrupted) - corrupted["id"].nunique() > 40
            assert recorded == [(f"contract_{name}", col, "fail" if severity == "error" else "warn")
                                for name, col in [(check, column)] + also]
        with psycopg.connect(url, autocommit=True) as conn:  # the good batch is untouched by the others
            assert conn.execute("select status from raw.batches where batch_date = %s", (first,)).fetchone() == (
                "passed",)
