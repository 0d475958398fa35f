"""Target 5: every Grafana panel's SQL on a year of batches in under 100 ms.

The SQL is read from grafana/dashboards/*.json and expanded as Grafana would
(modelwatch.dashboards.grafana: dashboard variables, then the PostgreSQL macros) for the
time range of all batches present, and run as `modelwatch_reader`, the role
Grafana logs in as. Every panel filters on its dashboard's `monitor` variable:
it runs once per monitor present (once here: the year is the taxi's), and a
column-detail panel once per monitor and value of `column` (the monitor's
columns). The variables' own queries (run when a dashboard loads, `column`
once per monitor) count as panel queries too. Each query is timed on the
client (execute and fetch) over several runs after one untimed run; its
figure is the median, the headline the slowest panel's median. The
provisioned alert rules' queries are timed too, as a detail.

The year of batches is bench_history's database (built there in one dbt
build); run alone, this script builds its own.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Database, Figure, Server, Spread, log  # noqa: E402

KEY = "panel_query_max_ms"


def _queries(conn: Any) -> list[Any]:
    """Every variable query, panel target (once per combination of the values of the variables it
    uses) and alert rule (modelwatch.dashboards.grafana.Query), for the time range of all batches present, of
    every monitor."""
    from modelwatch.dashboards import grafana, static_page

    time_range = static_page.data_time_range(conn)

    def values(text: str) -> list[Any]:
        return [row[0] for row in conn.execute(text).fetchall()]

    # The alert rules as evaluated now: their window is on batch_health.tested_at, and the year's
    # batches were all tested minutes ago (as after a backfill), so each rule reads every batch.
    return grafana.all_queries(datetime.now(timezone.utc), time_range, values)


def measure(db: Database, batches: int, repeats: int = 10) -> dict[str, Any]:
    import psycopg

    from modelwatch.postgres.db import connect_as_reader

    timings: dict[str, Spread] = {}
    rows: dict[str, int] = {}
    errors: dict[str, str] = {}
    with connect_as_reader(db.url) as conn:  # Grafana's login: what it may read, with its plans
        # Timing queries that see no batch would measure nothing: the reader must see every batch.
        visible = conn.execute("select count(*) from marts.batch_health").fetchone()[0]
        if visible < batches:
            raise RuntimeError(f"modelwatch_reader sees {visible} of the {batches} batches in marts.batch_health")
        queries = _queries(conn)
        kinds = {query.label: query.kind for query in queries}
        for query in queries:
            samples = []
            try:
                for attempt in range(repeats + 1):
                    clock = time.perf_counter()
                    result = conn.execute(query.sql).fetchall()
                    if attempt:
                        samples.append(1000 * (time.perf_counter() - clock))
            except psycopg.Error as exc:
                errors[query.label] = str(exc).strip().splitlines()[0]
                continue
            timings[query.label] = Spread.of(samples)
            rows[query.label] = len(result)
    return {"timings": timings, "rows": rows, "errors": errors, "kinds": kinds}


def run(srv: Server, repeats: int = 10, year: tuple[Database, dict[str, Any]] | None = None) -> Figure:
    with contextlib.ExitStack() as stack:
        if year is None:
            import bench_history

            year = stack.enter_context(bench_history.year_database(srv, "panels"))
        db, facts = year
        found = measure(db, facts["history_batches"], repeats)
    panels = {label: spread for label, spread in found["timings"].items() if found["kinds"][label] != "alert"}
    slowest = max(panels, key=lambda label: panels[label].median)
    # The headline's spread: the slowest panel's own runs.
    figure_value = panels[slowest]
    log(f"panels: {len(panels)} panel queries, slowest {slowest!r} {figure_value.median:.1f} ms")
    details = {
        "batches": facts.get("history_batches"),
        "slowest_panel": slowest,
        "panel_queries": len(panels),
        "per_query_ms": {label: {"median": s.median, "min": s.low, "max": s.high, "rows": found["rows"][label]}
                         for label, s in sorted(found["timings"].items(), key=lambda item: -item[1].median)},
        "errors": found["errors"],
    }
    note = f"slowest: {slowest}"
    if found["errors"]:
        note += f"; {len(found['errors'])} queries failed: {sorted(found['errors'])}"
    return Figure(KEY, "Slowest Grafana panel query on a year of batches", figure_value, "ms", "< 100", details,
                  note=note, valid=not found["errors"])


if __name__ == "__main__":
    with common.server() as server_:
        print(run(server_).as_json())
