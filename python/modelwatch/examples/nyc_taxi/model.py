"""The nyc_taxi monitor's model (its declaration's `model`): the course's baseline,
a LinearRegression of trip duration (minutes).

A monitor's model module gives `train(file)`, `save(conn, monitor, trained, file)`
and `load_latest(conn, monitor)`, and its trained model `version` and
`predict_table(table)`: what modelwatch calls to train and to score batches.

Training filters (0 < duration <= 60 min, 0 < passenger_count <= 8) apply to
training only; scoring sees every row, with missing features as 0 as the
course's monitoring loop did.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from modelwatch.errors import UsageError
from modelwatch.pipeline.source import BatchFile

if TYPE_CHECKING:  # scikit-learn takes ~0.7 s to import: training imports it, scoring does not
    from sklearn.linear_model import LinearRegression

FEATURES = ("passenger_count", "trip_distance", "fare_amount", "total_amount", "pu_location_id", "do_location_id")
TARGET = "duration_min"
VALIDATION_SHARE = 0.2
SEED = 42


class FittedLinearModel:
    """A stored LinearRegression as scoring needs it: its coefficients and intercept.

    Unpickled by _ArtifactUnpickler, which admits only this class and numpy's arrays, so a
    run neither imports scikit-learn (0.7 s of every run's start) nor executes whatever an
    altered artifact might ask for. predict() is LinearRegression.predict's arithmetic
    (X @ coef_ + intercept_ on the same array), so its predictions are the same to the bit.
    """

    coef_: np.ndarray
    intercept_: float

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        coef = self.coef_
        return matrix @ coef + self.intercept_ if coef.ndim == 1 else matrix @ coef.T + self.intercept_


_LINEAR_REGRESSION = ("sklearn.linear_model._base", "LinearRegression")
# What pickle needs to rebuild numpy arrays, dtypes and scalars (numpy 2 names, then numpy 1's).
_NUMPY_NAMES = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArtifactUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _LINEAR_REGRESSION:
            return FittedLinearModel
        if (module, name) in _NUMPY_NAMES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")


def read_artifact(version: str, artifact: bytes) -> FittedLinearModel:
    """The stored estimator; UsageError when the artifact is anything but a fitted LinearRegression."""
    try:
        estimator = _ArtifactUnpickler(io.BytesIO(artifact)).load()
    except Exception as exc:  # noqa: BLE001 - a damaged artifact fails in many ways; each is the same news
        raise UsageError(f"model {version}: its artifact is not a scikit-learn LinearRegression "
                         f"({_first_line(exc)}); run `modelwatch train` again") from None
    if not (isinstance(estimator, FittedLinearModel) and isinstance(getattr(estimator, "coef_", None), np.ndarray)
            and np.ndim(getattr(estimator, "intercept_", None)) in (0, 1)):
        raise UsageError(f"model {version}: its artifact is not a fitted scikit-learn LinearRegression; "
                         "run `modelwatch train` again")
    return estimator


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


@dataclass(frozen=True)
class TrainedModel:
    version: str
    estimator: LinearRegression | FittedLinearModel  # trained here, or read back from the registry
    features: tuple[str, ...]
    train_rows: int
    validation_rows: int
    train_mae: float
    validation_mae: float
    artifact: bytes

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Predictions for Arrow rows, without pandas (3x faster on a 3-million-row batch)."""
        if table.num_rows == 0:
            return np.empty(0)
        return self.estimator.predict(feature_matrix(table, self.features))


def duration_minutes(table: pa.Table) -> np.ndarray:
    """The target, as the monitor's derived duration_min computes it in SQL."""
    seconds = pc.divide(
        pc.cast(pc.subtract(table["dropoff_datetime"], table["pickup_datetime"]), pa.int64()), 1_000_000
    )
    return np.asarray(seconds.to_numpy(zero_copy_only=False), dtype="float64") / 60.0


def feature_frame(table: pa.Table, features: tuple[str, ...]) -> pd.DataFrame:
    return pa.table({name: _as_float(table[name]) for name in features}).to_pandas()


def _as_float(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A feature as float64: zone ids are stored as categories (text), the model reads numbers."""
    return column if column.type == pa.float64() else pc.cast(column, pa.float64())


def feature_matrix(table: pa.Table, features: tuple[str, ...]) -> np.ndarray:
    """The features as float64 with missing values as 0, column-major: the array predict() makes
    through pandas, to the bit (the layout decides the order of the sums in the dot product)."""
    matrix = np.empty((table.num_rows, len(features)), dtype="float64", order="F")
    for index, name in enumerate(features):
        matrix[:, index] = _as_float(table[name]).to_numpy(zero_copy_only=False)  # nulls arrive as NaN
    matrix[np.isnan(matrix)] = 0.0
    return matrix


def predict(estimator: LinearRegression, features: tuple[str, ...], frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.empty(0)
    return estimator.predict(frame[list(features)].astype("float64").fillna(0.0).to_numpy())


def train(trips: BatchFile) -> TrainedModel:
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import mean_absolute_error
    from sklearn.model_selection import train_test_split

    table = trips.table
    frame = feature_frame(table, FEATURES)
    frame[TARGET] = duration_minutes(table)
    keep = (frame[TARGET] > 0) & (frame[TARGET] <= 60) & (frame["passenger_count"] > 0) & (frame["passenger_count"] <= 8)
    data = frame[keep]
    if len(data) < 100:
        raise UsageError(f"{trips.path}: only {len(data)} rows pass the training filters; need at least 100")
    train_part, valid_part = train_test_split(data, test_size=VALIDATION_SHARE, random_state=SEED)
    estimator = LinearRegression()
    estimator.fit(train_part[list(FEATURES)].to_numpy(), train_part[TARGET].to_numpy())
    artifact = pickle.dumps(estimator, protocol=5)
    return TrainedModel(
        version=hashlib.sha256(artifact).hexdigest()[:12],
        estimator=estimator,
        features=FEATURES,
        train_rows=len(train_part),
        validation_rows=len(valid_part),
        train_mae=float(mean_absolute_error(train_part[TARGET], predict(estimator, FEATURES, train_part))),
        validation_mae=float(mean_absolute_error(valid_part[TARGET], predict(estimator, FEATURES, valid_part))),
        artifact=artifact,
    )


def save(conn: psycopg.Connection, monitor: str, model: TrainedModel, trips: BatchFile) -> None:
    """The registry row; re-training on the same data gives the same version and replaces it."""
    conn.execute(
        """
        insert into raw.models (monitor, version, algorithm, features, target, reference_file, reference_sha256,
                                train_rows, validation_rows, train_mae, validation_mae, artifact)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (monitor, version) do update set trained_at = now(), reference_file = excluded.reference_file
        """,
        (
            monitor, model.version, "sklearn.linear_model.LinearRegression", json.dumps(list(model.features)), TARGET,
            trips.path.name, trips.sha256, model.train_rows, model.validation_rows,
            model.train_mae, model.validation_mae, model.artifact,
        ),
    )


def load_latest(conn: psycopg.Connection, monitor: str) -> TrainedModel:
    row = conn.execute(
        """select version, artifact, features, train_rows, validation_rows, train_mae, validation_mae
           from raw.models where monitor = %s order by trained_at desc limit 1""",
        (monitor,),
    ).fetchone()
    if row is None:
        raise UsageError(f"monitor {monitor}: no model trained yet: run `modelwatch train --reference FILE` first")
    version, artifact, features, train_rows, validation_rows, train_mae, validation_mae = row
    return TrainedModel(
        version=version,
        estimator=read_artifact(version, bytes(artifact)),
        features=tuple(features),
        train_rows=train_rows,
        validation_rows=validation_rows,
        train_mae=train_mae,
        validation_mae=validation_mae,
        artifact=bytes(artifact),
    )
