"""Target 2: a month's backfill, everything included, no slower than the course's loop.

Both sides are timed as whole processes, start-up and imports included, on
February 2023 (28 days) against the same PostgreSQL server:

- the course's loop (course_loop.py): per day predict, one Evidently Report
  (prediction drift, drifted columns, missing values, p50 fare), one INSERT;
  its model and reference set prepared beforehand (the course's notebook);
- `modelwatch backfill --file green_tripdata_2023-02.parquet` (the default
  monitor, nyc_taxi) on a database where `modelwatch init` and `train`
  (January 2023: the model and the reference set) have run: load and score
  every day, Evidently drift on every monitored column, SQL drift (PSI), the
  dbt build with the contract's tests, the run results.

Each repetition of the backfill gets a fresh copy of the initialised database
(CREATE DATABASE ... TEMPLATE) and of its home, on which `modelwatch init`
runs untimed, as on any database before its first run (it also leaves dbt's
parse of the project for that database), so every run is a first backfill of
the month.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import course_loop  # noqa: E402
from common import Figure, Server, Spread, log  # noqa: E402

KEY = "backfill_vs_course_loop"
DAYS = 28


def dbt_run_seconds(log_file: Path) -> float:
    """dbt's own execution time in a home's log (its "Finished running ... (Ns)." lines), start-up excluded."""
    if not log_file.exists():
        return 0.0
    text = re.sub(r"\x1b\[[0-9;]*m", "", log_file.read_text(errors="replace"))
    return sum(float(seconds) for seconds in re.findall(r"Finished running .* \(([\d.]+)s\)\.", text))


def run(srv: Server, repeats: int = 3) -> Figure:
    import psycopg

    from modelwatch import pipeline

    february = common.tlc_file(common.FEBRUARY)
    course: list[common.ChildRun] = []
    backfill: list[common.ChildRun] = []
    evidently_s: list[float] = []
    dbt_s: list[float] = []
    with common.fresh_database(srv, "course") as course_db, common.trained_database(srv, "backfill") as template:
        workdir = srv.scratch / "course_loop"
        workdir.mkdir(exist_ok=True)
        reference_rows = course_loop.prepare(common.tlc_file(common.JANUARY), workdir)
        course_args = [common.PYTHON, str(Path(course_loop.__file__).resolve()), course_db.url, str(workdir),
                       str(february), "2023", "2", str(DAYS)]
        for repeat in range(repeats):
            for side in (("course", "backfill") if repeat % 2 == 0 else ("backfill", "course")):
                if side == "course":
                    course.append(common.run_child(course_args))
                    with psycopg.connect(course_db.url) as conn:
                        assert conn.execute("select count(*) from dummy_metrics").fetchone()[0] == DAYS
                    continue
                with common.cloned_database(srv, template, "backfill_run") as db:
                    # The copy is a database of its own: `init` on it, as on any database before its first
                    # run (untimed), leaves the dbt parse of its own profile that a first backfill finds.
                    pipeline.init(db.settings)
                    (db.home / "dbt" / "logs" / "dbt.log").unlink(missing_ok=True)  # init's seed is not the backfill's
                    backfill.append(common.run_child(
                        [common.MODELWATCH_CLI, "backfill", "--monitor", common.TAXI, "--file", str(february)],
                        env=db.env()))
                    with psycopg.connect(db.url) as conn:
                        statuses = dict(conn.execute(
                            "select status, count(*) from raw.batches where monitor = %s group by status",
                            (common.TAXI,)).fetchall())
                        evidently_s.append(conn.execute(
                            "select coalesce(sum(seconds), 0) from raw.drift_datasets where monitor = %s",
                            (common.TAXI,)).fetchone()[0])
                    assert sum(statuses.get(s, 0) for s in ("passed", "warned")) == DAYS, statuses
                    dbt_s.append(dbt_run_seconds(db.home / "dbt" / "logs" / "dbt.log"))
            log(f"backfill run {repeat + 1}/{repeats}: modelwatch {backfill[-1].seconds:.1f} s, "
                f"course loop {course[-1].seconds:.1f} s")

    ratio = common.ratio_spread([r.seconds for r in backfill], [r.seconds for r in course])
    details = {
        "days": DAYS,
        "course_reference_rows": reference_rows,
        "backfill_seconds": Spread.of([r.seconds for r in backfill]).__dict__,
        "course_loop_seconds": Spread.of([r.seconds for r in course]).__dict__,
        "backfill_peak_rss_mb": Spread.of([r.peak_rss_mb for r in backfill]).__dict__,
        "course_loop_peak_rss_mb": Spread.of([r.peak_rss_mb for r in course]).__dict__,
        "backfill_evidently_seconds": Spread.of(evidently_s).__dict__,
        "backfill_dbt_execution_seconds": Spread.of(dbt_s).__dict__,
    }
    median = {name: details[name]["median"] for name in ("backfill_seconds", "course_loop_seconds")}
    return Figure(KEY, "Month backfill (Feb 2023, 28 days) wall time / course loop wall time", ratio, "x",
                  "<= 1.0", details,
                  note=f"backfill {median['backfill_seconds']:.1f} s vs course loop "
                       f"{median['course_loop_seconds']:.1f} s (processes, imports included)")


if __name__ == "__main__":
    with common.server() as server_:
        print(run(server_, repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 3).as_json())
