"""Late labels: a classifier's analysis weeks loaded without targets, then NannyML's shared
targets file through `modelwatch labels`; realised metrics equal scikit-learn's, a re-run of a
batch keeps its labels, unknown ids are counted and not loaded, a file without the id or target
column is refused (exit 2)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner
from sklearn import metrics as sk

from modelwatch import pipeline
from modelwatch.cli import main
from modelwatch.config import Settings

from .conftest import Templates, initialised_database, nannyml_file

TOLERANCE = 1e-9
MONITOR = "work_from_home"
FIRST, LAST = date(2018, 1, 1), date(2018, 3, 25)  # twelve weeks of the analysis period


def _weeks(stamps: pd.Series) -> pd.Series:
    days = stamps.dt.normalize()
    return (days - pd.to_timedelta(days.dt.weekday, unit="D")).dt.date


@pytest.fixture(scope="module")
def unlabelled(templates: Templates, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    folder = tmp_path_factory.mktemp("labels")
    with initialised_database(templates, server_url, folder / "home", "labels") as settings:
        pipeline.reference(settings, MONITOR, nannyml_file("synthetic_sample_reference.parquet"))
        analysis = nannyml_file("synthetic_sample_analysis.parquet")
        assert "work_home_actual" not in pd.read_parquet(analysis).columns  # no targets in the batches
        outcome = pipeline.backfill(settings, analysis, FIRST, LAST, monitor_name=MONITOR)
        assert [batch.status for batch in outcome.batches] == ["passed"] * 12
        yield settings, analysis


def _env(settings: Settings) -> dict[str, str]:
    return {"MODELWATCH_HOME": str(settings.home), "MODELWATCH_DATABASE_URL": settings.database_url}


def _performance(settings: Settings) -> pd.DataFrame:
    with psycopg.connect(settings.database_url) as conn:
        cursor = conn.execute("select batch_date, metric, value, n, labelled_rows, batch_rows, label_coverage"
                              " from marts.model_performance where monitor = %s and class_name = ''", (MONITOR,))
        return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


def _coverage(settings: Settings) -> dict[date, float]:
    with psycopg.connect(settings.database_url) as conn:
        return dict(conn.execute("select batch_date, label_coverage from marts.batch_health where monitor = %s",
                                 (MONITOR,)).fetchall())


def test_labels_land_late_and_realised_metrics_equal_scikit_learns(unlabelled, tmp_path: Path) -> None:
    settings, analysis = unlabelled
    assert _performance(settings).empty  # no target: no realised metric yet
    assert set(_coverage(settings).values()) == {0.0}

    result = CliRunner().invoke(main, ["labels", "--monitor", MONITOR, "--file",
                                       str(nannyml_file("synthetic_sample_analysis_gt.parquet"))], env=_env(settings))
    rows = pd.read_parquet(analysis).merge(pd.read_parquet(nannyml_file("synthetic_sample_analysis_gt.parquet")),
                                           on="id")
    rows["batch"] = _weeks(rows["timestamp"])
    rows = rows[(rows["batch"] >= FIRST) & (rows["batch"] <= LAST)]
    gt_rows = len(pd.read_parquet(nannyml_file("synthetic_sample_analysis_gt.parquet")))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"monitor {MONITOR}: {len(rows):,} labels stored from synthetic_sample_analysis_gt.parquet, 12 batches rebuilt",
        f"{gt_rows - len(rows):,} ids are in no loaded batch: not loaded"]

    found = _performance(settings)
    assert sorted(set(found["batch_date"])) == sorted(set(rows["batch"]))
    for batch, group in rows.groupby("batch"):
        y, p, proba = group["work_home_actual"], group["y_pred"], group["y_pred_proba"]
        expected = {"roc_auc": sk.roc_auc_score(y, proba), "accuracy": sk.accuracy_score(y, p),
                    "precision": sk.precision_score(y, p), "recall": sk.recall_score(y, p),
                    "f1": sk.f1_score(y, p), "log_loss": sk.log_loss(y, proba)}
        mine = found[found["batch_date"] == batch].set_index("metric")
        assert set(mine.index) == set(expected)
        for metric, value in expected.items():
            assert mine.loc[metric, "value"] == pytest.approx(value, abs=TOLERANCE), (batch, metric)
        assert set(mine["labelled_rows"]) == set(mine["batch_rows"]) == {len(group)}
        assert set(mine["label_coverage"]) == {1.0}
    assert set(_coverage(settings).values()) == {1.0}


def test_a_rerun_keeps_labels_and_relabelling_replaces(unlabelled, tmp_path: Path) -> None:
    settings, analysis = unlabelled
    targets = pd.read_parquet(nannyml_file("synthetic_sample_analysis_gt.parquet"))
    frame = pd.read_parquet(analysis)
    week = date(2018, 1, 8)
    in_week = frame[_weeks(frame["timestamp"]) == week]
    labels = in_week[["id"]].merge(targets, on="id")
    CliRunner().invoke(main, ["labels", "--monitor", MONITOR, "--file",
                              str(nannyml_file("synthetic_sample_analysis_gt.parquet"))], env=_env(settings))
    before = _performance(settings)
    outcome = pipeline.run_batch(settings, week, analysis, MONITOR)  # the batch's rows replaced, labels kept
    assert outcome.status == "passed"
    after = _performance(settings)
    assert after.sort_values(["batch_date", "metric"]).reset_index(drop=True).equals(
        before.sort_values(["batch_date", "metric"]).reset_index(drop=True))

    # Re-labelling replaces: half the week's labels flipped, plus two ids no batch holds.
    flipped = labels.copy()
    half = flipped.index[: len(flipped) // 2]
    flipped.loc[half, "work_home_actual"] = 1 - flipped.loc[half, "work_home_actual"]
    flipped = pd.concat([flipped, pd.DataFrame({"id": [-1, -2], "work_home_actual": [0, 1]})])
    path = tmp_path / "flipped.csv"
    flipped.to_csv(path, index=False)
    result = CliRunner().invoke(main, ["labels", "--monitor", MONITOR, "--file", str(path)], env=_env(settings))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"monitor {MONITOR}: {len(labels):,} labels stored from flipped.csv, 1 batches rebuilt",
        "2 ids are in no loaded batch: not loaded"]
    mine = _performance(settings)
    rows = in_week.merge(flipped, on="id")
    accuracy = mine[(mine["batch_date"] == week) & (mine["metric"] == "accuracy")]["value"].item()
    assert accuracy == pytest.approx(sk.accuracy_score(rows["work_home_actual"], rows["y_pred"]), abs=TOLERANCE)
    other = date(2018, 1, 15)  # an untouched batch keeps its figures
    assert mine[mine["batch_date"] == other].sort_values("metric").reset_index(drop=True).equals(
        after[after["batch_date"] == other].sort_values("metric").reset_index(drop=True))


@pytest.mark.parametrize("columns, missing", [(["id"], "work_home_actual"), (["work_home_actual"], "id")])
def test_a_file_without_the_id_or_target_is_refused(unlabelled, tmp_path: Path, columns: list[str],
                                                    missing: str) -> None:
    settings, _ = unlabelled
    path = tmp_path / "labels.csv"
    pd.read_parquet(nannyml_file("synthetic_sample_analysis_gt.parquet"))[columns].head(5).to_csv(path, index=False)
    result = CliRunner().invoke(main, ["labels", "--monitor", MONITOR, "--file", str(path)], env=_env(settings))
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {path}: required column '{missing}' is missing"


def test_init_upgrades_a_version_2_database(fresh_settings: Settings) -> None:
    """Schema version 2 had no labels or estimation tables: other commands refuse it, `init` adds them."""
    from modelwatch.postgres import schema

    pipeline.init(fresh_settings)
    with psycopg.connect(fresh_settings.database_url, autocommit=True) as conn:
        for monitor in fresh_settings.monitors:
            conn.execute(f"drop table raw.{schema.labels_table(monitor)}")
        conn.execute("drop table raw.calibration_maps, raw.estimation_thresholds, raw.loss_models,"
                     " raw.estimated_losses")
        conn.execute("delete from raw.schema_version")
        conn.execute("insert into raw.schema_version (version) values (2)")
    result = CliRunner().invoke(main, ["status", "--monitor", MONITOR], env=_env(fresh_settings))
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: the database holds the schema of an older modelwatch (version 2): "
                                     "run `modelwatch init` to upgrade it (it adds tables, nothing is lost)")
    pipeline.init(fresh_settings)
    with psycopg.connect(fresh_settings.database_url) as conn:
        assert schema.stored_version(conn) == schema.SCHEMA_VERSION == 3
        assert conn.execute("select count(*) from raw.work_from_home__labels").fetchone() == (0,)
        assert conn.execute("select count(*) from raw.calibration_maps").fetchone() == (0,)
