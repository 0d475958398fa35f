"""Evidently's drift per batch of a monitor, against the batch's reference set.

Runs in the drift worker (modelwatch.drift.worker), each batch as soon as it is
loaded and scored, while the next ones load and dbt builds the marts that do not
read it: per batch, Evidently's `ValueDrift` for every monitored feature, the
prediction and the probabilities (Evidently picks the method per column from its type, the row count
and its distinct values) and `DriftedColumnsCount` for the batch, computed as
those metrics do but without a Report and its figures (run_evidently).
Results go to raw.drift_scores (batch x column) and raw.drift_datasets
(batch); dbt models them into marts.feature_drift and marts.dataset_drift.

Evidently is imported on first use, once per process (the worker's, which imports
its drift tests alone while the run loads its batches: evidently_import).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from modelwatch.config import Settings
from modelwatch.drift import evidently_import
from modelwatch.drift.options import DriftOptions
from modelwatch.errors import UsageError
from modelwatch.monitors import Monitor

CATEGORICAL = "categorical"  # a drift column's kind: numeric, categorical or prediction


@dataclass(frozen=True)
class MonitoredColumn:
    name: str
    kind: str  # numeric | categorical | prediction

    @property
    def numeric(self) -> bool:
        return self.kind != CATEGORICAL


def monitored_columns(monitor: Monitor) -> tuple[MonitoredColumn, ...]:
    """The features, the prediction and the probabilities; the target is model performance, not drift."""
    return tuple(MonitoredColumn(name, kind) for name, kind in monitor.drift_columns)


@dataclass(frozen=True)
class Rows:
    """Rows read for Evidently: all of them, or a seeded sample when there are more than max_rows."""

    frame: pd.DataFrame
    total: int
    # Numeric values are handed to Evidently sorted: its Wasserstein distance sorts both sides on
    # every call, and a sorted side costs a third (5 ms against 14 ms on 68,000 rows, five columns
    # a batch). The distance is the same; the reference's standard deviation, which scales it,
    # may differ in the last bits (another order of summation).
    sort_numeric: bool = True
    # Evidently Datasets of these rows by column list: a reference serves every batch compared with it
    datasets: dict[tuple[str, ...], Any] = field(default_factory=dict, compare=False, repr=False)
    # Each column's values as Evidently scores them, cleaned once: a reference serves every batch
    cleaned: dict[str, pd.Series] = field(default_factory=dict, compare=False, repr=False)
    distinct: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # A reference's drift method per column, where no batch can change Evidently's choice
    methods: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The numbers that enter no drift test (NaN in `frame`), as stored, by column (set_aside_non_finite)
    non_finite: dict[str, pd.Series] = field(default_factory=dict, compare=False, repr=False)
    # A reference's file in the home (reference_cache), where its methods are kept too
    kept: Path | None = field(default=None, compare=False, repr=False)

    @property
    def used(self) -> int:
        return len(self.frame)

    @property
    def complete(self) -> bool:
        """Whether the frame holds every row (no sample)."""
        return self.used == self.total

    def as_stored(self, names: Iterable[str]) -> dict[str, pd.Series]:
        """These columns with their non-finite numbers back, as the table holds them (by name: a
        frame of them would copy every column)."""
        columns = {name: self.frame[name] for name in names}
        for name, values in self.non_finite.items():
            if name in columns:
                restored = columns[name].copy()
                restored.loc[values.index] = values
                columns[name] = restored
        return columns

    def values(self, name: str) -> pd.Series:
        """The column without nulls and infinities (Evidently drops both)."""
        if name not in self.cleaned:
            series = self.frame[name]
            if pd.api.types.is_float_dtype(series):  # numpy's passes: pandas' replace, dropna and sort cost 3x
                numbers = series.to_numpy()
                numbers = numbers[np.isfinite(numbers)]
                series = pd.Series(np.sort(numbers) if self.sort_numeric else numbers, name=name)
            else:
                series = series.dropna()
            self.cleaned[name] = series
        return self.cleaned[name]

    def distinct_count(self, name: str) -> int:
        if name not in self.distinct:
            values = self.values(name)
            if self.sort_numeric and pd.api.types.is_float_dtype(values) and len(values):
                # sorted: a new value wherever the next differs (as nunique, -0.0 equals 0.0)
                self.distinct[name] = int(np.count_nonzero(np.diff(values.to_numpy()))) + 1
            else:
                self.distinct[name] = int(values.nunique())
        return self.distinct[name]

    def dataset(self, api: EvidentlyApi, columns: list[MonitoredColumn]) -> Any:
        key = tuple(column.name for column in columns)
        if key not in self.datasets:
            definition = api.DataDefinition(
                numerical_columns=[column.name for column in columns if column.numeric],
                categorical_columns=[column.name for column in columns if not column.numeric],
            )
            frame = self.frame[list(key)].apply(_as_text)  # the Report sees text as it always has
            self.datasets[key] = api.Dataset.from_pandas(frame, data_definition=definition)
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
    monitor: str
    batch_date: date
    reference_version: str | None
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
    """The few Evidently names used, imported once (in the drift worker, its drift tests alone:
    Report, Dataset, DataDefinition and the presets are None there)."""

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
    """Evidently, imported whole (a Report, its presets and Datasets included)."""
    evidently_import.forget()  # a worker's drift tests alone, if any: the whole package now
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    return EvidentlyApi(evidently.__version__, Report, Dataset, DataDefinition, DataDriftPreset, DataSummaryPreset,
                        get_stattest, ColumnType)


_SCORING_ONLY = False  # set by the drift worker, a process that only scores


def score_only() -> None:
    """This process scores batches and does nothing else with Evidently: drift_tests_api imports
    its drift tests alone (modelwatch.drift.evidently_import)."""
    global _SCORING_ONLY
    _SCORING_ONLY = True


@functools.cache
def drift_tests_api() -> EvidentlyApi:
    """What scoring uses of Evidently (its drift tests, column types and version): in the drift
    worker, without the rest of its package; elsewhere, evidently_api()."""
    tests = evidently_import.drift_tests() if _SCORING_ONLY else None
    if tests is None:
        return evidently_api()
    version, get_stattest, column_type = tests
    return EvidentlyApi(version, None, None, None, None, None, get_stattest, column_type)


# ---------------------------------------------------------------- reading


def batch_reference_version(conn: psycopg.Connection, monitor: Monitor, batch_date: date) -> str | None:
    """The reference set the batch is compared with; UsageError when the batch was never loaded."""
    row = conn.execute("select reference_version from raw.batches where monitor = %s and batch_date = %s",
                       (monitor.name, batch_date)).fetchone()
    if row is None:
        raise UsageError(f"monitor {monitor.name}: batch {batch_date} has not been loaded: "
                         f"run `modelwatch run --monitor {monitor.name} --batch-date {batch_date}` first")
    return row[0]


def _column_expression(monitor: Monitor, column: MonitoredColumn) -> sql.Composable:
    """A column as the models read it: stored, or derived (SQL over the stored columns)."""
    if column.name in monitor.derived:
        return sql.SQL("({})").format(sql.SQL(monitor.derived[column.name]))
    return sql.Identifier(column.name)


def _select_list(monitor: Monitor, columns: Iterable[MonitoredColumn]) -> sql.Composable:
    """Numeric columns as double precision, categorical ones as text (the categories dbt bins on)."""
    parts = []
    for column in columns:
        cast = "double precision" if column.numeric else "text"
        parts.append(sql.SQL("cast({} as {}) as {}").format(
            _column_expression(monitor, column), sql.SQL(cast), sql.Identifier(column.name)))
    return sql.SQL(", ").join(parts)


def _read_sampled(conn: psycopg.Connection, query: sql.Composable, params: tuple, total: int,
                  options: DriftOptions, row_hash: sql.Composable,
                  columns: tuple[MonitoredColumn, ...]) -> pd.DataFrame:
    """The rows of `query` (which ends with its WHERE clause); above max_rows a seeded sample:
    the rows with the smallest hashes of their id (`row_hash`, seeded by its placeholder).

    Only rows under a hash bound reach the sort, a bound that lets ~10% (and 6 sigma) more
    rows through than the sample needs: on 3 million rows PostgreSQL sorts ~110,000, not
    all of them, and the sample is the same. Should the bound let too few through, the
    query runs again without it.
    """
    if total <= options.max_rows:
        return copy_frame(conn, query, params, columns)
    seed, size = options.sample_seed, options.max_rows
    ordered = sql.SQL(" order by {} limit %s").format(row_hash)
    share = (size * 1.1 + 6 * math.sqrt(size)) / total
    if share < 1:
        bound = int(-(2**63) + share * 2**64)  # the hash is uniform over the int8 range
        below = sql.SQL(" and {} < %s").format(row_hash)
        frame = copy_frame(conn, query + below + ordered, (*params, seed, bound, seed, size), columns)
        if len(frame) == size:
            return frame
    return copy_frame(conn, query + ordered, (*params, seed, size), columns)


def copy_frame(conn: psycopg.Connection, query: sql.Composable, params: tuple,
               columns: tuple[MonitoredColumn, ...]) -> pd.DataFrame:
    """The rows of `query` as a frame: numeric columns float64, categorical ones pandas
    categoricals. Read as CSV through COPY and parsed by Arrow: fetching rows as Python tuples
    costs about ten times more on a wide batch (a Python object per value), and so does each
    pass Evidently makes over text held as Python strings rather than as category codes."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [column.name for column in columns]
    buffer = bytearray()
    with conn.cursor() as cursor, cursor.copy(sql.SQL("copy ({}) to stdout (format csv)").format(query),
                                              params) as copy:
        for chunk in copy:
            buffer += chunk
    types = {column.name: pa.float64() if column.numeric else pa.dictionary(pa.int32(), pa.string())
             for column in columns}
    if not buffer:  # no rows (Arrow reads no empty CSV)
        return pd.DataFrame({name: pd.Series(dtype="float64" if types[name] == pa.float64() else "category")
                             for name in names})
    table = pacsv.read_csv(
        pa.py_buffer(bytes(buffer)),
        read_options=pacsv.ReadOptions(column_names=names),
        # COPY writes a null unquoted and an empty text quoted: only the first is missing
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                             quoted_strings_can_be_null=False, null_values=[""]),
    )
    return table.to_pandas()


def set_aside_non_finite(frame: pd.DataFrame, columns: tuple[MonitoredColumn, ...]) -> dict[str, pd.Series]:
    """NaN, +-Infinity and huge numbers enter no drift test (Evidently sees them as missing): each
    numeric column's such values become NaN in `frame`; returned as they were, by column."""
    set_aside: dict[str, pd.Series] = {}
    for column in columns:
        if column.numeric:
            values = frame[column.name]
            finite = values.abs() <= FINITE_LIMIT
            if not finite.all():
                frame[column.name] = values.where(finite)
                if (numbers := values[~finite & values.notna()]).size:
                    set_aside[column.name] = numbers
    return set_aside


def _row_hash(monitor: Monitor) -> sql.Composable:
    """A seeded 64-bit hash of a row's id (one placeholder: the seed)."""
    function = "hashint8extended" if monitor.id_type == "bigint" else "hashtextextended"
    return sql.SQL("{}({}, %s)").format(sql.SQL(function), sql.Identifier(monitor.id))


# The magnitude beyond which a number is no measurement, as the marts' modelwatch.is_finite
# (macros/performance/metrics.sql) has it: the contract counts such values (non_finite_share).
FINITE_LIMIT = 1e100


def read_reference(conn: psycopg.Connection, monitor: Monitor, version: str | None,
                   columns: tuple[MonitoredColumn, ...], options: DriftOptions, cache: Path | None = None) -> Rows:
    """The monitor's reference set of this version; `cache`: a folder where it is kept between
    processes (modelwatch.drift.reference_cache), read from there when it is."""
    from modelwatch.drift import reference_cache

    query = _rows_query(monitor, monitor.reference_table, "reference_version", columns)
    kept = None if cache is None else reference_cache.path_for(cache, conn, monitor.name, version,
                                                                query.as_string(conn), options)
    found = None if kept is None else reference_cache.load(kept)
    if found is None:
        rows = _read_rows(conn, monitor, monitor.reference_table, "reference_version", version, columns, options)
        if kept is not None:
            reference_cache.save(kept, rows.frame, rows.total)
    else:
        frame, total = found
        rows = Rows(frame, total, non_finite=set_aside_non_finite(frame, columns))
    return replace(rows, kept=kept)


def read_batch(conn: psycopg.Connection, monitor: Monitor, batch_date: date,
               columns: tuple[MonitoredColumn, ...], options: DriftOptions) -> Rows:
    """The batch's rows."""
    return _read_rows(conn, monitor, monitor.rows_table, "batch_date", batch_date, columns, options)


def rows_handed_over(path: Path | None, columns: tuple[MonitoredColumn, ...]) -> Rows | None:
    """A batch's rows from the Arrow file the run wrote as it stored them, as read_batch would read
    them from the table (numbers as float64, text as categories, in the same order); None when
    there is no file or it holds another kind of column than those (read the table then)."""
    if path is None:
        return None
    import pyarrow as pa
    import pyarrow.feather as feather

    table = feather.read_table(path, columns=[column.name for column in columns], memory_map=True)
    arrays = {}
    for column in columns:
        values = table[column.name]
        if column.numeric and pa.types.is_floating(values.type):
            arrays[column.name] = values.cast(pa.float64())
        elif not column.numeric and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            arrays[column.name] = values.dictionary_encode()
        else:
            return None
    frame = pa.table(arrays).to_pandas()
    return Rows(frame, len(frame), non_finite=set_aside_non_finite(frame, columns))


def _rows_query(monitor: Monitor, table_name: str, key_column: str,
                columns: tuple[MonitoredColumn, ...]) -> sql.Composed:
    """The columns of raw.<table_name>'s rows whose key_column is the one placeholder."""
    return sql.SQL("select {} from {} where {} = %s").format(
        _select_list(monitor, columns), sql.Identifier("raw", table_name), sql.Identifier(key_column))


def _read_rows(conn: psycopg.Connection, monitor: Monitor, table_name: str, key_column: str, key: object,
               columns: tuple[MonitoredColumn, ...], options: DriftOptions) -> Rows:
    """The rows of raw.<table_name> whose key_column is key (sampled as options say), and how many
    there are."""
    where = sql.SQL("where {} = %s").format(sql.Identifier(key_column))
    total = conn.execute(sql.SQL("select count(*) from {} {}").format(sql.Identifier("raw", table_name), where),
                         (key,)).fetchone()[0]
    frame = _read_sampled(conn, _rows_query(monitor, table_name, key_column, columns), (key,), total, options,
                          _row_hash(monitor), columns)
    return Rows(frame, int(total), non_finite=set_aside_non_finite(frame, columns))


# ---------------------------------------------------------------- scoring


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def skip_reason(column: MonitoredColumn, reference: Rows, current: Rows) -> str | None:
    """Why Evidently cannot score a column (it raises on an empty one), or None."""
    if current.frame.empty:
        return "the batch has no rows"
    if reference.frame.empty:
        return "the reference set has no rows"
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
    if reference.distinct_count(column.name) <= METHOD_DEPENDS_ON_BATCH_UP_TO:
        return api.get_stattest(reference.values(column.name), current.values(column.name), kind, None)
    reference_methods(api, reference, [column])  # picked already for a batch's columns (score_columns)
    return reference.methods[column.name]


def reference_methods(api: EvidentlyApi, reference: Rows, columns: list[MonitoredColumn]) -> None:
    """The methods the reference alone decides (default_method) for these columns, before they are
    scored (in two processes, which would each pick half): those kept with the reference's file
    (reference_cache) looked up by name, the others picked, then kept for the next processes."""
    from modelwatch.drift import reference_cache

    decided = [column for column in columns if column.name not in reference.methods
               and reference.distinct_count(column.name) > METHOD_DEPENDS_ON_BATCH_UP_TO]
    if not decided:
        return
    kept = {} if reference.kept is None else reference_cache.load_methods(reference.kept, api.version)
    for column in decided:
        values, kind = reference.values(column.name), _column_type(api, column)
        try:
            method = api.get_stattest(values, values.iloc[:0], kind, kept[column.name])
        except (KeyError, ValueError):  # not kept, or a name this Evidently does not know for the kind
            kept.pop(column.name, None)
            method = api.get_stattest(values, values.iloc[:0], kind, None)
        reference.methods[column.name] = method
    if reference.kept is not None and any(column.name not in kept for column in decided):
        reference_cache.save_methods(reference.kept, api.version,
                                     {name: test.name for name, test in reference.methods.items()})


def _column_type(api: EvidentlyApi, column: MonitoredColumn) -> Any:
    return api.ColumnType.Numerical if column.numeric else api.ColumnType.Categorical


def _as_text(series: pd.Series) -> pd.Series:
    """A categorical series as the object series of its values (a numeric one as it is)."""
    return series.astype(object) if isinstance(series.dtype, pd.CategoricalDtype) else series


def run_evidently(api: EvidentlyApi, reference: Rows, current: Rows,
                  columns: list[MonitoredColumn], drift_share: float) -> tuple[list[ColumnDrift], dict[str, Any]]:
    """Evidently's ValueDrift per column and DriftedColumnsCount over them, computed the way
    those metrics compute them (the same cleaning, method choice and statistical test) but
    without a Report: a Report also draws plotly figures for each column and scores every column
    a second time for the count, about 3x the cost of the tests (tests/test_drift.py checks the
    figures against a Report's). Many columns are scored in two processes (score_in_two)."""
    reference_methods(api, reference, columns)
    if len(columns) >= PARALLEL_FROM_COLUMNS and (os.cpu_count() or 1) > 1:
        scored = score_in_two(api, reference, current, columns)
    else:
        scored = score_columns(api, reference, current, columns)
    drifted = sum(bool(column.drifted) for column in scored)
    share = drifted / len(scored)
    # As Evidently's DriftedColumnsCount: dataset drift when the drifted share reaches drift_share.
    return scored, {"columns_drifted": drifted, "share_drifted": share, "dataset_drift": share >= drift_share}


def score_columns(api: EvidentlyApi, reference: Rows, current: Rows,
                  columns: list[MonitoredColumn]) -> list[ColumnDrift]:
    """ValueDrift of each column, in order."""
    scored: list[ColumnDrift] = []
    reference_methods(api, reference, columns)  # all at once: kept with the reference in one write
    with quiet_numerics():
        for column in columns:
            kind = _column_type(api, column)
            reference_values, current_values = reference.values(column.name), current.values(column.name)
            test = default_method(api, column, kind, reference, current)  # ValueDrift's
            if test.name != "jensenshannon":  # categories as text: the other tests map values one by one
                reference_values, current_values = _as_text(reference_values), _as_text(current_values)
            result = test(reference_values, current_values, kind, None)  # None: the method's default threshold
            scored.append(ColumnDrift(column=column.name, kind=column.kind, method=test.display_name,
                                      threshold=float(result.actual_threshold), score=_finite(result.drift_score),
                                      drifted=bool(result.drifted)))
    return scored


# From this many columns a batch is scored in two processes: Evidently's tests are Python and
# numpy on one core, and a wide monitor's 200 columns take seconds each way; below, forking
# costs more than it saves.
PARALLEL_FROM_COLUMNS = 40


def score_in_two(api: EvidentlyApi, reference: Rows, current: Rows,
                 columns: list[MonitoredColumn]) -> list[ColumnDrift]:
    """score_columns with every other column scored in a forked copy of this process (which
    shares the rows already read, copy-on-write); the same results, in the same order."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    theirs = columns[1::2]
    child = context.Process(target=_score_and_send, args=(send, api, reference, current, theirs), daemon=True)
    child.start()
    send.close()
    try:
        own = score_columns(api, reference, current, columns[0::2])
        answer = receive.recv()
    except EOFError:
        answer = RuntimeError("the process scoring half the columns stopped")
    finally:
        child.join()
        receive.close()
    if isinstance(answer, BaseException):
        raise answer
    by_name = {column.column: column for column in [*own, *answer]}
    return [by_name[column.name] for column in columns]


def _score_and_send(send: Any, api: EvidentlyApi, reference: Rows, current: Rows,
                    columns: list[MonitoredColumn]) -> None:
    try:
        send.send(score_columns(api, reference, current, columns))
    except Exception as exc:  # noqa: BLE001 - the parent raises it, as one process would have
        send.send(RuntimeError(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"))
    finally:
        send.close()


def score_batch(api: EvidentlyApi, monitor: str, batch_date: date, reference_version: str | None,
                reference: Rows, current: Rows,
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
        monitor=monitor,
        batch_date=batch_date,
        reference_version=reference_version,
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
    key = (drift.monitor, drift.batch_date)
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute("delete from raw.drift_scores where monitor = %s and batch_date = %s", key)
        cursor.execute("delete from raw.drift_datasets where monitor = %s and batch_date = %s", key)
        cursor.executemany(
            """insert into raw.drift_scores (monitor, batch_date, column_name, column_kind, computed, method,
                                             threshold, score, drifted, reason, evidently_version)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(*key, column.column, column.kind, column.computed, column.method, column.threshold,
              column.score, column.drifted, column.reason, drift.evidently_version) for column in drift.columns],
        )
        cursor.execute(
            """insert into raw.drift_datasets (monitor, batch_date, reference_version, reference_rows,
                   reference_rows_used, current_rows, current_rows_used, sample_seed, columns_monitored,
                   columns_computed, columns_drifted, share_drifted, drift_share, dataset_drift, evidently_version,
                   seconds)
               values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (*key, drift.reference_version, drift.reference_rows, drift.reference_rows_used,
             drift.current_rows, drift.current_rows_used, sample_seed if drift.sampled else None,
             len(drift.columns), sum(column.computed for column in drift.columns), drift.columns_drifted,
             drift.share_drifted, drift.drift_share, drift.dataset_drift, drift.evidently_version, drift.seconds),
        )


REFERENCES_KEPT = 2  # a caller's cache of reference sets: the current one and the one before


def prepare_reference(settings: Settings, conn: psycopg.Connection, monitor: Monitor, version: str,
                      references: dict[tuple[str, str | None], Rows], api: EvidentlyApi | None = None) -> None:
    """Read a reference set into `references` (as score_batches keeps them) before its batches come;
    with `api`, also clean its columns and pick the methods it alone decides (reference_methods),
    which the first batch would otherwise wait for."""
    key = (monitor.name, version)
    if key not in references:
        while len(references) >= REFERENCES_KEPT:
            del references[next(iter(references))]
        columns = monitored_columns(monitor)
        references[key] = read_reference(conn, monitor, version, columns,
                                         DriftOptions.from_settings(settings, monitor), settings.reference_cache_dir)
        if api is not None and not references[key].frame.empty:
            reference_methods(api, references[key], list(columns))


def score_batches(settings: Settings, conn: psycopg.Connection, monitor: Monitor, days: Iterable[date],
                  references: dict[tuple[str, str | None], Rows] | None = None,
                  handed_over: Mapping[date, Path] | None = None) -> list[BatchDrift]:
    """Evidently drift for each loaded batch of the monitor against its reference; stored in raw.
    `references`: the reference sets read so far, by (monitor, version), kept by a caller that
    scores more batches of this database (a reference version's rows never change).
    `handed_over`: Arrow files of batches' rows as the run stored them (worker.rows_to_hand_over),
    read instead of the database."""
    options = DriftOptions.from_settings(settings, monitor)
    columns = monitored_columns(monitor)
    api = drift_tests_api()
    references = {} if references is None else references
    loss_models: dict = {}  # DLE's, for a regression monitor (modelwatch.drift.dle)
    results: list[BatchDrift] = []
    for day in days:
        version = batch_reference_version(conn, monitor, day)
        key = (monitor.name, version)
        if key not in references:  # read once per reference version, not once per batch
            prepare_reference(settings, conn, monitor, version, references)
        clock = time.perf_counter()
        current = rows_handed_over((handed_over or {}).get(day), columns) or read_batch(conn, monitor, day, columns,
                                                                                         options)
        drift = score_batch(api, monitor.name, day, version, references[key], current, columns, options,
                            started=clock)
        store(conn, drift, options.sample_seed)
        if monitor.task == "regression":  # DLE's per-batch half: a model, so here rather than in SQL
            from modelwatch.drift import dle

            dle.estimate_batch(conn, monitor, day, version, loss_models, current)
        results.append(drift)
    return results
