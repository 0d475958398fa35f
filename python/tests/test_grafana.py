"""Grafana without Grafana: provisioning files, every panel's and alert rule's SQL, the static page.

Grafana and Docker cannot run here, so the tests do what Grafana would: expand
each query's macros and variables for the time range Grafana would use, run it
as modelwatch_reader (the datasource's login) against the demo's marts, and
check the columns and figures the panel plots. Every dashboard shows one
monitor at a time (its `monitor` variable): the demo's panels are run for the
taxi, and once for a monitor with no batches, which must show no data. The
alert rules cover every monitor at once; their logic for classifiers, which the
demo does not have, is checked on marts of made-up rows. The provisioning files
are checked against each other and against docker-compose.yml.
"""

from __future__ import annotations

import functools
import re
import statistics
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from psycopg import sql

from modelwatch.cli import main
from modelwatch.config import PROJECT_DIR, Settings
from modelwatch.dashboards import grafana, static_page
from modelwatch.errors import UsageError
from modelwatch.postgres import db

from .chromium import chromium_path, visit
from .conftest import FEBRUARY, TAXI, Templates, scratch_name, trained_database
from .png import read_png

COMPOSE = PROJECT_DIR / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_DIR / ".env.example"
DATASOURCES = grafana.PROVISIONING_DIR / "datasources" / "modelwatch.yaml"
DASHBOARD_PROVIDER = grafana.PROVISIONING_DIR / "dashboards" / "modelwatch.yaml"
DEMO_DAYS = [date(2023, 2, 1) + timedelta(days=n) for n in range(28)]
DEMO_RANGE = grafana.TimeRange.of_days(DEMO_DAYS[0], DEMO_DAYS[-1])
STATE_GREEN = (115, 191, 105)  # #73BF69, the "passed" colour of the batch health strip
MONITOR_SQL = "SELECT DISTINCT monitor FROM marts.batch_health ORDER BY 1"
MONITOR_FILTER = "monitor = '$monitor'"
NO_SUCH_MONITOR = "no_such_monitor"  # declared nowhere: no mart has a row of it
# The taxi's rows and where its target comes from (duration_min is derived, not stored).
TAXI_ROWS = f"raw.{TAXI}__rows"
DURATION = "extract(epoch from (dropoff_datetime - pickup_datetime)) / 60.0"
IN_DOMAIN = f"({DURATION}) > 0 and ({DURATION}) <= 60"  # the taxi's performance_where

# Panels on the demo (February 2023, 28 batches of the taxi, all passed): rows and plotted columns.
EXPECTED: dict[str, dict[str, tuple[int, list[str]]]] = {
    "modelwatch-overview": {
        "Batch health": (29, ["gate"]),  # 28 batches and the closing empty state on 1 March
        "Rows per batch": (28, ["rows loaded"]),
        "Model performance per metric": (28 * 4, ["value"]),  # regression: mae, rmse, bias, r2
        "Label coverage": (28, ["labelled rows", "label coverage"]),
        "Prediction drift score": (28, ["prediction drift score"]),
        "Columns drifted and their share": (28, ["columns drifted", "share drifted"]),
        "Median of each numeric column": (28 * 6, ["p50"]),  # 4 numeric features, prediction, target
        "Missing share per column": (28 * 8, ["missing_share"]),  # 8 profiled columns
        "Latest failing tests": (0, ["failures"]),  # every demo batch passed; see the replay tests
        "Estimated and realised performance": (0, ["value"]),  # the taxi's target is derived: not estimated
    },
    "modelwatch-column-detail": {
        "Quantiles of $column": (28, ["p05", "p25", "p50", "p75", "p95", "mean"]),
        "Missing share of $column": (28, ["missing share"]),
        "Drift score of $column by method": (28 * 2, ["score"]),  # sources evidently and sql_psi
        "Categorical profile of $column": (28, ["distinct values", "top value share", "unseen category share"]),
    },
    "modelwatch-nyc-taxi": {
        "Trip duration: mean and median": (28, ["mean duration", "median duration"]),
        "Fare and distance: medians": (28, ["fare p50", "total p50", "distance p50"]),
        "Pickups per borough": (28, ["Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR",
                                     "unknown"]),
    },
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def _dashboards() -> dict[str, dict[str, Any]]:
    """The provisioned dashboards by file stem, parsed once (read only: tests must not change them)."""
    return {path.stem: grafana.load_dashboard(path) for path in grafana.dashboard_paths()}


# --------------------------------------------------------------------------- connections


@pytest.fixture(scope="module")
def reader(demo_settings: Settings) -> Iterator[psycopg.Connection]:
    with db.connect_as_reader(demo_settings.database_url) as conn:
        yield conn


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


def _run(conn: psycopg.Connection, text: str) -> Result:
    cursor = conn.execute(text)
    return Result([column.name for column in cursor.description], cursor.fetchall())


def _relations(conn: psycopg.Connection, text: str) -> set[tuple[str, str]]:
    """Every table or view the planner reads for `text` (EXPLAIN VERBOSE names each with its schema)."""
    plan = conn.execute("explain (verbose, format json) " + text).fetchone()[0]
    found: set[tuple[str, str]] = set()

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node:
            found.add((node["Schema"], node["Relation Name"]))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


# --------------------------------------------------------------------------- macro expansion


def test_macros_expand_as_grafanas_postgres_datasource() -> None:
    expanded = grafana.expand_macros(
        "SELECT $__time(batch_date::timestamp), x FROM marts.t WHERE $__timeFilter(batch_date) AND t < $__timeTo()",
        DEMO_RANGE,
    )
    assert expanded == (
        'SELECT batch_date::timestamp AS "time", x FROM marts.t '
        "WHERE batch_date BETWEEN '2023-02-01T00:00:00Z' AND '2023-02-28T23:59:59.999Z' "
        "AND t < '2023-02-28T23:59:59.999Z'"
    )
    with pytest.raises(UsageError, match=r"\$__timeGroupAlias"):
        grafana.expand_macros("SELECT $__timeGroupAlias(t, '1d')", DEMO_RANGE)


def test_variables_expand_as_grafanas_sql_datasources() -> None:
    # A single-value variable: quotes doubled, none added (the SQL writes '$column').
    text = "WHERE column_name = '$column' AND b = ${column:sqlstring} AND $__timeFilter(d)"
    assert grafana.expand_variables(text, {"column": "o'clock"}) == (
        "WHERE column_name = 'o''clock' AND b = 'o''clock' AND $__timeFilter(d)"
    )


def test_relative_times() -> None:
    moment = datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc)
    assert grafana.parse_relative("now-5y", moment) == datetime(2021, 11, 25, 15, 0, tzinfo=timezone.utc)
    assert grafana.parse_relative("now-7d", moment) == moment - timedelta(days=7)
    assert grafana.parse_relative("now-1M", datetime(2024, 3, 31, tzinfo=timezone.utc)) == datetime(
        2024, 2, 29, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- provisioning files


def test_datasource_is_the_read_only_role_with_a_fixed_uid() -> None:
    document = _yaml(DATASOURCES)
    assert document["apiVersion"] == 1
    (source,) = document["datasources"]
    assert source["uid"] == grafana.DATASOURCE_UID
    assert source["type"] == "grafana-postgresql-datasource"
    assert source["user"] == db.READER_ROLE
    assert source["secureJsonData"]["password"] == "${MODELWATCH_READER_PASSWORD}"
    compose = _yaml(COMPOSE)
    host, port = source["url"].split(":")
    assert host in compose["services"] and port == "5432"
    assert source["jsonData"]["database"] == compose["services"]["postgres"]["environment"]["POSTGRES_DB"]
    assert "MODELWATCH_READER_PASSWORD" in compose["services"]["grafana"]["environment"]


def test_dashboard_provider_reads_the_mounted_dashboards() -> None:
    document = _yaml(DASHBOARD_PROVIDER)
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    mounts = dict(_bind_mounts(_yaml(COMPOSE)["services"]["grafana"]))
    assert mounts[PROJECT_DIR / "grafana" / "dashboards"] == provider["options"]["path"]
    assert mounts[PROJECT_DIR / "grafana" / "provisioning"] == "/etc/grafana/provisioning"


@pytest.mark.parametrize("path", grafana.dashboard_paths(), ids=lambda path: path.name)
def test_dashboard_follows_the_conventions(path: Path, now: datetime) -> None:
    dashboard = _dashboards()[path.stem]
    assert dashboard["uid"] == path.stem
    assert "id" not in dashboard
    assert "modelwatch" in dashboard["tags"]
    assert dashboard["time"]["from"].startswith("now-") and dashboard["time"]["to"] == "now"
    # Without touching the time picker, the range covers the demo's February 2023.
    shown = grafana.default_time_range(dashboard, now)
    assert shown.start <= DEMO_RANGE.start and DEMO_RANGE.end <= shown.end
    panels = list(grafana.panels(dashboard))
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == grafana.DATASOURCE_UID, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == grafana.DATASOURCE_UID, panel["title"]
            assert target["format"] in ("time_series", "table")
    definitions = dashboard.get("templating", {}).get("list", [])
    for definition in definitions:
        assert definition["datasource"]["uid"] == grafana.DATASOURCE_UID
    # The monitor first (a variable's SQL may use the ones before it), one value, the taxi when it opens.
    monitor = definitions[0]
    assert monitor["name"] == grafana.MONITOR_VARIABLE and monitor["type"] == "query"
    assert grafana.variable_sql(monitor) == monitor["definition"] == MONITOR_SQL
    assert monitor["multi"] is False and monitor["includeAll"] is False
    assert monitor["current"]["value"] == TAXI
    for definition in definitions[1:]:
        assert MONITOR_FILTER in grafana.variable_sql(definition), definition["name"]
    for query in grafana.panel_queries(dashboard):
        assert MONITOR_FILTER in query.raw_sql, query.title


def test_alert_rules_reference_what_is_provisioned() -> None:
    document = _yaml(grafana.ALERT_RULES)
    assert document["apiVersion"] == 1
    dashboards = _dashboards()
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert [rule["uid"] for rule in rules] == [
        "modelwatch-dataset-drift-share", "modelwatch-batch-gate-failed", "modelwatch-mae-vs-trailing-median",
        "modelwatch-score-vs-trailing-median", "modelwatch-estimated-performance-drop", "modelwatch-monitor-stale"]
    for rule in rules:
        ref_ids = {step["refId"] for step in rule["data"]}
        assert rule["condition"] in ref_ids
        for step in rule["data"]:
            assert step["datasourceUid"] in (grafana.DATASOURCE_UID, grafana.EXPRESSION_UID)
            if step["datasourceUid"] == grafana.DATASOURCE_UID:
                assert step["model"]["format"] == "time_series"  # the only format Grafana alerts on
                assert step["model"]["datasource"]["uid"] == grafana.DATASOURCE_UID
                assert step["relativeTimeRange"]["from"] > step["relativeTimeRange"]["to"] == 0
            elif "expression" in step["model"]:
                assert step["model"]["expression"] in ref_ids
        panel_ids = {panel["id"] for panel in grafana.panels(dashboards[rule["dashboardUid"]])}
        assert rule["panelId"] in panel_ids
        # Titles and labels are expanded from the environment by provisioning: no `$` there.
        assert "$" not in rule["title"] and not any("$" in value for value in rule["labels"].values())
        assert not any("${" in value for value in rule["annotations"].values())
        # One instance per monitor and batch (per monitor for freshness): labels the summary names.
        assert "{{ $labels.monitor }}" in rule["annotations"]["summary"]
        if rule["uid"] != "modelwatch-monitor-stale":
            assert "{{ $labels.batch }}" in rule["annotations"]["summary"]
    parsed = grafana.alert_rules()
    assert [(rule.reducer, rule.threshold_type, rule.threshold) for rule in parsed] == [
        ("last", "gt", (0.5,)), ("last", "gt", (0.0,)), ("last", "gt", (1.2,)), ("last", "lt", (0.8,)),
        ("last", "lt", (0.0,)), ("last", "gt", (1.0,))]
    for rule in parsed:  # alert rules have no dashboard variables: every monitor in one query
        assert "$monitor" not in rule.raw_sql
        assert ("AS batch" in rule.raw_sql) == (rule.uid != "modelwatch-monitor-stale")  # freshness: per monitor


def _bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append(((COMPOSE.parent / source).resolve(), target))
    return mounts


def test_compose_mounts_exist_and_images_are_pinned() -> None:
    compose = _yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {"postgres", "adminer", "grafana", "pipeline", "prefect"}
    for name, service in services.items():
        for source, _ in _bind_mounts(service):
            assert source.exists(), f"{name} mounts {source}, which does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "$")):  # $: a host folder the user chooses
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
        if "build" in service:
            continue  # modelwatch's own image, built from the Dockerfile (test_compose.py)
        image, _, tag = service["image"].partition(":")
        assert tag and tag != "latest", f"{name}: image {service['image']} is not pinned"
    assert re.fullmatch(r"\d+\.\d+\.\d+", services["grafana"]["image"].split(":")[1])
    assert re.fullmatch(r"\d+", services["postgres"]["image"].split(":")[1])  # a pinned major version
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["grafana"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pgdata" in compose["volumes"]


def test_no_password_is_committed() -> None:
    compose = _yaml(COMPOSE)
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if "PASSWORD" in key:  # from the environment: required, or optional and empty by default
                assert re.fullmatch(r"\$\{\w+(:\?[^}]+|:-)\}", str(value)), f"{name}.{key} = {value!r}"
    for line in ENV_EXAMPLE.read_text().splitlines():
        key, _, value = line.partition("=")
        if "PASSWORD" in key and not line.startswith("#"):
            assert value == "", f".env.example sets {key}"
    for path in [*grafana.PROVISIONING_DIR.rglob("*.yaml"), *grafana.dashboard_paths()]:
        for key, value in _keyed_values(_yaml(path)):  # JSON is YAML too
            if "password" in key.lower():
                assert re.fullmatch(r"\$\{\w+\}", str(value)), f"{path}: {key} = {value!r}"


def _keyed_values(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a parsed YAML or JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from _keyed_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keyed_values(item)


def test_every_variable_the_stack_reads_is_documented() -> None:
    documented = {line.split("=")[0] for line in ENV_EXAMPLE.read_text().splitlines()
                  if line and not line.startswith("#")}
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text())) | set(re.findall(r"\$\{(\w+)", DATASOURCES.read_text()))
    assert used <= documented, used - documented


# --------------------------------------------------------------------------- the panels on the demo


def _panel_cases() -> list[Any]:
    return [pytest.param(dashboard, query, id=f"{dashboard['uid']}:{query.title}")
            for dashboard in _dashboards().values() for query in grafana.panel_queries(dashboard)]


def _expanded(dashboard: dict[str, Any], query: grafana.PanelQuery, now: datetime,
              values: dict[str, str] | None = None) -> str:
    """The panel's SQL as Grafana sends it: the dashboard's own time range, the variables' current
    values (the taxi, the saved column) overridden by `values`."""
    return grafana.expand(query.raw_sql, grafana.default_time_range(dashboard, now),
                          {**grafana.current_values(dashboard), **(values or {})})


def _panel_result(conn: psycopg.Connection, title: str, now: datetime,
                  dashboard_name: str = "modelwatch-overview", values: dict[str, str] | None = None) -> Result:
    dashboard = _dashboards()[dashboard_name]
    (query,) = [query for query in grafana.panel_queries(dashboard) if query.title == title]
    return _run(conn, _expanded(dashboard, query, now, values))


def _by_day(result: Result, *names: str) -> dict[date, Any]:
    """A panel's rows by batch day: {day: value} for one column, {day: (values...)} for several."""
    indexes = [result.columns.index(name) for name in names]
    days = [moment.date() for moment in result.column("time")]
    assert len(set(days)) == len(days), "one row per batch"
    return {day: (row[indexes[0]] if len(indexes) == 1 else tuple(row[i] for i in indexes))
            for day, row in zip(days, result.rows)}


def _series(result: Result) -> dict[str, dict[date, float | None]]:
    """A panel's series as Grafana (and the static page) names them, by day."""
    found = static_page.time_series(static_page.QueryResult(tuple(result.columns), tuple(result.rows)))
    return {series.name: {moment.date(): value for moment, value in zip(series.times, series.values)}
            for series in found}


def _per_batch(conn: psycopg.Connection, expression: str, where: str = "true",
               params: tuple[Any, ...] = ()) -> dict[date, Any]:
    """An aggregate of the taxi's raw rows per batch, computed here, independently of dbt."""
    query = f"select batch_date, {expression} from {TAXI_ROWS} where {where} group by 1"
    return dict(conn.execute(query, params).fetchall())


def _quoted(conn: psycopg.Connection, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


@pytest.mark.parametrize(("dashboard", "query"), _panel_cases())
def test_panel_query_as_reader(dashboard: dict[str, Any], query: grafana.PanelQuery,
                               reader: psycopg.Connection, now: datetime) -> None:
    rows, plotted = EXPECTED[dashboard["uid"]][query.title]
    assert grafana.current_values(dashboard)[grafana.MONITOR_VARIABLE] == TAXI  # as the dashboard opens
    result = _run(reader, _expanded(dashboard, query, now))
    assert len(result.rows) == rows
    time_column = "batch" if query.panel_type == "table" else "time"
    assert result.columns[0] == time_column
    assert all(isinstance(moment, (date, datetime)) for moment in result.column(time_column))
    if query.format == "time_series":  # Grafana wants them sorted by time
        assert result.column("time") == sorted(result.column("time"))
    for name in plotted:
        assert name in result.columns
        if name != "gate":
            assert all(value is None or isinstance(value, (int, float)) for value in result.column(name)), name


def test_every_dashboard_panel_is_expected() -> None:
    assert {uid: sorted(query.title for query in grafana.panel_queries(dashboard))
            for uid, dashboard in _dashboards().items()} == {uid: sorted(panels) for uid, panels in EXPECTED.items()}


@pytest.mark.parametrize(("dashboard", "query"), _panel_cases())
def test_panel_of_another_monitor_shows_no_data(dashboard: dict[str, Any], query: grafana.PanelQuery,
                                                reader: psycopg.Connection, now: datetime) -> None:
    result = _run(reader, _expanded(dashboard, query, now, {grafana.MONITOR_VARIABLE: NO_SUCH_MONITOR}))
    assert result.rows == []


def test_monitor_variable_lists_the_demos_monitor(reader: psycopg.Connection) -> None:
    for dashboard in _dashboards().values():
        definition = grafana.variable(dashboard, grafana.MONITOR_VARIABLE)
        assert _run(reader, grafana.variable_sql(definition)).rows == [(TAXI,)]


def test_batch_health_strip(reader: psycopg.Connection, now: datetime) -> None:
    result = _panel_result(reader, "Batch health", now)
    assert [moment.date() for moment in result.column("time")] == DEMO_DAYS + [date(2023, 3, 1)]
    assert result.column("gate") == ["passed"] * 28 + [None]


def test_rows_per_batch_match_the_raw_rows(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                           now: datetime) -> None:
    result = _panel_result(reader, "Rows per batch", now)
    loaded = _per_batch(demo_conn, "count(*)")
    assert _by_day(result, "rows loaded") == loaded
    assert sum(result.column("rows loaded")) == 64_783


def test_performance_series_per_metric(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                       now: datetime) -> None:
    series = _series(_panel_result(reader, "Model performance per metric", now))
    assert sorted(series) == ["bias", "mae", "r2", "rmse"]  # the regression metrics, one series each
    stored = demo_conn.execute(
        "select metric, batch_date, value from marts.model_performance where monitor = %s and class_name = ''",
        (TAXI,)).fetchall()
    assert {name: dict(points) for name, points in series.items()} == {
        metric: {day: value for name, day, value in stored if name == metric} for metric in series}
    for name in series:
        assert sorted(series[name]) == DEMO_DAYS, name
    # The MAE series against the raw rows: |prediction - duration| on trips in the model's domain.
    maes = _per_batch(demo_conn, f"avg(abs(predicted_duration_min - ({DURATION})))::float8", IN_DOMAIN)
    assert series["mae"] == pytest.approx(maes, rel=1e-9)
    biases = _per_batch(demo_conn, f"avg(predicted_duration_min - ({DURATION}))::float8", IN_DOMAIN)
    assert series["bias"] == pytest.approx(biases, rel=1e-9, abs=1e-12)
    assert all(series["rmse"][day] >= series["mae"][day] for day in DEMO_DAYS)
    assert 3 < min(series["mae"].values()) and max(series["mae"].values()) > 10  # the 7th: 10.3 minutes


def test_label_coverage_per_batch(reader: psycopg.Connection, demo_conn: psycopg.Connection, now: datetime) -> None:
    result = _panel_result(reader, "Label coverage", now)
    # Every taxi trip has its duration (dropoff - pickup): all rows are labelled.
    labelled = _per_batch(demo_conn, f"count({DURATION})")
    assert _by_day(result, "labelled rows") == labelled == _per_batch(demo_conn, "count(*)")
    assert result.column("label coverage") == [1.0] * 28


def test_missing_share_per_column(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                  demo_settings: Settings, now: datetime) -> None:
    result = _panel_result(reader, "Missing share per column", now)
    monitor = demo_settings.monitor(TAXI)
    profiled = sorted(monitor.numeric_columns + monitor.categorical_columns)
    assert sorted(set(result.column("metric"))) == profiled == sorted(
        ["passenger_count", "trip_distance", "fare_amount", "total_amount", "pu_location_id", "do_location_id",
         "predicted_duration_min", "duration_min"])
    plotted = {(moment.date(), metric): share for moment, metric, share in result.rows}
    counted = _per_batch(demo_conn, "avg((passenger_count is null)::int)::float8")
    for day, share in counted.items():  # passenger_count is the one column with gaps in February 2023
        assert plotted[(day, "passenger_count")] == pytest.approx(share, abs=1e-12)
    assert 0.06 < min(counted.values()) and max(counted.values()) < 0.12
    assert plotted[(date(2023, 2, 1), "fare_amount")] == 0


def test_median_of_each_numeric_column(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                       demo_settings: Settings, now: datetime) -> None:
    series = _series(_panel_result(reader, "Median of each numeric column", now))
    assert sorted(series) == sorted(demo_settings.monitor(TAXI).numeric_columns)
    fares = _per_batch(demo_conn, "percentile_cont(0.5) within group (order by fare_amount)")
    durations = _per_batch(demo_conn, f"percentile_cont(0.5) within group (order by {DURATION})")
    assert series["fare_amount"] == pytest.approx(fares)
    assert series["duration_min"] == pytest.approx(durations)
    assert all(len(points) == 28 for points in series.values())


def test_taxi_dashboard_reads_daily_trips(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                          now: datetime) -> None:
    duration = _panel_result(reader, "Trip duration: mean and median", now, "modelwatch-nyc-taxi")
    assert _by_day(duration, "median duration") == pytest.approx(
        _per_batch(demo_conn, f"percentile_cont(0.5) within group (order by {DURATION})"))
    assert _by_day(duration, "mean duration") == pytest.approx(_per_batch(demo_conn, f"avg({DURATION})::float8"))
    fares = _panel_result(reader, "Fare and distance: medians", now, "modelwatch-nyc-taxi")
    assert _by_day(fares, "fare p50") == pytest.approx(
        _per_batch(demo_conn, "percentile_cont(0.5) within group (order by fare_amount)"))
    assert _by_day(fares, "distance p50") == pytest.approx(
        _per_batch(demo_conn, "percentile_cont(0.5) within group (order by trip_distance)"))
    pickups = _panel_result(reader, "Pickups per borough", now, "modelwatch-nyc-taxi")
    boroughs = pickups.columns[1:]
    totals = {day: sum(counts) for day, counts in _by_day(pickups, *boroughs).items()}
    assert totals == _per_batch(demo_conn, "count(*)")  # every trip has one borough, unknown included
    manhattan = dict(demo_conn.execute(
        f"""select r.batch_date, count(*) from {TAXI_ROWS} as r
            join staging.taxi_zones as z on z.location_id::text = r.pu_location_id
            where z.borough = 'Manhattan' group by 1""").fetchall())
    assert _by_day(pickups, "Manhattan") == manhattan
    assert 0.3 < sum(manhattan.values()) / sum(totals.values()) < 0.7


def test_column_detail_for_every_column(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                        demo_settings: Settings, now: datetime) -> None:
    dashboard = _dashboards()["modelwatch-column-detail"]
    definition = grafana.variable(dashboard, "column")
    taxi = {grafana.MONITOR_VARIABLE: TAXI}
    columns = [row[0] for row in _run(reader, grafana.expand_variables(grafana.variable_sql(definition), taxi)).rows]
    monitor = demo_settings.monitor(TAXI)
    assert sorted(columns) == sorted(monitor.numeric_columns + monitor.categorical_columns)  # the taxi's only
    assert definition["current"]["value"] in columns
    none_for_another = grafana.expand_variables(grafana.variable_sql(definition),
                                                {grafana.MONITOR_VARIABLE: NO_SUCH_MONITOR})
    assert _run(reader, none_for_another).rows == []
    drift_scored = {name for name, _ in monitor.drift_columns}  # feature_drift's columns
    reference = {row[0] for row in demo_conn.execute(f"select distinct pu_location_id from raw.{TAXI}__reference")}
    for column in columns:
        results = {query.title: _run(reader, _expanded(dashboard, query, now, {**taxi, "column": column}))
                   for query in grafana.panel_queries(dashboard)}
        for title in ("Quantiles of $column", "Missing share of $column", "Categorical profile of $column"):
            assert len(results[title].rows) == 28, (title, column)
        p50 = results["Quantiles of $column"].column("p50")
        profile = results["Categorical profile of $column"]
        distinct, unseen = profile.column("distinct values"), profile.column("unseen category share")
        if column in monitor.categorical_columns:
            counted = _per_batch(demo_conn, f"count(distinct {_quoted(demo_conn, column)})")
            assert set(p50) == {None} and _by_day(profile, "distinct values") == counted
            assert None not in unseen and max(unseen) < 0.05  # the warn bound
        else:
            expression = DURATION if column == "duration_min" else _quoted(demo_conn, column)
            medians = _per_batch(demo_conn, f"percentile_cont(0.5) within group (order by {expression})")
            assert _by_day(results["Quantiles of $column"], "p50") == pytest.approx(medians), column
            assert set(distinct) == {None} and set(unseen) == {None}
        drift = results["Drift score of $column by method"]
        assert len(drift.rows) == (56 if column in drift_scored else 0), column
        if drift.rows:
            assert {name.split(":")[0] for name in drift.column("metric")} == {"evidently", "sql_psi"}
    # The unseen share of the pickup zone, independently: rows whose zone the reference never had.
    profile = _panel_result(reader, "Categorical profile of $column", now, "modelwatch-column-detail",
                            {**taxi, "column": "pu_location_id"})
    shares = _per_batch(demo_conn, "avg((pu_location_id <> all(%s))::int)::float8", params=(sorted(reference),))
    assert _by_day(profile, "unseen category share") == pytest.approx(shares, abs=1e-12)
    assert 0 < max(shares.values()) < 0.002


# --------------------------------------------------------------------------- what the reader may do


def test_every_query_reads_marts_only(reader: psycopg.Connection, now: datetime) -> None:
    read: set[tuple[str, str]] = set()
    queries = grafana.all_queries(now, dashboards=_dashboards().values())  # as the dashboards open
    assert {query.kind for query in queries} == {"variable", "panel", "alert"}
    for query in queries:
        relations = _relations(reader, query.sql)
        assert relations and {schema for schema, _ in relations} == {"marts"}, (query.label, relations)
        read |= relations
    assert {table for _, table in read} == {  # published_batches: row-level security, the batches readers see
        "batch_health", "model_performance", "column_quality", "test_results", "feature_drift", "dataset_drift",
        "batch_checks", "daily_trips", "published_batches", "estimated_performance", "monitor_freshness"}


def test_all_queries_once_per_variable_value(reader: psycopg.Connection, demo_settings: Settings) -> None:
    """With the variables' values run (as bench_panels does): `column` is listed per monitor,
    each column-detail panel comes once per (monitor, column), each other panel once per monitor."""

    def values(text: str) -> list[Any]:
        assert "$" not in text  # chained: $monitor is expanded before the column variable runs
        return [row[0] for row in _run(reader, text).rows]

    queries = grafana.all_queries(DEMO_RANGE.end, DEMO_RANGE, values, _dashboards().values())
    labels = [query.label for query in queries]
    assert len(set(labels)) == len(labels)
    assert "modelwatch-column-detail: variable $column [monitor=nyc_taxi]" in labels
    assert "modelwatch-column-detail: Quantiles of fare_amount [monitor=nyc_taxi]" in labels
    assert "modelwatch-overview: Rows per batch [monitor=nyc_taxi]" in labels
    monitor = demo_settings.monitor(TAXI)
    columns = len(monitor.numeric_columns + monitor.categorical_columns)
    panels = sum(len(EXPECTED[uid]) * (columns if uid == "modelwatch-column-detail" else 1) for uid in EXPECTED)
    assert sum(query.kind == "panel" for query in queries) == panels
    assert sum(query.kind == "variable" for query in queries) == len(EXPECTED) + 1  # 3 x $monitor, 1 x $column
    assert sum(query.kind == "alert" for query in queries) == len(grafana.alert_rules())


def test_reader_reads_every_mart(reader: psycopg.Connection, demo_conn: psycopg.Connection) -> None:
    marts = [name for (name,) in demo_conn.execute(
        "select table_name from information_schema.tables where table_schema = 'marts' order by 1").fetchall()]
    assert {"batch_health", "column_quality", "model_performance", "test_results", "daily_trips"} <= set(marts)
    for name in marts:  # every row: the demo's 28 batches are all published
        count = sql.SQL("select count(*) from marts.{}").format(sql.Identifier(name))
        assert reader.execute(count).fetchone() == demo_conn.execute(count).fetchone(), name


@pytest.mark.parametrize("statement", [
    f"select count(*) from {TAXI_ROWS}",
    f"select count(*) from raw.{TAXI}__reference",
    "select count(*) from raw.batches",
    "select count(*) from staging.int_value_counts",
    "insert into marts.batch_health (monitor, batch_date, status) values ('x', '2000-01-01', 'passed')",
    "update marts.model_performance set value = 0",
    "delete from marts.column_quality",
    "truncate marts.daily_trips",
    "create table marts.grafana_was_here (x int)",
    "create table public.grafana_was_here (x int)",
    "create schema grafana_was_here",
])
def test_reader_is_refused(reader: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        reader.execute(statement)
    assert refused.value.sqlstate == "42501"


# --------------------------------------------------------------------------- alert rules on the demo


def _rule(uid: str) -> grafana.AlertRule:
    (rule,) = [rule for rule in grafana.alert_rules() if rule.uid == uid]
    return rule


def _evaluate(conn: psycopg.Connection, uid: str,
              now: datetime | None = None) -> tuple[Result, dict[tuple[str, ...], float]]:
    """The rule evaluated at `now` (default: now), as Grafana would: its query for its relative
    range, then B and C. The demo's batches were tested minutes ago, inside the rules' 7-day window.
    Every rule's instances are per monitor and batch (its string columns)."""
    rule = _rule(uid)
    result = _run(conn, grafana.expand(rule.raw_sql, rule.time_range(now or datetime.now(timezone.utc))))
    assert result.columns[:2] == ["time", "monitor"] and "batch" in result.columns
    assert result.column("time") == sorted(result.column("time"))
    return result, grafana.firing(rule, result.columns, result.rows)


def test_gate_alert_is_quiet_on_the_demo(reader: psycopg.Connection) -> None:
    result, fired = _evaluate(reader, "modelwatch-batch-gate-failed")
    assert sorted(zip(result.column("monitor"), result.column("batch"))) == [
        (TAXI, day.isoformat()) for day in DEMO_DAYS]
    assert set(result.column("failed")) == {0}
    assert fired == {}


def test_drift_alert_fires_for_the_seventh(reader: psycopg.Connection, demo_conn: psycopg.Connection) -> None:
    result, fired = _evaluate(reader, "modelwatch-dataset-drift-share")
    assert len(result.rows) == 28
    # Independently: the share of Evidently's scored columns that drifted, from feature_drift.
    shares = dict(demo_conn.execute(
        """select batch_date::text, avg(drifted::int)::float8 from marts.feature_drift
           where monitor = %s and source = 'evidently' and score is not null group by 1""", (TAXI,)).fetchall())
    assert fired == {(TAXI, day): pytest.approx(share) for day, share in shares.items() if share > 0.5}
    assert fired == {(TAXI, "2023-02-07"): pytest.approx(4 / 7)}  # 4 of 7 columns drifted that day


def test_mae_alert_against_its_trailing_median(reader: psycopg.Connection, demo_conn: psycopg.Connection) -> None:
    result, fired = _evaluate(reader, "modelwatch-mae-vs-trailing-median")
    maes = [mae for _, mae in demo_conn.execute(
        "select batch_date, value from marts.model_performance where monitor = %s and metric = 'mae'"
        " order by batch_date", (TAXI,)).fetchall()]
    assert len(maes) == 28
    ratios = {DEMO_DAYS[i].isoformat(): maes[i] / statistics.median(maes[max(0, i - 7):i]) for i in range(1, 28)}
    assert dict(zip(result.column("batch"), result.column("mae_vs_trailing_median"))) == pytest.approx(ratios)
    assert len(result.rows) == 27 and set(result.column("monitor")) == {TAXI}  # the first batch has no history
    assert sorted(day for _, day in fired) == ["2023-02-07", "2023-02-08", "2023-02-10", "2023-02-15"]
    assert fired[(TAXI, "2023-02-07")] == pytest.approx(ratios["2023-02-07"]) and ratios["2023-02-07"] > 2.5


def test_score_alert_has_no_classifier_on_the_demo(reader: psycopg.Connection) -> None:
    result, fired = _evaluate(reader, "modelwatch-score-vs-trailing-median")
    assert result.rows == [] and fired == {}  # the taxi is a regression: it has neither roc_auc nor accuracy


# --------------------------------------------------------------------------- rules and panels on made-up marts

MADE_UP_TESTED = datetime.now(timezone.utc) - timedelta(hours=1)
# monitor -> (task's metrics by name: values per batch, batch dates). None: not computable (one class).
MADE_UP: dict[str, tuple[dict[str, list[float | None]], list[date]]] = {
    # regression, monthly: the last MAE is 30% above the median of the 7 before it
    "rent": ({"mae": [2, 2, 2, 2.2, 2, 2, 2, 2, 2.6], "r2": [0.5] * 9},
             [date(2022, month, 1) for month in range(1, 10)]),
    # regression on the same days with a steady MAE: its history must not mix with rent's
    "steady": ({"mae": [5.0] * 9}, [date(2022, month, 1) for month in range(1, 10)]),
    # binary, weekly with a missing week: roc_auc falls 22% below its median (one batch had one class)
    "churn": ({"roc_auc": [0.9, 0.9, None, 0.9, 0.9, 0.9, 0.9, 0.9, 0.7], "accuracy": [0.9] * 9},
              [date(2023, 1, 2) + timedelta(weeks=n) for n in (0, 1, 2, 3, 4, 6, 7, 8, 9)]),
    # multiclass, daily: accuracy falls 10% (no alert); per-class recalls are not its primary metric
    "species": ({"accuracy": [0.8] * 8 + [0.72], "macro_f1": [0.7] * 9, "recall: a": [0.2] * 9,
                 "recall: b": [0.9] * 9}, [date(2023, 3, 1) + timedelta(days=n) for n in range(9)]),
}


@pytest.fixture(scope="module")
def made_up_marts(server_url: str, demo_settings: Settings) -> Iterator[psycopg.Connection]:
    """A database whose marts.model_performance and marts.batch_health have the demo's columns
    and types, filled with the rows of MADE_UP: monitors of every task and period."""
    with psycopg.connect(demo_settings.database_url) as demo:
        definitions = {table: [sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in
                               demo.execute("select column_name, data_type from information_schema.columns"
                                            " where table_schema = 'marts' and table_name = %s"
                                            " order by ordinal_position", (table,)).fetchall()]
                       for table in ("model_performance", "batch_health")}
    with db.scratch_database(server_url, scratch_name("mw_made_up")) as url, \
            psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create schema marts")
        for table, columns in definitions.items():
            conn.execute(sql.SQL("create table marts.{} ({})").format(sql.Identifier(table),
                                                                       sql.SQL(", ").join(columns)))
        for monitor, (metrics, days) in MADE_UP.items():
            for day in days:
                conn.execute("insert into marts.batch_health (monitor, batch_date, status, rows_loaded, tested_at)"
                             " values (%s, %s, 'passed', 100, %s)", (monitor, day, MADE_UP_TESTED))
            for name, values in metrics.items():
                metric, _, class_name = name.partition(": ")
                for day, value in zip(days, values):
                    conn.execute(
                        "insert into marts.model_performance (monitor, batch_date, metric, class_name, value, n,"
                        " batch_rows, labelled_rows, label_coverage) values (%s, %s, %s, %s, %s, 80, 100, 80, 0.8)",
                        (monitor, day, metric, class_name, value))
        yield conn


def test_performance_rules_per_monitor_and_task(made_up_marts: psycopg.Connection) -> None:
    result, fired = _evaluate(made_up_marts, "modelwatch-mae-vs-trailing-median")
    assert fired == {("rent", "2022-09-01"): pytest.approx(2.6 / 2)}  # steady's 5s are not rent's history
    ratios = dict(zip(zip(result.column("monitor"), result.column("batch")), result.column("mae_vs_trailing_median")))
    assert ratios[("rent", "2022-04-01")] == pytest.approx(1.1) and ratios[("steady", "2022-09-01")] == 1
    assert len(ratios) == 8 + 8
    result, fired = _evaluate(made_up_marts, "modelwatch-score-vs-trailing-median")
    # churn is watched on roc_auc (not its accuracy), species on accuracy; rent and steady on neither.
    assert {(monitor, metric) for monitor, metric in zip(result.column("monitor"), result.column("metric"))} == {
        ("churn", "roc_auc"), ("species", "accuracy")}
    assert len(result.rows) == 7 + 8  # churn: 8 batches with a roc_auc, less the first; species: 9 less 1
    assert fired == {("churn", "roc_auc", "2023-03-06"): pytest.approx(0.7 / 0.9)}  # species: 0.72 / 0.8 = 0.9


def test_overview_panels_for_other_tasks_and_periods(made_up_marts: psycopg.Connection) -> None:
    everything = grafana.TimeRange.of_days(date(2022, 1, 1), date(2023, 12, 31))
    dashboard = _dashboards()["modelwatch-overview"]
    queries = {query.title: query for query in grafana.panel_queries(dashboard)}

    def panel(title: str, monitor: str) -> Result:
        return _run(made_up_marts, grafana.expand(queries[title].raw_sql, everything,
                                                  {grafana.MONITOR_VARIABLE: monitor}))

    series = _series(panel("Model performance per metric", "species"))
    assert sorted(series) == ["accuracy", "macro_f1", "recall: a", "recall: b"]  # one series per class's recall
    assert all(len(points) == 9 for points in series.values())
    assert sorted(_series(panel("Model performance per metric", "churn"))) == ["accuracy", "roc_auc"]
    assert panel("Label coverage", "churn").column("label coverage") == [0.8] * 9
    # The batch health strip closes each run of batches one period on: a month, a week, a day.
    for monitor, closing in [("rent", [date(2022, 10, 1)]), ("churn", [date(2023, 2, 6), date(2023, 3, 13)]),
                             ("species", [date(2023, 3, 10)])]:
        health = panel("Batch health", monitor)
        days = MADE_UP[monitor][1]
        assert [moment.date() for moment in health.column("time")] == sorted(days + closing), monitor
        assert [moment.date() for moment, gate in health.rows if gate is None] == closing, monitor


# --------------------------------------------------------------------------- a failed batch, replayed

# A one-batch build (load, drift, dbt) takes about 12 s here, longer than the pace: the test
# holds the start-to-start contract; the waiting shows only with batches quicker than the pace.
PACE_S = 3.0


@dataclass(frozen=True)
class Replayed:
    settings: Settings
    exit_code: int
    output: str
    seconds: float


def _short_fifteenth(path: Path) -> Path:
    """All of 14 February 2023 and 100 trips of the 15th: the 15th fails row_count_min (500)."""
    table = pq.read_table(FEBRUARY)
    days = pc.cast(table["lpep_pickup_datetime"], "date32")
    fourteenth = table.filter(pc.equal(days, date(2023, 2, 14)))
    fifteenth = table.filter(pc.equal(days, date(2023, 2, 15))).slice(0, 100)
    pq.write_table(pa.concat_tables([fourteenth, fifteenth]), path)
    return path


@pytest.fixture(scope="module")
def replayed(templates: Templates, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    """`modelwatch backfill --pace` over 14 and 15 February (the 15th fails) in a database of its own."""
    home = tmp_path_factory.mktemp("replay_home")
    with trained_database(templates, server_url, home, "replay") as settings:
        url = settings.database_url
        batches = _short_fifteenth(home / "green_tripdata_2023-02-short.parquet")
        clock = time.monotonic()
        result = CliRunner().invoke(main, ["backfill", "--file", str(batches), "--pace", str(PACE_S)],
                                    env={"MODELWATCH_DATABASE_URL": url, "MODELWATCH_HOME": str(home)})
        yield Replayed(settings, result.exit_code, result.output, time.monotonic() - clock)


def test_replay_builds_each_batch_on_its_own(replayed: Replayed) -> None:
    assert replayed.exit_code == 1, replayed.output  # a batch failed its contract
    (error,) = [line for line in replayed.output.splitlines() if line.startswith("Error:")]
    assert error.startswith("Error: 1 batch(es) failed their data contract: 2023-02-15: row_count_min = 100,")
    with psycopg.connect(replayed.settings.database_url) as conn:
        batches = conn.execute(
            "select batch_date, status, rows_loaded, started_at from raw.batches where monitor = %s"
            " order by batch_date", (TAXI,)).fetchall()
        builds = conn.execute(
            "select batch_date, count(distinct invocation_id) from marts.test_results group by 1 order by 1"
        ).fetchall()
        invocations = conn.execute("select count(distinct invocation_id) from marts.test_results").fetchone()[0]
    assert [row[:3] for row in batches] == [(date(2023, 2, 14), "passed", 2_466), (date(2023, 2, 15), "failed", 100)]
    assert builds == [(date(2023, 2, 14), 1), (date(2023, 2, 15), 1)] and invocations == 2
    # One every PACE_S seconds, start to start (less a little for the set-up before each load).
    assert (batches[1][3] - batches[0][3]).total_seconds() >= PACE_S - 0.5
    assert replayed.seconds >= PACE_S


def test_failed_batch_on_the_panels_and_the_gate_alert(replayed: Replayed, now: datetime) -> None:
    with db.connect_as_reader(replayed.settings.database_url) as conn:
        health = _panel_result(conn, "Batch health", now)
        failing = _panel_result(conn, "Latest failing tests", now)
        result, fired = _evaluate(conn, "modelwatch-batch-gate-failed")
    assert list(zip(health.column("time"), health.column("gate"))) == [
        (datetime(2023, 2, 14), "passed"), (datetime(2023, 2, 15), "failed"), (datetime(2023, 2, 16), None)]
    assert set(failing.column("batch")) == {date(2023, 2, 15)}
    assert {(row[1], row[3]) for row in failing.rows} >= {
        ("contract_row_count_min", "fail"), ("contract_row_count_vs_trailing_median", "fail")}
    assert dict(zip(result.column("batch"), result.column("failed"))) == {"2023-02-14": 0, "2023-02-15": 1}
    assert fired == {(TAXI, "2023-02-15"): 1.0}


def test_pace_must_not_be_negative(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["backfill", "--file", str(FEBRUARY), "--pace", "-1"],
                                env={"MODELWATCH_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "Invalid value for '--pace'" in result.output


# --------------------------------------------------------------------------- the static page


def _ink(png: Path) -> tuple[float, int]:
    """Share of pixels that are not white, and pixels of the batch health strip's green."""
    rgb = read_png(png)[..., :3].astype(int)
    not_white = float((rgb.min(axis=2) < 240).mean())
    green = int((abs(rgb - STATE_GREEN).max(axis=2) <= 4).sum())
    return not_white, green


def _write_png(path: Path, pixels: list[list[tuple[int, int, int]]]) -> Path:
    """An RGB PNG whose rows cycle through the five filter types, to exercise the reader."""
    width = len(pixels[0])
    flat = [bytes(channel for pixel in row for channel in pixel) for row in pixels]
    raw = bytearray()
    for y, row in enumerate(flat):
        kind, above = y % 5, flat[y - 1] if y else bytes(len(row))
        raw.append(kind)
        for i, value in enumerate(row):
            left, up, upper_left = (row[i - 3] if i >= 3 else 0), above[i], (above[i - 3] if i >= 3 else 0)
            estimate = left + up - upper_left
            paeth = min((abs(estimate - left), 0, left), (abs(estimate - up), 1, up),
                        (abs(estimate - upper_left), 2, upper_left))[2]
            predictor = (0, left, up, (left + up) // 2, paeth)[kind]
            raw.append((value - predictor) % 256)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, len(pixels), 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw)))
                     + chunk(b"IEND", b""))
    return path


def test_png_reader_undoes_every_filter(tmp_path: Path) -> None:
    pixels = [[((x * 37 + y * 11) % 256, (x * y) % 256, 255 - x) for x in range(23)] for y in range(11)]
    assert read_png(_write_png(tmp_path / "noise.png", pixels)).tolist() == [[list(p) for p in row] for row in pixels]
    white = _write_png(tmp_path / "white.png", [[(255, 255, 255)] * 40 for _ in range(30)])
    assert _ink(white) == (0.0, 0)  # what a blank screenshot gives


@pytest.mark.skipif(chromium_path() is None, reason="chromium not installed: run `make browser`")
def test_dashboard_page_opens_in_chromium(demo_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "dashboard.html"
    env = {"MODELWATCH_DATABASE_URL": demo_settings.database_url, "MODELWATCH_HOME": str(demo_settings.home)}
    result = CliRunner().invoke(main, ["dashboard", "--out", str(out), "--monitor", TAXI], env=env)
    assert result.exit_code == 0, result.output
    assert f"dashboard: {out}" in result.output
    assert "not drawn" not in result.output  # every panel, the drift marts' too
    # One browser run: console and text first, then the screenshot (the charts draw as the page loads).
    visited = visit(out, tmp_path / "profile", settle_seconds=1.0, screenshot=tmp_path / "dashboard.png")
    assert visited.problems == []
    assert "modelwatch: monitoring overview of nyc_taxi" in visited.text  # the page names its monitor
    assert "<title>modelwatch: monitoring overview of nyc_taxi</title>" in out.read_text()
    for title in EXPECTED["modelwatch-overview"]:
        assert title in visited.text
    assert "No failing tests in this time range" in visited.text
    assert visited.screenshot is not None
    not_white, green = _ink(visited.screenshot)
    assert not_white > 0.10
    assert green > 20_000  # the 28 green days of the batch health strip


def test_static_page_of_the_default_monitor(demo_settings: Settings, tmp_path: Path) -> None:
    """Without a monitor, the default one (the taxi); every panel drawn, with the demo's rows."""
    page = static_page.render_overview(demo_settings, tmp_path / "page.html")
    assert page.monitor == TAXI and page.failed == ()
    assert page.time_range == DEMO_RANGE  # the monitor's batches
    assert {panel.query.title: panel.rows for panel in page.panels} == {
        title: rows for title, (rows, _) in EXPECTED["modelwatch-overview"].items()}


def test_static_page_of_a_monitor_without_batches(demo_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=NO_SUCH_MONITOR):  # not declared
        static_page.render_overview(demo_settings, tmp_path / "page.html", NO_SUCH_MONITOR)
    with db.connect(demo_settings.database_url) as conn, \
            pytest.raises(UsageError, match=f"no batches of monitor {NO_SUCH_MONITOR} in marts.batch_health"):
        static_page.data_time_range(conn, NO_SUCH_MONITOR)
