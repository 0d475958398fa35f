"""Target 1, ingest: modelwatch's load at least 0.8 of server-side COPY rows/s.

modelwatch's side is its load of a batch, `load.start_batch` + `load.load_batch`
as `pipeline.run_range` calls them: record the attempt, then one transaction
that deletes the batch, scores it and COPYs its trips and predictions (psycopg
COPY fed from pyarrow's CSV writer) and marks it loaded. The batch is the
65k rows of February 2023 moved onto one day (rows/s is a throughput: a batch
large enough that fixed costs do not decide it). The baseline is PostgreSQL's
own `COPY ... FROM 'file'` of the very same rows (the CSV text modelwatch
streams, in a file the server reads) into the same two tables, in one
transaction. Both start from empty tables; rows/s counts the trips.

A detail figure is the same month as 28 daily batches (the backfill's loading
loop) against the same server-side COPY: there each batch also pays its fixed
cost (statements, two commits, scoring), reported per batch.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Figure, Server, Spread, log, timed  # noqa: E402
from modelwatch import timeshift  # noqa: E402

KEY = "ingest_vs_copy"
ONE_DAY = date(2023, 2, 15)


def capture_tables(conn: Any, trips: Any, days: list[date], trained: Any) -> dict[str, Any]:
    """The exact tables load_batch COPYs, per target table, by loading once with copy_arrow recorded."""
    import pyarrow as pa

    from modelwatch import load

    captured: dict[str, list[Any]] = {"raw.trips": [], "raw.predictions": []}
    original = load.copy_arrow

    def recording(conn_: Any, target: Any, table: Any) -> None:
        captured[target.as_string(conn_).replace('"', "")].append(table)
        original(conn_, target, table)

    load.copy_arrow = recording
    try:
        load_days(conn, trips, days, trained)
    finally:
        load.copy_arrow = original
    return {target: pa.concat_tables(tables) for target, tables in captured.items()}


def load_days(conn: Any, trips: Any, days: list[date], trained: Any) -> int:
    """pipeline.run_range's loading loop."""
    from modelwatch import load

    rows = 0
    for day in days:
        day_rows = load.rows_of_day(trips.table, day)
        load.start_batch(conn, trips, day)
        rows += load.load_batch(conn, trips, day, day_rows, trained).rows_loaded
    return rows


def run(srv: Server, repeats: int = 5) -> Figure:
    import psycopg

    from modelwatch import load, model
    from modelwatch.source import TripFile, read_trip_file

    with common.trained_database(srv, "ingest") as db:
        february = read_trip_file(common.tlc_file(common.FEBRUARY))
        month_rows = load.dominant_month_rows(february.table)
        days = load.pickup_days(month_rows)
        one_batch = TripFile(february.path, february.sha256, timeshift.onto_day(month_rows, ONE_DAY), ())
        with psycopg.connect(db.url, autocommit=True) as conn:
            trained = model.load_latest(conn)
            captured = {"batch": capture_tables(conn, one_batch, [ONE_DAY], trained)}
            common.empty_raw_tables(db.url)
            captured["days"] = capture_tables(conn, february, days, trained)
        files = {
            shape: {target: (table.column_names, common.write_csv(table, srv.scratch / f"ingest_{shape}_{target}.csv"),
                             table.num_rows) for target, table in tables.items()}
            for shape, tables in captured.items()
        }
        rows = files["batch"]["raw.trips"][2]
        assert rows == files["days"]["raw.trips"][2]
        log(f"ingest: {rows} trips (+ {rows} predictions) as one batch and as {len(days)} daily batches")

        def server_copy(conn: psycopg.Connection, shape: str) -> None:
            with conn.transaction():
                for target, (columns, path, count) in files[shape].items():
                    assert common.server_copy(conn, target, columns, path) == count

        def load_one(conn: psycopg.Connection) -> None:
            load.start_batch(conn, one_batch, ONE_DAY)
            assert load.load_batch(conn, one_batch, ONE_DAY, one_batch.table, trained).rows_loaded == rows

        times: dict[str, list[float]] = {"batch_load": [], "batch_copy": [], "days_load": [], "days_copy": []}
        steps = {
            "batch_load": load_one,
            "batch_copy": lambda conn: server_copy(conn, "batch"),
            "days_load": lambda conn: load_days(conn, february, days, trained),
            "days_copy": lambda conn: server_copy(conn, "days"),
        }
        for repeat in range(repeats):
            order = list(steps) if repeat % 2 == 0 else list(reversed(steps))
            for name in order:
                common.empty_raw_tables(db.url)
                with psycopg.connect(db.url, autocommit=True) as conn:
                    times[name].append(timed(lambda: steps[name](conn))[0])
            log(f"ingest run {repeat + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))

    ratio = common.ratio_spread(times["batch_copy"], times["batch_load"])
    days_ratio = common.ratio_spread(times["days_copy"], times["days_load"])
    median = {name: Spread.of(values).median for name, values in times.items()}
    details = {
        "rows": rows,
        "seconds": {name: Spread.of(values).__dict__ for name, values in times.items()},
        "load_rows_per_s": rows / median["batch_load"],
        "server_copy_rows_per_s": rows / median["batch_copy"],
        "daily_batches": len(days),
        "daily_loop_vs_copy": days_ratio.__dict__,
        "daily_loop_fixed_ms_per_batch": 1000 * (median["days_load"] - median["batch_load"]) / (len(days) - 1),
    }
    return Figure(
        KEY, "Ingest: load rows/s / server-side COPY rows/s", ratio, "x", ">= 0.8", details,
        note=(f"{rows:,} trips + predictions, one batch: load {rows / median['batch_load']:,.0f} rows/s, "
              f"COPY {rows / median['batch_copy']:,.0f} rows/s; as {len(days)} daily batches "
              f"{days_ratio.median:.2f}x COPY ({details['daily_loop_fixed_ms_per_batch']:.0f} ms fixed per batch)"),
    )


if __name__ == "__main__":
    with common.server() as server_:
        figure = run(server_, repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 5)
        print(figure.as_json())
