"""Evidently's drift step in a process of its own, beside the run.

Importing Evidently takes about 2.5 s and scoring a batch about 0.1 s, nearly
all of it Python holding the interpreter lock. In a process of its own,
started when a run starts, Evidently imports while the batches load and scores
while dbt builds the marts that do not read its results, on the other core,
and the run's own process never imports it.

The protocol is one JSON line each way: the run sends {"days": [...]} once
those batches are loaded (committed), the worker scores them
(drift.score_batches: read from the database, scored, stored in raw) and
answers {"ok": true} or {"error": ..., "type": ...}. It serves requests until
its stdin closes, and dies with the run's process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from . import errors
from .config import Settings
from .errors import DriftError, ModelwatchError

STOP_TIMEOUT_S = 30  # after its last answer the worker only has to read the end of its input

class DriftWorker:
    """A `python -m modelwatch.drift_worker` process, one request at a time."""

    def __init__(self, settings: Settings, url: str) -> None:
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        # The URL goes by the environment, not argv: ps shows argv, and it may hold a password.
        env.update(MODELWATCH_DATABASE_URL=url, MODELWATCH_PROJECT_DIR=str(settings.project_dir),
                   MODELWATCH_HOME=str(settings.home))
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, env=env, text=True,
        )
        self._pending = False  # asked to score, not answered yet

    def score(self, days: list[date]) -> None:
        """Ask for these loaded batches to be scored; `wait` for the answer."""
        self._pending = True
        try:
            self._process.stdin.write(json.dumps({"days": [day.isoformat() for day in days]}) + "\n")
            self._process.stdin.flush()
        except OSError:  # the worker is gone: wait() says why
            pass

    def wait(self) -> None:
        """Until the batches asked for are scored and stored; their error, if any."""
        line = self._process.stdout.readline()
        self._pending = False
        if not line:
            raise DriftError(f"the drift step stopped ({self._exit_status()}): {self._stderr_tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise getattr(errors, reply.get("type", ""), DriftError)(reply["error"])

    def close(self, failed: bool = False) -> None:
        """Stop the worker: it ends when its stdin closes, once it has answered. At once when
        the run failed or never asked it anything: nothing would read what it does."""
        if failed or not self._pending:
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


@contextmanager
def started(settings: Settings, url: str) -> Iterator[DriftWorker]:
    worker = DriftWorker(settings, url)
    try:
        yield worker
    except BaseException:
        worker.close(failed=True)
        raise
    worker.close()


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


def main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the run, which stops the worker
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the replies
    from . import db, drift  # after the pipe is set up: these imports take a second

    settings = Settings.from_env()
    try:
        drift.evidently_api()  # import Evidently now, while the run loads its batches
    except Exception:  # noqa: BLE001 - reported when a batch is scored
        pass
    url = db.database_url(settings)
    for line in sys.stdin:
        days = [date.fromisoformat(day) for day in json.loads(line)["days"]]
        try:
            with db.connect(url, autocommit=True) as conn:
                drift.score_batches(settings, conn, days)
            failure = None
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the run
            failure = exc
        replies.write(json.dumps(_reply(failure)) + "\n")
    replies.close()
    # Nothing left to do: skip the interpreter's clean-up (half a second with Evidently loaded),
    # which the run would wait for.
    os._exit(0)


if __name__ == "__main__":
    main()
