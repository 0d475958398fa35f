"""The `raw` schema that Python writes (dbt builds staging and marts), its version, and `init`.

Tables shared by every monitor carry a `monitor` column; each declared monitor
has two tables of its own, `raw.<monitor>__rows` (its batches' rows) and
`raw.<monitor>__reference` (its reference sets), with the columns its
declaration names (modelwatch.monitors).
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from modelwatch.drift import estimation
from modelwatch.errors import UsageError
from modelwatch.monitors import Monitor
from modelwatch.postgres import publish
from modelwatch.postgres.db import BUILD_LOCK_KEY, LOCK_CLASS
from modelwatch.transform import views
from modelwatch.postgres.roles import (
    PIPELINE_SCHEMAS,
    acting_as,
    ensure_roles,
    grant_database,
    grant_reader,
    hand_over,
    pipeline_role,
    revoke_public_create,
)

# The version of the schema this modelwatch writes; a database records the one it holds.
# 1: one monitor, its rows and predictions in two fixed tables (modelwatch.examples.nyc_taxi.v1_database); 2: declared monitors;
# 3: late labels (raw.<monitor>__labels) and what performance estimation fits on a reference.
SCHEMA_VERSION = 3

SHARED_DDL = """
create table if not exists raw.schema_version (
    version integer not null,
    applied_at timestamptz not null default now()
);

create table if not exists raw.batches (
    monitor text not null,
    batch_date date not null,
    batch_end date not null,
    file_name text not null,
    file_sha256 text not null,
    rows_in_file bigint not null,
    rows_loaded bigint,
    rows_outside_period bigint,
    model_version text,
    reference_version text,
    coercions text,
    status text not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    error text,
    primary key (monitor, batch_date)
);

-- A monitor's reference sets: version = content hash of the rows stored.
create table if not exists raw.references (
    monitor text not null,
    version text not null,
    file_name text not null,
    file_sha256 text not null,
    row_count bigint not null,
    model_version text,
    created_at timestamptz not null default now(),
    primary key (monitor, version)
);

-- Models modelwatch trains itself (a monitor that declares `model`).
create table if not exists raw.models (
    monitor text not null,
    version text not null,
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
    artifact bytea not null,
    primary key (monitor, version)
);

create table if not exists raw.dbt_test_runs (
    monitor text not null,
    invocation_id text not null,
    executed_at timestamptz not null,
    batch_date date not null,
    test_name text not null,
    column_name text,
    status text not null,
    failures bigint not null,
    message text
);
create index if not exists dbt_test_runs_batch on raw.dbt_test_runs (monitor, batch_date);

-- Evidently's drift per batch and monitored column (modelwatch.drift.batch_drift). A column
-- Evidently cannot score (empty or constant) has computed = false and a reason.
create table if not exists raw.drift_scores (
    monitor text not null,
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
    primary key (monitor, batch_date, column_name)
);

-- One row per batch: what Evidently compared and its dataset-level verdict.
create table if not exists raw.drift_datasets (
    monitor text not null,
    batch_date date not null,
    reference_version text,
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
    computed_at timestamptz not null default now(),
    primary key (monitor, batch_date)
);
"""


def monitor_tables(monitor: Monitor) -> list[sql.Composable]:
    """CREATE statements of the monitor's two tables (no key on the id: its uniqueness is a
    check of the contract, and a batch with duplicates must load to be judged)."""
    columns = sql.SQL(",\n    ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type)) for name, pg_type in monitor.stored_columns)
    rows, reference = (sql.Identifier("raw", monitor.rows_table), sql.Identifier("raw", monitor.reference_table))
    return [
        sql.SQL("create table if not exists {} (\n    batch_date date not null,\n    {}\n)").format(rows, columns),
        sql.SQL("create index if not exists {} on {} (batch_date)").format(
            sql.Identifier(f"{monitor.rows_table}_batch_date"), rows),
        sql.SQL("create table if not exists {} (\n    reference_version text not null,\n    {}\n)").format(
            reference, columns),
        sql.SQL("create index if not exists {} on {} (reference_version)").format(
            sql.Identifier(f"{monitor.reference_table}_version"), reference),
        *labels_ddl(monitor),
    ]


def labels_table(monitor: Monitor) -> str:
    """raw.<this> holds the monitor's late labels."""
    return f"{monitor.name}__labels"


def labels_ddl(monitor: Monitor) -> list[sql.Composable]:
    """The monitor's labels table: one label per row id (re-labelling replaces), apart from its rows
    so that a re-run of a batch keeps them. (Version 3; `init` adds it to an older database.)"""
    return [sql.SQL(
        "create table if not exists {} (\n    {} {} primary key,\n    {} {},\n"
        "    labelled_at timestamptz not null default now()\n)").format(
        sql.Identifier("raw", labels_table(monitor)), sql.Identifier(monitor.id), sql.SQL(monitor.id_type),
        sql.Identifier(monitor.target), sql.SQL(monitor.column_type(monitor.target)))]


def add_declared_columns(conn: psycopg.Connection, monitor: Monitor) -> list[str]:
    """Columns declared since the monitor's tables were made, added to both (null in earlier
    rows); returns their names. A column no longer declared is kept: its data stays."""
    added = []
    for table in (monitor.rows_table, monitor.reference_table):
        present = {row[0] for row in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'raw' and table_name = %s",
            (table,))}
        for name, pg_type in monitor.stored_columns:
            if name not in present:
                conn.execute(sql.SQL("alter table {} add column {} {}").format(
                    sql.Identifier("raw", table), sql.Identifier(name), sql.SQL(pg_type)))
                added.append(name)
    return sorted(set(added))


def _raw_table_exists(conn: psycopg.Connection, name: str) -> bool:
    """From the catalog, which needs no privilege on schema raw (a login may have none yet)."""
    return conn.execute(
        """select exists (select 1 from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
                          where n.nspname = 'raw' and c.relname = %s)""", (name,)).fetchone()[0]


def stored_version(conn: psycopg.Connection) -> int | None:
    """The schema version the database holds: None when it holds no modelwatch schema,
    1 for the schema of the one-monitor modelwatch (it recorded none)."""
    if _raw_table_exists(conn, "schema_version"):
        row = conn.execute("select max(version) from raw.schema_version").fetchone()
        return int(row[0]) if row[0] is not None else None
    if _raw_table_exists(conn, "batches"):
        return 1
    return None


def check_version(conn: psycopg.Connection) -> None:
    """UsageError unless the database holds this modelwatch's schema."""
    version = stored_version(conn)
    if version == SCHEMA_VERSION:
        return
    if version is None:
        raise UsageError("the database is not initialised: run `modelwatch init`")
    raise UsageError(_version_message(version))


def check_monitor_tables(conn: psycopg.Connection, monitor: Monitor) -> None:
    """UsageError unless the monitor's tables hold every column it declares (a monitor or a column
    declared since the last `init` has none yet)."""
    for table in (monitor.rows_table, monitor.reference_table):
        present = {row[0] for row in conn.execute(
            "select attname from pg_attribute where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped",
            (f"raw.{table}",))}
        if not present:
            raise UsageError(f"monitor {monitor.name} has no tables yet: run `modelwatch init` to create them")
        missing = [name for name, _ in monitor.stored_columns if name not in present]
        if missing:
            raise UsageError(f"monitor {monitor.name}: column {', '.join(repr(name) for name in missing)} is declared "
                             f"but raw.{table} lacks it: run `modelwatch init` to add it")


def _version_message(version: int) -> str:
    if version > SCHEMA_VERSION:
        return (f"the database holds schema version {version}, newer than this modelwatch's "
                f"({SCHEMA_VERSION}): upgrade modelwatch")
    if version == 1:
        return ("the database holds the schema of an older modelwatch (version 1): run `modelwatch init` to "
                "migrate it (its batches become monitor nyc_taxi's)")
    return (f"the database holds the schema of an older modelwatch (version {version}): run `modelwatch init` "
            "to upgrade it (it adds tables, nothing is lost)")


def init_schema(conn: psycopg.Connection, monitors: Iterable[Monitor], reader_password: str | None,
                pipeline_password: str | None = None) -> bool:
    """Roles, schemas, shared tables and every declared monitor's tables, owned by the pipeline
    role where the server allows it; safe to run again (a monitor declared since gets its
    tables, and columns declared since are added), and touches no monitor's rows. A database
    of an older schema is migrated (modelwatch.examples.nyc_taxi.v1_database); returns whether it was, so that
    the caller rebuilds its marts.

    `conn` is the login's own session (db.connect(..., as_pipeline=False)).
    """
    monitors = list(monitors)
    with conn.transaction():
        # Serialise concurrent `init`s of this database: CREATE ... IF NOT EXISTS is not race-free.
        # An advisory lock is per database; ensure_roles retries what inits of others race on.
        conn.execute("select pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, BUILD_LOCK_KEY))
        version = stored_version(conn)
        if version is not None and version > SCHEMA_VERSION:
            raise UsageError(_version_message(version))
        ensure_roles(conn, reader_password, pipeline_password)
        owner = pipeline_role(conn, initialised=False)
        if owner:
            grant_database(conn, owner)
        for schema in PIPELINE_SCHEMAS:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        if owner:
            hand_over(conn, owner)
        with acting_as(conn, owner):  # what is created from here on belongs to the owner
            if version == 1:  # version 1 held only the taxi: its upgrade lives in the taxi's folder
                from modelwatch.examples.nyc_taxi import v1_database
                v1_database.set_aside_v1(conn)
            conn.execute(SHARED_DDL)
            conn.execute(estimation.DDL)
            for monitor in monitors:
                for statement in monitor_tables(monitor):
                    conn.execute(statement)
                add_declared_columns(conn, monitor)
            if version == 1:
                from modelwatch.examples.nyc_taxi import v1_database
                v1_database.copy_v1(conn, monitors)
            if version != SCHEMA_VERSION:
                conn.execute("insert into raw.schema_version (version) values (%s)", (SCHEMA_VERSION,))
            conn.execute(views.DDL)
            views.forget(conn)  # the raw tables the views read may have changed: the next build makes them
            conn.execute(publish.DDL)
            publish.sync(conn)
            grant_reader(conn)
        revoke_public_create(conn)
    return version == 1
