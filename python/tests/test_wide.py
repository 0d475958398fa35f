"""A wide monitor (continuous and count-valued numbers, categories) end to end on a seeded
synthetic frame: its figures equal numpy's on the same rows, whichever way dbt computed them
(continuous columns sorted once in int_numeric_profile, count-valued ones counted by value in
int_value_counts), and Evidently's scores, computed in two processes for this many columns,
equal those of one process."""

from __future__ import annotations

import json

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow.feather as feather
import pytest
import yaml

from modelwatch import pipeline
from modelwatch.config import Settings
from modelwatch.drift import batch_drift, worker as drift_worker
from modelwatch.periods import batch_of
from modelwatch.pipeline import load
from modelwatch.pipeline.source import read_batch_file
from modelwatch.postgres import db

from .conftest import copy_project, scratch_name

MONITOR = "wide_synthetic"
DAY = date(2024, 6, 1)
ROWS = 3_000
CONTINUOUS = [f"x_{index:02d}" for index in range(36)]
COUNTS = [f"n_{index:02d}" for index in range(4)]
CATEGORIES = [f"c_{index:02d}" for index in range(4)]
RELATIVE = 1e-12


def _frame(seed: int, day: date, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "row_id": np.arange(1, ROWS + 1, dtype=np.int64),
        "scored_at": pd.Timestamp(datetime.combine(day, datetime.min.time()))
        + pd.to_timedelta(np.sort(rng.integers(0, 86_400, ROWS)), unit="s"),
    })
    for index, name in enumerate(CONTINUOUS):
        values = rng.normal(index, 1.0 + index % 3, ROWS) + (shift if index < 4 else 0.0)
        values[rng.random(ROWS) < 0.02] = np.nan  # some missing
        frame[name] = values
    for index, name in enumerate(COUNTS):
        frame[name] = rng.poisson(2 + index, ROWS).astype("float64")
    for index, name in enumerate(CATEGORIES):
        labels = np.array([f"k{code}" for code in range(3 + 4 * index)], dtype=object)
        frame[name] = labels[rng.integers(0, len(labels), ROWS)]
    frame["prediction"] = frame[CONTINUOUS[:5]].fillna(0.0).sum(axis=1) + rng.normal(0, 1, ROWS)
    frame["target"] = frame["prediction"] + rng.normal(0, 2, ROWS)
    return frame


@pytest.fixture(scope="module")
def wide(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("wide")
    project = copy_project(folder / "project")
    config = yaml.safe_load((project / "dbt_project.yml").read_text())
    config["vars"]["monitors"][MONITOR] = {
        "task": "regression", "id": "row_id", "id_type": "bigint", "timestamp": "scored_at", "batch_period": "day",
        "features": {"numeric": CONTINUOUS + COUNTS, "categorical": CATEGORIES},
        "prediction": "prediction", "target": "target",
    }
    (project / "dbt_project.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    reference, batch = _frame(1, date(2024, 5, 1), 0.0), _frame(2, DAY, 0.5)
    reference.to_parquet(folder / "reference.parquet", index=False)
    batch.to_parquet(folder / "batch.parquet", index=False)
    with db.scratch_database(server_url, scratch_name("mw_wide")) as url:
        settings = Settings(home=folder / "home", database_url=url, project_dir=project, environ={})
        pipeline.init(settings)
        pipeline.reference(settings, MONITOR, folder / "reference.parquet")
        pipeline.run_batch(settings, DAY, folder / "batch.parquet", MONITOR)
        yield settings, batch


def test_both_ways_of_profiling_numbers_are_used(wide: tuple[Settings, pd.DataFrame]) -> None:
    settings, _ = wide
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        from_rows = {row[0] for row in conn.execute("select column_name from staging.int_numeric_profile")}
        by_value = {row[0] for row in conn.execute("select distinct column_name from staging.int_value_counts")}
    assert set(CONTINUOUS) | {"prediction", "target"} <= from_rows
    assert set(COUNTS) <= by_value and not from_rows & by_value


def test_column_quality_equals_numpy(wide: tuple[Settings, pd.DataFrame]) -> None:
    settings, batch = wide
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            """select column_name, row_count, missing_count, min_value, p05, p25, p50, p75, p95, max_value,
                      mean_value, stddev_value
               from marts.column_quality where monitor = %s and column_kind = 'numeric'""", (MONITOR,)).fetchall()
    assert len(rows) == len(CONTINUOUS) + len(COUNTS) + 2
    for column, count, missing, low, *quantiles, high, mean, stddev in rows:
        values = batch[column].dropna().to_numpy()
        assert (count, missing, low, high) == (ROWS, ROWS - len(values), values.min(), values.max())
        assert quantiles == pytest.approx(np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]), rel=RELATIVE)
        assert (mean, stddev) == pytest.approx((values.mean(), values.std(ddof=1)), rel=RELATIVE)


def test_psi_and_reference_range_equal_numpy(wide: tuple[Settings, pd.DataFrame]) -> None:
    settings, batch = wide
    reference = pd.read_parquet(Path(settings.project_dir).parent / "reference.parquet")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        psi = dict(conn.execute("select column_name, score from marts.feature_drift"
                                " where monitor = %s and source = 'sql_psi'", (MONITOR,)).fetchall())
        outside = dict(conn.execute("select column_name, measured_value from marts.batch_checks"
                                    " where monitor = %s and check_name = 'out_of_reference_range_share'",
                                    (MONITOR,)).fetchall())
        bounds = {}
        for column, upper in conn.execute("""select column_name, upper_bound from staging.int_reference_bins
                                             where monitor = %s and bin_kind = 'range' and upper_bound is not null
                                             order by column_name, bin_index""", (MONITOR,)).fetchall():
            bounds.setdefault(column, []).append(upper)
    for column in CONTINUOUS + COUNTS + ["prediction"]:
        def shares(values: pd.Series) -> np.ndarray:
            present = values.dropna().to_numpy()
            counts = np.bincount(np.searchsorted(np.asarray(bounds[column]), present, side="left"),
                                 minlength=len(bounds[column]) + 1)
            return np.append(counts, values.isna().sum()) / len(values)

        current, expected = np.where((s := shares(batch[column])) == 0, 1e-4, s), shares(reference[column])
        expected = np.where(expected == 0, 1e-4, expected)
        assert psi[column] == pytest.approx(float(np.sum((current - expected) * np.log(current / expected))),
                                            rel=1e-9, abs=1e-12)
        if column != "prediction":
            values, seen = batch[column].dropna(), reference[column].dropna()
            share = ((values < seen.min()) | (values > seen.max())).sum() / ROWS
            assert outside[column] == pytest.approx(share, abs=1e-15)


def test_evidently_in_two_processes_equals_one(wide: tuple[Settings, pd.DataFrame]) -> None:
    settings, _ = wide
    monitor = settings.monitor(MONITOR)
    columns = batch_drift.monitored_columns(monitor)
    assert len(columns) >= batch_drift.PARALLEL_FROM_COLUMNS  # the worker scored this batch in two processes
    options = batch_drift.DriftOptions.from_settings(settings, monitor)
    api = batch_drift.evidently_api()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        version = batch_drift.batch_reference_version(conn, monitor, DAY)
        reference = batch_drift.read_reference(conn, monitor, version, columns, options)
        current = batch_drift.read_batch(conn, monitor, DAY, columns, options)
        stored = {name: (method, score, drifted) for name, method, score, drifted in conn.execute(
            "select column_name, method, score, drifted from raw.drift_scores where monitor = %s", (MONITOR,))}
    one = batch_drift.score_columns(api, reference, current, list(columns))
    assert batch_drift.score_in_two(api, reference, current, list(columns)) == one
    # another process than the worker's: Jensen-Shannon sums its categories in the order of a set
    # of strings, which differs between processes (hash seeds) in the last bits
    assert stored == {column.column: (column.method, pytest.approx(column.score, rel=RELATIVE), column.drifted)
                      for column in one}
    assert {column.column for column in one if column.drifted} >= set(CONTINUOUS[:4])


def test_rows_handed_over_are_scored_as_the_rows_read_back(wide: tuple[Settings, pd.DataFrame],
                                                          tmp_path: Path) -> None:
    """The run hands the worker a batch's rows as it stored them (an Arrow file) instead of the
    worker reading them back: the same frame as the table gives (categories, their order, empty
    text, non-finite numbers set aside), the same scores, and the file is gone once scored."""
    settings, _ = wide
    monitor = settings.monitor(MONITOR)
    day = date(2024, 6, 2)
    odd = _frame(3, day, 0.0)
    odd.loc[:2, CONTINUOUS[0]] = [np.inf, -np.inf, 1e300]
    odd.loc[:1, CATEGORIES[0]] = ["", None]
    odd.to_parquet(tmp_path / "odd.parquet", index=False)
    read = read_batch_file(tmp_path / "odd.parquet", monitor)
    columns = batch_drift.monitored_columns(monitor)
    options = batch_drift.DriftOptions.from_settings(settings, monitor)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            batch = batch_of(MONITOR, monitor.batch_period, day)
            load.start_batch(conn, read, batch, None, load.latest_reference(conn, monitor))
            as_stored = load.batch_rows(monitor, batch, read.table, None)
            load.load_batch(conn, monitor, read, batch, as_stored)
            from_table = batch_drift.read_batch(conn, monitor, day, columns, options)
            rows = drift_worker.rows_to_hand_over(settings, monitor, as_stored)
            feather.write_feather(rows, tmp_path / "rows.arrow", compression="uncompressed")
            from_file = batch_drift.rows_handed_over(tmp_path / "rows.arrow", columns)
            # a table returns its rows in no particular order (new rows fill the pages' free space)
            assert list(from_file.frame.columns) == list(from_table.frame.columns)
            for column in columns:
                mine, theirs = from_file.frame[column.name], from_table.frame[column.name]
                assert mine.dtype == theirs.dtype
                if column.numeric:
                    np.testing.assert_array_equal(np.sort(mine.to_numpy()), np.sort(theirs.to_numpy()))
                else:
                    assert sorted(mine.cat.categories) == sorted(theirs.cat.categories)
                    pd.testing.assert_series_equal(mine.astype(object).value_counts(dropna=False).sort_index(),
                                                   theirs.astype(object).value_counts(dropna=False).sort_index())
            assert from_file.total == from_table.total == ROWS
            assert ({name: sorted(values.tolist()) for name, values in from_file.non_finite.items()}
                    == {name: sorted(values.tolist()) for name, values in from_table.non_finite.items()}
                    == {CONTINUOUS[0]: [-np.inf, 1e300, np.inf]})
            assert {"", None} <= {None if pd.isna(value) else value for value in from_file.frame[CATEGORIES[0]]}

            with drift_worker.started(settings) as worker:
                handed_over = worker.hand_over(MONITOR, day, rows)
                assert handed_over.result().exists()
                worker.score(settings.database_url, MONITOR, [day], rows=handed_over)
                worker.wait()
                assert not handed_over.result().exists()  # the worker deleted what it scored
            stored = dict(conn.execute("select column_name, score from raw.drift_scores "
                                       "where monitor = %s and batch_date = %s", (MONITOR, day)).fetchall())
            version = batch_drift.batch_reference_version(conn, monitor, day)
            reference = batch_drift.read_reference(conn, monitor, version, columns, options)
            expected = batch_drift.score_columns(batch_drift.evidently_api(), reference, from_table, list(columns))
            assert stored == {column.column: pytest.approx(column.score, rel=RELATIVE) for column in expected}
        finally:  # the module's other tests see the one batch
            conn.execute(f"delete from raw.{monitor.rows_table} where batch_date = %s", (day,))
            for table in ("drift_scores", "drift_datasets", "estimated_losses", "batches"):
                conn.execute(f"delete from raw.{table} where monitor = %s and batch_date = %s", (MONITOR, day))


def test_a_reference_kept_in_the_home_is_the_one_in_the_database(wide: tuple[Settings, pd.DataFrame]) -> None:
    """The worker keeps the reference it read in the home (an Arrow file) for the next run's
    worker: read from there it is the frame the database gives; another sampling is another
    file; a damaged file is read from the database again (and replaced)."""
    settings, _ = wide
    monitor = settings.monitor(MONITOR)
    columns = batch_drift.monitored_columns(monitor)
    options = batch_drift.DriftOptions.from_settings(settings, monitor)
    kept = list(settings.reference_cache_dir.glob("*/*.arrow"))
    assert len(kept) == 1  # written by the worker of the fixture's run
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        version = batch_drift.batch_reference_version(conn, monitor, DAY)
        from_database = batch_drift.read_reference(conn, monitor, version, columns, options)
        from_home = batch_drift.read_reference(conn, monitor, version, columns, options, settings.reference_cache_dir)
        pd.testing.assert_frame_equal(from_home.frame, from_database.frame)
        assert from_home.total == from_database.total == ROWS
        kept[0].write_bytes(b"not arrow")
        again = batch_drift.read_reference(conn, monitor, version, columns, options, settings.reference_cache_dir)
        pd.testing.assert_frame_equal(again.frame, from_database.frame)
        assert kept[0].read_bytes()[:6] == b"ARROW1"  # written anew
        sampled = batch_drift.DriftOptions(max_rows=ROWS // 2)
        half = batch_drift.read_reference(conn, monitor, version, columns, sampled, settings.reference_cache_dir)
        assert half.used == ROWS // 2 and half.total == ROWS
        assert len(list(settings.reference_cache_dir.glob("*/*.arrow"))) == 2
        pd.testing.assert_frame_equal(
            batch_drift.read_reference(conn, monitor, version, columns, sampled, settings.reference_cache_dir).frame,
            batch_drift.read_reference(conn, monitor, version, columns, sampled).frame)


def test_evidentlys_methods_are_kept_with_the_reference(wide: tuple[Settings, pd.DataFrame]) -> None:
    """Beside the reference's file, the worker keeps the drift method Evidently picks for each
    column the reference alone decides; a later process looks them up by name (the same tests as
    Evidently's own choice), and a damaged file is picked anew and written again."""
    settings, _ = wide
    monitor = settings.monitor(MONITOR)
    columns = list(batch_drift.monitored_columns(monitor))
    options = batch_drift.DriftOptions.from_settings(settings, monitor)
    api = batch_drift.evidently_api()
    [kept] = settings.reference_cache_dir.glob("*/*.methods.json")  # written by the fixture's worker
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        version = batch_drift.batch_reference_version(conn, monitor, DAY)
        reference = batch_drift.read_reference(conn, monitor, version, columns, options, settings.reference_cache_dir)
    decided = [column for column in columns
               if reference.distinct_count(column.name) > batch_drift.METHOD_DEPENDS_ON_BATCH_UP_TO]
    assert [column.name for column in columns if column not in decided] == ["c_00"]  # 3 values: each batch's
    expected = {}
    for column in decided:
        values = reference.values(column.name)
        kind = api.ColumnType.Numerical if column.numeric else api.ColumnType.Categorical
        expected[column.name] = api.get_stattest(values, values.iloc[:0], kind, None)
    assert json.loads(kept.read_text()) == {"evidently": api.version,
                                            "methods": {name: test.name for name, test in expected.items()}}
    assert {test.name for test in expected.values()} == {"wasserstein", "jensenshannon"}
    batch_drift.reference_methods(api, reference, columns)
    assert reference.methods == expected
    kept.write_text("{not json")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        again = batch_drift.read_reference(conn, monitor, version, columns, options, settings.reference_cache_dir)
    batch_drift.reference_methods(api, again, columns)
    assert again.methods == expected
    assert json.loads(kept.read_text())["methods"] == {name: test.name for name, test in expected.items()}
    # The worker's `prepare` (while the batch loads) leaves the reference cleaned and its methods picked.
    references: dict = {}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        batch_drift.prepare_reference(settings, conn, monitor, version, references, api)
    [prepared] = references.values()
    assert prepared.methods == expected
    assert set(prepared.cleaned) == {column.name for column in columns}
    assert all(prepared.cleaned[name].equals(reference.values(name)) for name in prepared.cleaned)
