"""Silence is an alert: marts.monitor_freshness, `modelwatch check-freshness`, `status` and the
Grafana rule on it, read as modelwatch_reader.

The demo's taxi batches ran minutes ago (fresh); a car_price batch run here is then made to
have been tested three days ago (its recorded test runs moved back, as time passing would),
which is longer than the two days a daily monitor allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from modelwatch import pipeline, transform
from modelwatch.cli import main
from modelwatch.config import PROJECT_DIR, Settings
from modelwatch.dashboards import grafana
from modelwatch.errors import UsageError
from modelwatch.monitors import parse_monitor
from modelwatch.postgres import db

from .conftest import Templates, initialised_database, nannyml_file
from .test_monitors import labelled_analysis

STALE_RULE = "modelwatch-monitor-stale"
CAR_DAY = date(2017, 2, 17)


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    env = {"MODELWATCH_HOME": str(settings.home), "MODELWATCH_DATABASE_URL": settings.database_url}
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def _rule_fires(conn: psycopg.Connection) -> tuple[list[tuple], dict[tuple[str, ...], float]]:
    (rule,) = [rule for rule in grafana.alert_rules() if rule.uid == STALE_RULE]
    now = datetime.now(timezone.utc)
    cursor = conn.execute(grafana.expand(rule.raw_sql, rule.time_range(now)))
    columns = [column.name for column in cursor.description]
    rows = cursor.fetchall()
    assert columns == ["time", "monitor", "silence_ratio"]
    return rows, grafana.firing(rule, columns, rows)


@pytest.fixture(scope="module")
def aged(templates: Templates, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """car_price with one real batch, tested three days ago; no other monitor has any."""
    folder = tmp_path_factory.mktemp("freshness")
    with initialised_database(templates, server_url, folder / "home", "fresh") as settings:
        url = settings.database_url
        pipeline.reference(settings, "car_price", nannyml_file("regression_synthetic_reference.parquet"))
        outcome = pipeline.run_batch(settings, CAR_DAY, labelled_analysis("car_price", folder),
                                     monitor_name="car_price")
        assert outcome.status == "passed"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("update raw.dbt_test_runs set executed_at = now() - interval '3 days'"
                         " where monitor = 'car_price'")
        transform.build_run_results(settings, url, "car_price", CAR_DAY, CAR_DAY)  # as the next build would
        yield settings


def test_the_demo_is_fresh(demo_settings: Settings) -> None:
    with db.connect_as_reader(demo_settings.database_url) as reader:
        rows, fired = _rule_fires(reader)
        state = reader.execute(
            "select batches, latest_batch_date, stale_after, last_batch_at > now() - interval '1 hour'"
            " from marts.monitor_freshness where monitor = 'nyc_taxi'"
        ).fetchone()
    assert state == (28, date(2023, 2, 28), timedelta(days=2), True)
    assert [monitor for _, monitor, _ in rows] == ["nyc_taxi"]  # the other monitors never had a batch
    assert 0 < rows[0][2] < 0.1  # minutes of a two-day allowance
    assert fired == {}
    code, output = _cli(demo_settings, "check-freshness")
    assert code == 0
    lines = output.splitlines()
    assert "car_price: no batch yet" in lines and "credit_card: no batch yet" in lines
    (taxi,) = [line for line in lines if line.startswith("nyc_taxi: ")]
    assert taxi.startswith("nyc_taxi: fresh: latest batch 2023-02-28 finished ") and taxi.endswith(
        "ago (stale after 2 days)")


def test_a_silent_monitor_fires_and_fails_the_check(aged: Settings) -> None:
    with db.connect_as_reader(aged.database_url) as reader:
        rows, fired = _rule_fires(reader)
    assert [monitor for _, monitor, _ in rows] == ["car_price"]
    assert fired == {("car_price",): pytest.approx(1.5, abs=0.01)}  # three days of two
    code, output = _cli(aged, "check-freshness", "--monitor", "car_price")
    assert code == 1
    assert output.splitlines() == [
        "car_price: STALE: latest batch 2017-02-17 finished 3 days ago (stale after 2 days)"]
    code, output = _cli(aged, "check-freshness", "--monitor", "work_from_home")
    assert (code, output.splitlines()) == (0, ["work_from_home: no batch yet"])
    code, output = _cli(aged, "status", "--monitor", "car_price")
    assert code == 0
    assert output.splitlines()[-1] == (
        "car_price: STALE: latest batch 2017-02-17 finished 3 days ago (stale after 2 days)")


def test_a_declared_allowance_and_a_weekly_default(aged: Settings) -> None:
    with psycopg.connect(aged.database_url) as conn:
        allowances = dict(conn.execute("select monitor, stale_after from marts.monitor_freshness").fetchall())
    # two of each monitor's periods: work_from_home is weekly
    assert allowances == {"nyc_taxi": timedelta(days=2), "car_price": timedelta(days=2),
                          "credit_card": timedelta(days=2), "work_from_home": timedelta(days=14)}


def _defaults() -> dict:
    return yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["vars"]["monitor_defaults"]


@pytest.mark.parametrize("value, accepted", [
    ("36 hours", "36 hours"), ("1 month", "1 month"), (None, "2 weeks"),
    ("2 fortnights", None), ("0 days", None), (3, None), ("1 day; drop table raw.batches", None),
])
def test_stale_after_is_checked_before_it_reaches_sql(value: object, accepted: str | None) -> None:
    block = {"task": "regression", "id": "id", "timestamp": "ts", "batch_period": "week",
             "features": {"numeric": ["x"]}, "prediction": "y_pred", "target": "y"}
    if value is not None:
        block["stale_after"] = value
    if accepted is None:
        with pytest.raises(UsageError) as refused:
            parse_monitor("weekly", block, _defaults())
        assert str(refused.value) == (f"dbt_project.yml: monitor weekly: stale_after: {value!r} is not a number of "
                                      "hours, days, weeks or months (e.g. '36 hours')")
    else:
        assert parse_monitor("weekly", block, _defaults()).stale_after == accepted
