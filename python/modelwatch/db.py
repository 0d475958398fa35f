"""Connections and the `raw` schema that Python writes (dbt builds staging and marts).

Every session acts as the pipeline role where the database has one
(modelwatch.roles); `init` sets that up with the login's own rights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import embedded, publish, views
from .config import Settings
from .errors import DatabaseError
from .roles import (
    PIPELINE_ROLE,
    PIPELINE_SCHEMAS,
    READER_ROLE,
    act_as_pipeline,
    acting_as,
    ensure_roles,
    grant_database,
    grant_reader,
    hand_over,
    pipeline_role,
    revoke_public_create,
)

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


@contextmanager
def batch_lock(conn: psycopg.Connection, batch_date: date) -> Iterator[None]:
    """Serialise work on one batch across processes (a session advisory lock)."""
    key = batch_date.toordinal()
    conn.execute("select pg_advisory_lock(%s, %s)", (LOCK_CLASS, key))
    try:
        yield
    finally:
        conn.execute("select pg_advisory_unlock(%s, %s)", (LOCK_CLASS, key))


LOCK_CLASS = 7_356_001  # arbitrary namespace for modelwatch's advisory locks
BUILD_LOCK_KEY = 0  # key of the lock that serialises dbt runs (batch keys are day ordinals > 0)


@contextmanager
def build_lock(conn: psycopg.Connection) -> Iterator[None]:
    """Serialise dbt invocations across processes: concurrent builds would race on dbt's
    temporary relation names (the views' when they are re-created, the intermediate tables')."""
    conn.execute("select pg_advisory_lock(%s, %s)", (LOCK_CLASS, BUILD_LOCK_KEY))
    try:
        yield
    finally:
        conn.execute("select pg_advisory_unlock(%s, %s)", (LOCK_CLASS, BUILD_LOCK_KEY))


def locked_batches(conn: psycopg.Connection) -> set[date]:
    """Batches some process is working on right now (holding their advisory lock)."""
    rows = conn.execute(
        """select objid from pg_locks
           where locktype = 'advisory' and granted and classid = %s and objsubid = 2 and objid > %s""",
        (LOCK_CLASS, BUILD_LOCK_KEY),
    ).fetchall()
    return {date.fromordinal(int(objid)) for (objid,) in rows}

# The columns of raw.trips after coercion: (name, PostgreSQL type). The loader's
# arrow schema (modelwatch.source) is declared from the same list.
TRIP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("vendor_id", "bigint"),
    ("pickup_datetime", "timestamp"),
    ("dropoff_datetime", "timestamp"),
    ("store_and_fwd_flag", "text"),
    ("ratecode_id", "double precision"),
    ("pu_location_id", "bigint"),
    ("do_location_id", "bigint"),
    ("passenger_count", "double precision"),
    ("trip_distance", "double precision"),
    ("fare_amount", "double precision"),
    ("extra", "double precision"),
    ("mta_tax", "double precision"),
    ("tip_amount", "double precision"),
    ("tolls_amount", "double precision"),
    ("ehail_fee", "double precision"),
    ("improvement_surcharge", "double precision"),
    ("total_amount", "double precision"),
    ("payment_type", "double precision"),
    ("trip_type", "double precision"),
    ("congestion_surcharge", "double precision"),
)

_trip_columns_ddl = ",\n    ".join(f"{name} {pg_type}" for name, pg_type in TRIP_COLUMNS)

RAW_DDL = f"""
create table if not exists raw.batches (
    batch_date date primary key,
    file_name text not null,
    file_sha256 text not null,
    rows_in_file bigint not null,
    rows_loaded bigint,
    rows_outside_day bigint,
    model_version text,
    coercions text,
    status text not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    error text
);

-- No primary key on trip_id: its uniqueness is a check of the data contract.
create table if not exists raw.trips (
    batch_date date not null,
    trip_id bigint not null,
    {_trip_columns_ddl}
);
create index if not exists trips_batch_date on raw.trips (batch_date);

create table if not exists raw.predictions (
    batch_date date not null,
    trip_id bigint not null,
    model_version text not null,
    predicted_duration_min double precision not null
);
create index if not exists predictions_batch_date on raw.predictions (batch_date);

create table if not exists raw.models (
    version text primary key,
    trained_at timestamptz not null default now(),
    algorithm text not null,
    features jsonb not null,
    target text not null,
    reference_file text not null,
    reference_sha256 text not null,
    train_rows bigint not null,
    validation_rows bigint not null,
    train_mae double precision not null,
    validation_mae double precision not null,
    artifact bytea not null
);

create table if not exists raw.reference_trips (
    model_version text not null,
    trip_id bigint not null,
    {_trip_columns_ddl},
    predicted_duration_min double precision not null
);
create index if not exists reference_trips_version on raw.reference_trips (model_version);

create table if not exists raw.dbt_test_runs (
    invocation_id text not null,
    executed_at timestamptz not null,
    batch_date date not null,
    test_name text not null,
    column_name text,
    status text not null,
    failures bigint not null,
    message text
);
create index if not exists dbt_test_runs_batch_date on raw.dbt_test_runs (batch_date);

-- Evidently's drift per batch and monitored column (modelwatch.drift). A column
-- Evidently cannot score (empty or constant) has computed = false and a reason.
create table if not exists raw.drift_scores (
    batch_date date not null,
    column_name text not null,
    column_kind text not null,
    computed boolean not null,
    method text,
    threshold double precision,
    score double precision,
    drifted boolean,
    reason text,
    evidently_version text not null,
    computed_at timestamptz not null default now(),
    primary key (batch_date, column_name)
);

-- One row per batch: what Evidently compared and its dataset-level verdict.
create table if not exists raw.drift_datasets (
    batch_date date primary key,
    model_version text,
    reference_rows bigint not null,
    reference_rows_used bigint not null,
    current_rows bigint not null,
    current_rows_used bigint not null,
    sample_seed integer,
    columns_monitored integer not null,
    columns_computed integer not null,
    columns_drifted integer,
    share_drifted double precision,
    drift_share double precision not null,
    dataset_drift boolean,
    evidently_version text not null,
    seconds double precision not null,
    computed_at timestamptz not null default now()
);
"""


def init_schema(conn: psycopg.Connection, reader_password: str | None,
                pipeline_password: str | None = None) -> None:
    """Roles, schemas and raw tables, owned by the pipeline role where the server allows it;
    safe to run again, and running it again hands a database initialised before to the role.

    `conn` is the login's own session (connect(..., as_pipeline=False)).
    """
    with conn.transaction():
        # Serialise concurrent `init`s of this database: CREATE ... IF NOT EXISTS is not race-free.
        # An advisory lock is per database; ensure_roles retries what inits of others race on.
        conn.execute("select pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, BUILD_LOCK_KEY))
        ensure_roles(conn, reader_password, pipeline_password)
        owner = pipeline_role(conn, initialised=False)
        if owner:
            grant_database(conn, owner)
        for schema in PIPELINE_SCHEMAS:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        if owner:
            hand_over(conn, owner)
        with acting_as(conn, owner):  # what is created from here on belongs to the owner
            conn.execute(RAW_DDL)
            conn.execute(views.DDL)
            views.forget(conn)  # the raw tables the views read may have changed: the next build makes them
            conn.execute(publish.DDL)
            publish.sync(conn)
            grant_reader(conn)
        revoke_public_create(conn)


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
    }


def check_database(url: str) -> None:
    """Raise DatabaseError unless the database answers."""
    try:
        with connect(url, autocommit=True) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        raise DatabaseError(f"PostgreSQL at {describe(url)} failed: {exc}") from None
