"""The dbt project itself: unit tests of its SQL, documentation, the seed, derived columns."""

from __future__ import annotations

import bisect
import json
from datetime import date, datetime

import psycopg
import pytest

from modelwatch import transform
from modelwatch.config import Settings
from modelwatch.postgres import db

from .conftest import TAXI

# Models whose columns are the monitor's own: what its declaration names (stored and derived),
# described there (dbt_project.yml vars.monitors), not in the models' yml.
MONITOR_COLUMN_MODELS = ("int_reference_rows",)  # int_batch_rows is ephemeral: no relation to list


def test_dbt_unit_tests_pass(demo_settings: Settings) -> None:
    url = db.database_url(demo_settings)
    result = transform.invoke(demo_settings, url, ["test"], select="test_type:unit")
    outcomes = {r.node.name: str(r.status) for r in result.result.results}
    assert {
        "value_counts_one_row_per_column_and_value",
        "volume_band_uses_up_to_seven_earlier_batches",
        "model_performance_regression_metrics_on_the_domain",
        "reference_bins_at_distinct_deciles_categories_other_and_null",
        "column_quality_missing_share_and_exact_quantiles",
        "column_quality_without_categorical_columns",
        "model_performance_publishes_passing_batches_only",
        "feature_drift_psi_by_hand_and_evidently_rows_gated",
        "numeric_profile_from_sorted_values_equals_percentile_cont",
    } <= set(outcomes)
    assert {name for name, status in outcomes.items() if status != "pass"} == set()


def test_docs_generate_and_every_model_and_column_described(demo_settings: Settings) -> None:
    url = db.database_url(demo_settings)
    result = transform.invoke(demo_settings, url, ["docs", "generate"])
    assert result.success
    manifest = json.loads((demo_settings.dbt_dir / "target" / "manifest.json").read_text())
    catalog = json.loads((demo_settings.dbt_dir / "target" / "catalog.json").read_text())
    # int_reference_rows holds the columns of the monitor it was built for (the demo's), whatever
    # its declaration says: a column declared there is described there.
    monitor = demo_settings.monitor(TAXI)
    declared = {name for name, _ in monitor.stored_columns} | set(monitor.derived)
    undocumented: list[str] = []
    monitor_columns_seen: set[str] = set()
    for unique_id, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed") or node["package_name"] != "modelwatch":
            continue
        if not node["description"].strip():
            undocumented.append(node["name"])
        # Every column the built relation has must be described (ephemeral models have no relation).
        built = catalog["nodes"].get(unique_id, {}).get("columns", {})
        for column in built:
            if node["name"] in MONITOR_COLUMN_MODELS and column in declared:
                monitor_columns_seen.add(column)
                continue
            described = node["columns"].get(column, {}).get("description", "").strip()
            if not described:
                undocumented.append(f"{node['name']}.{column}")
    assert undocumented == []
    # the exemption is the monitor's drift columns (features and prediction), nothing else
    assert monitor_columns_seen == {"passenger_count", "trip_distance", "fare_amount", "total_amount",
                                    "pu_location_id", "do_location_id", "predicted_duration_min"}
    assert "column_quality" in {n["name"] for n in manifest["nodes"].values()}


def test_seed_holds_the_tlc_zone_lookup(demo_conn: psycopg.Connection) -> None:
    zones, unknown = demo_conn.execute(
        "select count(*), count(*) filter (where borough = 'Unknown') from staging.taxi_zones"
    ).fetchone()
    assert (zones, unknown) == (265, 2)


def _minutes(pickup: datetime, dropoff: datetime) -> float:
    return (dropoff - pickup).total_seconds() / 60


def test_each_invocation_compiles_the_ephemeral_rows_with_its_own_vars(demo_settings: Settings,
                                                                      demo_conn: psycopg.Connection) -> None:
    """The process parses the project once and every invocation reuses it (transform._manifest),
    while dbt compiles into its nodes: each invocation starts from them uncompiled, so the
    ephemeral int_batch_rows holds the rows of that invocation's batch, not the first one's."""
    url = db.database_url(demo_settings)
    days = [date(2023, 2, 1), date(2023, 2, 2)]
    shown = []
    for day in days:
        result = transform.invoke(
            demo_settings, url,
            ["show", "--inline", "select min(batch_date) as day, count(*) as n from {{ ref('int_batch_rows') }}"],
            vars=json.dumps({"monitor": TAXI, "batch_start": str(day), "batch_end": str(day)}))
        assert result.success
        day_shown, rows = result.result.results[0].agate_table.rows[0]
        shown.append((day_shown, int(rows)))
    expected = [demo_conn.execute(f"select batch_date, count(*) from raw.{TAXI}__rows where batch_date = %s"
                                  " group by batch_date", (day,)).fetchone() for day in days]
    assert shown == expected
    assert shown[0][1] != shown[1][1]


STATEMENTS_FOR_CTES = (
    "with a as (select 1 as x) select x from a",
    "-- depends_on: something\n\n  WITH\na as (select 1 as x)\nselect x from a",
    "/* a comment */ with a as (select 1 as x) select x from a",
    "select 1 as x",
    "\n-- a comment\nselect x from (with a as (select 1 as x) select x from a) as b",
    "with recursive a(x) as (select 1 union all select x + 1 from a where x < 3) select x from a",
    "with_rows as (select 1)",
    "/* a */ select x from (/* b */ with a as (select 1 as x) select x from a) as b",
    "\n" * 40 + "select 1 as x",
    "with a as (select 1 as x) select x from a;\n",
    "-- a comment\r\nwith a as (select 1 as x) select x from a",
)


def test_ephemeral_ctes_are_spliced_as_dbt_parses_them(demo_settings: Settings) -> None:
    """compilation.spliced_ctes gives dbt's own injection of ephemeral CTEs, string for string:
    on every model of the project that reads one (compiled for the taxi's batches) and on
    statements it splices or leaves to dbt (no leading WITH, WITH RECURSIVE)."""
    from dbt import compilation as dbt_compilation
    from dbt.contracts.graph.nodes import InjectedCTE

    spliced = dbt_compilation.inject_ctes_into_sql
    assert spliced.original is not spliced  # installed by the runner (transform.dbt_runner)
    compiled = transform.invoke(demo_settings, db.database_url(demo_settings), ["compile"],
                                vars=transform.batch_vars(TAXI, date(2023, 2, 1), date(2023, 2, 28)))
    assert compiled.success
    readers = [result.node for result in compiled.result.results if result.node.extra_ctes]
    assert {"int_value_counts", "int_numeric_profile", "int_model_performance", "batch_health",
            "daily_trips"} <= {node.name for node in readers}
    for node in readers:
        pre_injected = node._pre_injected_sql  # noqa: SLF001
        assert spliced(pre_injected, node.extra_ctes) == spliced.original(pre_injected, node.extra_ctes), node.name
        assert spliced(pre_injected, node.extra_ctes) == node.compiled_code
    ctes = [InjectedCTE(id="model.x.one", sql=" __dbt__cte__one as (\nselect 1 as y\n)"),
            InjectedCTE(id="model.x.two", sql=" __dbt__cte__two as (\nselect 2 as y\n)")]
    for statement in STATEMENTS_FOR_CTES:
        assert spliced(statement, ctes) == spliced.original(statement, ctes), statement
        assert spliced(statement, []) == statement


def test_the_taxis_derived_duration_is_minutes_from_pickup_to_dropoff(demo_settings: Settings,
                                                                   demo_conn: psycopg.Connection) -> None:
    """duration_min is the taxi's `derived` SQL (dbt_project.yml), not a stored column: in the rows
    the models read (int_batch_rows, ephemeral: shown by dbt over the demo's batches) it equals
    dropoff - pickup in minutes as Python computes it from the stored timestamps, batch by batch,
    trips across midnight included. (The rows carry no trip id: each batch's durations are
    compared as a sorted list.)"""
    first, last = demo_conn.execute(f"select min(batch_date), max(batch_date) from raw.{TAXI}__rows").fetchone()
    shown = transform.invoke(
        demo_settings, db.database_url(demo_settings),
        ["show", "--inline", "select batch_date, duration_min from {{ ref('int_batch_rows') }}"],
        limit="-1", vars=json.dumps({"monitor": TAXI, "batch_start": str(first), "batch_end": str(last)}))
    assert shown.success
    built: dict[date, list[float]] = {}
    for day, minutes in shown.result.results[0].agate_table.rows:
        built.setdefault(day, []).append(float(minutes))
    expected: dict[date, list[float]] = {}
    across_midnight: dict[date, list[float]] = {}
    for day, pickup, dropoff in demo_conn.execute(
            f"select batch_date, pickup_datetime, dropoff_datetime from raw.{TAXI}__rows"
            " where batch_date = any(%s)", (list(built),)):
        expected.setdefault(day, []).append(_minutes(pickup, dropoff))
        if dropoff.date() > pickup.date():
            across_midnight.setdefault(day, []).append(_minutes(pickup, dropoff))
    assert len(built) >= 1 and set(built) == set(expected)
    for day in built:
        assert sorted(built[day]) == pytest.approx(sorted(expected[day]), rel=1e-15, abs=0), day
    # Trips across midnight are there to compare: 23:50:46 to 00:14:40 the next day is 23.9 minutes
    # (a difference of times of day would make it minus 23 hours and more).
    assert sum(len(trips) for trips in across_midnight.values()) > 0
    for day, trips in across_midnight.items():
        present = sorted(built[day])
        for minutes in trips:
            assert present[bisect.bisect_left(present, minutes - 1e-9)] == pytest.approx(minutes, rel=1e-15), day
    if date(2023, 2, 1) in across_midnight:
        assert 23.9 in [round(minutes, 10) for minutes in across_midnight[date(2023, 2, 1)]]
