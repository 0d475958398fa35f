"""Performance estimated before labels land (CBPE for classifiers, DLE for regression), checked
batch by batch against NannyML 0.13.1's own estimates on the shared NannyML datasets.

NannyML is never imported here: its figures are pinned in fixtures/nannyml_estimates.json, made by
benchmarks/nannyml_peer.py in a venv of its own (the command is in the file). Each monitor's
analysis batches are loaded without targets, estimated, then labelled with `modelwatch labels`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from modelwatch import pipeline
from modelwatch.config import Settings
from modelwatch.pipeline.labels import store_labels

from .conftest import Templates, initialised_database, nannyml_file

PEER = json.loads((Path(__file__).parent / "fixtures" / "nannyml_estimates.json").read_text())

# monitor -> (reference, analysis, targets, first and last batch run)
EXAMPLES = {
    "work_from_home": ("synthetic_sample_reference", "synthetic_sample_analysis", "synthetic_sample_analysis_gt",
                       date(2018, 1, 1), date(2018, 6, 24)),
    "credit_card": ("mc_reference", "mc_analysis", "mc_analysis_gt", date(2020, 10, 1), date(2020, 10, 21)),
    "car_price": ("regression_synthetic_reference", "regression_synthetic_analysis",
                  "regression_synthetic_analysis_targets", date(2017, 2, 17), date(2017, 3, 10)),
}
METRICS = {"work_from_home": ("roc_auc", "accuracy", "precision", "recall", "f1"),
           "credit_card": ("roc_auc", "accuracy", "precision", "recall", "f1"),
           "car_price": ("mae", "rmse")}
# CBPE is the same computation as NannyML's (same isotonic fit, same expected confusion matrix):
# equal to rounding, but NannyML rounds ROC AUC's cumulative sums to 5 decimals.
CBPE_TOLERANCE = {"roc_auc": 1e-4}
CBPE_DEFAULT_TOLERANCE = 1e-9
# DLE's loss model is another gradient-boosting library's (scikit-learn's, not LightGBM): the
# estimates agree within a percent, not to rounding.
DLE_RELATIVE_TOLERANCE = 0.01
REALISED_TOLERANCE = 1e-9


def _frame(conn: psycopg.Connection, query: str, params: tuple = ()) -> pd.DataFrame:
    cursor = conn.execute(query, params)
    return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


def _estimates(settings: Settings, monitor: str) -> pd.DataFrame:
    with psycopg.connect(settings.database_url) as conn:
        frame = _frame(conn, "select * from marts.estimated_performance where monitor = %s order by 2, 3",
                       (monitor,))
    frame["batch"] = frame["batch_date"].map(date.isoformat)
    return frame


@pytest.fixture(scope="module", params=list(EXAMPLES))
def estimated(request, templates: Templates, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A monitor's analysis batches loaded without targets: their estimates; then its labels."""
    monitor = request.param
    reference, analysis, targets, first, last = EXAMPLES[monitor]
    folder = tmp_path_factory.mktemp(f"estimation_{monitor}")
    with initialised_database(templates, server_url, folder / "home", f"est_{monitor[:4]}") as settings:
        pipeline.reference(settings, monitor, nannyml_file(f"{reference}.parquet"))
        analysis_file = nannyml_file(f"{analysis}.parquet")
        outcome = pipeline.backfill(settings, analysis_file, first, last, monitor_name=monitor)
        assert {batch.status for batch in outcome.batches} == {"passed"}
        before = _estimates(settings, monitor)
        labelled = store_labels(settings, monitor, nannyml_file(f"{targets}.parquet"))
        assert labelled.batches == tuple(batch.batch_date for batch in outcome.batches)
        yield {"monitor": monitor, "settings": settings, "before": before, "after": _estimates(settings, monitor),
               "batches": [batch.batch_date.isoformat() for batch in outcome.batches]}


def test_every_batch_is_estimated_before_its_labels_land(estimated) -> None:
    monitor, before = estimated["monitor"], estimated["before"]
    assert sorted(set(zip(before["batch"], before["metric"]))) == sorted(
        (batch, metric) for batch in estimated["batches"] for metric in METRICS[monitor])
    assert before["realised_value"].isna().all() and (before["labelled_rows"] == 0).all()
    assert before["estimated_value"].notna().all()
    outside = (before["estimated_value"] < before["threshold_lower"]) | (
        before["estimated_value"] > before["threshold_upper"])
    assert before["alert"].tolist() == outside.tolist()


def test_thresholds_and_alerts_are_nannymls(estimated) -> None:
    monitor, before = estimated["monitor"], estimated["before"]
    peer = PEER["datasets"][monitor]
    for row in before.itertuples():
        theirs = peer[row.batch][row.metric]
        assert row.threshold_lower == pytest.approx(theirs["lower_threshold"], abs=REALISED_TOLERANCE), row
        if theirs["upper_threshold"] is None:
            assert row.threshold_upper is None or np.isfinite(row.threshold_upper)
        else:
            assert row.threshold_upper == pytest.approx(theirs["upper_threshold"], abs=REALISED_TOLERANCE), row
    if monitor != "car_price":  # CBPE's estimates are NannyML's, so are their alerts
        assert [row.alert for row in before.itertuples()] == [
            peer[row.batch][row.metric]["alert"] for row in before.itertuples()]


def test_estimates_match_nannymls_batch_by_batch(estimated) -> None:
    monitor, before = estimated["monitor"], estimated["before"]
    peer = PEER["datasets"][monitor]
    for row in before.itertuples():
        theirs = peer[row.batch][row.metric]["estimated"]
        if monitor == "car_price":
            assert row.estimated_value == pytest.approx(theirs, rel=DLE_RELATIVE_TOLERANCE), row
        else:
            tolerance = CBPE_TOLERANCE.get(row.metric, CBPE_DEFAULT_TOLERANCE)
            assert row.estimated_value == pytest.approx(theirs, abs=tolerance), row


def test_once_labelled_realised_values_sit_beside_the_estimates(estimated) -> None:
    monitor, before, after = estimated["monitor"], estimated["before"], estimated["after"]
    peer = PEER["datasets"][monitor]
    assert after["estimated_value"].tolist() == pytest.approx(before["estimated_value"].tolist(), abs=1e-12)
    for row in after.itertuples():
        theirs = peer[row.batch][row.metric]["realised"]
        if monitor == "credit_card" and row.metric == "roc_auc":
            assert row.realised_value is None or np.isnan(row.realised_value)  # model_performance has none
            continue
        assert row.labelled_rows > 0
        assert row.realised_value == pytest.approx(theirs, abs=REALISED_TOLERANCE), row


def test_the_estimates_error_is_no_worse_than_nannymls(estimated) -> None:
    """Mean |estimated - realised| over the batches, modelwatch's against NannyML's (the benchmark's
    estimate_error_vs_nannyml, here on the batches the test runs)."""
    monitor, after = estimated["monitor"], estimated["after"]
    peer = PEER["datasets"][monitor]
    rows = [row for row in after.itertuples() if peer[row.batch][row.metric]["realised"] is not None]
    mine = np.mean([abs(row.estimated_value - peer[row.batch][row.metric]["realised"]) for row in rows])
    theirs = np.mean([abs(peer[row.batch][row.metric]["estimated"] - peer[row.batch][row.metric]["realised"])
                      for row in rows])
    assert mine / theirs <= 1.1, (mine, theirs)


def test_loss_models_predict_without_their_encoder_as_scikit_learn_does_with_it(tmp_path: Path) -> None:
    """DLE's loss models take the categories as codes, so scikit-learn's own encoder is dropped
    after the fit: estimates equal those of the same regressors predicting through it, for missing
    categories, categories the reference never saw and missing numbers alike."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from modelwatch.drift import dle

    monitor = Settings(home=tmp_path, database_url="postgresql://unused").monitor("car_price")
    reference = pd.read_parquet(nannyml_file("regression_synthetic_reference.parquet"))[:20_000]
    reference.loc[::40, "fuel"] = None
    batch = pd.read_parquet(nannyml_file("regression_synthetic_analysis.parquet"))[:6_000]
    batch.loc[::7, "transmission"] = "hydrogen"  # never in the reference
    batch.loc[::11, "car_age"] = np.nan
    model = dle.fit(reference, monitor)

    natural = dle.LossModel(model.features, model.categorical, model.categories, None, None)  # no column order
    mask = [name in model.categorical for name in model.features]
    assert model.extra["column_order"] == tuple(
        [index for index, categorical in enumerate(mask) if categorical]
        + [index for index, categorical in enumerate(mask) if not categorical])
    error = reference[monitor.prediction].to_numpy() - reference[monitor.target].to_numpy()
    expected = {}
    for metric, losses in (("mae", np.abs(error)), ("rmse", error ** 2)):
        with_encoder = HistGradientBoostingRegressor(categorical_features=mask, early_stopping=False,
                                                     random_state=dle.SEED).fit(natural.inputs(reference), losses)
        assert with_encoder._preprocessor is not None  # noqa: SLF001 - what the fitted models no longer carry
        predicted = np.clip(with_encoder.predict(natural.inputs(batch)), 0, None)
        expected[metric] = float(predicted.mean()) if metric == "mae" else float(np.sqrt(predicted.mean()))
    assert model.absolute._preprocessor is None and model.squared._preprocessor is None  # noqa: SLF001
    assert model.estimate(batch) == expected
