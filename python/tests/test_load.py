"""Load: a year of daily batches through one `modelwatch backfill` process, watched from outside.

January and February 2023 (59 real days) replayed onto 2023-03-01 .. 2024-02-28.
While the process runs, its resident memory, its open file descriptors and the
server's connections to the database are sampled with the number of batches
finished so far; the late batches must cost no more of any of them than the
early ones. Marked `load`: `make test-load` runs it (about 2 minutes), `make test`
does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from modelwatch.config import Settings
from modelwatch.examples.nyc_taxi import timeshift

from .conftest import FEBRUARY, JANUARY

pytestmark = pytest.mark.load

FIRST = date(2023, 3, 1)
DAYS = 365
SAMPLE_EVERY_S = 0.5
# What the late batches' peaks may exceed the early ones' by: noise, not leaks. A sample
# can catch a descriptor that lives for one statement (a socket, a temporary file); a leak
# of one per batch or per 31-day build would be 8 to 240 more by the end.
MEMORY_GROWTH_LIMIT_MB = 40  # allocator noise is ~10 MB
TRANSIENT_FDS = 3
# Connections also come and go within a build (dbt's threads, the one dbt_env opens to
# find the role): a sample catching one more late than early is that, not a leak; a leak
# of one per 31-day build would be 8 more by the end, and the cap below holds regardless.
TRANSIENT_CONNECTIONS = 1
MAX_CONNECTIONS = 7  # the pipeline's, dbt_env's, dbt's 4 threads' and the drift worker's


@dataclass(frozen=True)
class Sample:
    finished: int  # batches the backfill has finished
    rss_mb: float
    open_fds: int
    connections: int  # the server's sessions on the database, the sampler's own excluded
    workers: int  # drift workers among the process's children (all of them are sampled with it)


def _year_file(folder: Path) -> tuple[Path, dict[date, int]]:
    days = timeshift.source_days([timeshift.month_rows(JANUARY), timeshift.month_rows(FEBRUARY)])
    replayed = timeshift.replay_days(days, FIRST, DAYS)
    path = timeshift.write_tlc_parquet(pa.concat_tables([rows for _, rows in replayed]), folder / "year.parquet")
    return path, {day: rows.num_rows for day, rows in replayed}


class Exited(Exception):
    """The process ended while it was being sampled."""


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError) as error:  # reaped
        raise Exited(pid) from error
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise Exited(pid)  # a zombie (exited, not yet reaped) has no VmRSS


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError) as error:
        raise Exited(pid) from error


def _children(pid: int) -> list[int]:
    """The process's children (its drift worker, multiprocessing's resource tracker), whichever
    of its threads started them (the worker is started from a thread of its own)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return children
    for task in tasks:
        try:  # no such file without CONFIG_PROC_CHILDREN; a thread may end meanwhile
            children += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return children


def _sample(process: subprocess.Popen, conn: psycopg.Connection) -> Sample:
    """The backfill's process and its children together (memory and file descriptors summed)."""
    finished, connections = conn.execute(
        """select (select count(*) from raw.batches where status in ('passed', 'warned', 'failed')),
                  (select count(*) from pg_stat_activity
                   where datname = current_database() and pid <> pg_backend_pid())"""
    ).fetchone()
    rss = _rss_mb(process.pid)
    fds = _open_fds(process.pid)
    workers = 0
    for child in _children(process.pid):
        try:
            rss += _rss_mb(child)
            fds += _open_fds(child)
            workers += b"modelwatch.drift.worker" in Path(f"/proc/{child}/cmdline").read_bytes()
        except (Exited, FileNotFoundError, ProcessLookupError):  # the child exited meanwhile
            pass
    return Sample(int(finished), rss, fds, int(connections), workers)


def _watch(process: subprocess.Popen, url: str) -> list[Sample]:
    samples: list[Sample] = []
    with psycopg.connect(url, autocommit=True) as conn:
        while process.poll() is None:
            try:
                samples.append(_sample(process, conn))
            except Exited:  # it exited between poll and read
                break
            time.sleep(SAMPLE_EVERY_S)
    return samples


def test_a_year_of_daily_batches_passes_without_leaks(trained_settings: Settings, tmp_path: Path) -> None:
    file, expected = _year_file(tmp_path)
    last = FIRST + timedelta(days=DAYS - 1)
    env = {**os.environ, "MODELWATCH_DATABASE_URL": trained_settings.database_url,
           "MODELWATCH_HOME": str(trained_settings.home)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelwatch.cli", "backfill", "--file", str(file),
         "--start", FIRST.isoformat(), "--end", last.isoformat()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = _watch(process, trained_settings.database_url)
    stderr = process.communicate(timeout=60)[1]
    seconds = time.perf_counter() - started
    assert process.returncode == 0, stderr[-2000:]

    with psycopg.connect(trained_settings.database_url) as conn:
        statuses = dict(conn.execute("select status, count(*) from raw.batches group by 1").fetchall())
        loaded = dict(conn.execute("select batch_date, rows_loaded from raw.batches").fetchall())
        in_raw = dict(conn.execute("select batch_date, count(*) from raw.nyc_taxi__rows group by 1").fetchall())
        predicted = conn.execute("select count(predicted_duration_min) from raw.nyc_taxi__rows").fetchone()[0]
        in_mart = dict(conn.execute("select batch_date, trips from marts.daily_trips").fetchall())
        scored = conn.execute(
            """select count(*), count(distinct batch_date), count(*) filter (where metric = 'mae'),
                      count(*) filter (where metric = 'mae' and n > 0 and value is not null)
               from marts.model_performance""").fetchone()
        drift_rows = conn.execute("select count(*) from marts.feature_drift").fetchone()[0]
    assert statuses == {"passed": DAYS}
    assert loaded == in_raw == in_mart == expected
    assert sum(expected.values()) > 800_000
    assert predicted == sum(expected.values())  # every trip scored
    assert scored == (DAYS * 4, DAYS, DAYS, DAYS)  # mae, rmse, bias, r2 of every batch
    assert drift_rows == DAYS * 7 * 2  # 7 columns, Evidently and PSI

    # Early: after the first month (imports and caches warm) up to a third; late: the last third.
    early = [s for s in samples if 31 <= s.finished < DAYS // 3]
    late = [s for s in samples if s.finished >= 2 * DAYS // 3]
    assert len(early) >= 5 and len(late) >= 5, (len(samples), seconds)
    # The samples hold the drift worker too: one for the whole backfill (it stops once the last
    # batch is built), never a second.
    working = [s for s in early + late if s.finished < DAYS]
    assert {s.workers for s in working} == {1}, [(s.finished, s.workers) for s in samples if s.workers != 1]
    peak = {name: (max(getattr(s, name) for s in early), max(getattr(s, name) for s in late))
            for name in ("rss_mb", "open_fds", "connections")}
    print(f"\n{DAYS} batches, {sum(expected.values()):,} trips in {seconds:.0f} s "
          f"({seconds / DAYS:.2f} s a batch); early vs late peaks: {peak}; connections seen early "
          f"{sorted(Counter(s.connections for s in early).items())}, late {sorted(Counter(s.connections for s in late).items())}")
    assert peak["rss_mb"][1] <= peak["rss_mb"][0] + MEMORY_GROWTH_LIMIT_MB
    assert peak["open_fds"][1] <= peak["open_fds"][0] + TRANSIENT_FDS
    assert peak["connections"][1] <= peak["connections"][0] + TRANSIENT_CONNECTIONS
    assert max(s.connections for s in samples) <= MAX_CONNECTIONS
