"""Evidently's drift step in a process of its own, beside the run.

Importing Evidently takes about 2.5 s and scoring a batch about 0.1 s, nearly
all of it Python holding the interpreter lock. In a process of its own,
started when a run starts, Evidently imports while the batches load and scores
while dbt builds the marts that do not read its results, on the other core,
and the run's own process never imports it. A process that runs batch after
batch keeps its worker (one per dbt project), so Evidently is imported once.

The protocol is one JSON line each way: the run sends {"url": ..., "monitor":
..., "prepare": reference version} before it loads (the worker reads that reference
set meanwhile, and does not answer), then {"url": ..., "monitor": ..., "days": [...]}
as soon as those batches are loaded (committed), one request per batch while the next
ones load, with "rows": the path of an Arrow file of the batch's rows as the run
stored them where it could hand them over (rows_to_hand_over; the worker deletes it);
the worker scores them in order (batch_drift.score_batches:
read from that file or that database, scored, stored in raw) and answers each with
{"ok": true} or {"error": ..., "type": ...}. It keeps the reference sets it has
read for the database of its last request. It serves requests until its stdin
closes, and dies with the process that started it (Linux: with the thread that
started it, so workers are started from one thread that lives as long as the process).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from modelwatch import errors
from modelwatch.config import Settings
from modelwatch.drift.options import DriftOptions
from modelwatch.errors import DriftError, ModelwatchError
from modelwatch.monitors import Monitor

if TYPE_CHECKING:
    import pyarrow as pa

STOP_TIMEOUT_S = 30
# The worker runs at a lower priority than the run: its scores are needed only once dbt's first
# invocation ends, while the run's own process and PostgreSQL are the build's critical path and
# compete with it for the cores (docs/performance.md).
WORKER_NICENESS = 10
# Workers are started from this one thread, which lives as long as the process: on Linux a worker dies
# with the thread that started it (PR_SET_PDEATHSIG), and a run's thread may end before the worker it
# keeps for the next runs.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelwatch-drift-spawner")  # after its last answer the worker only has to read the end of its input


class DriftWorker:
    """A `python -m modelwatch.drift.worker` process: requests queue in its pipe, answered in order."""

    def __init__(self, settings: Settings) -> None:
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, MODELWATCH_PROJECT_DIR=str(settings.project_dir), MODELWATCH_HOME=str(settings.home))
        self._process = _SPAWNER.submit(
            subprocess.Popen, [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env=env, text=True,
        ).result()
        self.pending = 0  # requests not answered yet
        self.in_use = threading.Lock()  # held by the run using it
        self._closed = False
        self._handed_over: tempfile.TemporaryDirectory | None = None  # batches' rows handed over (hand_over)
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None  # writes them
        self._files = 0

    def hand_over(self, monitor: str, day: date, rows: pa.Table) -> concurrent.futures.Future[Path]:
        """Start writing an Arrow file of the rows in this worker's folder (removed when it stops),
        on a thread, so that it is written while the run copies the same rows into the database;
        give the future to `score`. The worker deletes the file once the batch is scored."""
        if self._handed_over is None:
            self._handed_over = tempfile.TemporaryDirectory(prefix="modelwatch-drift-")
            self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                                 thread_name_prefix="modelwatch-hand-over")
        self._files += 1
        path = Path(self._handed_over.name) / f"{monitor}-{day.isoformat()}-{self._files}.arrow"
        return self._writer.submit(_write_rows, rows, path)

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return not self._closed and self._process.poll() is None

    def score(self, url: str, monitor: str, days: list[date],
              rows: concurrent.futures.Future[Path] | None = None) -> None:
        """Ask for these loaded batches of the monitor in the database at `url` to be scored (the
        URL goes by the pipe, not argv or the environment, which others may read); `wait` for
        them all. `rows`: the one batch's drift columns as just stored (rows_to_hand_over),
        being written by `hand_over`, which the worker then reads instead of the database."""
        request = {"url": url, "monitor": monitor, "days": [day.isoformat() for day in days]}
        if rows is not None:
            if len(days) != 1:
                raise ValueError("rows are handed over for one batch at a time")
            try:
                request["rows"] = str(rows.result())
            except OSError:  # not written (a full disk): the worker reads the rows from the database
                pass
        self.pending += 1
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except OSError:  # the worker is gone: wait() says why
            pass

    def prepare(self, url: str, monitor: str, reference_version: str) -> None:
        """Have the worker read the monitor's reference set now, while the run loads its batches,
        rather than once the first batch is loaded; no answer (a failure here is met again, and
        reported, when a batch is scored)."""
        try:
            request = {"url": url, "monitor": monitor, "prepare": reference_version}
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        except OSError:  # the worker is gone: wait() says why
            pass

    def wait(self) -> None:
        """Until every batch asked for is scored and stored; the first error, if any (after
        reading every answer, so the next run's answers are its own)."""
        failure: ModelwatchError | None = None
        while self.pending:
            line = self._process.stdout.readline()
            if not line:
                self.pending = 0
                raise DriftError(f"the drift step stopped ({self._exit_status()}): {self._stderr_tail()}")
            self.pending -= 1
            reply = json.loads(line)
            if "error" in reply and failure is None:
                failure = getattr(errors, reply.get("type", ""), DriftError)(reply["error"])
        if failure is not None:
            raise failure

    def abandon(self) -> None:
        """The run failed: stop the worker if it still has batches to score for it (nothing would
        read its answers, and the next run would read them as its own)."""
        if self.pending:
            self.close(failed=True)

    def close(self, failed: bool = False) -> None:
        """Stop the worker: it ends when its stdin closes, once it has answered. At once when
        the run failed or nothing is pending: nothing would read what it does."""
        if self._closed:
            return
        self._closed = True
        if failed or not self.pending:
            self._process.kill()
        try:
            self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()
        self._stderr.close()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        if self._handed_over is not None:
            self._handed_over.cleanup()

    def _exit_status(self) -> str:
        try:
            code = self._process.wait(timeout=5)  # its output ended: it is exiting
        except subprocess.TimeoutExpired:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else "no message"


# This process's workers, by dbt project (its vars say what is monitored).
_kept: dict[str, DriftWorker] = {}
_kept_lock = threading.Lock()


@contextmanager
def started(settings: Settings) -> Iterator[DriftWorker]:
    """The drift worker for a run: this process's worker for the project, started on first use
    and kept for the runs after (Evidently imported once per process, not once per run), or one
    of the run's own while another thread's run uses that one. A run that fails while its
    worker scores stops the worker; the next run starts another."""
    with _kept_lock:
        worker = _kept.get(str(settings.project_dir))
        if worker is None or not worker.alive():
            worker = _kept[str(settings.project_dir)] = DriftWorker(settings)
        kept = worker.in_use.acquire(blocking=False)
        if not kept:
            worker = DriftWorker(settings)
    try:
        yield worker
    except BaseException:
        worker.abandon()
        raise
    finally:
        if kept:
            worker.in_use.release()
        else:
            worker.close()


@atexit.register
def _stop_kept() -> None:
    for worker in _kept.values():
        worker.close()


def _write_rows(rows: pa.Table, path: Path) -> Path:
    import pyarrow.feather as feather

    feather.write_feather(rows, path, compression="uncompressed")  # read back mapped, not parsed
    return path


def rows_to_hand_over(settings: Settings, monitor: Monitor, stored: pa.Table) -> pa.Table | None:
    """The drift columns of a batch's rows as just stored, for the worker to score without reading
    them back from the database (seconds for a wide batch); None where it must read them there:
    a derived column (computed in SQL), or more rows than the drift step samples down to (the
    sample is drawn in SQL)."""
    names = [name for name, _ in monitor.drift_columns]
    if stored.num_rows > DriftOptions.from_settings(settings, monitor).max_rows or not set(names) <= set(
            stored.column_names):
        return None
    return stored.select(names)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the run's process dies (killed mid-run, say), so no
    orphan writes drift scores after it. Elsewhere the closed stdin ends the worker."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl
        sys.exit(0)


def _reply(exc: BaseException | None) -> dict:
    if exc is None:
        return {"ok": True}
    if isinstance(exc, ModelwatchError):
        return {"error": str(exc), "type": type(exc).__name__}
    return {"error": f"drift step failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
            "type": "DriftError"}


def one_blas_thread() -> None:
    """BLAS on one thread in this process (and the half it forks), for the BLAS libraries loaded
    so far: scipy's Wasserstein distance takes a dot product of each column's two distributions,
    which the BLAS splits over every core; its threads then spin waiting for more work, taking
    the cores from dbt and PostgreSQL for no gain in time (docs/performance.md)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def main() -> None:
    _die_with_parent()
    os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run, which stops the worker
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the replies
    from modelwatch.drift import batch_drift
    from modelwatch.postgres import db  # after the pipe is set up: these imports take a second

    settings = Settings.from_env()  # the project (what is monitored); the database comes with each request
    batch_drift.score_only()
    try:
        batch_drift.drift_tests_api()  # import Evidently now, while the run loads its batches
    except Exception:  # noqa: BLE001 - reported when a batch is scored
        pass
    one_blas_thread()  # once the tests' libraries are loaded: a limit holds for those loaded already
    references: dict[tuple[str, str | None], batch_drift.Rows] = {}  # of the last request's database, by reference
    last_url = None
    for line in sys.stdin:
        request = json.loads(line)
        if request["url"] != last_url:
            references, last_url = {}, request["url"]
        if "prepare" in request:  # read the reference ahead of the batches (no answer)
            try:
                with db.connect(request["url"], autocommit=True) as conn:
                    batch_drift.prepare_reference(settings, conn, settings.monitor(request["monitor"]),
                                                  request["prepare"], references, batch_drift.drift_tests_api())
            except Exception:  # noqa: BLE001 - met again when a batch is scored
                references = {}
            continue
        days = [date.fromisoformat(day) for day in request["days"]]
        handed_over = {days[0]: Path(request["rows"])} if "rows" in request else {}
        try:
            with db.connect(request["url"], autocommit=True) as conn:
                batch_drift.score_batches(settings, conn, settings.monitor(request["monitor"]), days, references,
                                          handed_over)
            failure = None
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the run
            failure = exc
            references = {}  # read again: what failed may have been the database
        finally:
            for path in handed_over.values():
                path.unlink(missing_ok=True)
        replies.write(json.dumps(_reply(failure)) + "\n")
    replies.close()
    # Nothing left to do: skip the interpreter's clean-up (half a second with Evidently loaded),
    # which the run would wait for.
    os._exit(0)


if __name__ == "__main__":
    main()
