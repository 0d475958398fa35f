"""Target 3, flat cost: one daily batch with 365 batches of history at most 1.2x its time with none.

Two databases, both initialised and trained on January 2023. One stays empty;
the other gets a year of history of the taxi's monitor: the shared months
(2023-01..03, 2024-01) replayed day by day with shifted dates onto the 365
days before the timed batch. The year is loaded fast (not through the daily
loop): its rows, scored by the model (`load.batch_rows`), COPYed in bulk into
raw.nyc_taxi__rows, its batch log written, one day's Evidently drift scored for
real and copied to every day, then the dbt builds a backfill makes (one per 31
batches, `pipeline.build_batches`) with the contract's tests and the run
results. The marts then hold a year of batches.

Timed: `pipeline.run_batch` for the day after that year (February 15th 2023
replayed), in process (one untimed run first on each side: dbt's parse of
that database, the process's drift worker), the two databases alternating.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Database, Figure, Server, Spread, log, timed  # noqa: E402
from modelwatch.examples.nyc_taxi import timeshift  # noqa: E402

KEY = "history_365_vs_0"
TIMED_DAY = date(2024, 3, 1)
HISTORY_DAYS = 365
SOURCE_DAY = date(2023, 2, 15)  # a Wednesday of ordinary volume


def timed_batch_file(srv: Server) -> Path:
    """February 15th 2023 moved onto TIMED_DAY, as a TLC parquet file."""
    path = srv.scratch / f"batch_{TIMED_DAY}.parquet"
    if not path.exists():
        monitor = common.taxi()
        february = common.read_months([common.FEBRUARY])[0]
        rows = timeshift.shift_rows(timeshift.rows_of_day(february, SOURCE_DAY, monitor), TIMED_DAY - SOURCE_DAY,
                                    monitor)
        timeshift.write_tlc_parquet(rows, path, monitor)
    return path


def load_history(db: Database, last_day: date, days: int) -> list[date]:
    """`days` batches ending the day before `last_day`, bulk-loaded, then built as a backfill builds them."""
    import psycopg
    import pyarrow as pa
    from psycopg import sql

    from modelwatch import pipeline
    from modelwatch.drift import batch_drift
    from modelwatch.periods import batch_of
    from modelwatch.pipeline import load

    monitor = common.taxi()
    first = last_day - timedelta(days=days)
    replay = timeshift.replay_days(timeshift.source_days(common.read_months(), monitor), first, days, monitor)
    batches = [batch_of(monitor.name, monitor.batch_period, day) for day, _ in replay]
    with psycopg.connect(db.url, autocommit=True) as conn:
        module = pipeline.model_module(monitor)
        trained = module.load_latest(conn, monitor.name) if module else None
        reference = load.latest_reference(conn, monitor)
        rows_table = pa.concat_tables([load.batch_rows(monitor, batch, rows, trained)
                                       for batch, (_, rows) in zip(batches, replay, strict=True)])
        with conn.transaction():
            load.copy_arrow(conn, sql.Identifier("raw", monitor.rows_table), rows_table)
            with conn.cursor() as cursor:
                cursor.executemany(
                    """insert into raw.batches (monitor, batch_date, batch_end, file_name, file_sha256, rows_in_file,
                                                rows_loaded, rows_outside_period, model_version, reference_version,
                                                status, started_at)
                       values (%s, %s, %s, 'history-replay.parquet', 'history-replay', %s, %s, 0, %s, %s,
                               'loaded', now())""",
                    [(monitor.name, batch.start, batch.end, rows.num_rows, rows.num_rows,
                      getattr(trained, "version", None), reference)
                     for batch, (_, rows) in zip(batches, replay, strict=True)],
                )
        del rows_table
        history = [batch.start for batch in batches]
        load.analyze(conn, monitor)
        # Evidently for real on the first day, copied to the others (365 Reports would take minutes).
        batch_drift.score_batches(db.settings, conn, monitor, history[:1])
        for table in ("drift_scores", "drift_datasets"):
            columns = [row[0] for row in conn.execute(
                "select column_name from information_schema.columns where table_schema = 'raw' and table_name = %s"
                " and column_name not in ('monitor', 'batch_date') order by ordinal_position", (table,)).fetchall()]
            listed = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            conn.execute(sql.SQL("insert into {} (monitor, batch_date, {}) select s.monitor, d.day, {} from {} as s"
                                 " cross join unnest(%s::date[]) as d(day)"
                                 " where s.monitor = %s and s.batch_date = %s").format(
                sql.Identifier("raw", table), listed, sql.SQL(", ").join(sql.Identifier("s", c) for c in columns),
                sql.Identifier("raw", table)), (history[1:], monitor.name, history[0]))
        common.vacuum_analyze(db.url)
        # The dbt half of pipeline.run_range, a build per chunk of batches as `backfill` makes them.
        chunk = pipeline.BACKFILL_CHUNK_BATCHES
        for start in range(0, len(batches), chunk):
            pipeline.build_batches(db.settings, conn, db.url, monitor, batches[start:start + chunk])
    common.vacuum_analyze(db.url)
    return history


@contextlib.contextmanager
def year_database(srv: Server, label: str = "year") -> Iterator[tuple[Database, dict[str, Any]]]:
    """A database with a year of batches in its marts, and facts about how it was made."""
    with common.trained_database(srv, label) as db:
        seconds, history = timed(lambda: load_history(db, TIMED_DAY, HISTORY_DAYS))
        import psycopg

        with psycopg.connect(db.url) as conn:
            facts = {
                "history_batches": len(history),
                "history_first": history[0].isoformat(),
                "history_last": history[-1].isoformat(),
                "history_trips": conn.execute(
                    f"select count(*) from raw.{common.taxi().rows_table}").fetchone()[0],
                "history_statuses": dict(conn.execute(
                    "select status, count(*) from raw.batches where monitor = %s group by status",
                    (common.TAXI,)).fetchall()),
                "history_setup_seconds": seconds,
            }
        log(f"year database ready in {seconds:.0f} s: {facts['history_trips']} trips, {facts['history_statuses']}")
        yield db, facts


def run(srv: Server, repeats: int = 5, year: tuple[Database, dict[str, Any]] | None = None) -> Figure:
    from modelwatch import pipeline

    batch_file = timed_batch_file(srv)
    with contextlib.ExitStack() as stack:
        year_db, facts = year or stack.enter_context(year_database(srv))
        empty_db = stack.enter_context(common.trained_database(srv, "nohistory"))
        sides = {"none": empty_db, "year": year_db}
        times: dict[str, list[float]] = {"none": [], "year": []}
        outcomes: dict[str, Any] = {}
        for name, db in sides.items():  # warm-up: imports, dbt's first parse in this home
            outcomes[name] = pipeline.run_batch(db.settings, TIMED_DAY, batch_file, common.TAXI)
        for repeat in range(repeats):
            for name in (("none", "year") if repeat % 2 == 0 else ("year", "none")):
                common.checkpoint(sides[name].url)
                seconds, outcome = timed(
                    lambda: pipeline.run_batch(sides[name].settings, TIMED_DAY, batch_file, common.TAXI))
                times[name].append(seconds)
                outcomes[name] = outcome
            log(f"history run {repeat + 1}/{repeats}: no history {times['none'][-1]:.2f} s, "
                f"{facts['history_batches']} days {times['year'][-1]:.2f} s")

    ratio = common.ratio_spread(times["year"], times["none"])
    details = {
        **facts,
        "timed_batch": TIMED_DAY.isoformat(),
        "timed_batch_rows": outcomes["year"].rows_loaded,
        "status_with_history": outcomes["year"].status,
        "status_without_history": outcomes["none"].status,
        "seconds_without_history": Spread.of(times["none"]).__dict__,
        "seconds_with_history": Spread.of(times["year"]).__dict__,
    }
    return Figure(KEY, f"One daily batch with {facts['history_batches']} batches of history / with none", ratio, "x", "<= 1.2", details,
                  note=f"{Spread.of(times['year']).median:.2f} s vs {Spread.of(times['none']).median:.2f} s "
                       f"(in process)")


if __name__ == "__main__":
    with common.server() as server_:
        print(run(server_, repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 5).as_json())
