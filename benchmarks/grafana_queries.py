"""Time every Grafana panel, variable and alert query on a database with marts, as modelwatch_reader.

    MODELWATCH_DATABASE_URL=... python benchmarks/grafana_queries.py   # or the embedded default

Each query is expanded as Grafana would (the dashboard's own time range at
now, the variables' current values; alert rules for their relative range) and
run five times; the median is printed with the rows returned.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from modelwatch import db, grafana  # noqa: E402
from modelwatch.config import Settings  # noqa: E402

RUNS = 5


def reader_connection(url: str) -> psycopg.Connection:
    info = conninfo_to_dict(url)
    info.pop("password", None)
    info["user"] = db.READER_ROLE
    try:
        return psycopg.connect(make_conninfo(**info), autocommit=True)
    except psycopg.OperationalError:
        conn = psycopg.connect(url, autocommit=True)
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(db.READER_ROLE)))
        return conn


def queries(now: datetime) -> list[tuple[str, str]]:
    found = []
    for path in grafana.dashboard_paths():
        dashboard = grafana.load_dashboard(path)
        values = {item["name"]: item["current"]["value"] for item in dashboard.get("templating", {}).get("list", [])}
        shown = grafana.default_time_range(dashboard, now)
        found += [(f"{path.stem}: {query.title}", grafana.expand(query.raw_sql, shown, values))
                  for query in grafana.panel_queries(dashboard)]
        found += [(f"{path.stem}: ${item['name']}", grafana.variable_sql(item))
                  for item in dashboard.get("templating", {}).get("list", [])]
    found += [(f"alert: {rule.uid}", grafana.expand(rule.raw_sql, rule.time_range(now)))
              for rule in grafana.alert_rules()]
    return found


def main() -> None:
    url = db.database_url(Settings.from_env())
    now = datetime.now(timezone.utc)
    with reader_connection(url) as conn:
        for name, text in queries(now):
            timings, rows = [], 0
            for _ in range(RUNS):
                clock = time.perf_counter()
                rows = len(conn.execute(text).fetchall())
                timings.append(time.perf_counter() - clock)
            print(f"{statistics.median(timings) * 1000:8.2f} ms {rows:6d} rows  {name}")


if __name__ == "__main__":
    main()
