"""Target 1, ingest: modelwatch's load at least 0.8 of server-side COPY rows/s.

modelwatch's side is its load of a batch, `load.start_batch` + `load.load_batch`
as `pipeline.run_range` calls them: record the attempt, then one transaction
that deletes the batch, scores it (`load.batch_rows`: the ids generated, the
prediction made by the taxi's model) and COPYs its rows, predictions included,
into raw.nyc_taxi__rows (binary COPY encoded from Arrow) and marks it loaded.
The batch is the 65k rows of February 2023 moved onto one day (rows/s is a
throughput: a batch large enough that fixed costs do not decide it). The
baseline is PostgreSQL's own `COPY ... FROM 'file'` of the very same rows (the
table load_batch COPYs, as CSV in a file the server reads) into the same
table, in one transaction. Both start from empty tables.

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
from modelwatch.examples.nyc_taxi import timeshift  # noqa: E402

KEY = "ingest_vs_copy"
ONE_DAY = date(2023, 2, 15)


class Loader:
    """What pipeline.run_range holds while it loads a monitor's batches: the monitor, its model
    and its reference version."""

    def __init__(self, conn: Any, monitor: Any) -> None:
        from modelwatch import pipeline
        from modelwatch.pipeline import load

        module = pipeline.model_module(monitor)
        self.monitor = monitor
        self.trained = module.load_latest(conn, monitor.name) if module else None
        self.reference_version = load.latest_reference(conn, monitor)

    def load(self, conn: Any, file: Any, batches: list[Any]) -> int:
        """pipeline.run_range's loading loop."""
        from modelwatch.pipeline import load

        rows = 0
        for batch in batches:
            batch_rows = load.rows_in(file.table, self.monitor, batch)
            load.start_batch(conn, file, batch, getattr(self.trained, "version", None), self.reference_version)
            stored = load.batch_rows(self.monitor, batch, batch_rows, self.trained)
            rows += load.load_batch(conn, self.monitor, file, batch, stored).rows_loaded
        return rows


def capture_table(conn: Any, loader: Loader, file: Any, batches: list[Any]) -> Any:
    """The exact rows load_batch COPYs into the monitor's table, by loading once with copy_arrow recorded."""
    import pyarrow as pa

    from modelwatch.pipeline import load

    captured: list[Any] = []
    original = load.copy_arrow
    expected = f"raw.{loader.monitor.rows_table}"

    def recording(conn_: Any, target: Any, table: Any) -> None:
        assert target.as_string(conn_).replace('"', "") == expected, target.as_string(conn_)
        captured.append(table)
        original(conn_, target, table)

    load.copy_arrow = recording
    try:
        loader.load(conn, file, batches)
    finally:
        load.copy_arrow = original
    return pa.concat_tables(captured)


def run(srv: Server, repeats: int = 5) -> Figure:
    import psycopg

    from modelwatch.periods import batch_of
    from modelwatch.pipeline import load
    from modelwatch.pipeline.source import BatchFile, read_batch_file

    monitor = common.taxi()
    target = f"raw.{monitor.rows_table}"
    with common.trained_database(srv, "ingest") as db:
        february = read_batch_file(common.tlc_file(common.FEBRUARY), monitor)
        month_rows = load.main_period_rows(february.table, monitor)
        days = [batch_of(monitor.name, monitor.batch_period, day) for day in load.batch_starts(month_rows, monitor)]
        one_day = [batch_of(monitor.name, monitor.batch_period, ONE_DAY)]
        one_batch = BatchFile(february.path, february.sha256, timeshift.onto_day(month_rows, ONE_DAY, monitor), ())
        with psycopg.connect(db.url, autocommit=True) as conn:
            loader = Loader(conn, monitor)
            captured = {"batch": capture_table(conn, loader, one_batch, one_day)}
            common.empty_raw_tables(db.url)
            captured["days"] = capture_table(conn, loader, february, days)
        files = {
            shape: (table.column_names, common.write_csv(table, srv.scratch / f"ingest_{shape}.csv"), table.num_rows)
            for shape, table in captured.items()
        }
        rows = files["batch"][2]
        assert rows == files["days"][2]
        log(f"ingest: {rows} rows (predictions included, {len(files['batch'][0])} columns) into {target} "
            f"as one batch and as {len(days)} daily batches")

        def server_copy(conn: psycopg.Connection, shape: str) -> None:
            columns, path, count = files[shape]
            with conn.transaction():
                assert common.server_copy(conn, target, columns, path) == count

        def load_one(conn: psycopg.Connection) -> None:
            assert loader.load(conn, one_batch, one_day) == rows

        times: dict[str, list[float]] = {"batch_load": [], "batch_copy": [], "days_load": [], "days_copy": []}
        steps = {
            "batch_load": load_one,
            "batch_copy": lambda conn: server_copy(conn, "batch"),
            "days_load": lambda conn: loader.load(conn, february, days),
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
        "table": target,
        "columns": len(files["batch"][0]),
        "seconds": {name: Spread.of(values).__dict__ for name, values in times.items()},
        "load_rows_per_s": rows / median["batch_load"],
        "server_copy_rows_per_s": rows / median["batch_copy"],
        "daily_batches": len(days),
        "daily_loop_vs_copy": days_ratio.__dict__,
        "daily_loop_fixed_ms_per_batch": 1000 * (median["days_load"] - median["batch_load"]) / (len(days) - 1),
    }
    return Figure(
        KEY, "Ingest: load rows/s / server-side COPY rows/s", ratio, "x", ">= 0.8", details,
        note=(f"{rows:,} rows (trips with their predictions, one table), one batch: "
              f"load {rows / median['batch_load']:,.0f} rows/s, COPY {rows / median['batch_copy']:,.0f} rows/s; "
              f"as {len(days)} daily batches "
              f"{days_ratio.median:.2f}x COPY ({details['daily_loop_fixed_ms_per_batch']:.0f} ms fixed per batch)"),
    )


if __name__ == "__main__":
    with common.server() as server_:
        figure = run(server_, repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 5)
        print(figure.as_json())
