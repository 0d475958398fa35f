"""The two roles: least privilege where the server allows it.

`init` logs in as configured (usually a superuser) and hands modelwatch's
schemas and every relation in them to `modelwatch_pipeline`, a role that may
create neither databases nor roles; every later session, dbt's included, runs
SET ROLE to it. `modelwatch_reader` (Grafana's login) reads `marts` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from modelwatch.errors import DatabaseError

READER_ROLE = "modelwatch_reader"
PIPELINE_ROLE = "modelwatch_pipeline"
# The schemas the pipeline role owns: raw (Python), staging and marts (dbt's
# models and seed), audit (dbt's store_failures tables: data_tests +schema in
# dbt_project.yml).
PIPELINE_SCHEMAS = ("raw", "staging", "marts", "audit")


def pipeline_role(conn: psycopg.Connection, initialised: bool = True) -> str | None:
    """The role this session should SET: modelwatch_pipeline when it exists, the login may
    SET ROLE to it and is not that role itself. With `initialised`, only once `init` has
    handed this database to it (it owns `raw`), so a database initialised before keeps
    working as it did until `init` runs again."""
    row = conn.execute(
        """select rolname from pg_roles
           where rolname = %s and rolname <> current_user and pg_has_role(current_user, oid, %s)
             and (not %s or exists (select 1 from pg_namespace where nspname = 'raw' and nspowner = pg_roles.oid))""",
        (PIPELINE_ROLE, _may_set(conn), initialised),
    ).fetchone()
    return row[0] if row else None


def _may_set(conn: psycopg.Connection) -> str:
    """pg_has_role's privilege for "may SET ROLE": SET from PostgreSQL 16, MEMBER before."""
    return "SET" if conn.info.server_version >= 160000 else "MEMBER"


def act_as_pipeline(conn: psycopg.Connection) -> str | None:
    """SET ROLE to the pipeline role where it applies; returns the role set, if any."""
    role = pipeline_role(conn)
    if role:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
    if not conn.autocommit:
        conn.commit()  # a session-level SET survives the commit; nothing else is pending
    return role


def _true(conn: psycopg.Connection, query: str, params: tuple = ()) -> bool:
    row = conn.execute(query, params).fetchone()
    return bool(row and row[0])


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone() is not None


@contextmanager
def acting_as(conn: psycopg.Connection, role: str | None) -> Iterator[None]:
    """SET LOCAL ROLE for the rest of a block (nothing when `role` is None)."""
    if role is None:
        yield
        return
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    yield
    conn.execute("reset role")


def ensure_roles(conn: psycopg.Connection, reader_password: str | None, pipeline_password: str | None) -> None:
    """Create or update both roles when the login may manage roles. A login that may not
    (no SUPERUSER, no CREATEROLE) leaves roles someone else made as they are."""
    if not _true(conn, "select rolsuper or rolcreaterole from pg_roles where rolname = current_user"):
        missing = [role for role in (PIPELINE_ROLE, READER_ROLE) if not _role_exists(conn, role)]
        if missing:
            raise DatabaseError(
                f"cannot create role {' and '.join(missing)}: {conn.info.user} is neither superuser nor CREATEROLE; "
                "run `modelwatch init` once as a superuser"
            )
        return
    # Roles are cluster-wide, but an advisory lock is per database: an `init` of another database
    # may create or alter them at the same moment. Its change waits for the other transaction and
    # then fails; once that one has committed, the same statements succeed (or find nothing to do).
    for attempt in range(ROLE_ATTEMPTS):
        try:
            with conn.transaction():
                ensure_pipeline_role(conn, pipeline_password)
                ensure_reader_role(conn, reader_password)
            return
        except psycopg.Error as exc:
            if attempt == ROLE_ATTEMPTS - 1 or not _concurrent_role_change(exc):
                raise


ROLE_ATTEMPTS = 5  # each retry waits for one concurrent init to commit


def _concurrent_role_change(exc: psycopg.Error) -> bool:
    """A role created, granted or altered by a concurrent transaction. ALTER ROLE reports it
    as an internal error whose text is never translated (elog, not ereport)."""
    if isinstance(exc, (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject)):
        return True
    return isinstance(exc, psycopg.errors.InternalError_) and "tuple concurrently updated" in str(exc)


def _password(conn: psycopg.Connection, role: str, password: str) -> sql.Literal:
    """The SCRAM-SHA-256 verifier of `password`, computed by libpq on this side: the password
    itself never reaches the server, nor its log (log_statement = ddl logs ALTER ROLE in full)."""
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return sql.Literal(verifier.decode())


def ensure_pipeline_role(conn: psycopg.Connection, password: str | None) -> None:
    """`modelwatch_pipeline`: owns modelwatch's schemas; no SUPERUSER, CREATEDB or CREATEROLE.

    NOLOGIN when created without a password; a password (MODELWATCH_PIPELINE_PASSWORD)
    makes it LOGIN. Without one an existing role keeps its login, as the reader keeps
    its password, so an `init` from a shell never locks out a deployed pipeline.
    """
    role = sql.Identifier(PIPELINE_ROLE)
    found = conn.execute(
        "select rolsuper or rolcreatedb or rolcreaterole or rolreplication or rolbypassrls"
        " from pg_roles where rolname = %s", (PIPELINE_ROLE,)).fetchone()
    if found is None:
        conn.execute(sql.SQL("create role {} nosuperuser nocreatedb nocreaterole nologin").format(role))
    elif found[0]:  # altered by hand since: back to least privilege
        conn.execute(sql.SQL("alter role {} nosuperuser nocreatedb nocreaterole noreplication nobypassrls").format(role))
    if password:
        conn.execute(sql.SQL("alter role {} login password {}").format(
            role, _password(conn, PIPELINE_ROLE, password)))
    # The login may SET ROLE to it (a superuser may already; the role itself needs nothing).
    if not _true(conn, "select pg_has_role(current_user, %s, %s)", (PIPELINE_ROLE, _may_set(conn))):
        conn.execute(sql.SQL("grant {} to current_user").format(role))


def grant_database(conn: psycopg.Connection, role: str) -> None:
    """CONNECT, TEMPORARY (dbt's incremental builds) and CREATE (the schemas dbt makes, e.g.
    audit) on this database only, when the login may grant them (superuser or owner)."""
    if _true(conn, "select has_database_privilege(current_database(), 'CREATE WITH GRANT OPTION')"):
        conn.execute(sql.SQL("grant connect, temporary, create on database {} to {}").format(
            sql.Identifier(conn.info.dbname), sql.Identifier(role)))


def hand_over(conn: psycopg.Connection, owner: str) -> None:
    """ALTER ... OWNER TO `owner` for modelwatch's schemas and every relation in them it
    does not own yet (a database initialised before the role existed)."""
    target = sql.Identifier(owner)
    for (schema,) in conn.execute(
            "select nspname from pg_namespace where nspname = any(%s) and nspowner <> %s::regrole",
            (list(PIPELINE_SCHEMAS), owner)).fetchall():
        _alter_owner(conn, sql.SQL("schema {}").format(sql.Identifier(schema)), target)
    # Tables before sequences: a table takes its serial and identity sequences along.
    for kinds in (("r", "p", "v", "m", "f"), ("S",)):
        for schema, name, kind in _relations_not_owned(conn, owner, kinds):
            _alter_owner(conn, sql.SQL("{} {}.{}").format(
                sql.SQL(_RELATION_KEYWORD[kind]), sql.Identifier(schema), sql.Identifier(name)), target)


def _alter_owner(conn: psycopg.Connection, thing: sql.Composable, owner: sql.Identifier) -> None:
    try:
        conn.execute(sql.SQL("alter {} owner to {}").format(thing, owner))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"cannot hand {thing.as_string(conn)} to {PIPELINE_ROLE} ({str(exc).strip().splitlines()[0]}): "
            "run `modelwatch init` as a superuser or as the owner"
        ) from None


_RELATION_KEYWORD = {"r": "table", "p": "table", "v": "view", "m": "materialized view",
                     "f": "foreign table", "S": "sequence"}


def _relations_not_owned(conn: psycopg.Connection, owner: str, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    return conn.execute(
        """select n.nspname, c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = any(%s) and c.relkind::text = any(%s) and c.relowner <> %s::regrole
           order by 1, 2""",
        (list(PIPELINE_SCHEMAS), list(kinds), owner),
    ).fetchall()


def ensure_reader_role(conn: psycopg.Connection, password: str | None) -> None:
    """`modelwatch_reader`: the login Grafana uses (its rights: grant_reader)."""
    role = sql.Identifier(READER_ROLE)
    if not _role_exists(conn, READER_ROLE):
        conn.execute(sql.SQL("create role {} login").format(role))
    if password:
        conn.execute(sql.SQL("alter role {} password {}").format(role, _password(conn, READER_ROLE, password)))


def grant_reader(conn: psycopg.Connection) -> None:
    """SELECT on `marts` only, run as the schemas' owner: also on the tables this owner
    (the pipeline role, dbt's sessions) creates later."""
    role = sql.Identifier(READER_ROLE)
    conn.execute(sql.SQL("grant usage on schema marts to {}").format(role))
    conn.execute(sql.SQL("grant select on all tables in schema marts to {}").format(role))
    conn.execute(sql.SQL("alter default privileges for role {} in schema marts grant select on tables to {}").format(
        sql.Identifier(conn.execute("select current_user").fetchone()[0]), role))
    for schema in PIPELINE_SCHEMAS:
        if schema != "marts":
            conn.execute(sql.SQL("revoke all on schema {} from {}").format(sql.Identifier(schema), role))


def revoke_public_create(conn: psycopg.Connection) -> None:
    """The public schema belongs to the database owner, not to the pipeline role: the login
    revokes the reader's CREATE there when it holds the grant option."""
    if _true(conn, "select has_schema_privilege('public', 'CREATE WITH GRANT OPTION')"):
        conn.execute(sql.SQL("revoke create on schema public from {}").format(sql.Identifier(READER_ROLE)))
