"""Connections, locks and scratch databases (modelwatch.postgres.schema holds the tables).

Every session acts as the pipeline role where the database has one
(modelwatch.postgres.roles); `init` sets that up with the login's own rights.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from modelwatch.config import PACKAGE_PROJECT_ENV, PROJECT_DIR, Settings
from modelwatch.errors import DatabaseError
from modelwatch.postgres import embedded
from modelwatch.postgres.roles import act_as_pipeline, PIPELINE_ROLE, pipeline_role, PIPELINE_SCHEMAS, READER_ROLE

__all__ = ["PIPELINE_ROLE", "PIPELINE_SCHEMAS", "READER_ROLE"]  # re-exported: the roles' names

CONNECT_TIMEOUT_S = 5


def database_url(settings: Settings) -> str:
    """MODELWATCH_DATABASE_URL when set, otherwise the embedded server (started if needed)."""
    if settings.database_url:
        return settings.database_url
    return embedded.start(settings.pgdata)


def describe(url: str) -> str:
    """host:port/dbname of a URL, without the password, for messages."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable MODELWATCH_DATABASE_URL>"
    host = info.get("host", "localhost")
    if host.startswith("/"):  # a Unix socket directory (the embedded server)
        return f"socket {host}/{info.get('dbname', '')}"
    return f"{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def url_with_database(url: str, dbname: str) -> str:
    """The same server and login as `url`, another database."""
    info = conninfo_to_dict(url)
    info["dbname"] = dbname
    return make_conninfo(**info)


def connect(url: str, autocommit: bool = False, as_pipeline: bool = True) -> psycopg.Connection:
    """A session acting as the pipeline role where this database has one (see pipeline_role);
    `as_pipeline=False` keeps the login's own rights (init needs them to manage roles)."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(
            f"cannot connect to PostgreSQL at {describe(url)} ({first}); "
            "set MODELWATCH_DATABASE_URL to a reachable server or unset it to use the embedded one"
        ) from None
    if as_pipeline:
        try:
            act_as_pipeline(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def connect_as_reader(url: str) -> psycopg.Connection:
    """An autocommit session as modelwatch_reader, Grafana's role: a login as it without a
    password (the embedded server trusts local logins), else SET ROLE from `url`'s own login."""
    info = conninfo_to_dict(url)
    info.pop("password", None)  # the URL's password is its own login's, not the reader's
    info["user"] = READER_ROLE
    try:
        conn = psycopg.connect(make_conninfo(**info), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError:  # a server that wants the reader's password
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(READER_ROLE)))
        except BaseException:
            conn.close()
            raise
    # Whatever reads through it must see what the reader sees, not more.
    if conn.execute("select current_user").fetchone() != (READER_ROLE,):
        conn.close()
        raise DatabaseError(f"could not act as {READER_ROLE} on {describe(url)}")
    return conn


def session_role(url: str) -> str | None:
    """The role pipeline sessions on `url` SET (for dbt's profile), or None."""
    with connect(url, autocommit=True, as_pipeline=False) as conn:
        return pipeline_role(conn)


@contextmanager
def scratch_database(server_url: str, name: str, template: str | None = None) -> Iterator[str]:
    """A new database on the server of `server_url` (an admin login), copied from `template`
    when given; yields its URL and drops it afterwards, ending any session still on it."""
    create = sql.SQL("create database {}").format(sql.Identifier(name))
    if template:
        create += sql.SQL(" template {}").format(sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(create)
    try:
        yield url_with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _batch_lock_class(monitor: str) -> int:
    """The first key of a monitor's batch locks: from 2**30 up, so never LOCK_CLASS."""
    return (zlib.crc32(monitor.encode()) & 0x3FFFFFFF) | 0x40000000


@contextmanager
def batch_lock(conn: psycopg.Connection, monitor: str, batch_date: date) -> Iterator[None]:
    """Serialise work on one batch of a monitor across processes (a session advisory lock)."""
    with _advisory_lock(conn, (_batch_lock_class(monitor), batch_date.toordinal())):
        yield


LOCK_CLASS = 7_356_001  # arbitrary namespace for modelwatch's advisory locks
BUILD_LOCK_KEY = 0  # with LOCK_CLASS: the lock that serialises dbt runs


@contextmanager
def build_lock(conn: psycopg.Connection) -> Iterator[None]:
    """Serialise dbt invocations across processes: concurrent builds would race on dbt's
    temporary relation names (the views' when they are re-created, the intermediate tables')."""
    with _advisory_lock(conn, (LOCK_CLASS, BUILD_LOCK_KEY)):
        yield


@contextmanager
def _advisory_lock(conn: psycopg.Connection, keys: tuple[int, int]) -> Iterator[None]:
    """A session advisory lock held while the block runs. When the block fails, the unlock
    never replaces its error: on a lost connection the server released the lock with the
    session, and the block's error is the cause the user needs to read."""
    conn.execute("select pg_advisory_lock(%s, %s)", keys)
    try:
        yield
    except BaseException:
        if not (conn.closed or conn.broken):
            with suppress(psycopg.Error):
                conn.execute("select pg_advisory_unlock(%s, %s)", keys)
        raise
    conn.execute("select pg_advisory_unlock(%s, %s)", keys)


def locked_batches(conn: psycopg.Connection, monitor: str) -> set[date]:
    """Batches of the monitor some process is working on right now (holding their advisory lock)."""
    rows = conn.execute(
        """select objid from pg_locks
           where locktype = 'advisory' and granted and classid = %s and objsubid = 2""",
        (_batch_lock_class(monitor),),
    ).fetchall()
    return {date.fromordinal(int(objid)) for (objid,) in rows}


def dbt_env(url: str) -> dict[str, str]:
    """The environment variables profiles/profiles.yml reads, from a libpq URL and the
    database (the role dbt's sessions SET, as every pipeline session does)."""
    info = conninfo_to_dict(url)
    return {
        "MODELWATCH_DB_ROLE": session_role(url) or "",
        "MODELWATCH_DB_HOST": str(info.get("host") or "localhost"),
        "MODELWATCH_DB_PORT": str(info.get("port") or 5432),
        "MODELWATCH_DB_USER": str(info.get("user") or "postgres"),
        "MODELWATCH_DB_PASSWORD": str(info.get("password") or ""),
        "MODELWATCH_DB_NAME": str(info.get("dbname") or "postgres"),
        # a project of one's own finds modelwatch's models here (its packages.yml)
        PACKAGE_PROJECT_ENV: str(PROJECT_DIR),
    }


def check_database(url: str) -> None:
    """Raise DatabaseError unless the database answers."""
    try:
        with connect(url, autocommit=True) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        raise DatabaseError(f"PostgreSQL at {describe(url)} failed: {exc}") from None
