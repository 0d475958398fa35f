"""Failures of a build: a failed rebuild says in `status` that the batch is withdrawn and why;
a database server stopped, killed or out of disk mid-run is named as the cause (exit 3), the
batch log is mended by the next command, and a re-run completes with the marts of a clean run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import yaml
from click.testing import CliRunner

from modelwatch import pipeline
from modelwatch.cli import main
from modelwatch.config import Settings
from modelwatch.pipeline import status
from modelwatch.postgres import db, embedded

from .conftest import FEBRUARY, copy_project, error_line, invoke_cli, nannyml_file, scratch_name

pytestmark = pytest.mark.once  # not again in make test-pg15: the server makes no difference here

TAXI_DAY = date(2023, 2, 14)
GOOD_DAY, DAY = date(2017, 2, 19), date(2017, 2, 20)
COMPARED_MARTS = ("column_quality", "batch_checks", "model_performance", "feature_drift", "dataset_drift")


def _marts(url: str, monitor: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(
            f"select * from marts.{name} as t where monitor = %s order by t::text", (monitor,)).fetchall()
            for name in COMPARED_MARTS}


def _assert_same_marts(found: dict[str, list[tuple]], clean: dict[str, list[tuple]]) -> None:
    """Equal row by row; a float to its last bits (PostgreSQL may sum in another order)."""
    for name in COMPARED_MARTS:
        assert len(found[name]) == len(clean[name]), name
        for row, expected in zip(found[name], clean[name], strict=True):
            assert row == tuple(pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for v in expected), name


def _published(url: str, monitor: str) -> list[date]:
    with psycopg.connect(url) as conn:
        return [day for (day,) in conn.execute(
            "select batch_date from marts.published_batches where monitor = %s order by 1", (monitor,)).fetchall()]


def _batch_log(url: str, monitor: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("select batch_date, status, error from raw.batches where monitor = %s order by 1",
                            (monitor,)).fetchall()


# ---------------------------------------------------------------- a failed rebuild, withdrawn


def test_failed_rebuild_is_shown_withdrawn_with_its_cause(trained_settings: Settings, tmp_path: Path) -> None:
    url = trained_settings.database_url
    for day in (date(2023, 2, 13), TAXI_DAY):
        pipeline.run_batch(trained_settings, day, FEBRUARY)
    with psycopg.connect(url) as conn:
        other_before = [row for (row,) in conn.execute(
            "select t::text from marts.column_quality as t where batch_date <> %s order by 1", (TAXI_DAY,))]
    # A custom check whose SQL fails at run time: the rebuild of the batch's marts fails (exit 3).
    project = copy_project(tmp_path / "project")
    config = yaml.safe_load((project / "dbt_project.yml").read_text())
    config["vars"]["monitors"]["nyc_taxi"]["checks"]["broken"] = {"where": "1 / (fare_amount - fare_amount) > 0"}
    (project / "dbt_project.yml").write_text(yaml.safe_dump(config))
    result = invoke_cli(trained_settings, "run", "--batch-date", TAXI_DAY.isoformat(), "--file", str(FEBRUARY),
                     project_dir=project)
    assert result.exit_code == 3, result.output
    line = error_line(result.output)
    assert line.startswith("Error: dbt build failed: model batch_checks: "), line
    assert "division by zero" in line
    assert _published(url, "nyc_taxi") == [date(2023, 2, 13)]
    (logged,) = [row for row in _batch_log(url, "nyc_taxi") if row[0] == TAXI_DAY]
    assert logged == (TAXI_DAY, "error", line.removeprefix("Error: "))
    with psycopg.connect(url) as conn:
        rows = {row.batch_date: row for row in status.recent_batches(conn, "nyc_taxi")}
    assert (rows[TAXI_DAY].status, rows[TAXI_DAY].published, rows[TAXI_DAY].error) == (
        "error (withdrawn)", False, line.removeprefix("Error: "))
    assert (rows[date(2023, 2, 13)].status, rows[date(2023, 2, 13)].published) == ("passed", True)
    shown = CliRunner().invoke(main, ["status"], env={
        "MODELWATCH_DATABASE_URL": url, "MODELWATCH_HOME": str(trained_settings.home), "COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    table = [text for text in shown.output.splitlines() if not text.startswith("nyc_taxi: ")]  # not freshness
    (row,) = [text for text in table if "2023-02-14" in text]
    assert "error (withdrawn)" in row and "dbt build failed" in row
    (other,) = [text for text in table if "2023-02-13" in text]
    assert "passed" in other and "withdrawn" not in other
    with psycopg.connect(url) as conn:
        assert [row for (row,) in conn.execute(
            "select t::text from marts.column_quality as t where batch_date <> %s order by 1", (TAXI_DAY,))
        ] == other_before
    # Mended, it runs and is published again.
    rerun = invoke_cli(trained_settings, "run", "--batch-date", TAXI_DAY.isoformat(), "--file", str(FEBRUARY))
    assert rerun.exit_code == 0, rerun.output
    assert _published(url, "nyc_taxi") == [date(2023, 2, 13), TAXI_DAY]


# ---------------------------------------------------------------- the server lost mid-run


def _cli(home: Path, *args: str) -> subprocess.Popen:
    """The modelwatch command in a process of its own, on the embedded server of `home`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MODELWATCH_")}
    env["MODELWATCH_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "modelwatch.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _run(home: Path, *args: str) -> tuple[int, str]:
    process = _cli(home, *args)
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """A home for an embedded server of this test's own, outside pytest's basetemp (see
    conftest.server_url), stopped and removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="modelwatch-test-lost-"))
    os.chmod(home, 0o755)  # the embedded server's own user (when root) reaches its data directory
    try:
        yield home
    finally:
        embedded.stop(home / "pgdata")
        subprocess.run(["umount", str(home / "pgdata")], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _car_price_file(folder: Path) -> Path:
    frame = pd.read_parquet(nannyml_file("regression_synthetic_analysis.parquet")).merge(
        pd.read_parquet(nannyml_file("regression_synthetic_analysis_targets.parquet")), on="id", validate="one_to_one")
    path = folder / "labelled.parquet"
    frame.to_parquet(path, index=False)
    return path


def _prepare(settings: Settings, labelled: Path) -> None:
    pipeline.init(settings)
    pipeline.reference(settings, "car_price", nannyml_file("regression_synthetic_reference.parquet"))
    pipeline.run_batch(settings, GOOD_DAY, labelled, monitor_name="car_price")


def _clean_run(home: Path, labelled: Path) -> dict[str, list[tuple]]:
    """The marts of both batches run in a database of their own on the same server."""
    admin = embedded.running_url(home / "pgdata", database="postgres")
    with db.scratch_database(admin, scratch_name("mw_clean")) as url:
        settings = Settings(home=home / "clean_home", database_url=url)
        _prepare(settings, labelled)
        pipeline.run_batch(settings, DAY, labelled, monitor_name="car_price")
        return _marts(url, "car_price")


def _server_processes(pgdata: Path) -> list[int]:
    """The postmaster of `pgdata` and its children (every process of that server)."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def _kill_server(pgdata: Path) -> None:
    """SIGKILL to every process of the server, as a crash would. The postmaster is stopped
    first, so that no child it forks while the others are listed and killed outlives it (an
    orphaned backend keeps the old shared memory and the next start fails), and the call
    returns when every one of them is gone, reaped too: a killed postmaster stays a zombie
    until init reaps it (here about a second later, more under load), and while it does its
    pid file names a live process, so the next command takes the server for running and is
    refused at its socket."""
    postmaster, *_ = _server_processes(pgdata)
    os.kill(postmaster, signal.SIGSTOP)
    pids = _server_processes(pgdata)
    for pid in [*pids[1:], postmaster]:
        with suppress(ProcessLookupError):  # a child may end with its parent
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, "the killed server's processes are still there after 60 s"
        time.sleep(0.05)


def _wait_for_status(url: str, status: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with psycopg.connect(url) as conn:
            found = conn.execute("select status from raw.batches where monitor = 'car_price' and batch_date = %s",
                                 (DAY,)).fetchone()
        if found == (status,):
            return
        time.sleep(0.2)
    raise AssertionError(f"batch {DAY} never reached {status}")


def _wait_for_dbt_query(url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    """Until a statement of dbt's (its query comment names the app) is running on the database."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and process.poll() is None:
            if conn.execute("""select count(*) from pg_stat_activity where state = 'active'
                               and pid <> pg_backend_pid() and query like '%"app": "dbt"%'""").fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("dbt never ran a statement")


def _mended_and_rerun(home: Path, labelled: Path, url: str, expected_error_start: str,
                      clean: dict[str, list[tuple]]) -> None:
    """The next command records the error; a re-run completes with the clean run's marts."""
    code, output = _run(home, "status", "--monitor", "car_price")
    assert code == 0, output
    log = dict((day, (status, error)) for day, status, error in _batch_log(embedded.start(home / "pgdata"),
                                                                          "car_price"))
    assert log[GOOD_DAY] == ("passed", None)
    assert log[DAY][0] == "error" and log[DAY][1].startswith(expected_error_start), log[DAY]
    assert not (home / "unrecorded_errors.json").exists()
    code, output = _run(home, "run", "--monitor", "car_price", "--batch-date", DAY.isoformat(), "--file",
                        str(labelled))
    assert code == 0, output
    url = embedded.start(home / "pgdata")
    assert [status for _, status, _ in _batch_log(url, "car_price")] == ["passed", "passed"]
    _assert_same_marts(_marts(url, "car_price"), clean)
    assert _published(url, "car_price") == [GOOD_DAY, DAY]


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_server_lost_during_the_build(embedded_home: Path, how: str) -> None:
    """SIGKILL to every process of the server, or `modelwatch db stop`, while dbt builds."""
    labelled = _car_price_file(embedded_home)
    settings = Settings(home=embedded_home)
    _prepare(settings, labelled)
    clean = _clean_run(embedded_home, labelled)
    url = embedded.start(embedded_home / "pgdata")
    before = _marts(url, "car_price")

    process = _cli(embedded_home, "run", "--monitor", "car_price", "--batch-date", DAY.isoformat(),
                   "--file", str(labelled))
    _wait_for_status(url, "building", process)
    _wait_for_dbt_query(url, process)  # into dbt build
    if how == "killed":
        _kill_server(embedded_home / "pgdata")
    else:  # as `modelwatch db stop` does (its own start-up would outlast a build this small)
        embedded.stop(embedded_home / "pgdata")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 3, output
    line = error_line(output)
    assert line.startswith("Error: the database server stopped while building batch 2017-02-20 (PostgreSQL at "), line
    assert "connection is closed" not in line
    assert (embedded_home / "unrecorded_errors.json").exists()

    _mended_and_rerun(embedded_home, labelled, url, "the database server stopped while building batch 2017-02-20",
                      clean)
    assert before != clean  # the clean run holds the second batch too


def _can_mount_tmpfs() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs for the data directory needs root"
    probe = Path(tempfile.mkdtemp(prefix="modelwatch-test-mount-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
        if done.returncode != 0:
            return f"mount -t tmpfs failed here: {done.stderr.decode().strip()}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    finally:
        probe.rmdir()


def test_disk_full_during_the_run(embedded_home: Path) -> None:
    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(reason)
    pgdata = embedded_home / "pgdata"
    pgdata.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m,mode=0755", "tmpfs", str(pgdata)], check=True)
    labelled = _car_price_file(embedded_home)
    settings = Settings(home=embedded_home)
    _prepare(settings, labelled)
    clean = _clean_run(embedded_home, labelled)
    url = embedded.start(pgdata)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("checkpoint")
    # Fill the data directory's disk to the last byte.
    filler = pgdata / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            with suppress(OSError):
                while True:
                    os.write(descriptor, b"\0" * size)
    finally:
        os.close(descriptor)
    assert shutil.disk_usage(pgdata).free < 64 * 1024

    code, output = _run(embedded_home, "run", "--monitor", "car_price", "--batch-date", DAY.isoformat(),
                        "--file", str(labelled))
    assert code == 3, output
    line = error_line(output)
    assert line.startswith(f"Error: no space left on device in {pgdata}: PostgreSQL could not write"), line
    assert "connection is closed" not in line

    filler.unlink()  # space freed
    _mended_and_rerun(embedded_home, labelled, url, f"no space left on device in {pgdata}", clean)
