"""The Prefect flows in Prefect's own test harness (a real, temporary Prefect API server):
three car_price batches, a batch that fails its contract (failed, not retried), a run that
waits out an unreachable database, bad input (failed at once), and `modelwatch schedule`
serving its deployment with the cron schedule and running a run that is due."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from modelwatch import pipeline
from modelwatch.config import Settings

from .conftest import Templates, initialised_database, nannyml_file
from .test_monitors import labelled_analysis

pytestmark = pytest.mark.once

pytest.importorskip("prefect")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.settings import PREFECT_API_URL  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from modelwatch.pipeline import flows  # noqa: E402

MONITOR = "car_price"
DAYS = [date(2017, 2, 17) + timedelta(days=i) for i in range(3)]


@pytest.fixture(scope="module")
def harness() -> Iterator[str]:
    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def car_price(templates: Templates, server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Path]]:
    """A database with car_price's reference stored; the flows read the same settings from the environment."""
    with initialised_database(templates, server_url, tmp_path / "home", "flow") as settings:
        url = settings.database_url
        pipeline.reference(settings, MONITOR, nannyml_file("regression_synthetic_reference.parquet"))
        monkeypatch.setenv("MODELWATCH_HOME", str(settings.home))
        monkeypatch.setenv("MODELWATCH_DATABASE_URL", url)
        yield settings, labelled_analysis(MONITOR, tmp_path)


def _task_runs(flow_run_id: object) -> dict[str, tuple[str, int]]:
    """Each task run of the flow run: its final state and how many times it ran."""
    import asyncio

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> dict[str, tuple[str, int]]:
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return {run.name.rsplit("-", 1)[0]: (run.state.type.value, run.run_count) for run in runs}

    return asyncio.run(read())


def _rows_per_day(file: Path) -> dict[date, int]:
    frame = pd.read_parquet(file, columns=["timestamp"])
    return frame.groupby(pd.to_datetime(frame["timestamp"]).dt.date).size().to_dict()


def test_three_batches_complete_with_their_states(harness: str, car_price: tuple[Settings, Path]) -> None:
    settings, file = car_price
    expected = _rows_per_day(file)
    for day in DAYS:
        state = flows.monitor_batch(MONITOR, day, str(file), return_state=True)
        assert state.is_completed(), state.message
        outcome = state.result()
        assert (outcome["batch_date"], outcome["status"], outcome["rows_loaded"]) == (day, "passed", expected[day])
        tasks = _task_runs(state.state_details.flow_run_id)
        assert tasks == {"read batch file": ("COMPLETED", 1), "load, drift, build": ("COMPLETED", 1)}
    with psycopg.connect(settings.database_url) as conn:
        health = conn.execute("select batch_date, status, rows_loaded from marts.batch_health"
                              " where monitor = %s order by 1", (MONITOR,)).fetchall()
        mae = conn.execute("select count(*) from marts.model_performance where monitor = %s and metric = 'mae'",
                           (MONITOR,)).fetchone()[0]
    assert health == [(day, "passed", expected[day]) for day in DAYS]
    assert mae == 3


def test_a_contract_failure_fails_the_run_without_retry(harness: str, car_price: tuple[Settings, Path],
                                                       tmp_path: Path) -> None:
    settings, file = car_price
    frame = pd.read_parquet(file)
    day = DAYS[0]
    rows = frame[pd.to_datetime(frame["timestamp"]).dt.date == day].copy()
    rows["id"] = rows["id"].iloc[0]  # every row has the same id
    bad = tmp_path / "duplicated_ids.parquet"
    rows.to_parquet(bad, index=False)
    state = flows.monitor_batch(MONITOR, day, str(bad), return_state=True)
    assert state.is_failed()
    assert state.message.startswith(f"{MONITOR} batch {day} failed its data contract: ")
    assert "duplicate_ids" in state.message
    assert _task_runs(state.state_details.flow_run_id) == {
        "read batch file": ("COMPLETED", 1), "load, drift, build": ("COMPLETED", 1)}  # ran once
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("select status from raw.batches where monitor = %s and batch_date = %s",
                            (MONITOR, day)).fetchone() == ("failed",)


def test_bad_input_fails_at_once(harness: str, car_price: tuple[Settings, Path]) -> None:
    _, file = car_price
    state = flows.monitor_batch(MONITOR, date(2031, 1, 1), str(file), return_state=True)
    assert state.is_failed()
    assert _task_runs(state.state_details.flow_run_id) == {"read batch file": ("FAILED", 1)}


def test_a_run_waits_out_an_unreachable_database(harness: str, car_price: tuple[Settings, Path],
                                                 server_url: str) -> None:
    settings, file = car_price
    name = psycopg.conninfo.conninfo_to_dict(settings.database_url)["dbname"]
    away = f"{name}_away"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("alter database {} rename to {}").format(sql.Identifier(name), sql.Identifier(away)))

        def come_back() -> None:
            time.sleep(flows.DATABASE_RETRY_DELAY_S / 2)
            admin.execute(sql.SQL("alter database {} rename to {}").format(sql.Identifier(away), sql.Identifier(name)))

        returning = threading.Thread(target=come_back)
        returning.start()
        try:
            state = flows.monitor_batch(MONITOR, DAYS[0], str(file), return_state=True)
        finally:
            returning.join()
    assert state.is_completed(), state.message
    assert state.result()["status"] == "passed"
    assert _task_runs(state.state_details.flow_run_id) == {
        "read batch file": ("COMPLETED", 1), "load, drift, build": ("COMPLETED", 2)}  # failed once, retried


def _deployment(name: str, timeout_s: float) -> object:
    """The deployment `name` once the server knows it."""
    import asyncio

    async def read() -> object:
        async with get_client() as client:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    return await client.read_deployment_by_name(name)
                except Exception:  # noqa: BLE001 - not registered yet
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(1)

    return asyncio.run(read())


def _schedule_run_now(deployment_id: object) -> None:
    """A flow run of the deployment due now, as the server's scheduler makes them (the test
    harness's server runs no scheduler service)."""
    import asyncio
    from datetime import datetime, timezone

    from prefect.states import Scheduled

    async def create() -> None:
        async with get_client() as client:
            await client.create_flow_run_from_deployment(
                deployment_id, state=Scheduled(scheduled_time=datetime.now(timezone.utc)))

    asyncio.run(create())


def test_schedule_serves_the_folder_and_runs_a_due_batch(harness: str, car_price: tuple[Settings, Path],
                                                         tmp_path: Path) -> None:
    settings, file = car_price
    folder = tmp_path / "incoming"
    folder.mkdir()
    frame = pd.read_parquet(file)
    frame[pd.to_datetime(frame["timestamp"]).dt.date == DAYS[0]].to_parquet(folder / "day1.parquet", index=False)
    env = {**os.environ, "PREFECT_API_URL": harness}
    command = [sys.executable, "-m", "modelwatch.cli", "schedule", "--monitor", MONITOR,
               "--cron", "0 6 * * *", "--folder", str(folder)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deployment = _deployment(f"monitor-folder/{MONITOR}-incoming", timeout_s=90)
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == "0 6 * * *" and schedule.active
        assert deployment.parameters == {"monitor": MONITOR, "folder": str(folder), "pattern": "*.parquet"}
        _schedule_run_now(deployment.id)
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != "passed":
            time.sleep(2)
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            with psycopg.connect(settings.database_url) as conn:
                row = conn.execute("select status from raw.batches where monitor = %s and batch_date = %s",
                                   (MONITOR, DAYS[0])).fetchone()
            status = row[0] if row else None
        assert status == "passed"
    finally:
        server.terminate()
        try:
            output = server.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    assert "monitor-folder" in output  # Prefect's own lines about the served deployment
