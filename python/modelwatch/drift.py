"""Evidently's drift per batch, against the reference set of the model that scored it.

Runs in the drift worker (modelwatch.drift_worker), each batch as soon as it is
loaded and scored, while the next ones load and dbt builds the marts that do not
read it: per batch, Evidently's `ValueDrift` for every monitored feature and the
prediction (Evidently picks the method per column from its type, the row count
and its distinct values) and `DriftedColumnsCount` for the batch, computed as
those metrics do but without a Report and its figures (run_evidently).
Results go to raw.drift_scores (batch x column) and raw.drift_datasets
(batch); dbt models them into marts.feature_drift and marts.dataset_drift.

Evidently costs ~2.5 s to import: it is imported on first use, once per process
(the worker's, which imports it while the run loads its batches).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from .config import Monitoring, Settings
from .errors import UsageError

NUMERIC, CATEGORICAL, PREDICTION = "numeric", "categorical", "prediction"


@dataclass(frozen=True)
class DriftOptions:
    """vars.drift of dbt_project.yml, the part the Evidently step uses."""

    max_rows: int = 100_000
    sample_seed: int = 42
    drift_share: float = 0.5

    @classmethod
    def from_vars(cls, raw: Mapping[str, Any] | None) -> DriftOptions:
        raw = raw or {}
        try:
            options = cls(
                max_rows=int(raw.get("evidently_max_rows", cls.max_rows)),
                sample_seed=int(raw.get("evidently_sample_seed", cls.sample_seed)),
                drift_share=float(raw.get("dataset_drift_share", cls.drift_share)),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"dbt_project.yml vars.drift: {exc}") from None
        if options.max_rows < 1 or not 0 < options.drift_share <= 1:
            raise UsageError("dbt_project.yml vars.drift: evidently_max_rows must be >= 1 and "
                             "dataset_drift_share in (0, 1]")
        return options

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftOptions:
        return cls.from_vars(settings.dbt_vars.get("drift"))


@dataclass(frozen=True)
class MonitoredColumn:
    name: str
    kind: str  # numeric | categorical | prediction

    @property
    def numeric(self) -> bool:
        return self.kind != CATEGORICAL


def monitored_columns(monitoring: Monitoring) -> tuple[MonitoredColumn, ...]:
    """The features and the prediction; the target is model performance, not drift."""
    return (
        tuple(MonitoredColumn(name, NUMERIC) for name in monitoring.numeric_features)
        + tuple(MonitoredColumn(name, CATEGORICAL) for name in monitoring.categorical_features)
        + (MonitoredColumn(monitoring.prediction, PREDICTION),)
    )


@dataclass(frozen=True)
class Rows:
    """Rows read for Evidently: all of them, or a seeded sample when there are more than max_rows."""

    frame: pd.DataFrame
    total: int
    # A reference's numeric values are handed to Evidently sorted: its Wasserstein distance sorts
    # both sides on every call, and a sorted side costs a third (5 ms against 14 ms on 68,000 rows,
    # five columns a batch). The distance is the same; the reference's standard deviation, which
    # scales it, may differ in the last bits (another order of summation).
    sort_numeric: bool = False
    # Evidently Datasets of these rows by column list: a reference serves every batch of its model
    datasets: dict[tuple[str, ...], Any] = field(default_factory=dict, compare=False, repr=False)
    # Each column's values as Evidently scores them, cleaned once: a reference serves every batch
    cleaned: dict[str, pd.Series] = field(default_factory=dict, compare=False, repr=False)
    distinct: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # A reference's drift method per column, where no batch can change Evidently's choice
    methods: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def used(self) -> int:
        return len(self.frame)

    def values(self, name: str) -> pd.Series:
        """The column without nulls and infinities (Evidently drops both)."""
        if name not in self.cleaned:
            series = self.frame[name]
            if pd.api.types.is_float_dtype(series):
                series = series.replace([np.inf, -np.inf], np.nan)
            series = series.dropna()
            if self.sort_numeric and pd.api.types.is_float_dtype(series):
                series = series.sort_values(ignore_index=True)
            self.cleaned[name] = series
        return self.cleaned[name]

    def distinct_count(self, name: str) -> int:
        if name not in self.distinct:
            self.distinct[name] = int(self.values(name).nunique())
        return self.distinct[name]

    def dataset(self, api: EvidentlyApi, columns: list[MonitoredColumn]) -> Any:
        key = tuple(column.name for column in columns)
        if key not in self.datasets:
            definition = api.DataDefinition(
                numerical_columns=[column.name for column in columns if column.numeric],
                categorical_columns=[column.name for column in columns if not column.numeric],
            )
            self.datasets[key] = api.Dataset.from_pandas(self.frame[list(key)], data_definition=definition)
        return self.datasets[key]


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str
    method: str | None = None
    threshold: float | None = None
    score: float | None = None
    drifted: bool | None = None
    reason: str | None = None  # why Evidently did not score the column

    @property
    def computed(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class BatchDrift:
    batch_date: date
    model_version: str | None
    reference_rows: int
    reference_rows_used: int
    current_rows: int
    current_rows_used: int
    sampled: bool
    columns: tuple[ColumnDrift, ...]
    columns_drifted: int | None
    share_drifted: float | None
    dataset_drift: bool | None
    drift_share: float
    evidently_version: str
    seconds: float

    def column(self, name: str) -> ColumnDrift:
        return next(column for column in self.columns if column.column == name)


@dataclass(frozen=True)
class EvidentlyApi:
    """The few Evidently names used, imported once."""

    version: str
    Report: Any
    Dataset: Any
    DataDefinition: Any
    DataDriftPreset: Any
    DataSummaryPreset: Any
    get_stattest: Any  # Evidently's choice of drift method for a column, as ValueDrift makes it
    ColumnType: Any


@contextlib.contextmanager
def quiet_numerics() -> Iterator[None]:
    """Evidently's statistics warn on legitimate edge cases (chi-square with a category the
    reference lacks divides by zero, giving p = 0: drift); the result stands, the noise goes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@functools.cache
def evidently_api() -> EvidentlyApi:
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    return EvidentlyApi(evidently.__version__, Report, Dataset, DataDefinition, DataDriftPreset, DataSummaryPreset,
                        get_stattest, ColumnType)


# ---------------------------------------------------------------- reading


def batch_model_version(conn: psycopg.Connection, batch_date: date) -> str | None:
    """The model that scored the batch; UsageError when the batch was never loaded."""
    row = conn.execute("select model_version from raw.batches where batch_date = %s", (batch_date,)).fetchone()
    if row is None:
        raise UsageError(f"batch {batch_date} has not been loaded: "
                         f"run `modelwatch run --batch-date {batch_date}` first")
    return row[0]


def _select_list(columns: Iterable[MonitoredColumn], table_of: Mapping[str, str]) -> sql.Composable:
    """Numeric columns as double precision, categorical ones as text (the categories dbt bins on)."""
    parts = []
    for column in columns:
        ref = sql.Identifier(table_of.get(column.kind, table_of["default"]), column.name)
        cast = "double precision" if column.numeric else "text"
        parts.append(sql.SQL("cast({} as {}) as {}").format(ref, sql.SQL(cast), sql.Identifier(column.name)))
    return sql.SQL(", ").join(parts)


def _read_sampled(conn: psycopg.Connection, query: sql.Composable, params: tuple, total: int,
                  options: DriftOptions, trip_id: sql.Composable) -> list[tuple]:
    """The rows of `query` (which ends with its WHERE clause); above max_rows a seeded sample:
    the rows with the smallest hashes of their trip id.

    Only rows under a hash bound reach the sort, a bound that lets ~10% (and 6 sigma) more
    rows through than the sample needs: on 3 million rows PostgreSQL sorts ~110,000, not
    all of them, and the sample is the same. Should the bound let too few through, the
    query runs again without it.
    """
    if total <= options.max_rows:
        return conn.execute(query, params).fetchall()
    seed, size = options.sample_seed, options.max_rows
    ordered = sql.SQL(" order by hashint8extended({}, %s) limit %s").format(trip_id)
    share = (size * 1.1 + 6 * math.sqrt(size)) / total
    if share < 1:
        bound = int(-(2**63) + share * 2**64)  # hashint8extended is uniform over the int8 range
        below = sql.SQL(" and hashint8extended({}, %s) < %s").format(trip_id)
        rows = conn.execute(query + below + ordered, (*params, seed, bound, seed, size)).fetchall()
        if len(rows) == size:
            return rows
    return conn.execute(query + ordered, (*params, seed, size)).fetchall()


def _frame(cursor_rows: list[tuple], columns: tuple[MonitoredColumn, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(cursor_rows, columns=[column.name for column in columns])
    for column in columns:
        frame[column.name] = frame[column.name].astype("float64" if column.numeric else "object")
    return frame


def read_reference(conn: psycopg.Connection, model_version: str | None,
                   columns: tuple[MonitoredColumn, ...], options: DriftOptions) -> Rows:
    """The reference set stored by `train` for this model version."""
    total = conn.execute("select count(*) from raw.reference_trips where model_version = %s",
                         (model_version,)).fetchone()[0]
    query = sql.SQL("select {} from raw.reference_trips as r where r.model_version = %s").format(
        _select_list(columns, {"default": "r"}))
    rows = _read_sampled(conn, query, (model_version,), total, options, sql.Identifier("r", "trip_id"))
    return Rows(_frame(rows, columns), int(total), sort_numeric=True)


def read_batch(conn: psycopg.Connection, batch_date: date,
               columns: tuple[MonitoredColumn, ...], options: DriftOptions) -> Rows:
    """The batch's trips with their predictions (a trip without one has a null prediction)."""
    total = conn.execute("select count(*) from raw.trips where batch_date = %s", (batch_date,)).fetchone()[0]
    query = sql.SQL(
        "select {} from raw.trips as t left join raw.predictions as p"
        " on p.batch_date = t.batch_date and p.trip_id = t.trip_id"
        " where t.batch_date = %s"
    ).format(_select_list(columns, {"default": "t", PREDICTION: "p"}))
    with conn.transaction():
        # A batch is read as soon as it is loaded, before the run refreshes the statistics: the
        # planner may then think the day holds one row and join with a nested loop, quadratic in
        # the batch's rows. A whole day is read: hash it.
        conn.execute("set local enable_nestloop = off")
        rows = _read_sampled(conn, query, (batch_date,), total, options, sql.Identifier("t", "trip_id"))
    return Rows(_frame(rows, columns), int(total))


# ---------------------------------------------------------------- scoring


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def skip_reason(column: MonitoredColumn, reference: Rows, current: Rows) -> str | None:
    """Why Evidently cannot score a column (it raises on an empty one), or None."""
    if current.frame.empty:
        return "the batch has no rows"
    if reference.frame.empty:
        return "the reference set has no rows for this model version"
    current_values, reference_values = current.values(column.name), reference.values(column.name)
    if current_values.empty:
        return f"empty in the batch: all {current.used} values are null"
    if reference_values.empty:
        return f"empty in the reference: all {reference.used} values are null"
    if current.distinct_count(column.name) == 1:
        return f"constant in the batch: every value is {_plain(current_values.iloc[0])!r}"
    if reference.distinct_count(column.name) == 1:
        return f"constant in the reference: every value is {_plain(reference_values.iloc[0])!r}"
    return None


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


# Evidently's default method for a column depends on the batch only through how many distinct
# values the reference and the batch have together, and only while that is at most this many.
METHOD_DEPENDS_ON_BATCH_UP_TO = 5


def default_method(api: EvidentlyApi, column: MonitoredColumn, kind: Any, reference: Rows, current: Rows) -> Any:
    """The drift method Evidently's ValueDrift picks for the column. A reference with more than
    METHOD_DEPENDS_ON_BATCH_UP_TO distinct values fixes it for every batch, so it is picked once
    per reference (asking Evidently, with no batch rows), not once per batch: picking counts the
    distinct values of the reference and batch together, about a fifth of the scoring time."""
    reference_values = reference.values(column.name)
    if reference.distinct_count(column.name) <= METHOD_DEPENDS_ON_BATCH_UP_TO:
        return api.get_stattest(reference_values, current.values(column.name), kind, None)
    if column.name not in reference.methods:
        reference.methods[column.name] = api.get_stattest(reference_values, reference_values.iloc[:0], kind, None)
    return reference.methods[column.name]


def run_evidently(api: EvidentlyApi, reference: Rows, current: Rows,
                  columns: list[MonitoredColumn], drift_share: float) -> tuple[list[ColumnDrift], dict[str, Any]]:
    """Evidently's ValueDrift per column and DriftedColumnsCount over them, computed the way
    those metrics compute them (the same cleaning, method choice and statistical test) but
    without a Report: a Report also draws plotly figures for each column and scores every column
    a second time for the count, about 3x the cost of the tests (tests/test_drift.py checks the
    figures against a Report's)."""
    scored: list[ColumnDrift] = []
    with quiet_numerics():
        for column in columns:
            kind = api.ColumnType.Numerical if column.numeric else api.ColumnType.Categorical
            reference_values, current_values = reference.values(column.name), current.values(column.name)
            test = default_method(api, column, kind, reference, current)  # ValueDrift's
            result = test(reference_values, current_values, kind, None)  # None: the method's default threshold
            scored.append(ColumnDrift(column=column.name, kind=column.kind, method=test.display_name,
                                      threshold=float(result.actual_threshold), score=_finite(result.drift_score),
                                      drifted=bool(result.drifted)))
    drifted = sum(bool(column.drifted) for column in scored)
    share = drifted / len(scored)
    # As Evidently's DriftedColumnsCount: dataset drift when the drifted share reaches drift_share.
    return scored, {"columns_drifted": drifted, "share_drifted": share, "dataset_drift": share >= drift_share}


def score_batch(api: EvidentlyApi, batch_date: date, model_version: str | None, reference: Rows, current: Rows,
                columns: tuple[MonitoredColumn, ...], options: DriftOptions,
                started: float | None = None) -> BatchDrift:
    """Score one batch; `started` (perf_counter) is when reading it began, for its seconds."""
    clock = time.perf_counter() if started is None else started
    skipped = {column.name: reason for column in columns
               if (reason := skip_reason(column, reference, current))}
    scorable = [column for column in columns if column.name not in skipped]
    scored: dict[str, ColumnDrift] = {}
    dataset: dict[str, Any] = {}
    if scorable:
        try:
            results, dataset = run_evidently(api, reference, current, scorable, options.drift_share)
            scored = {result.column: result for result in results}
        except Exception as exc:  # noqa: BLE001 - Evidently failing on one batch must not stop the others
            first = " ".join(str(exc).split())[:300] or type(exc).__name__
            skipped.update({column.name: f"Evidently failed: {first}" for column in scorable})
    outcome = tuple(
        scored.get(column.name) or ColumnDrift(column=column.name, kind=column.kind, reason=skipped[column.name])
        for column in columns
    )
    return BatchDrift(
        batch_date=batch_date,
        model_version=model_version,
        reference_rows=reference.total,
        reference_rows_used=reference.used,
        current_rows=current.total,
        current_rows_used=current.used,
        sampled=current.used < current.total or reference.used < reference.total,
        columns=outcome,
        columns_drifted=dataset.get("columns_drifted"),
        share_drifted=dataset.get("share_drifted"),
        dataset_drift=dataset.get("dataset_drift"),
        drift_share=options.drift_share,
        evidently_version=api.version,
        seconds=time.perf_counter() - clock,
    )


# ---------------------------------------------------------------- storing


def store(conn: psycopg.Connection, drift: BatchDrift, sample_seed: int) -> None:
    """Replace the batch's rows in raw.drift_scores and raw.drift_datasets, atomically."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute("delete from raw.drift_scores where batch_date = %s", (drift.batch_date,))
        cursor.execute("delete from raw.drift_datasets where batch_date = %s", (drift.batch_date,))
        cursor.executemany(
            """insert into raw.drift_scores (batch_date, column_name, column_kind, computed, method, threshold,
                                             score, drifted, reason, evidently_version)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(drift.batch_date, column.column, column.kind, column.computed, column.method, column.threshold,
              column.score, column.drifted, column.reason, drift.evidently_version) for column in drift.columns],
        )
        cursor.execute(
            """insert into raw.drift_datasets (batch_date, model_version, reference_rows, reference_rows_used,
                   current_rows, current_rows_used, sample_seed, columns_monitored, columns_computed,
                   columns_drifted, share_drifted, drift_share, dataset_drift, evidently_version, seconds)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (drift.batch_date, drift.model_version, drift.reference_rows, drift.reference_rows_used,
             drift.current_rows, drift.current_rows_used, sample_seed if drift.sampled else None,
             len(drift.columns), sum(column.computed for column in drift.columns), drift.columns_drifted,
             drift.share_drifted, drift.drift_share, drift.dataset_drift, drift.evidently_version, drift.seconds),
        )


REFERENCES_KEPT = 2  # a caller's cache of reference sets: the current model and the one before


def score_batches(settings: Settings, conn: psycopg.Connection, days: Iterable[date],
                  references: dict[str | None, Rows] | None = None) -> list[BatchDrift]:
    """Evidently drift for each batch (loaded and scored) against its model's reference; stored in raw.
    `references`: the reference sets read so far, by model version, kept by a caller that scores
    more batches of this database (a model version's reference set never changes)."""
    options = DriftOptions.from_settings(settings)
    columns = monitored_columns(settings.monitoring)
    api = evidently_api()
    references = {} if references is None else references
    results: list[BatchDrift] = []
    for day in days:
        version = batch_model_version(conn, day)
        if version not in references:  # read once per model version, not once per batch
            while len(references) >= REFERENCES_KEPT:
                del references[next(iter(references))]
            references[version] = read_reference(conn, version, columns, options)
        clock = time.perf_counter()
        current = read_batch(conn, day, columns, options)
        drift = score_batch(api, day, version, references[version], current, columns, options, started=clock)
        store(conn, drift, options.sample_seed)
        results.append(drift)
    return results
