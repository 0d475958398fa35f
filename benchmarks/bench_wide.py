"""Wide monitors: one day of a 200-feature model end to end, against server-side COPY and against 20 features.

Two seeded synthetic regression monitors are declared in a copy of the dbt
project (MODELWATCH_PROJECT_DIR selects it): `wide200` with 100 numeric and 100
categorical features, `wide20` with the first 10 of each; daily batches, the
id (bigint), the timestamp, the features, the prediction and the target all in
the file. Both get a reference set of their own (`pipeline.reference`, as
`modelwatch reference --monitor NAME --file F`, untimed) drawn from the same
distributions with another seed. The batch is one day of 100,000 rows (a few
features drift a little); the 20-feature file holds the same rows' 20
features.

Timed, each as a process on the same initialised database:
- `modelwatch run --monitor wide200 --batch-date D --file wide200.parquet`, end
  to end as bench_big_batch runs it (read, load, Evidently drift on every
  feature and the prediction in its worker, SQL drift, the dbt build with the
  contract's tests, run results);
- PostgreSQL's own `COPY raw.wide200__rows FROM 'file'` of the same rows as
  modelwatch stores them (`load.batch_rows`, as CSV);
- the same `modelwatch run` for wide20 on the 20-feature file.
Before each run the monitor's rows table (and its drift rows of the day) is
emptied, so each run is a first run of the day. Where the time goes is recorded
with the figures: Evidently's seconds (raw.drift_datasets.seconds) and dbt's
per-node timings of the run (its log under the home's dbt dir: every
invocation of the run; the pipeline's invocations write no run_results.json). A
run still going after TIMEOUT_S is killed: its figures are then lower bounds,
marked not met, with the dbt nodes it was still running.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Figure, Server, Spread, log, timed  # noqa: E402

KEY = "wide_batch_vs_copy"
COLUMNS_KEY = "wide_columns_200_vs_20"
DAY = date(2024, 6, 1)
REFERENCE_DAY = date(2024, 5, 1)
ROWS = int(os.environ.get("MODELWATCH_BENCH_WIDE_ROWS") or 100_000)
REFERENCE_ROWS = int(os.environ.get("MODELWATCH_BENCH_WIDE_REFERENCE_ROWS") or 100_000)
# A `modelwatch run` still going after this long is killed and its figure reported as a lower
# bound (not met), with what it was running; no further repetitions are made.
TIMEOUT_S = float(os.environ.get("MODELWATCH_BENCH_WIDE_TIMEOUT_S") or 300)
SEED = 20240601
WIDE, NARROW = "wide200", "wide20"
FEATURES = {WIDE: (100, 100), NARROW: (10, 10)}  # numeric, categorical
DRIFTED_SHARE = 0.05  # of each kind of feature, shifted a little in the batch (not in the reference)
CARDINALITIES = (2, 3, 5, 8, 12, 20, 30, 50, 80, 120)


def numeric_names(count: int) -> list[str]:
    return [f"num_{index:03d}" for index in range(count)]


def categorical_names(count: int) -> list[str]:
    return [f"cat_{index:03d}" for index in range(count)]


def declaration(numeric: int, categorical: int) -> dict[str, Any]:
    """A regression monitor whose files bring everything: id, timestamp, features, prediction, target."""
    return {
        "task": "regression",
        "id": "row_id",
        "id_type": "bigint",
        "timestamp": "scored_at",
        "batch_period": "day",
        "features": {"numeric": numeric_names(numeric), "categorical": categorical_names(categorical)},
        "prediction": "prediction",
        "target": "target",
    }


def synthetic_rows(rows: int, day: date, seed: int, drift: bool) -> Any:
    """`rows` rows of the 200-feature model on `day`, from seeded distributions: numeric features
    normal, log-normal, uniform or counts (1% missing in every tenth), categorical ones of 2 to
    120 Zipf-distributed categories; the prediction a linear function of some features, the
    target the prediction plus noise. `drift`: the first DRIFTED_SHARE of each kind shifted."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    numeric, categorical = FEATURES[WIDE]
    start = datetime.combine(day, datetime.min.time())
    seconds = np.sort(rng.integers(0, 86_400 * 1_000_000, rows))
    columns: dict[str, Any] = {
        "row_id": pa.array((day - date(2000, 1, 1)).days * 10_000_000 + np.arange(1, rows + 1), pa.int64()),
        "scored_at": pa.array(np.datetime64(start, "us") + seconds.astype("timedelta64[us]"), pa.timestamp("us")),
    }
    drifted_numeric = int(numeric * DRIFTED_SHARE)
    values = np.empty((numeric, rows))
    for index, name in enumerate(numeric_names(numeric)):
        kind = index % 4
        scale = 1.0 + index % 7
        if kind == 0:
            column = rng.normal(10.0 * (index % 5), scale, rows)
        elif kind == 1:
            column = rng.lognormal(0.5, 0.25 + 0.05 * (index % 5), rows)
        elif kind == 2:
            column = rng.uniform(-scale, scale, rows)
        else:
            column = rng.poisson(1.0 + index % 9, rows).astype("float64")
        if drift and index < drifted_numeric:
            column = column + 0.3 * column.std()
        values[index] = column
        mask = rng.random(rows) < 0.01 if index % 10 == 9 else None
        columns[name] = pa.array(column, pa.float64(), mask=mask)
    drifted_categorical = int(categorical * DRIFTED_SHARE)
    for index, name in enumerate(categorical_names(categorical)):
        cardinality = CARDINALITIES[index % len(CARDINALITIES)]
        weights = 1.0 / np.arange(1, cardinality + 1) ** 1.1
        if drift and index < drifted_categorical:
            weights = weights[::-1]
        codes = rng.choice(cardinality, rows, p=weights / weights.sum())
        labels = np.array([f"c{code:03d}" for code in range(cardinality)], dtype=object)
        columns[name] = pa.array(labels[codes], pa.string())
    weights = rng.normal(0.0, 1.0, numeric) * (rng.random(numeric) < 0.2)
    prediction = 5.0 + weights @ values
    columns["prediction"] = pa.array(prediction, pa.float64())
    columns["target"] = pa.array(prediction + rng.normal(0.0, 1.0 + 0.1 * np.abs(prediction).mean(), rows),
                                 pa.float64())
    return pa.table(columns)


def narrow(table: Any) -> Any:
    """The same rows with wide20's columns only."""
    numeric, categorical = FEATURES[NARROW]
    keep = ["row_id", "scored_at", *numeric_names(numeric), *categorical_names(categorical), "prediction", "target"]
    return table.select(keep)


def write_files(srv: Server, rows: int, reference_rows: int) -> dict[str, dict[str, Path]]:
    """Per monitor: its reference file and its batch file (parquet)."""
    import pyarrow.parquet as pq

    folder = srv.scratch / "wide"
    folder.mkdir(exist_ok=True)
    batch = synthetic_rows(rows, DAY, SEED, drift=True)
    reference = synthetic_rows(reference_rows, REFERENCE_DAY, SEED + 1, drift=False)
    files: dict[str, dict[str, Path]] = {}
    for name, shape in ((WIDE, lambda table: table), (NARROW, narrow)):
        files[name] = {"reference": folder / f"{name}_reference.parquet", "batch": folder / f"{name}_{DAY}.parquet"}
        pq.write_table(shape(reference), files[name]["reference"])
        pq.write_table(shape(batch), files[name]["batch"])
    return files


# ---------------------------------------------------------------- where the time goes

_DBT_NODE = re.compile(r"\d+ of \d+ (OK|PASS|WARN|FAIL|ERROR)\s+(?:created \S+ \S+ model |)(\S+).*? in ([\d.]+)s\]")


def dbt_node_seconds(log_file: Path) -> dict[str, float]:
    """Seconds per dbt node (models and tests, by name) in a home's dbt log: every invocation of
    the run (the pipeline's invocations write no run_results.json); a node run twice is summed."""
    if not log_file.exists():
        return {}
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_file.read_text(errors="replace"))
    seconds: dict[str, float] = {}
    for _, node, value in _DBT_NODE.findall(text):
        seconds[node] = seconds.get(node, 0.0) + float(value)
    return seconds


def dbt_invocation_seconds(log_file: Path) -> float:
    """dbt's own execution time of a home's log ("Finished running ... (Ns)." lines), start-up excluded."""
    if not log_file.exists():
        return 0.0
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_file.read_text(errors="replace"))
    return sum(float(value) for value in re.findall(r"Finished running .* \(([\d.]+)s\)\.", text))


def _median_by_node(samples: list[dict[str, float]], top: int = 12) -> dict[str, float]:
    names = {name for sample in samples for name in sample}
    medians = {name: Spread.of([sample.get(name, 0.0) for sample in samples]).median for name in names}
    return dict(sorted(medians.items(), key=lambda item: -item[1])[:top])


# ---------------------------------------------------------------- the benchmark


def _running_nodes(conn: Any, database: str) -> list[dict[str, Any]]:
    """What a killed run left running on the server: each active session of the database, with
    the dbt node its query is for (dbt's query comment) and how long it had run; then ended."""
    rows = conn.execute(
        """select pid, extract(epoch from now() - query_start),
                  coalesce(substring(query from '"node_id": "([^"]+)"'), left(query, 80))
           from pg_stat_activity
           where datname = %s and pid <> pg_backend_pid() and state <> 'idle'""", (database,)).fetchall()
    for pid, _, _ in rows:
        conn.execute("select pg_terminate_backend(%s)", (pid,))
    return [{"node": node, "seconds": float(seconds or 0.0)} for _, seconds, node in rows]


def run(srv: Server, repeats: int = 3) -> list[Figure]:
    import psycopg

    from modelwatch import pipeline
    from modelwatch.periods import batch_of
    from modelwatch.pipeline import load
    from modelwatch.pipeline.source import read_batch_file

    seconds, files = timed(lambda: write_files(srv, ROWS, REFERENCE_ROWS))
    log(f"wide: {ROWS:,} rows on {DAY} ({sum(FEATURES[WIDE])} and {sum(FEATURES[NARROW])} features), "
        f"references of {REFERENCE_ROWS:,} rows, written in {seconds:.0f} s "
        f"(parquet {files[WIDE]['batch'].stat().st_size / 2**20:.0f} MB)")
    project = common.copy_project(srv.scratch / "wide_project",
                                  {name: declaration(*FEATURES[name]) for name in (WIDE, NARROW)})
    names = (WIDE, NARROW)
    runs: dict[str, list[common.ChildRun]] = {name: [] for name in names}
    copy_s: dict[str, list[float]] = {name: [] for name in names}
    evidently_s: dict[str, list[float | None]] = {name: [] for name in names}
    dbt_s: dict[str, list[float]] = {name: [] for name in names}
    dbt_nodes: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    unfinished: dict[str, list[dict[str, Any]]] = {}
    statuses: dict[str, Any] = {}
    with common.fresh_database(srv, "wide", project_dir=project) as db:
        setup: dict[str, float] = {"init": timed(lambda: pipeline.init(db.settings))[0]}
        references = {}
        csv: dict[str, tuple[Path, list[str]]] = {}
        for name in names:
            seconds, stored = timed(lambda: pipeline.reference(db.settings, name, files[name]["reference"]))
            setup[f"reference_{name}"] = seconds
            references[name] = {"version": stored.version, "rows": stored.rows}
            monitor = db.settings.monitor(name)
            as_loaded = load.batch_rows(monitor, batch_of(name, monitor.batch_period, DAY),
                                        read_batch_file(files[name]["batch"], monitor).table, None)
            csv[name] = (common.write_csv(as_loaded, srv.scratch / f"{name}_{DAY}.csv"), as_loaded.column_names)
        log("wide: database initialised, references stored: "
            + ", ".join(f"{step} {value:.0f} s" for step, value in setup.items()))

        def copy(name: str) -> None:
            target = f"raw.{db.settings.monitor(name).rows_table}"
            path, columns = csv[name]
            with psycopg.connect(db.url, autocommit=True) as conn:
                copy_s[name].append(timed(lambda: common.server_copy(conn, target, columns, path))[0])
                assert conn.execute(f"select count(*) from {target}").fetchone()[0] == ROWS

        def modelwatch(name: str) -> None:
            log_file = db.home / "dbt" / "logs" / "dbt.log"
            log_file.unlink(missing_ok=True)  # this run's invocations only
            with psycopg.connect(db.url, autocommit=True) as conn:  # this run's Evidently figures only
                for table in ("drift_scores", "drift_datasets"):
                    conn.execute(f"delete from raw.{table} where monitor = %s and batch_date = %s", (name, DAY))
            child = common.run_child(
                [common.MODELWATCH_CLI, "run", "--monitor", name, "--batch-date", DAY.isoformat(),
                 "--file", str(files[name]["batch"])], env=db.env(), check=False, timeout=TIMEOUT_S)
            runs[name].append(child)
            dbt_s[name].append(dbt_invocation_seconds(log_file))
            dbt_nodes[name].append(dbt_node_seconds(log_file))
            with psycopg.connect(db.url, autocommit=True) as conn:
                if child.timed_out:
                    unfinished[name] = _running_nodes(conn, db.name)
                    log(f"wide: {name} did not finish in {TIMEOUT_S:.0f} s; still running: "
                        + ", ".join(f"{item['node']} ({item['seconds']:.0f} s)" for item in unfinished[name]))
                elif child.returncode not in (0, 1):  # 1: the contract failed, the batch still ran
                    raise RuntimeError(f"modelwatch run --monitor {name} exited {child.returncode}: "
                                       f"{child.stderr[-2000:]}")
                row = conn.execute("select seconds from raw.drift_datasets where monitor = %s and batch_date = %s",
                                   (name, DAY)).fetchone()
                evidently_s[name].append(row[0] if row else None)
                statuses[name] = conn.execute(
                    "select status, rows_loaded, error from raw.batches where monitor = %s and batch_date = %s",
                    (name, DAY)).fetchone()

        steps = [("copy", WIDE), ("modelwatch", WIDE), ("modelwatch", NARROW), ("copy", NARROW)]
        for repeat in range(repeats):
            for side, name in (steps if repeat % 2 == 0 else list(reversed(steps))):
                common.empty_raw_tables(db.url, (f"raw.{db.settings.monitor(name).rows_table}",))
                (copy if side == "copy" else modelwatch)(name)
            log(f"wide run {repeat + 1}/{repeats}: " + "; ".join(
                f"{name} {runs[name][-1].seconds:.1f} s{' (killed)' if runs[name][-1].timed_out else ''} "
                f"(Evidently {_seconds(evidently_s[name][-1])}, "
                f"dbt {'unfinished' if runs[name][-1].timed_out else f'{dbt_s[name][-1]:.1f} s'}), "
                f"COPY {copy_s[name][-1]:.2f} s" for name in names))
            if unfinished:  # a run past the limit: no more repetitions (the figures are lower bounds)
                break

    def seconds_of(name: str) -> list[float]:
        return [child.seconds for child in runs[name]]

    per_monitor = {
        name: {
            "features": {"numeric": FEATURES[name][0], "categorical": FEATURES[name][1]},
            "status": statuses[name][0] if statuses.get(name) else None,
            "rows_loaded": statuses[name][1] if statuses.get(name) else None,
            "failing_checks": statuses[name][2] if statuses.get(name) else None,
            "reference": references[name],
            "setup_reference_seconds": setup[f"reference_{name}"],
            "modelwatch_seconds": Spread.of(seconds_of(name)).__dict__,
            "timed_out": [child.timed_out for child in runs[name]],
            "still_running_when_killed": unfinished.get(name, []),
            "server_copy_seconds": Spread.of(copy_s[name]).__dict__,
            "peak_mb": Spread.of([child.peak_rss_mb for child in runs[name]]).__dict__,
            "evidently_seconds": [value for value in evidently_s[name]],
            "dbt_execution_seconds": Spread.of(dbt_s[name]).__dict__,
            "dbt_slowest_nodes_seconds": _median_by_node(dbt_nodes[name]),
        }
        for name in names
    }
    details = {"rows": ROWS, "reference_rows": REFERENCE_ROWS, "batch_date": DAY.isoformat(), "seed": SEED,
               "time_limit_seconds": TIMEOUT_S, "setup_seconds": setup, "monitors": per_monitor}
    median = {name: Spread.of(seconds_of(name)).median for name in names}

    def where(name: str) -> str:
        facts = per_monitor[name]
        evidently = [value for value in evidently_s[name] if value is not None]
        evidently_text = f"Evidently {_seconds(Spread.of(evidently).median if evidently else None)}"
        if name not in unfinished:
            return f"{evidently_text}, dbt {facts['dbt_execution_seconds']['median']:.1f} s"
        running = ", ".join(f"{item['node'].split('.')[-1]} for {item['seconds']:.0f} s" for item in unfinished[name])
        done = ", ".join(f"{node.split('.')[-1]} {value:.0f} s"
                         for node, value in list(facts["dbt_slowest_nodes_seconds"].items())[:3])
        return (f"killed at {TIMEOUT_S:.0f} s running {running or 'no query'}; "
                f"done before: {done or 'no dbt node'}; {evidently_text}")

    lower_bound = " (a lower bound: a run was killed at the time limit)" if unfinished else ""
    return [
        Figure(KEY, f"One day of {ROWS:,} rows x 200 features end to end / server-side COPY of its rows",
               common.ratio_spread(seconds_of(WIDE), copy_s[WIDE][:len(runs[WIDE])]), "x", "<= 4", details,
               note=f"{median[WIDE]:.1f} s ({where(WIDE)}) vs COPY "
                    f"{per_monitor[WIDE]['server_copy_seconds']['median']:.2f} s{lower_bound}",
               valid=WIDE not in unfinished),
        Figure(COLUMNS_KEY, "The same day with 200 features / with 20, end to end",
               common.ratio_spread(seconds_of(WIDE), seconds_of(NARROW)), "x", "<= 12",
               {"monitors": {name: {key: per_monitor[name][key] for key in
                                    ("modelwatch_seconds", "timed_out", "evidently_seconds", "dbt_execution_seconds")}
                             for name in names}},
               note=f"{median[WIDE]:.1f} s vs {median[NARROW]:.1f} s ({where(NARROW)}){lower_bound}",
               valid=not unfinished),
    ]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    with common.server() as server_:
        for figure in run(server_, repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 3):
            print(figure.as_json())
