"""Grafana without Grafana: provisioning files, every panel's and alert rule's SQL, the static page.

Grafana and Docker cannot run here, so the tests do what Grafana would: expand
each query's macros and variables for the time range Grafana would use, run it
as modelwatch_reader (the datasource's login) against the demo's marts, and
check the columns and figures the panel plots. The provisioning files are
checked against each other and against docker-compose.yml.
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

from modelwatch import db, grafana
from modelwatch.cli import main
from modelwatch.config import PROJECT_DIR, Settings
from modelwatch.errors import UsageError

from .chromium import chromium_path, visit
from .conftest import FEBRUARY, trained_database
from .png import read_png

COMPOSE = PROJECT_DIR / "docker-compose.yml"
ENV_EXAMPLE = PROJECT_DIR / ".env.example"
DATASOURCES = grafana.PROVISIONING_DIR / "datasources" / "modelwatch.yaml"
DASHBOARD_PROVIDER = grafana.PROVISIONING_DIR / "dashboards" / "modelwatch.yaml"
DEMO_DAYS = [date(2023, 2, 1) + timedelta(days=n) for n in range(28)]
DEMO_RANGE = grafana.TimeRange.of_days(DEMO_DAYS[0], DEMO_DAYS[-1])
STATE_GREEN = (115, 191, 105)  # #73BF69, the "passed" colour of the batch health strip

# Overview panels on the demo (February 2023, 28 batches, all passed): rows and plotted columns.
OVERVIEW_EXPECTED: dict[str, tuple[int, list[str]]] = {
    "Batch health": (29, ["gate"]),  # 28 batches and the closing empty state on 1 March
    "Rows per batch": (28, ["rows loaded"]),
    "Model error (minutes): MAE, RMSE and bias": (28, ["MAE", "RMSE", "bias"]),
    "Prediction drift score": (28, ["prediction drift score"]),
    "Columns drifted and their share": (28, ["columns drifted", "share drifted"]),
    "Fare and distance: p50 and p95": (28, ["fare p50", "fare p95", "distance p50", "distance p95"]),
    "Missing share per column": (28 * 8, ["missing_share"]),  # 8 monitored columns
    "Latest failing tests": (0, ["failures"]),  # every demo batch passed; see the replay tests
}
COLUMN_DETAIL_EXPECTED: dict[str, tuple[int, list[str]]] = {
    "Quantiles of $column": (28, ["p05", "p25", "p50", "p75", "p95", "mean"]),
    "Missing share of $column": (28, ["missing share"]),
    "Drift score of $column by method": (28 * 2, ["score"]),  # sources evidently and sql_psi
    "Categorical profile of $column": (28, ["distinct values", "top value share", "unknown zone share"]),
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
    for definition in dashboard.get("templating", {}).get("list", []):
        assert definition["datasource"]["uid"] == grafana.DATASOURCE_UID


def test_alert_rules_reference_what_is_provisioned() -> None:
    document = _yaml(grafana.ALERT_RULES)
    assert document["apiVersion"] == 1
    dashboards = _dashboards()
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert [rule["uid"] for rule in rules] == [
        "modelwatch-dataset-drift-share", "modelwatch-batch-gate-failed", "modelwatch-mae-vs-trailing-median"]
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
    parsed = grafana.alert_rules()
    assert [(rule.reducer, rule.threshold_type, rule.threshold) for rule in parsed] == [
        ("last", "gt", (0.5,)), ("last", "gt", (0.0,)), ("last", "gt", (1.2,))]


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
    assert set(services) == {"postgres", "adminer", "grafana"}
    for name, service in services.items():
        for source, _ in _bind_mounts(service):
            assert source.exists(), f"{name} mounts {source}, which does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
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
            if "PASSWORD" in key:  # required from the environment, no default
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}.{key} = {value!r}"
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
    """The panel's SQL as Grafana sends it: the dashboard's own time range, the variables' current values."""
    if values is None:
        values = grafana.current_values(dashboard)
    return grafana.expand(query.raw_sql, grafana.default_time_range(dashboard, now), values)


@pytest.mark.parametrize(("dashboard", "query"), _panel_cases())
def test_panel_query_as_reader(dashboard: dict[str, Any], query: grafana.PanelQuery,
                               reader: psycopg.Connection, now: datetime) -> None:
    expected = OVERVIEW_EXPECTED if dashboard["uid"] == "modelwatch-overview" else COLUMN_DETAIL_EXPECTED
    rows, plotted = expected[query.title]
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


def test_batch_health_strip(reader: psycopg.Connection, now: datetime) -> None:
    result = _panel_result(reader, "Batch health", now)
    assert [moment.date() for moment in result.column("time")] == DEMO_DAYS + [date(2023, 3, 1)]
    assert result.column("gate") == ["passed"] * 28 + [None]


def test_rows_per_batch_match_the_raw_trips(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                            now: datetime) -> None:
    result = _panel_result(reader, "Rows per batch", now)
    loaded = dict(demo_conn.execute("select batch_date, count(*) from raw.trips group by 1").fetchall())
    assert dict(zip((moment.date() for moment in result.column("time")), result.column("rows loaded"))) == loaded
    assert sum(result.column("rows loaded")) == 64_783


def test_missing_share_per_column(reader: psycopg.Connection, demo_conn: psycopg.Connection, now: datetime) -> None:
    result = _panel_result(reader, "Missing share per column", now)
    assert sorted(set(result.column("metric"))) == sorted(
        ["passenger_count", "trip_distance", "fare_amount", "total_amount", "pu_location_id", "do_location_id",
         "predicted_duration_min", "duration_min"])
    plotted = {(moment.date(), metric): share for moment, metric, share in result.rows}
    counted = demo_conn.execute(
        "select batch_date, avg((passenger_count is null)::int)::float8 from raw.trips group by 1").fetchall()
    for day, share in counted:  # passenger_count is the one column with gaps in February 2023
        assert plotted[(day, "passenger_count")] == pytest.approx(share, abs=1e-12)
    assert plotted[(date(2023, 2, 1), "fare_amount")] == 0


def test_fare_and_distance_quantiles(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                     now: datetime) -> None:
    result = _panel_result(reader, "Fare and distance: p50 and p95", now)
    medians = dict(demo_conn.execute(
        "select batch_date, percentile_cont(0.5) within group (order by fare_amount) from raw.trips group by 1"
    ).fetchall())
    for moment, fare_p50, fare_p95, distance_p50, distance_p95 in result.rows:
        assert fare_p50 == pytest.approx(medians[moment.date()])
        assert fare_p50 <= fare_p95 and distance_p50 <= distance_p95


def _panel_result(conn: psycopg.Connection, title: str, now: datetime,
                  dashboard_name: str = "modelwatch-overview") -> Result:
    dashboard = _dashboards()[dashboard_name]
    (query,) = [query for query in grafana.panel_queries(dashboard) if query.title == title]
    return _run(conn, _expanded(dashboard, query, now))


def test_column_detail_for_every_column(reader: psycopg.Connection, demo_conn: psycopg.Connection,
                                        demo_settings: Settings, now: datetime) -> None:
    dashboard = _dashboards()["modelwatch-column-detail"]
    definition = grafana.variable(dashboard, "column")
    columns = [row[0] for row in _run(reader, grafana.variable_sql(definition)).rows]
    monitoring = demo_settings.monitoring
    assert sorted(columns) == sorted(monitoring.numeric_columns + monitoring.categorical_features)
    assert definition["current"]["value"] in columns
    drift_scored = set(monitoring.features) | {monitoring.prediction}  # feature_drift's columns
    for column in columns:
        results = {query.title: _run(reader, _expanded(dashboard, query, now, {"column": column}))
                   for query in grafana.panel_queries(dashboard)}
        assert len(results["Quantiles of $column"].rows) == 28
        assert len(results["Missing share of $column"].rows) == 28
        assert len(results["Categorical profile of $column"].rows) == 28
        p50 = results["Quantiles of $column"].column("p50")
        distinct = results["Categorical profile of $column"].column("distinct values")
        if column in monitoring.categorical_features:
            counted = demo_conn.execute(sql.SQL("select count(distinct {}) from raw.trips group by batch_date "
                                                "order by batch_date").format(sql.Identifier(column))).fetchall()
            assert set(p50) == {None} and distinct == [count for (count,) in counted]
        else:
            assert None not in p50 and set(distinct) == {None}
        drift = results["Drift score of $column by method"]
        assert len(drift.rows) == (56 if column in drift_scored else 0), column
        if drift.rows:
            assert {name.split(":")[0] for name in drift.column("metric")} == {"evidently", "sql_psi"}


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
        "published_batches"}


def test_reader_reads_every_mart(reader: psycopg.Connection, demo_conn: psycopg.Connection) -> None:
    marts = [name for (name,) in demo_conn.execute(
        "select table_name from information_schema.tables where table_schema = 'marts' order by 1").fetchall()]
    assert {"batch_health", "column_quality", "model_performance", "test_results"} <= set(marts)
    for name in marts:  # every row: the demo's 28 batches are all published
        count = sql.SQL("select count(*) from marts.{}").format(sql.Identifier(name))
        assert reader.execute(count).fetchone() == demo_conn.execute(count).fetchone(), name


@pytest.mark.parametrize("statement", [
    "select count(*) from raw.trips",
    "select count(*) from raw.batches",
    "select count(*) from staging.stg_trips",
    "insert into marts.batch_health (batch_date, status) values ('2000-01-01', 'passed')",
    "update marts.model_performance set mae = 0",
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


def _evaluate(conn: psycopg.Connection, uid: str) -> tuple[Result, dict[tuple[str, ...], float]]:
    """The rule evaluated now, as Grafana would: its query for its relative range, then B and C.

    The batches were tested minutes ago, inside the rules' 7-day window.
    """
    rule = _rule(uid)
    result = _run(conn, grafana.expand(rule.raw_sql, rule.time_range(datetime.now(timezone.utc))))
    assert result.columns[:2] == ["time", "batch"]
    assert result.column("time") == sorted(result.column("time"))
    return result, grafana.firing(rule, result.columns, result.rows)


def test_gate_alert_is_quiet_on_the_demo(reader: psycopg.Connection) -> None:
    result, fired = _evaluate(reader, "modelwatch-batch-gate-failed")
    assert sorted(result.column("batch")) == [day.isoformat() for day in DEMO_DAYS]
    assert set(result.column("failed")) == {0}
    assert fired == {}


def test_drift_alert_fires_for_the_seventh(reader: psycopg.Connection, demo_conn: psycopg.Connection) -> None:
    result, fired = _evaluate(reader, "modelwatch-dataset-drift-share")
    assert len(result.rows) == 28
    # Independently: the share of Evidently's scored columns that drifted, from feature_drift.
    shares = dict(demo_conn.execute(
        """select batch_date::text, avg(drifted::int)::float8 from marts.feature_drift
           where source = 'evidently' and score is not null group by 1""").fetchall())
    assert fired == {(day,): pytest.approx(share) for day, share in shares.items() if share > 0.5}
    assert fired == {("2023-02-07",): pytest.approx(4 / 7)}  # 4 of 7 columns drifted that day


def test_mae_alert_against_its_trailing_median(reader: psycopg.Connection, demo_conn: psycopg.Connection) -> None:
    result, fired = _evaluate(reader, "modelwatch-mae-vs-trailing-median")
    maes = [mae for _, mae in demo_conn.execute(
        "select batch_date, mae from marts.model_performance order by batch_date").fetchall()]
    ratios = {DEMO_DAYS[i].isoformat(): maes[i] / statistics.median(maes[max(0, i - 7):i]) for i in range(1, 28)}
    assert dict(zip(result.column("batch"), result.column("mae_vs_trailing_median"))) == pytest.approx(ratios)
    assert len(result.rows) == 27  # the first batch has no history
    assert sorted(day for (day,) in fired) == ["2023-02-07", "2023-02-08", "2023-02-10", "2023-02-15"]
    assert fired[("2023-02-07",)] == pytest.approx(ratios["2023-02-07"]) and ratios["2023-02-07"] > 2.5


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
def replayed(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    """`modelwatch backfill --pace` over 14 and 15 February (the 15th fails) in a database of its own."""
    home = tmp_path_factory.mktemp("replay_home")
    with trained_database(server_url, home, "replay") as settings:
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
            "select batch_date, status, rows_loaded, started_at from raw.batches order by batch_date").fetchall()
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
    assert fired == {("2023-02-15",): 1.0}


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
    result = CliRunner().invoke(main, ["dashboard", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert f"dashboard: {out}" in result.output
    assert "not drawn" not in result.output  # every panel, the drift marts' too
    # One browser run: console and text first, then the screenshot (the charts draw as the page loads).
    visited = visit(out, tmp_path / "profile", settle_seconds=1.0, screenshot=tmp_path / "dashboard.png")
    assert visited.problems == []
    for title in OVERVIEW_EXPECTED:
        assert title in visited.text
    assert "No failing tests in this time range" in visited.text
    assert visited.screenshot is not None
    not_white, green = _ink(visited.screenshot)
    assert not_white > 0.10
    assert green > 20_000  # the 28 green days of the batch health strip
