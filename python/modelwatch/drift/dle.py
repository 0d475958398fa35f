"""Direct loss estimation (DLE) for a regression monitor: models of each row's absolute and
squared error, from its features and prediction, fitted on the reference set (as NannyML's
DLE does with LightGBM; here scikit-learn's histogram gradient boosting, which has the same
kind of trees and needs no further dependency), applied to each batch by the drift step.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from sklearn.ensemble import HistGradientBoostingRegressor

from modelwatch.monitors import Monitor

if TYPE_CHECKING:
    from modelwatch.drift.batch_drift import Rows

ALGORITHM = "sklearn.HistGradientBoostingRegressor"
SEED = 42
PREDICTION_CHECK_ROWS = 5_000  # reference rows on which a model without its encoder must predict the same


@dataclass
class LossModel:
    """The two fitted loss models and how a frame's columns become their inputs."""

    features: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: dict[str, list[str]]
    absolute: Any
    squared: Any
    algorithm: str = ALGORITHM
    extra: dict[str, Any] = field(default_factory=dict)

    def inputs(self, frame: Mapping[str, pd.Series]) -> np.ndarray:
        """Numbers as they are; a category as its code in the reference's categories (unseen:
        missing). Column-major, which the trees read faster than row-major,
        in the order the models take (`column_order`: categories first, once fitted)."""
        names = [self.features[index] for index in self.extra.get("column_order") or range(len(self.features))]
        inputs = np.empty((len(frame[self.features[0]]), len(names)), order="F")
        for position, name in enumerate(names):
            inputs[:, position] = self._codes(frame[name], name) if name in self.categorical else (
                pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float))
        return inputs

    def _codes(self, values: pd.Series, name: str) -> np.ndarray:
        if isinstance(values.dtype, pd.CategoricalDtype) and values.cat.categories.inferred_type in (
                "string", "empty"):  # text categories (as the drift step reads them): recoded, not compared
            codes = values.cat.set_categories(self.categories[name]).cat.codes.to_numpy()
        else:
            codes = pd.Categorical(values.astype("string"), categories=self.categories[name]).codes
        return np.where(codes < 0, np.nan, codes)

    def estimate(self, frame: Mapping[str, pd.Series]) -> dict[str, float]:
        """Estimated mae and rmse of the frame's rows (losses below zero are no loss). The two
        models predict at once, each on a thread of its own (their trees run without the GIL)."""
        inputs = self.inputs(frame)

        def predict(model: Any) -> np.ndarray:
            with one_thread():  # OpenMP's thread count is each thread's own: limited where it predicts
                return np.clip(model.predict(inputs), 0, None)

        with ThreadPoolExecutor(max_workers=2) as pool:
            absolute, squared = pool.map(predict, (self.absolute, self.squared))
        return {"mae": float(absolute.mean()), "rmse": float(np.sqrt(squared.mean()))}


def one_thread() -> Any:
    """OpenMP on one thread: at a reference's and a batch's sizes the trees gain little from more,
    and beside dbt, PostgreSQL and the run itself more threads oversubscribe the cores (a fit
    several times slower)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def fit(frame: pd.DataFrame, monitor: Monitor) -> LossModel:
    """Fit on the reference set's labelled rows."""
    categorical = tuple(monitor.categorical_columns)
    features = tuple(dict.fromkeys(monitor.features + (monitor.prediction,)))
    categories = {name: sorted(frame[name].dropna().astype(str).unique().tolist()) for name in categorical}
    model = LossModel(features, tuple(name for name in features if name in categorical), categories, None, None)
    inputs = model.inputs(frame)
    error = frame[monitor.prediction].astype(float).to_numpy() - frame[monitor.target].astype(float).to_numpy()
    mask = [name in model.categorical for name in features]

    def regressor() -> HistGradientBoostingRegressor:
        # LightGBM's defaults as NannyML uses them: 100 trees of 31 leaves, no early stopping (which
        # would hold out a random tenth of the reference)
        return HistGradientBoostingRegressor(categorical_features=mask, early_stopping=False, random_state=SEED)

    with one_thread():
        model.absolute = regressor().fit(inputs, np.abs(error))
        model.squared = regressor().fit(inputs, error ** 2)
        _predicting_on_codes(model, inputs, np.array(mask))
    return model


def _predicting_on_codes(model: LossModel, inputs: np.ndarray, categorical: np.ndarray) -> None:
    """Drop the category encoder scikit-learn fits inside each regressor, when the models then
    predict exactly as before: the codes given are the encoder's own (every category of the
    reference is in the fit), so all it does at prediction is check and reorder columns, as long
    again as the trees themselves. The inputs are then given in the encoder's output order
    (`column_order`). Checked on the fit's own rows; a model that differs keeps its encoder."""
    if not categorical.any():
        return
    encoders = [regressor._preprocessor.named_transformers_["encoder"]  # noqa: SLF001 - checked below
                for regressor in (model.absolute, model.squared)]
    known = [categories[~np.isnan(categories)] for encoder in encoders for categories in encoder.categories_]
    if not all(np.array_equal(categories, np.arange(len(categories))) for categories in known):  # missing: NaN
        return
    order = np.concatenate([np.flatnonzero(categorical), np.flatnonzero(~categorical)])
    sample = inputs[:PREDICTION_CHECK_ROWS]
    stripped = [copy.copy(regressor) for regressor in (model.absolute, model.squared)]
    for regressor in stripped:
        regressor._preprocessor = None  # noqa: SLF001
    reordered = np.asfortranarray(sample[:, order])
    if all(np.array_equal(fast.predict(reordered), full.predict(sample))
           for fast, full in zip(stripped, (model.absolute, model.squared))):
        model.absolute, model.squared = stripped
        model.extra["column_order"] = tuple(int(index) for index in order)


def load_model(conn: psycopg.Connection, monitor: str, version: str | None) -> LossModel | None:
    row = conn.execute("select artifact from raw.loss_models where monitor = %s and reference_version = %s",
                       (monitor, version)).fetchone()
    return pickle.loads(row[0]) if row else None  # noqa: S301 - written by modelwatch itself


def estimate_batch(conn: psycopg.Connection, monitor: Monitor, batch_date: date, version: str | None,
                   models: dict[tuple[str, str | None], LossModel | None], rows: Rows | None = None) -> None:
    """Estimate the batch's mae and rmse with its reference's loss models and store them in
    raw.estimated_losses (replacing earlier estimates of the batch). `models`: kept by the caller.
    `rows`: the batch as the drift step read it, used when it holds every row and column the
    models take (a wide batch is not read twice)."""
    key = (monitor.name, version)
    if key not in models:
        models[key] = load_model(conn, monitor.name, version)
    model = models[key]
    with conn.transaction():
        conn.execute("delete from raw.estimated_losses where monitor = %s and batch_date = %s",
                     (monitor.name, batch_date))
        if model is None:  # a reference without targets: nothing to estimate with
            return
        if rows is not None and rows.complete and set(model.features) <= set(rows.frame.columns):
            frame = rows.as_stored(model.features)
        else:
            frame = _read_features(conn, monitor, batch_date, model)
        rows_estimated = len(frame[model.features[0]])
        if not rows_estimated:
            return
        for metric, value in model.estimate(frame).items():
            conn.execute("insert into raw.estimated_losses (monitor, batch_date, reference_version, metric,"
                         " estimated_value, n) values (%s, %s, %s, %s, %s, %s)",
                         (monitor.name, batch_date, version, metric, value, rows_estimated))


def _read_features(conn: psycopg.Connection, monitor: Monitor, batch_date: date,
                   model: LossModel) -> dict[str, pd.Series]:
    """The batch's rows of the models' inputs, as stored (the drift step's reader: COPY, Arrow), by name."""
    from modelwatch.drift.batch_drift import CATEGORICAL, MonitoredColumn, copy_frame

    query = sql.SQL("select {} from {} where batch_date = %s").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in model.features), sql.Identifier("raw", monitor.rows_table))
    columns = tuple(MonitoredColumn(name, CATEGORICAL if name in model.categorical else "numeric")
                    for name in model.features)
    frame = copy_frame(conn, query, (batch_date,), columns)
    return {name: frame[name] for name in model.features}
