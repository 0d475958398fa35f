"""The dbt project itself: unit tests of its SQL, documentation, the seed."""

from __future__ import annotations

import json

from modelwatch import db, transform
from modelwatch.config import Settings


def test_dbt_unit_tests_pass(demo_settings: Settings) -> None:
    url = db.database_url(demo_settings)
    result = transform.invoke(demo_settings, url, ["test"], select="test_type:unit")
    outcomes = {r.node.name: str(r.status) for r in result.result.results}
    assert {
        "duration_is_minutes_between_pickup_and_dropoff",
        "volume_band_uses_up_to_seven_earlier_batches",
        "column_quality_missing_share_and_exact_quantiles",
        "column_quality_without_categorical_columns",
    } <= set(outcomes)
    assert {name for name, status in outcomes.items() if status != "pass"} == set()


def test_docs_generate_and_every_model_and_column_described(demo_settings: Settings) -> None:
    url = db.database_url(demo_settings)
    result = transform.invoke(demo_settings, url, ["docs", "generate"])
    assert result.success
    manifest = json.loads((demo_settings.dbt_dir / "target" / "manifest.json").read_text())
    catalog = json.loads((demo_settings.dbt_dir / "target" / "catalog.json").read_text())
    undocumented: list[str] = []
    for unique_id, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed") or node["package_name"] != "modelwatch":
            continue
        if not node["description"].strip():
            undocumented.append(node["name"])
        # Every column the built relation has must be described (ephemeral models have no relation).
        built = catalog["nodes"].get(unique_id, {}).get("columns", {})
        for column in built:
            described = node["columns"].get(column, {}).get("description", "").strip()
            if not described:
                undocumented.append(f"{node['name']}.{column}")
    assert undocumented == []
    assert "column_quality" in {n["name"] for n in manifest["nodes"].values()}


def test_seed_holds_the_tlc_zone_lookup(demo_conn) -> None:
    zones, unknown = demo_conn.execute(
        "select count(*), count(*) filter (where borough = 'Unknown') from staging.taxi_zones"
    ).fetchone()
    assert (zones, unknown) == (265, 2)
