"""The drift step's own process: it scores what the run loaded as the run itself would, its
errors reach the run, and it never outlives the run. Real PostgreSQL, real Evidently."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest

from modelwatch import pipeline
from modelwatch.config import Settings
from modelwatch.drift import batch_drift, worker as drift_worker
from modelwatch.errors import DriftError, TransformError, UsageError
from modelwatch.periods import batch_of

from .conftest import FEBRUARY, TAXI, Templates, copy_project, trained_database

DAY = date(2023, 2, 14)


@pytest.fixture(scope="module")
def one_batch(templates: Templates, server_url: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A trained database with DAY run (its drift scored by the worker)."""
    with trained_database(templates, server_url, tmp_path_factory.mktemp("worker_home"), "worker") as settings:
        pipeline.run_batch(settings, DAY, FEBRUARY)
        yield settings


def _stored(conn: psycopg.Connection, day: date) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in conn.execute(
        """select column_name, method, threshold, score, drifted, reason from raw.drift_scores
           where monitor = %s and batch_date = %s""", (TAXI, day)).fetchall()}


def test_the_worker_stores_what_the_step_computes_in_process(one_batch: Settings) -> None:
    with psycopg.connect(one_batch.database_url, autocommit=True) as conn:
        stored = _stored(conn, DAY)
        monitor = one_batch.monitor(TAXI)
        columns = batch_drift.monitored_columns(monitor)
        options = batch_drift.DriftOptions.from_settings(one_batch, monitor)
        version = batch_drift.batch_reference_version(conn, monitor, DAY)
        in_process = batch_drift.score_batch(batch_drift.evidently_api(), TAXI, DAY, version,
                                       batch_drift.read_reference(conn, monitor, version, columns, options),
                                       batch_drift.read_batch(conn, monitor, DAY, columns, options), columns, options)
        dataset = conn.execute("""select reference_version, current_rows, columns_computed, columns_drifted
                                  from raw.drift_datasets where monitor = %s and batch_date = %s""",
                               (TAXI, DAY)).fetchone()
    assert len(stored) == 7
    expected = {column.column: (column.method, column.threshold, column.score, column.drifted, column.reason)
                for column in in_process.columns}
    # Equal up to float summation order: Evidently's Jensen-Shannon sums over a set of the
    # categories, whose order follows the process's string hash seed.
    assert {name: (*row[:2], pytest.approx(row[2], rel=1e-12), *row[3:]) for name, row in stored.items()} == expected
    assert dataset == (version, 2_466, 7, in_process.columns_drifted)
    assert in_process.reference_version == version is not None


def test_an_error_in_the_worker_reaches_the_run_as_itself(one_batch: Settings) -> None:
    with drift_worker.started(one_batch) as worker:
        worker.score(one_batch.database_url, TAXI, [date(2023, 3, 15)])  # never loaded
        with pytest.raises(UsageError, match=f"monitor {TAXI}: batch 2023-03-15 has not been loaded"):
            worker.wait()
        worker.score(one_batch.database_url, TAXI, [DAY])  # the worker goes on serving
        worker.wait()


def test_queued_requests_are_answered_in_order_and_the_first_error_comes_after_all(one_batch: Settings) -> None:
    """A run sends each batch as soon as it is loaded: requests queue in the pipe. wait() reads
    every answer, raises the first error, and leaves nothing unread for the next run."""
    with psycopg.connect(one_batch.database_url, autocommit=True) as conn:
        conn.execute("delete from raw.drift_scores where monitor = %s and batch_date = %s", (TAXI, DAY))
    with drift_worker.started(one_batch) as worker:
        for day in (date(2023, 3, 15), DAY, date(2023, 3, 16)):  # the first and last were never loaded
            worker.score(one_batch.database_url, TAXI, [day])
        assert worker.pending == 3
        with pytest.raises(UsageError, match=f"monitor {TAXI}: batch 2023-03-15 has not been loaded"):
            worker.wait()
        assert worker.pending == 0
        worker.score(one_batch.database_url, TAXI, [DAY])
        worker.wait()  # this request's own answer: no error left over from the queue
    with psycopg.connect(one_batch.database_url, autocommit=True) as conn:
        assert len(_stored(conn, DAY)) == 7  # the request between the failing ones was scored


def test_runs_in_one_process_share_its_worker_until_one_fails_while_it_scores(one_batch: Settings) -> None:
    """Evidently is imported once per process: later runs reuse the worker; a run that fails
    while the worker scores for it stops it, and the next run gets a new one."""
    with drift_worker.started(one_batch) as first:
        pid = first.pid
    with drift_worker.started(one_batch) as again:
        assert again.pid == pid
        with drift_worker.started(one_batch) as concurrent:  # the kept one is in use: one of its own
            assert concurrent.pid != pid
        assert not concurrent.alive()
    with pytest.raises(RuntimeError), drift_worker.started(one_batch) as failing:
        failing.score(one_batch.database_url, TAXI, [DAY])
        raise RuntimeError("the run failed while the worker scored")
    assert not failing.alive()
    with drift_worker.started(one_batch) as after:
        assert after.pid != pid and after.alive()
        after.score(one_batch.database_url, TAXI, [DAY])
        after.wait()


def test_a_worker_that_dies_is_an_error_naming_the_drift_step(one_batch: Settings) -> None:
    worker = drift_worker.DriftWorker(one_batch)
    os.kill(worker.pid, signal.SIGKILL)
    worker.score(one_batch.database_url, TAXI, [DAY])
    with pytest.raises(DriftError, match=r"the drift step stopped \(killed by signal 9\)"):
        worker.wait()
    worker.close()


def test_the_worker_dies_with_the_run(one_batch: Settings, tmp_path: Path) -> None:
    """A run killed mid-way (SIGKILL: no clean-up runs) takes its worker with it, by the
    parent-death signal: a sleeper keeps the worker's stdin open, so no end of input stops it."""
    code = (
        "import subprocess, sys; from modelwatch.drift import worker as drift_worker; from modelwatch.config import Settings; "
        "w = drift_worker.DriftWorker(Settings.from_env()); "
        "s = subprocess.Popen(['sleep', '60'], pass_fds=[w._process.stdin.fileno()]); "
        "print(w.pid, s.pid, flush=True); sys.stdin.read()"
    )
    env = dict(os.environ, MODELWATCH_HOME=str(one_batch.home))
    run = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                           text=True)
    worker_pid, sleeper_pid = (int(pid) for pid in run.stdout.readline().split())
    try:
        time.sleep(0.5)
        assert _alive(worker_pid)
        run.kill()
        run.wait()
        deadline = time.monotonic() + 10
        while _alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker_pid)
        assert _alive(sleeper_pid)  # its stdin was still open: the signal ended it, not EOF
    finally:
        os.kill(sleeper_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_the_worker_imports_evidentlys_drift_tests_alone() -> None:
    """In the worker, Evidently's drift tests are imported without the rest of its package (its
    Reports and presets); asked for the whole package after, the process gets it."""
    code = (
        "import sys; from modelwatch.drift import batch_drift; batch_drift.score_only(); "
        "api = batch_drift.drift_tests_api(); "
        "print(api.version, 'evidently.presets' in sys.modules, api.get_stattest.__module__, api.Report); "
        "full = batch_drift.evidently_api(); import evidently; "
        "print(full.version == evidently.__version__, full.Report.__name__, 'evidently.presets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-2] == (f"{importlib.metadata.version('evidently')} False "
                       "evidently.legacy.calculations.stattests.registry None")
    assert out[-1] == "True Report True"


def test_the_worker_runs_blas_on_one_thread() -> None:
    """Once Evidently's tests are imported, the worker limits every BLAS loaded (numpy's and
    scipy's) to one thread, where they would take one per core."""
    code = (
        "from threadpoolctl import threadpool_info; from modelwatch.drift import batch_drift, worker; "
        "batch_drift.score_only(); batch_drift.drift_tests_api(); "
        "before = [info['num_threads'] for info in threadpool_info() if info['user_api'] == 'blas']; "
        "worker.one_blas_thread(); "
        "print(len(before), min(before), [info['num_threads'] for info in threadpool_info() if info['user_api'] == 'blas'])"
    )
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    count, threads_before, after = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  env=env, check=True).stdout.split(maxsplit=2)
    assert int(count) >= 2  # numpy's and scipy's own
    assert int(threads_before) > 1 or os.cpu_count() == 1  # by default, a thread per core
    assert after.strip() == str([1] * int(count))


def test_the_worker_runs_below_the_runs_priority(one_batch: Settings) -> None:
    """The worker lowers its own priority (WORKER_NICENESS) as it starts: the run and its
    database are the critical path it competes with for the cores."""
    with drift_worker.started(one_batch) as worker:
        worker.score(one_batch.database_url, TAXI, [DAY])
        worker.wait()  # answered: it is past its start-up
        niceness = os.getpriority(os.PRIO_PROCESS, worker.pid)
    assert niceness == min(os.getpriority(os.PRIO_PROCESS, 0) + drift_worker.WORKER_NICENESS, 19) > 0


def test_a_hand_over_file_not_written_is_read_from_the_database(one_batch: Settings) -> None:
    """A hand-over file that could not be written (a full disk) is no request without its answer:
    the worker is asked all the same and reads the batch's rows from the database."""
    import concurrent.futures

    not_written: concurrent.futures.Future[Path] = concurrent.futures.Future()
    not_written.set_exception(OSError(28, "No space left on device"))
    with psycopg.connect(one_batch.database_url, autocommit=True) as conn:
        before = _stored(conn, DAY)
        conn.execute("delete from raw.drift_scores where monitor = %s and batch_date = %s", (TAXI, DAY))
        with drift_worker.started(one_batch) as worker:
            worker.score(one_batch.database_url, TAXI, [DAY], rows=not_written)
            worker.wait()
        after = _stored(conn, DAY)
    assert len(before) == 7
    # equal up to float summation order (Jensen-Shannon's sum follows the process's string hash seed)
    assert {name: (*row[:2], pytest.approx(row[2], rel=1e-12), *row[3:]) for name, row in after.items()} == before


def test_the_run_itself_never_imports_evidently(one_batch: Settings) -> None:
    """Evidently's 2.5 s import happens in the worker, beside the run, not in it."""
    code = (
        "import sys; from datetime import date; from modelwatch import pipeline; "
        "from modelwatch.config import Settings; "
        f"pipeline.run_batch(Settings.from_env(), date(2023, 2, 15), {str(FEBRUARY)!r}); "
        "print('evidently' in sys.modules)"
    )
    env = dict(os.environ, MODELWATCH_HOME=str(one_batch.home), MODELWATCH_DATABASE_URL=one_batch.database_url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
    with psycopg.connect(one_batch.database_url, autocommit=True) as conn:
        assert len(_stored(conn, date(2023, 2, 15))) == 7


def test_a_drift_step_failing_mid_run_marks_the_batch_and_exits_3(one_batch: Settings, tmp_path: Path) -> None:
    """The worker dying (here killed as it starts, by a sitecustomize only its interpreter
    acts on) fails the run with one line, exit 3, and leaves the batch 'error', unpublished."""
    env = dict(os.environ, MODELWATCH_HOME=str(one_batch.home), MODELWATCH_DATABASE_URL=one_batch.database_url)
    sitecustomize = tmp_path / "site"
    sitecustomize.mkdir()
    # Only the worker runs as `-m modelwatch.drift.worker`: it dies as it starts, the run does not.
    (sitecustomize / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "if sys.orig_argv[1:3] == ['-m', 'modelwatch.drift.worker']:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(sitecustomize), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-m", "modelwatch.cli", "run", "--batch-date", "2023-02-16",
                          "--file", str(FEBRUARY)], capture_output=True, text=True, env=env)
    assert run.returncode == 3, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == ["Error: the drift step stopped (killed by signal 9): no message"]
    with psycopg.connect(one_batch.database_url, autocommit=True) as conn:
        status, error = conn.execute("select status, error from raw.batches"
                                     " where monitor = %s and batch_date = '2023-02-16'", (TAXI,)).fetchone()
        published = conn.execute("select count(*) from marts.published_batches"
                                 " where monitor = %s and batch_date = '2023-02-16'", (TAXI,)).fetchone()[0]
    assert (status, error, published) == ("error", "the drift step stopped (killed by signal 9): no message", 0)


def test_a_range_whose_build_fails_stops_the_worker_it_queued_batches_for(one_batch: Settings,
                                                                         tmp_path: Path) -> None:
    """The batches went to the worker as they loaded; the build then fails. Nothing will read the
    worker's answers, so the range stops it (before its batch locks go), and says what failed."""
    project = copy_project(tmp_path / "project")
    model = project / "models" / "intermediate" / "int_value_counts.sql"
    model.write_text(model.read_text() + "\nwhere no_such_column > 0\n")
    broken = dataclasses.replace(one_batch, project_dir=project)
    worker = drift_worker.DriftWorker(broken)
    try:
        with pytest.raises(TransformError, match="int_value_counts"):
            pipeline.run_range(broken, broken.monitor(TAXI), FEBRUARY,
                               [batch_of(TAXI, "day", date(2023, 2, 15)), batch_of(TAXI, "day", date(2023, 2, 16))],
                               scorer=worker)
        assert not worker.alive()
    finally:
        worker.close()
    with psycopg.connect(one_batch.database_url) as conn:
        statuses = dict(conn.execute("select batch_date, status from raw.batches"
                                     " where monitor = %s and batch_date in (%s, %s)",
                                     (TAXI, date(2023, 2, 15), date(2023, 2, 16))).fetchall())
    assert statuses == {date(2023, 2, 15): "error", date(2023, 2, 16): "error"}
