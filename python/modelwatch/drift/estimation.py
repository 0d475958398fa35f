"""Performance estimated before labels land: what is fitted once on a monitor's reference set.

Classifiers (CBPE, as NannyML 0.13 defines it): a calibration map per class, the
breakpoints of an isotonic regression of the target on the predicted probability
(one-vs-rest for a multiclass model), fitted only where calibration lowers the
reference's expected calibration error under cross-validation, else the identity;
int_estimated_performance applies it to each batch in SQL and reads the expected
confusion matrix off the calibrated probabilities.

Regression (DLE): gradient-boosted models of each row's absolute and squared error,
from the features and the prediction, pickled with the reference version
(modelwatch.drift.dle applies them to each batch).

Thresholds: per metric, the mean plus or minus three standard deviations of the
metric over the reference's own batches (its rows cut by the monitor's batch
period), clipped to the metric's range: NannyML's default rule.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from modelwatch.monitors import Monitor

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DDL = """
create table if not exists raw.calibration_maps (
    monitor text not null,
    reference_version text not null,
    class_name text not null,
    point integer not null,
    x double precision not null,
    y double precision not null,
    primary key (monitor, reference_version, class_name, point)
);
create index if not exists calibration_maps_lookup on raw.calibration_maps (monitor, reference_version, class_name, x);

create table if not exists raw.estimation_thresholds (
    monitor text not null,
    reference_version text not null,
    metric text not null,
    method text not null,
    lower_threshold double precision,
    upper_threshold double precision,
    reference_batches integer not null,
    primary key (monitor, reference_version, metric)
);

create table if not exists raw.loss_models (
    monitor text not null,
    reference_version text not null,
    algorithm text not null,
    features jsonb not null,
    artifact bytea not null,
    fitted_at timestamptz not null default now(),
    primary key (monitor, reference_version)
);

create table if not exists raw.estimated_losses (
    monitor text not null,
    batch_date date not null,
    reference_version text not null,
    metric text not null,
    estimated_value double precision,
    n bigint not null,
    computed_at timestamptz not null default now(),
    primary key (monitor, batch_date, metric)
);
"""

CLASSIFIER_METRICS = ("roc_auc", "accuracy", "precision", "recall", "f1")
REGRESSION_METRICS = ("mae", "rmse")
STD_MULTIPLIER = 3  # NannyML's StandardDeviationThreshold default, both sides
_BINS, _SPLITS = 10, 10  # NannyML's needs_calibration: ECE bins and shuffle splits


def reference_frame(conn: psycopg.Connection, monitor: Monitor, version: str) -> pd.DataFrame:
    """The reference set's rows (all stored columns) as a frame, in order of time, then id: the
    calibration check's shuffle splits depend on the rows' order, and the database keeps no file
    order (NannyML, given a file sorted by time, sees the same order)."""
    import pandas as pd

    cursor = conn.execute(sql.SQL("select * from {} where reference_version = %s order by {}, {}").format(
        sql.Identifier("raw", monitor.reference_table), sql.Identifier(monitor.timestamp),
        sql.Identifier(monitor.id)), (version,))
    return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


def fitted(conn: psycopg.Connection, monitor: Monitor, version: str) -> bool:
    return conn.execute("select exists (select 1 from raw.estimation_thresholds where monitor = %s "
                        "and reference_version = %s)", (monitor.name, version)).fetchone()[0]


def fit_reference(conn: psycopg.Connection, monitor: Monitor, version: str) -> None:
    """Fit what estimation needs on the reference set `version` and store it (replacing an earlier
    fit of the same version). A reference without targets gets no fit: nothing can be estimated.
    (numpy, pandas and scikit-learn are imported here: every command imports this module's DDL.)"""
    import numpy as np

    for table in ("calibration_maps", "estimation_thresholds", "loss_models"):
        conn.execute(sql.SQL("delete from {} where monitor = %s and reference_version = %s").format(
            sql.Identifier("raw", table)), (monitor.name, version))
    metrics = REGRESSION_METRICS if monitor.task == "regression" else CLASSIFIER_METRICS
    derived = monitor.target in monitor.derived  # computed in SQL, not stored: not read here
    frame = None if derived else reference_frame(conn, monitor, version)
    if frame is not None:
        frame = frame[frame[monitor.target].notna()]
    if frame is None or frame.empty:  # nothing to learn from: no estimate, thresholds null
        _store_thresholds(conn, monitor, version, {metric: [] for metric in metrics}, upper_bound=None, batches=0)
        return
    chunks = _chunk_keys(frame[monitor.timestamp], monitor.batch_period)
    if monitor.task == "regression":
        from modelwatch.drift import dle

        model = dle.fit(frame, monitor)
        conn.execute("insert into raw.loss_models (monitor, reference_version, algorithm, features, artifact)"
                     " values (%s, %s, %s, %s, %s)",
                     (monitor.name, version, model.algorithm, psycopg.types.json.Jsonb(list(model.features)),
                      pickle.dumps(model)))
        values = {metric: [] for metric in REGRESSION_METRICS}
        for _, rows in frame.groupby(chunks):
            error = rows[monitor.prediction].astype(float) - rows[monitor.target].astype(float)
            values["mae"].append(float(np.abs(error).mean()))
            values["rmse"].append(float(np.sqrt((error ** 2).mean())))
        _store_thresholds(conn, monitor, version, values, upper_bound=None, batches=chunks.nunique())
        return
    maps = calibration_maps(frame, monitor)
    conn.cursor().executemany(
        "insert into raw.calibration_maps (monitor, reference_version, class_name, point, x, y)"
        " values (%s, %s, %s, %s, %s, %s)",
        [(monitor.name, version, class_name, point, float(x), float(y))
         for class_name, (xs, ys) in maps.items() for point, (x, y) in enumerate(zip(xs, ys))])
    values = {metric: [] for metric in CLASSIFIER_METRICS}
    for _, rows in frame.groupby(chunks):
        for metric, value in realised_classifier_metrics(rows, monitor).items():
            values[metric].append(value)
    _store_thresholds(conn, monitor, version, values, upper_bound=1.0, batches=chunks.nunique())


def _chunk_keys(stamps: pd.Series, period: str) -> pd.Series:
    """The reference rows' batches, cut as the monitor cuts its batches."""
    import pandas as pd
    stamps = pd.to_datetime(stamps)
    if period == "day":
        return stamps.dt.normalize()
    if period == "week":
        days = stamps.dt.normalize()
        return days - pd.to_timedelta(days.dt.weekday, unit="D")
    return stamps.dt.to_period("M").dt.start_time


def _store_thresholds(conn: psycopg.Connection, monitor: Monitor, version: str, values: dict[str, list[float]],
                      upper_bound: float | None, batches: int) -> None:
    import numpy as np
    for metric, series in values.items():
        finite = np.array([value for value in series if value is not None and np.isfinite(value)], dtype=float)
        lower = upper = None
        if len(finite) > 1:  # a standard deviation needs two batches (NannyML's ddof 0 gives one of 0)
            mean, std = float(finite.mean()), float(finite.std())
            lower, upper = max(mean - STD_MULTIPLIER * std, 0.0), mean + STD_MULTIPLIER * std
            if upper_bound is not None:
                upper = min(upper, upper_bound)
        conn.execute(
            "insert into raw.estimation_thresholds (monitor, reference_version, metric, method, lower_threshold,"
            " upper_threshold, reference_batches) values (%s, %s, %s, %s, %s, %s, %s)",
            (monitor.name, version, metric, "cbpe" if monitor.classifier else "dle", lower, upper, batches))


def class_columns(monitor: Monitor) -> dict[str, str]:
    """class -> its probability column (a binary model: its positive class only)."""
    if monitor.task == "binary_classification":
        return {monitor.positive_class: monitor.probability}  # type: ignore[dict-item]
    return dict(monitor.probabilities)


def _as_text(values: pd.Series) -> pd.Series:
    return values.map(lambda value: None if value is None else
                      str(int(value)) if isinstance(value, float) and value.is_integer() else str(value))


def calibration_maps(frame: pd.DataFrame, monitor: Monitor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class, the breakpoints (x, y) of its calibration: isotonic where NannyML's
    needs_calibration says it helps, else the identity ((0, 0), (1, 1))."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression
    target = _as_text(frame[monitor.target])
    maps = {}
    for class_name, column in class_columns(monitor).items():
        y = (target == class_name).to_numpy(dtype=int)
        p = frame[column].to_numpy(dtype=float)
        if needs_calibration(y, p):
            iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(p, y)
            maps[class_name] = (iso.X_thresholds_, iso.y_thresholds_)
        else:
            maps[class_name] = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    return maps


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    """Expected calibration error over equal-count bins of the sorted probabilities (NannyML's
    _get_bin_index_edges: n // bins rows each, the last bin takes the rest)."""
    import numpy as np

    order = p.argsort()
    p, y = p[order], y[order]
    bins = _BINS if len(p) > 2 * _BINS else max(len(p) // 2, 1)
    width = len(p) // bins
    edges = list(range(0, len(p) + 1, width))
    edges[-1] = len(p)
    return float(sum((right - left) / len(p) * abs(p[left:right].mean() - y[left:right].mean())
                     for left, right in zip(edges[:-1], edges[1:])))


def needs_calibration(y: np.ndarray, p: np.ndarray) -> bool:
    """NannyML 0.13's rule: no calibration for one class or a near-perfect ranking (ROC AUC above
    0.999); else calibrate when isotonic fits on stratified shuffle splits (10, a tenth held out,
    seed 42) lower the expected calibration error of the held-out rows, pooled."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import StratifiedShuffleSplit

    if len(np.unique(y)) < 2 or _auc(y.astype(bool), p) > 0.999:
        return False
    splitter = StratifiedShuffleSplit(n_splits=_SPLITS, test_size=0.1, random_state=42)
    truth, before, after = [], [], []
    for train, test in splitter.split(p, y):
        iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(p[train], y[train])
        truth.append(y[test])
        before.append(p[test])
        after.append(iso.predict(p[test]))
    truth_all = np.concatenate(truth)
    return _ece(truth_all, np.concatenate(before)) > _ece(truth_all, np.concatenate(after))


def _auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties one half), nan with one class."""
    import numpy as np
    from scipy.stats import rankdata

    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _binary_scores(truth: np.ndarray, guess: np.ndarray) -> tuple[float, float, float]:
    """precision, recall, f1 of boolean arrays (0 where scikit-learn's zero_division applies)."""
    tp = float((truth & guess).sum())
    predicted, actual = float(guess.sum()), float(truth.sum())
    return (tp / predicted if predicted else 0.0, tp / actual if actual else 0.0,
            2 * tp / (predicted + actual) if predicted + actual else 0.0)


def realised_classifier_metrics(rows: pd.DataFrame, monitor: Monitor) -> dict[str, float]:
    """The five metrics on labelled rows (binary: the positive class; multiclass: macro averages
    over the declared classes), for the thresholds: scikit-learn's definitions in numpy (its
    input checks cost more than the reference's batches)."""
    import numpy as np

    y = _as_text(rows[monitor.target]).to_numpy()
    predicted = _as_text(rows[monitor.prediction]).to_numpy()
    columns = class_columns(monitor)
    per_class = []
    for class_name, column in columns.items():
        truth, guess = y == class_name, predicted == class_name
        per_class.append((_auc(truth, rows[column].to_numpy(dtype=float)), *_binary_scores(truth, guess)))
    auc, precision, recall, f1 = (float(np.mean(values)) for values in zip(*per_class))
    return {"roc_auc": auc, "accuracy": float((y == predicted).mean()), "precision": precision,
            "recall": recall, "f1": f1}
