"""Target 5: every Grafana panel's SQL on a year of batches in under 100 ms.

The SQL is read from grafana/dashboards/*.json and expanded as Grafana would
(modelwatch.grafana: dashboard variables, then the PostgreSQL macros) for the
time range of all batches present, and run as `modelwatch_reader`, the role
Grafana logs in as. A panel with a `$column` variable runs once per value of
the variable; the variable's own query (run when the dashboard loads) counts
as a panel query too. Each query is timed on the client (execute and fetch) over
several runs after one untimed run; its figure is the median, the headline
the slowest panel's median. The provisioned alert rules' queries are timed
too, as a detail.

The year of batches is bench_history's database (built there in one dbt
build); run alone, this script builds its own.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Database, Figure, Server, Spread, log  # noqa: E402

KEY = "panel_query_max_ms"


def _queries(conn: Any) -> list[tuple[str, str]]:
    """(label, SQL) for every variable query, panel target (per value of the variables), then alert rule."""
    from datetime import datetime, timezone

    from modelwatch import grafana

    first, last = conn.execute("select min(batch_date), max(batch_date) from marts.batch_health").fetchone()
    time_range = grafana.TimeRange.of_days(first, last)
    found: list[tuple[str, str]] = []
    for path in grafana.dashboard_paths():
        dashboard = grafana.load_dashboard(path)
        variables = dashboard.get("templating", {}).get("list", [])
        choices: list[dict[str, str]] = [{}]
        for variable in variables:
            if variable.get("type") != "query":
                continue
            found.append((f"{dashboard['uid']}: variable ${variable['name']}", grafana.variable_sql(variable)))
            values = [row[0] for row in conn.execute(grafana.variable_sql(variable)).fetchall()]
            choices = [{**choice, variable["name"]: str(value)} for choice in choices for value in values]
        for query in grafana.panel_queries(dashboard):
            uses_variable = any(f"${name}" in query.raw_sql or f"${name}" in query.title
                                for name in {k for c in choices for k in c})
            for choice in (choices if uses_variable else [{}]):
                label = f"{dashboard['uid']}: {grafana.expand_variables(query.title, choice)}"
                found.append((label, grafana.expand(query.raw_sql, time_range, choice)))
    now = datetime.combine(last, datetime.min.time(), tzinfo=timezone.utc)
    for rule in grafana.alert_rules():
        found.append((f"alert: {rule.title}", grafana.expand(rule.raw_sql, rule.time_range(now))))
    return found


def measure(db: Database, batches: int, repeats: int = 10) -> dict[str, Any]:
    import psycopg

    from modelwatch.db import READER_ROLE

    timings: dict[str, Spread] = {}
    rows: dict[str, int] = {}
    errors: dict[str, str] = {}
    with psycopg.connect(db.url, autocommit=True) as conn:
        queries = _queries(conn)
        conn.execute(f"set role {READER_ROLE}")
        # Timing queries that see no batch would measure nothing: the reader must see every batch.
        visible = conn.execute("select count(*) from marts.batch_health").fetchone()[0]
        if visible < batches:
            raise RuntimeError(f"modelwatch_reader sees {visible} of the {batches} batches in marts.batch_health")
        for label, text in queries:
            samples = []
            try:
                for attempt in range(repeats + 1):
                    clock = time.perf_counter()
                    result = conn.execute(text).fetchall()
                    if attempt:
                        samples.append(1000 * (time.perf_counter() - clock))
            except psycopg.Error as exc:
                errors[label] = str(exc).strip().splitlines()[0]
                continue
            timings[label] = Spread.of(samples)
            rows[label] = len(result)
    return {"timings": timings, "rows": rows, "errors": errors}


def run(srv: Server, repeats: int = 10, year: tuple[Database, dict[str, Any]] | None = None) -> Figure:
    with contextlib.ExitStack() as stack:
        if year is None:
            import bench_history

            year = stack.enter_context(bench_history.year_database(srv, "panels"))
        db, facts = year
        found = measure(db, facts["history_batches"], repeats)
    panels = {label: spread for label, spread in found["timings"].items() if not label.startswith("alert: ")}
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
