"""Target 4: one day of 3 million rows end to end, peak memory under 2 GB, at most 4x server-side COPY.

The batch is the shared months (2023-01..03, 2024-01, strays dropped) moved
onto one day, keeping each trip's time of day and duration, repeated until
3,000,000 rows, written as a TLC parquet file. modelwatch's side is the CLI,
`modelwatch run --batch-date D --file big.parquet`, as a process on an
initialised and trained database: read, load and score, Evidently drift (on a
seeded sample: vars.drift.evidently_max_rows, recorded in raw.drift_datasets),
SQL drift on all rows, the dbt build with the contract's tests, run results.
Peak memory is the peak of that process's and its drift worker's memory
together (proportional set size, sampled every 200 ms); the PostgreSQL
server's own memory is not in it. The baseline is PostgreSQL's own
`COPY raw.nyc_taxi__rows FROM 'file'` of the same rows as modelwatch stores them
(`load.batch_rows`: batch_date, the generated trip_id and the model's
prediction included, as CSV), into the same table. Before each run the rows
table is emptied, so each run is a first run of the day.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Figure, Server, Spread, log, timed  # noqa: E402
from modelwatch.examples.nyc_taxi import timeshift  # noqa: E402

KEY = "big_batch_vs_copy"
MEMORY_KEY = "big_batch_peak_mb"
DAY = date(2023, 6, 1)
ROWS = int(os.environ.get("MODELWATCH_BENCH_BIG_ROWS") or 3_000_000)


def make_files(srv: Server, db: common.Database, rows: int) -> tuple[Path, Path, list[str]]:
    """The batch as a TLC parquet file, and its rows as raw.nyc_taxi__rows holds them (scored by
    the database's model) as CSV for the server."""
    import psycopg
    import pyarrow as pa

    from modelwatch import pipeline
    from modelwatch.periods import batch_of
    from modelwatch.pipeline import load

    monitor = common.taxi()
    months = pa.concat_tables([timeshift.onto_day(month, DAY, monitor) for month in common.read_months()])
    table = pa.concat_tables([months] * (rows // months.num_rows + 1)).slice(0, rows).combine_chunks()
    del months
    parquet = timeshift.write_tlc_parquet(table, srv.scratch / "big_batch.parquet", monitor)
    with psycopg.connect(db.url) as conn:
        module = pipeline.model_module(monitor)
        trained = module.load_latest(conn, monitor.name) if module else None
    as_loaded = load.batch_rows(monitor, batch_of(monitor.name, monitor.batch_period, DAY), table, trained)
    csv = common.write_csv(as_loaded, srv.scratch / "big_batch.csv")
    return parquet, csv, as_loaded.column_names


def run(srv: Server, repeats: int = 3) -> list[Figure]:
    import psycopg

    monitor = common.taxi()
    target = f"raw.{monitor.rows_table}"
    copy_s: list[float] = []
    runs: list[common.ChildRun] = []
    with common.trained_database(srv, "bigbatch") as db:
        seconds, (parquet, csv, columns) = timed(lambda: make_files(srv, db, ROWS))
        log(f"big batch: {ROWS:,} rows on {DAY} written in {seconds:.0f} s "
            f"(parquet {parquet.stat().st_size / 2**20:.0f} MB, CSV {csv.stat().st_size / 2**20:.0f} MB)")
        for repeat in range(repeats):
            for side in (("copy", "modelwatch") if repeat % 2 == 0 else ("modelwatch", "copy")):
                common.empty_raw_tables(db.url, (target,))
                if side == "copy":
                    with psycopg.connect(db.url, autocommit=True) as conn:
                        copy_s.append(timed(lambda: common.server_copy(conn, target, columns, csv))[0])
                        assert conn.execute(f"select count(*) from {target}").fetchone()[0] == ROWS
                else:
                    runs.append(common.run_child(
                        [common.MODELWATCH_CLI, "run", "--monitor", monitor.name, "--batch-date", DAY.isoformat(),
                         "--file", str(parquet)],
                        env=db.env(), check=False))
                    if runs[-1].returncode not in (0, 1):  # 1: the contract failed, the batch still ran
                        raise RuntimeError(f"modelwatch run exited {runs[-1].returncode}: {runs[-1].stderr[-2000:]}")
            log(f"big batch run {repeat + 1}/{repeats}: modelwatch {runs[-1].seconds:.1f} s, "
                f"{runs[-1].peak_rss_mb:.0f} MB peak; server COPY {copy_s[-1]:.1f} s")
        with psycopg.connect(db.url) as conn:
            batch = conn.execute(
                "select status, rows_loaded, error from raw.batches where monitor = %s and batch_date = %s",
                (monitor.name, DAY)).fetchone()
            evidently = conn.execute(
                """select current_rows, current_rows_used, reference_rows, reference_rows_used, sample_seed, seconds
                   from raw.drift_datasets where monitor = %s and batch_date = %s""", (monitor.name, DAY)).fetchone()
    details = {
        "rows": ROWS,
        "batch_date": DAY.isoformat(),
        "status": batch[0] if batch else None,
        "rows_loaded": batch[1] if batch else None,
        "failing_checks": batch[2] if batch else None,
        "modelwatch_seconds": Spread.of([r.seconds for r in runs]).__dict__,
        "server_copy_seconds": Spread.of(copy_s).__dict__,
        "evidently": dict(zip(("current_rows", "current_rows_used", "reference_rows", "reference_rows_used",
                               "sample_seed", "seconds"), evidently)) if evidently else None,
    }
    ratio = common.ratio_spread([r.seconds for r in runs], copy_s)
    memory = Spread.of([r.peak_rss_mb for r in runs])
    return [
        Figure(KEY, f"One day of {ROWS / 1e6:g}M rows end to end / server-side COPY of its rows", ratio, "x",
               "<= 4", details,
               note=f"{details['modelwatch_seconds']['median']:.1f} s vs COPY {details['server_copy_seconds']['median']:.1f} s"),
        Figure(MEMORY_KEY, f"Peak RSS of `modelwatch run` and its drift worker on {ROWS / 1e6:g}M rows", memory, "MB", "< 2048",
               {"peak_rss_mb": memory.__dict__},
               note="the modelwatch process and its drift worker together (PSS, sampled every 200 ms) "
                    f"(the process alone: {Spread.of([r.own_peak_rss_mb for r in runs]).median:.0f} MB); "
                    "the PostgreSQL server's memory is not included"),
    ]


if __name__ == "__main__":
    with common.server() as server_:
        for figure in run(server_, repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 3):
            print(figure.as_json())
