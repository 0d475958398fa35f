"""The performance metric macros (macros/performance/metrics.sql) against scikit-learn.

Each macro is rendered by dbt in process, run on a real PostgreSQL database
holding NannyML's example datasets and small edge-case frames, and every
metric of every group is compared with scikit-learn's on the same rows.
"""

from __future__ import annotations

import math
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)
from sklearn.utils.multiclass import unique_labels

from modelwatch.postgres import db

REPO = Path(__file__).resolve().parents[2]
NANNYML = Path(__file__).resolve().parents[3] / "shared" / "data" / "nannyml"
TOLERANCE = 1e-9
KEYS = ["monitor", "batch_date"]
CLASSES = ["highstreet_card", "prepaid_card", "upmarket_card"]
PROBABILITIES = {name: f"p_{name}" for name in CLASSES}
EDGE_DATE = date(2000, 1, 1)
NAN, INF = float("nan"), float("inf")

# The macro calls rendered (one dbt invocation for all): %(relation)s and %(keys)s are filled in.
CALLS = {
    "regression": "modelwatch.regression_metrics(%(relation)s, %(keys)s, 'y_pred', 'y_true')",
    "binary": "modelwatch.binary_metrics(%(relation)s, %(keys)s, 'y_pred', 'y_true', 'y_pred_proba', '1')",
    "multiclass": "modelwatch.multiclass_metrics(%(relation)s, %(keys)s, 'y_pred', 'y_true', %(probabilities)s, %(classes)s)",
}
DISPATCHER_CALLS = {
    "regression": "modelwatch.performance_metrics('regression', %(relation)s, %(keys)s, 'y_pred', 'y_true')",
    "binary": "modelwatch.performance_metrics('binary_classification', %(relation)s, %(keys)s, 'y_pred', 'y_true', "
              "probability='y_pred_proba', positive_class='1')",
    "multiclass": "modelwatch.performance_metrics('multiclass_classification', %(relation)s, %(keys)s, 'y_pred', 'y_true', "
                  "probabilities=%(probabilities)s, classes=%(classes)s)",
}
# One batch of each dataset, for the macros without keys (the relation as a subquery).
ONE_BATCH = {"regression": ("car_price", "2017-02-01"), "binary": ("work_from_home", "2015-01-01"),
             "multiclass": ("credit_card", "2020-06-01")}
SPLIT = "\n-- performance-metrics-test: {}\n"

Metrics = dict[tuple, tuple[float | None, int]]  # (monitor, batch_date, metric, class_name) -> (value, n)


def nannyml(name: str) -> pd.DataFrame:
    path = NANNYML / f"{name}.parquet"
    if not path.exists():
        pytest.skip(f"NannyML datasets not found at {path}")
    return pd.read_parquet(path)


def month(timestamps: pd.Series) -> pd.Series:
    return timestamps.dt.to_period("M").dt.start_time.dt.date


def regression_frame() -> pd.DataFrame:
    """car_price by day, then edge cases (object columns: None is null, nan is NaN)."""
    ref = nannyml("regression_synthetic_reference")
    real = pd.DataFrame({"monitor": "car_price", "batch_date": ref["timestamp"].dt.date,
                         "y_pred": ref["y_pred"], "y_true": ref["y_true"]})
    edges = [
        ("constant_target_perfect", [5.0, 5.0, 5.0], [5.0, 5.0, 5.0]),  # r2 1.0
        ("constant_target_imperfect", [5.0, 5.0, 5.0, 5.0], [4.0, 5.0, 6.0, 5.0]),  # r2 0.0
        # NaN, Infinity and null in either column: 4 rows evaluated of 10
        ("non_finite", [1.0, 2.0, 3.0, 4.0, 5.0, NAN, 7.0, 8.0, None, 10.0],
         [1.5, INF, 2.5, -INF, 5.0, 6.0, NAN, 8.5, 9.0, None]),
        ("single_row", [3.0], [2.0]),  # r2 null (sklearn: NaN below two samples)
        ("all_excluded", [NAN, 1.0], [1.0, INF]),  # no row evaluated: no group
    ]
    return pd.concat([real, edge_frame(edges, ["y_true", "y_pred"])], ignore_index=True)


def binary_frame() -> pd.DataFrame:
    """work_from_home by month, then edge cases."""
    ref = nannyml("synthetic_sample_reference")
    real = pd.DataFrame({"monitor": "work_from_home", "batch_date": month(ref["timestamp"]),
                         "y_pred": ref["y_pred"].astype(str), "y_true": ref["work_home_actual"].astype(str),
                         "y_pred_proba": ref["y_pred_proba"]})
    edges = [
        # ties within and across classes (Mann-Whitney with average ranks)
        ("ties", list("11000110101"), list("10100110011"),
         [0.5, 0.5, 0.5, 0.2, 0.2, 0.8, 0.8, 0.5, 0.2, 0.8, 0.5]),
        ("all_tied", list("1010"), list("1100"), [0.3, 0.3, 0.3, 0.3]),  # roc_auc 0.5
        ("one_class", list("1101"), list("1111"), [0.9, 0.6, 0.4, 0.7]),  # roc_auc null
        ("no_positives", list("0100"), list("0000"), [0.1, 0.6, 0.2, 0.3]),  # recall, f1: zero_division
        ("no_positive_predictions", list("0000"), list("0110"), [0.1, 0.4, 0.2, 0.3]),  # precision: zero_division
        # probabilities of exactly 0 and 1, right and wrong: clipped to [eps, 1 - eps]
        ("extreme_probabilities", list("100110"), list("101010"), [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]),
        # NaN, +-Infinity and null probabilities: out of roc_auc and log_loss, in the rest;
        # null target or prediction: out of everything
        ("non_finite", list("1100110") + [None, "1"], list("1001101") + ["1", None],
         [0.9, NAN, 0.3, INF, -INF, None, 0.7, 0.5, 0.5]),
    ]
    return pd.concat([real, edge_frame(edges, ["y_pred", "y_true", "y_pred_proba"])], ignore_index=True)


def multiclass_frame() -> pd.DataFrame:
    """credit_card by month, then edge cases."""
    ref = nannyml("mc_reference")
    real = pd.DataFrame({"monitor": "credit_card", "batch_date": month(ref["timestamp"]),
                         "y_pred": ref["y_pred"], "y_true": ref["y_true"],
                         **{column: ref[f"y_pred_proba_{name}"] for name, column in PROBABILITIES.items()}})
    p, h, u = "prepaid_card", "highstreet_card", "upmarket_card"
    probabilities = {column: [1 / 3] * 6 for column in PROBABILITIES.values()}
    edges = [
        # upmarket_card in neither target nor prediction: a macro over two labels, two recall rows
        ("absent_class", [p, p, h, h, p, h], [p, h, h, h, p, p]),
        # upmarket_card predicted only: in the macro averages (precision 0), no recall row
        ("predicted_only_class", [p, u, h, u, p, h], [p, h, h, p, p, h]),
        # a null target or prediction is out; a NaN probability is not read by these metrics
        ("nulls", [p, None, h, h, p, u], [p, h, None, h, u, u]),
    ]
    frame = edge_frame(edges, ["y_pred", "y_true"])
    for column, values in probabilities.items():
        frame[column] = pd.Series(values * len(edges), dtype=object)
    frame.loc[frame["monitor"] == "nulls", "p_prepaid_card"] = NAN
    return pd.concat([real, frame], ignore_index=True)


def edge_frame(cases: list[tuple], columns: list[str]) -> pd.DataFrame:
    rows = [(name, EDGE_DATE, *values) for name, *lists in cases for values in zip(*lists, strict=True)]
    return pd.DataFrame(rows, columns=["monitor", "batch_date", *columns], dtype=object)


def numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column).to_numpy(dtype=float)  # None -> NaN


def expected_regression(frame: pd.DataFrame) -> Metrics:
    expected: Metrics = {}
    for (monitor, batch_date), group in frame.groupby(KEYS):
        y_pred, y_true = numbers(group["y_pred"]), numbers(group["y_true"])
        kept = np.isfinite(y_pred) & np.isfinite(y_true)
        y_pred, y_true, n = y_pred[kept], y_true[kept], int(kept.sum())
        if n == 0:
            continue
        values = {
            "mae": mean_absolute_error(y_true, y_pred),
            "rmse": math.sqrt(mean_squared_error(y_true, y_pred)),
            "bias": float(np.mean(y_pred - y_true)),
            "r2": r2_score(y_true, y_pred) if n >= 2 else None,  # sklearn: NaN and a warning
        }
        expected.update({(monitor, batch_date, metric, None): (value, n) for metric, value in values.items()})
    return expected


def expected_binary(frame: pd.DataFrame) -> Metrics:
    expected: Metrics = {}
    for (monitor, batch_date), group in frame.groupby(KEYS):
        labelled = group[group["y_pred"].notna() & group["y_true"].notna()]
        y_true, y_pred = labelled["y_true"].astype(str), labelled["y_pred"].astype(str)
        n = len(labelled)
        values = {
            "accuracy": accuracy_score(y_true, y_pred),
            "precision": precision_score(y_true, y_pred, pos_label="1", zero_division=0),
            "recall": recall_score(y_true, y_pred, pos_label="1", zero_division=0),
            "f1": f1_score(y_true, y_pred, pos_label="1", zero_division=0),
        }
        expected.update({(monitor, batch_date, metric, None): (float(value), n) for metric, value in values.items()})
        probability = numbers(labelled["y_pred_proba"])
        scored = np.isfinite(probability)
        actual = (y_true.to_numpy() == "1")[scored].astype(int)
        probability = probability[scored]
        auc = roc_auc_score(actual, probability) if len(set(actual)) == 2 else None
        loss = log_loss(actual, probability, labels=[0, 1]) if len(actual) else None
        expected[(monitor, batch_date, "roc_auc", None)] = (auc, len(actual))
        expected[(monitor, batch_date, "log_loss", None)] = (loss, len(actual))
    return expected


def expected_multiclass(frame: pd.DataFrame) -> Metrics:
    expected: Metrics = {}
    for (monitor, batch_date), group in frame.groupby(KEYS):
        labelled = group[group["y_pred"].notna() & group["y_true"].notna()]
        y_true, y_pred = labelled["y_true"].astype(str), labelled["y_pred"].astype(str)
        n = len(labelled)
        values = {
            "accuracy": accuracy_score(y_true, y_pred),
            "macro_precision": precision_score(y_true, y_pred, average="macro", zero_division=0),
            "macro_recall": recall_score(y_true, y_pred, average="macro", zero_division=0),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        }
        expected.update({(monitor, batch_date, metric, None): (float(value), n) for metric, value in values.items()})
        recalls = recall_score(y_true, y_pred, average=None, zero_division=0)
        for label, recall in zip(unique_labels(y_true, y_pred), recalls, strict=True):
            support = int((y_true == label).sum())
            if support:  # a row per class in the group's target
                expected[(monitor, batch_date, "recall", label)] = (float(recall), support)
    return expected


def load(conn: psycopg.Connection, table: str, ddl: str, frame: pd.DataFrame) -> None:
    conn.execute(f"create table {table} ({ddl})")
    columns = ", ".join(frame.columns)
    with conn.cursor() as cur, cur.copy(f"copy {table} ({columns}) from stdin") as copy:
        for row in frame.itertuples(index=False, name=None):
            copy.write_row(row)


def macro_calls() -> dict[str, str]:
    """Each macro on its table by KEYS, through the dispatcher, and without keys on one
    batch and on no rows."""
    common = {"probabilities": repr(PROBABILITIES), "classes": repr(CLASSES)}
    calls = {}
    for task, call in CALLS.items():
        monitor, batch_date = ONE_BATCH[task]
        one_batch = f"(select * from {task}_rows where monitor = '{monitor}' and batch_date = date '{batch_date}') as one_batch"
        calls[task] = call % {**common, "relation": f"'{task}_rows'", "keys": repr(KEYS)}
        calls[f"dispatch_{task}"] = DISPATCHER_CALLS[task] % {**common, "relation": f"'{task}_rows'", "keys": repr(KEYS)}
        calls[f"one_batch_{task}"] = call % {**common, "relation": f'"{one_batch}"', "keys": "[]"}
        calls[f"no_rows_{task}"] = call % {**common, "relation": f'"(select * from {task}_rows where false) as no_rows"',
                                           "keys": "[]"}
    return calls


def make_project(work: Path) -> Path:
    """A dbt project of macros/performance/ alone (the rest of the repo's may be mid-edit)."""
    project = work / "project"
    shutil.copytree(REPO / "macros" / "performance", project / "macros" / "performance")
    shutil.copytree(REPO / "profiles", project / "profiles")
    (project / "dbt_project.yml").write_text(
        'name: modelwatch\nversion: "0.1.0"\nconfig-version: 2\nprofile: modelwatch\n'
        'macro-paths: ["macros"]\nflags:\n  send_anonymous_usage_stats: false\n'
    )
    return project


def dbt_compile(url: str, work: Path, inline: str):  # -> dbtRunnerResult
    from dbt.cli.main import dbtRunner

    with pytest.MonkeyPatch.context() as patch:
        for name, value in db.dbt_env(url).items():
            patch.setenv(name, value)
        return dbtRunner().invoke([
            "compile", "--inline", inline, "--project-dir", str(work / "project"),
            "--profiles-dir", str(work / "project" / "profiles"), "--target-path", str(work / "target"),
            "--log-path", str(work / "logs"), "--quiet",
        ])


def compile_calls(url: str, work: Path) -> dict[str, str]:
    """The SQL of every macro_calls() entry, from one `dbt compile --inline`."""
    make_project(work)
    inline = "".join(SPLIT.format(name) + "{{ " + call + " }}" for name, call in macro_calls().items())
    result = dbt_compile(url, work, inline)
    assert result.success, result.exception
    compiled = result.result.results[0].node.compiled_code
    parts = compiled.split("\n-- performance-metrics-test: ")[1:]
    return dict(part.split("\n", 1) for part in parts)


@dataclass
class Fixture:
    url: str
    work: Path
    conn: psycopg.Connection
    sql: dict[str, str]
    frames: dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def metrics_db(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    frames = {"regression": regression_frame(), "binary": binary_frame(), "multiclass": multiclass_frame()}
    with db.scratch_database(server_url, f"mw_metrics_{uuid.uuid4().hex[:10]}") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            load(conn, "regression_rows", "monitor text, batch_date date, y_true float8, y_pred float8",
                 frames["regression"])
            load(conn, "binary_rows", "monitor text, batch_date date, y_pred text, y_true text, y_pred_proba float8",
                 frames["binary"])
            load(conn, "multiclass_rows", "monitor text, batch_date date, y_pred text, y_true text, "
                 + ", ".join(f"{column} float8" for column in PROBABILITIES.values()), frames["multiclass"])
            conn.execute("analyze")
            work = tmp_path_factory.mktemp("dbt")
            yield Fixture(url, work, conn, compile_calls(url, work), frames)


def run(conn: psycopg.Connection, query: str) -> Metrics:
    rows = conn.execute(f"select monitor, batch_date, metric, class_name, value, n from ({query}) as metrics").fetchall()
    result = {(monitor, batch_date, metric, class_name): (value, n)
              for monitor, batch_date, metric, class_name, value, n in rows}
    assert len(result) == len(rows), "one row per group, metric and class"
    return result


def compare(actual: Metrics, expected: Metrics) -> dict[str, float]:
    """Assert equality (values to TOLERANCE, n exactly); the largest difference per metric."""
    assert sorted(actual, key=repr) == sorted(expected, key=repr)
    largest: dict[str, float] = {}
    for key, (value, n) in expected.items():
        got, got_n = actual[key]
        assert got_n == n, (key, got_n, n)
        if value is None:
            assert got is None, (key, got)
            continue
        assert got is not None and abs(got - value) <= TOLERANCE, (key, got, value)
        largest[key[2]] = max(largest.get(key[2], 0.0), abs(got - value))
    return largest


def real_groups(metrics: Metrics, monitor: str) -> int:
    return len({key[:2] for key in metrics if key[0] == monitor})


def test_regression_metrics_equal_sklearn(metrics_db: Fixture) -> None:
    actual = run(metrics_db.conn, metrics_db.sql["regression"])
    expected = expected_regression(metrics_db.frames["regression"])
    largest = compare(actual, expected)
    assert real_groups(expected, "car_price") == 24
    assert actual[("constant_target_perfect", EDGE_DATE, "r2", None)] == (1.0, 3)
    assert actual[("constant_target_imperfect", EDGE_DATE, "r2", None)] == (0.0, 4)
    assert actual[("non_finite", EDGE_DATE, "mae", None)] == (0.375, 4)
    assert actual[("single_row", EDGE_DATE, "r2", None)] == (None, 1)
    assert not any(key[0] == "all_excluded" for key in actual)
    print("regression: largest differences", largest)


def test_binary_metrics_equal_sklearn(metrics_db: Fixture) -> None:
    actual = run(metrics_db.conn, metrics_db.sql["binary"])
    expected = expected_binary(metrics_db.frames["binary"])
    largest = compare(actual, expected)
    assert real_groups(expected, "work_from_home") == 40

    def edge(case: str, metric: str) -> tuple[float | None, int]:
        return actual[(case, EDGE_DATE, metric, None)]

    assert edge("all_tied", "roc_auc") == (0.5, 4)
    assert edge("one_class", "roc_auc") == (None, 4)
    assert edge("one_class", "log_loss")[0] is not None
    assert edge("no_positives", "recall") == (0.0, 4) and edge("no_positives", "f1") == (0.0, 4)
    assert edge("no_positive_predictions", "precision") == (0.0, 4)
    # two certain and wrong of six: 2 * -ln(eps) / 6, the rest -ln(1 - eps) each
    eps = np.finfo(np.float64).eps
    assert edge("extreme_probabilities", "log_loss")[0] == pytest.approx(
        (-2 * math.log(eps) - 4 * math.log(1 - eps)) / 6, rel=1e-15)
    # 9 rows, 2 without target or prediction; of the 7, 3 have a finite probability
    assert edge("non_finite", "accuracy")[1] == 7
    assert edge("non_finite", "roc_auc")[1] == 3 and edge("non_finite", "log_loss")[1] == 3
    print("binary: largest differences", largest)


def test_multiclass_metrics_equal_sklearn(metrics_db: Fixture) -> None:
    actual = run(metrics_db.conn, metrics_db.sql["multiclass"])
    expected = expected_multiclass(metrics_db.frames["multiclass"])
    largest = compare(actual, expected)
    assert real_groups(expected, "credit_card") == 5
    assert {key[3] for key in actual if key[0] == "credit_card" and key[2] == "recall"} == set(CLASSES)
    classes = {case: {key[3] for key in actual if key[0] == case and key[2] == "recall"}
               for case in ("absent_class", "predicted_only_class", "nulls")}
    assert classes["absent_class"] == {"prepaid_card", "highstreet_card"}
    assert classes["predicted_only_class"] == {"prepaid_card", "highstreet_card"}
    # macro precision over prepaid (2 of 2 right), highstreet (2 of 2) and upmarket (0 of 2)
    assert actual[("predicted_only_class", EDGE_DATE, "macro_precision", None)] == (pytest.approx(2 / 3, abs=1e-15), 6)
    assert actual[("nulls", EDGE_DATE, "accuracy", None)][1] == 4
    print("multiclass: largest differences", largest)


def test_constant_target_r2_is_exact(metrics_db: Fixture) -> None:
    """A constant target that float sums do not average back to (0.1): sklearn's own
    mean is off by an ulp, so its r2 is -5e31; the macro's is force_finite's 0.0 and 1.0."""
    conn = metrics_db.conn
    conn.execute("create temporary table tenth (monitor text, batch_date date, y_true float8, y_pred float8)")
    conn.execute("insert into tenth values ('tenth', null, 0.1, 0.2), ('tenth', null, 0.1, 0.2), ('tenth', null, 0.1, 0.2),"
                 " ('same', null, 0.1, 0.1), ('same', null, 0.1, 0.1), ('same', null, 0.1, 0.1)")
    query = metrics_db.sql["regression"].replace("from regression_rows", "from tenth")
    actual = run(conn, query)
    assert actual[("tenth", None, "r2", None)] == (0.0, 3)
    assert actual[("same", None, "r2", None)] == (1.0, 3)
    assert r2_score([0.1] * 3, [0.2] * 3) < -1e30  # sklearn: 1 - (0.03 / an ulp's square)


def test_dispatcher_matches_macros(metrics_db: Fixture) -> None:
    for task in ("regression", "binary", "multiclass"):
        assert metrics_db.sql[f"dispatch_{task}"].strip() == metrics_db.sql[task].strip()


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_one_scan_of_the_relation(metrics_db: Fixture, task: str) -> None:
    (plans,) = metrics_db.conn.execute(f"explain (format json) {metrics_db.sql[task]}").fetchone()
    plan = plans[0]

    def scans(node: dict) -> int:
        own = 1 if node.get("Relation Name") == f"{task}_rows" else 0
        return own + sum(scans(child) for child in node.get("Plans", []))

    assert scans(plan["Plan"]) == 1


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_without_keys(metrics_db: Fixture, task: str) -> None:
    """No keys: the relation is one group (here one batch), and no rows give no metrics."""
    monitor, batch_date = ONE_BATCH[task]
    keyed = {(monitor, date.fromisoformat(batch_date), *key[2:]): value
             for key, value in run(metrics_db.conn, metrics_db.sql[task]).items()
             if key[:2] == (monitor, date.fromisoformat(batch_date))}
    rows = metrics_db.conn.execute(
        f"select metric, class_name, value, n from ({metrics_db.sql[f'one_batch_{task}']}) as metrics").fetchall()
    whole = {(monitor, date.fromisoformat(batch_date), metric, class_name): (value, n)
             for metric, class_name, value, n in rows}
    assert len(whole) == len(rows) and keyed
    compare(whole, keyed)
    assert metrics_db.conn.execute(f"select count(*) from ({metrics_db.sql[f'no_rows_{task}']}) as m").fetchone() == (0,)


def test_unknown_task_fails_to_compile(metrics_db: Fixture) -> None:
    result = dbt_compile(metrics_db.url, metrics_db.work,
                         "{{ modelwatch.performance_metrics('forecasting', 'rows', ['monitor'], 'y_pred', 'y_true') }}")
    assert not result.success
    assert "unknown task 'forecasting'" in (metrics_db.work / "logs" / "dbt.log").read_text()
