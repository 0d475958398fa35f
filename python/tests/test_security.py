"""Least privilege: modelwatch_pipeline owns modelwatch's objects, every pipeline session acts
as it, and it can do no more than the pipeline needs.

Roles are cluster-wide: on a shared server (MODELWATCH_TEST_DATABASE_URL) they may
exist already, made by an `init` of another database, and every test tolerates that.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import threading
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from modelwatch import pipeline
from modelwatch.config import Settings
from modelwatch.errors import DatabaseError, UsageError
from modelwatch.postgres import db, roles, schema

from .conftest import FEBRUARY, JANUARY, TAXI, Templates, scratch_name, trained_database

DAY = date(2023, 2, 14)
# The tables every monitor shares; each declared monitor adds raw.<monitor>__rows, raw.<monitor>__reference
# and raw.<monitor>__labels.
SHARED_RAW_TABLES = {"schema_version", "batches", "references", "models", "dbt_test_runs", "drift_scores",
                     "drift_datasets", "dbt_views", "calibration_maps", "estimation_thresholds", "loss_models",
                     "estimated_losses"}


def _raw_tables(settings: Settings) -> set[str]:
    return SHARED_RAW_TABLES | {table for monitor in settings.monitors
                                for table in (monitor.rows_table, monitor.reference_table,
                                              schema.labels_table(monitor))}


def _owners(url: str) -> dict[tuple[str, str], int]:
    """Relations (tables, views, indexes, sequences...) per (schema, owner) in modelwatch's schemas."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """select n.nspname, pg_get_userbyid(c.relowner), count(*)
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = any(%s) group by 1, 2""", (list(db.PIPELINE_SCHEMAS),)).fetchall()
    return {(schema, owner): count for schema, owner, count in rows}


def _not_owned_by(url: str, role: str) -> int:
    """Schemas and relations of modelwatch's schemas that `role` does not own."""
    with psycopg.connect(url) as conn:
        schemas = conn.execute(
            "select count(*) from pg_namespace where nspname = any(%s) and nspowner <> %s::regrole",
            (list(db.PIPELINE_SCHEMAS), role)).fetchone()[0]
    relations = sum(count for (_, owner), count in _owners(url).items() if owner != role)
    return schemas + relations


def _login(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select session_user").fetchone()[0]


def _url_as(url: str, user: str, password: str) -> str:
    info = conninfo_to_dict(url)
    info.update(user=user, password=password)
    return make_conninfo(**info)


def _run_day(settings: Settings) -> str:
    return pipeline.run_batch(settings, DAY, FEBRUARY).status


@pytest.fixture(scope="module")
def ran(templates: Templates, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """init, the baseline trained on January 2023 and the batch of 14 February, in a database of its own."""
    with trained_database(templates, server_url, tmp_path_factory.mktemp("security_home"), "security") as settings:
        assert _run_day(settings) == "passed"
        yield settings


# --------------------------------------------------------------------------- ownership


def test_pipeline_role_owns_every_schema_and_relation(ran: Settings) -> None:
    owners = _owners(ran.database_url)
    assert _not_owned_by(ran.database_url, db.PIPELINE_ROLE) == 0, owners
    with psycopg.connect(ran.database_url) as conn:
        raw = {name for (name,) in conn.execute(
            "select tablename from pg_tables where schemaname = 'raw' and tableowner = %s", (db.PIPELINE_ROLE,))}
    assert raw == _raw_tables(ran)
    assert {f"{TAXI}__rows", f"{TAXI}__reference"} <= raw and not {"trips", "predictions"} & raw
    # dbt made the rest, all as the role: views and the seed, marts, store_failures tables.
    for schema in ("staging", "marts", "audit"):
        assert owners.get((schema, db.PIPELINE_ROLE), 0) >= 2, owners


def test_raw_tables_analyzed_by_the_role(ran: Settings) -> None:
    """ANALYZE by a non-owner only warns and skips: a manual analyze time proves ownership. A run
    analyzes the monitor's rows (load.analyze), which hold its predictions too."""
    with psycopg.connect(ran.database_url) as conn:
        analyzed = dict(conn.execute(
            """select relname, last_analyze is not null from pg_stat_user_tables
               where schemaname = 'raw' and relname = %s""", (f"{TAXI}__rows",)).fetchall())
    assert analyzed == {f"{TAXI}__rows": True}


# --------------------------------------------------------------------------- sessions


def test_pipeline_session_acts_as_the_role(ran: Settings) -> None:
    url = ran.database_url
    with db.connect(url) as conn:
        current, session, superuser, createdb, createrole = conn.execute(
            """select current_user, session_user, rolsuper, rolcreatedb, rolcreaterole
               from pg_roles where rolname = current_user""").fetchone()
    assert (current, session) == (db.PIPELINE_ROLE, _login(url))
    assert (superuser, createdb, createrole) == (False, False, False)
    assert db.dbt_env(url)["MODELWATCH_DB_ROLE"] == db.PIPELINE_ROLE
    with db.connect(url, as_pipeline=False) as conn:
        assert conn.execute("select current_user").fetchone()[0] == _login(url)


@pytest.mark.parametrize("statement", [
    "create database mw_refused",
    "create role mw_refused",
    "select * from pg_authid",
    "alter role modelwatch_pipeline superuser",
    "copy (select 1) to '/tmp/mw_refused'",
])
def test_pipeline_role_is_refused(ran: Settings, statement: str) -> None:
    with db.connect(ran.database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute(statement)
    assert refused.value.sqlstate == "42501"


def test_reader_reads_marts_made_after_init(ran: Settings) -> None:
    url = ran.database_url
    with db.connect(url, autocommit=True) as conn:  # as the pipeline role, as dbt creates marts
        conn.execute("create table marts.made_after_init as select 7 as answer")
    try:
        with db.connect_as_reader(url) as reader:
            assert reader.execute("select answer from marts.made_after_init").fetchall() == [(7,)]
            assert reader.execute("select monitor, batch_date, status from marts.batch_health").fetchall() == [
                (TAXI, DAY, "passed")]
            # model_performance is long: the regression's four metrics of the one batch
            assert reader.execute("select monitor, batch_date, metric from marts.model_performance"
                                  " order by metric").fetchall() == [
                (TAXI, DAY, metric) for metric in ("bias", "mae", "r2", "rmse")]
            for table in (f"raw.{TAXI}__rows", f"raw.{TAXI}__reference", "raw.batches"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute(f"select count(*) from {table}")
    finally:
        with db.connect(url, autocommit=True) as conn:
            conn.execute("drop table marts.made_after_init")


# --------------------------------------------------------------------------- upgrades and other logins


def test_init_hands_a_database_left_to_the_login_to_the_role(trained_settings: Settings) -> None:
    """A database of this schema whose every object is the login's (as an `init` that could not
    use the role leaves it) is handed to the role by the next `init`."""
    url = trained_settings.database_url
    assert _run_day(trained_settings) == "passed"
    login = _login(url)
    _give_everything_to(url, login)
    assert _not_owned_by(url, login) == 0
    with db.connect(url) as conn:  # not handed over yet: sessions keep the login's rights
        assert conn.execute("select current_user").fetchone() == (login,)
    pipeline.init(trained_settings)
    assert _not_owned_by(url, db.PIPELINE_ROLE) == 0
    with db.connect(url) as conn:
        assert conn.execute("select current_user").fetchone() == (db.PIPELINE_ROLE,)
    assert _run_day(trained_settings) == "passed"
    assert _not_owned_by(url, db.PIPELINE_ROLE) == 0


# The one-monitor modelwatch's schema (version 1, which recorded no version): test_migration's fixture.
V1_DDL = Path(__file__).parent / "fixtures" / "schema_v1.sql"


def test_an_older_database_is_refused_until_init_migrates_it_for_the_role(fresh_settings: Settings) -> None:
    """A database of the one-monitor modelwatch, as its `init` left it before the pipeline role
    existed (every object the login's): the version check refuses it with a UsageError that says
    to run `init`, and sessions keep the login's rights; `init` then migrates it and hands every
    schema and relation to the role, the version-1 tables gone."""
    url = fresh_settings.database_url
    login = _login(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(V1_DDL.read_text())
    assert _not_owned_by(url, login) == 0
    with db.connect(url) as conn:
        assert conn.execute("select current_user").fetchone() == (login,)  # not handed over yet
        with pytest.raises(UsageError) as refused:
            schema.check_version(conn)
    assert str(refused.value) == ("the database holds the schema of an older modelwatch (version 1): "
                                  "run `modelwatch init` to migrate it (its batches become monitor nyc_taxi's)")
    pipeline.init(fresh_settings)
    assert _not_owned_by(url, db.PIPELINE_ROLE) == 0
    with db.connect(url) as conn:
        assert conn.execute("select current_user").fetchone() == (db.PIPELINE_ROLE,)
        schema.check_version(conn)  # this schema now
        raw = {name for (name,) in conn.execute("select tablename from pg_tables where schemaname = 'raw'")}
    assert raw == _raw_tables(fresh_settings)  # raw.trips, raw.predictions, raw.reference_trips gone


def test_init_hands_over_a_single_table_left_behind(fresh_settings: Settings) -> None:
    url = fresh_settings.database_url
    rows = f"raw.{TAXI}__rows"
    pipeline.init(fresh_settings)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("alter table {} owner to {}").format(
            sql.Identifier("raw", f"{TAXI}__rows"), sql.Identifier(_login(url))))
    assert _not_owned_by(url, db.PIPELINE_ROLE) == 2  # the table and its index
    with db.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"select count(*) from {rows}")
    pipeline.init(fresh_settings)
    assert _not_owned_by(url, db.PIPELINE_ROLE) == 0
    with db.connect(url) as conn:
        assert conn.execute(f"select count(*) from {rows}").fetchone() == (0,)


def _give_everything_to(url: str, owner: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        roles.hand_over(conn, owner)


@pytest.fixture
def pipeline_login(fresh_settings: Settings) -> Iterator[Settings]:
    """Settings that log in as modelwatch_pipeline itself, its password set by an admin's init."""
    password = uuid.uuid4().hex
    admin = Settings(home=fresh_settings.home, database_url=fresh_settings.database_url,
                     environ={"MODELWATCH_PIPELINE_PASSWORD": password})
    with psycopg.connect(admin.database_url) as conn:
        could_login = conn.execute("select rolcanlogin from pg_roles where rolname = %s", (db.PIPELINE_ROLE,)).fetchone()
    pipeline.init(admin)
    try:
        yield Settings(home=fresh_settings.home, database_url=_url_as(admin.database_url, db.PIPELINE_ROLE, password))
    finally:
        if not (could_login and could_login[0]):  # the role is cluster-wide: leave it as found
            with psycopg.connect(admin.database_url, autocommit=True) as conn:
                conn.execute(sql.SQL("alter role {} nologin").format(sql.Identifier(db.PIPELINE_ROLE)))


def test_logged_in_as_the_role_everything_works_without_set_role(pipeline_login: Settings,
                                                                 server_url: str) -> None:
    url = pipeline_login.database_url
    with db.connect(url) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == (db.PIPELINE_ROLE,) * 2
    # The server holds a SCRAM verifier of that very password (a trust server would let any password in).
    assert _verifies(_stored_password(server_url, db.PIPELINE_ROLE), conninfo_to_dict(url)["password"])
    assert db.dbt_env(url)["MODELWATCH_DB_ROLE"] == ""
    pipeline.init(pipeline_login)  # may not manage roles, and need not: they exist
    pipeline.train(pipeline_login, JANUARY)
    assert _run_day(pipeline_login) == "passed"
    assert _not_owned_by(url, db.PIPELINE_ROLE) == 0


def _stored_password(server_url: str, role: str) -> str:
    """rolpassword as the server stores it (pg_authid: the admin login reads it)."""
    with psycopg.connect(server_url) as conn:
        return conn.execute("select rolpassword from pg_authid where rolname = %s", (role,)).fetchone()[0] or ""


def _verifies(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (RFC 5803: iterations:salt$StoredKey:ServerKey) is `password`'s."""
    scheme, _, rest = verifier.partition("$")
    iterations_salt, _, keys = rest.partition("$")
    iterations, _, salt = iterations_salt.partition(":")
    stored_key, _, server_key = keys.partition(":")
    if scheme != "SCRAM-SHA-256":
        return False
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return (base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key
            and base64.b64encode(hmac.new(salted, b"Server Key", "sha256").digest()).decode() == server_key)


def test_role_passwords_are_sent_as_scram_verifiers(fresh_settings: Settings, server_url: str) -> None:
    """init computes the verifier on the client: the password never reaches the server (or its log)."""
    passwords = {db.READER_ROLE: uuid.uuid4().hex, db.PIPELINE_ROLE: uuid.uuid4().hex}
    url = fresh_settings.database_url
    with psycopg.connect(server_url) as conn:
        could_login = conn.execute(
            "select rolcanlogin from pg_roles where rolname = %s", (db.PIPELINE_ROLE,)).fetchone()
    try:
        with db.connect(url, as_pipeline=False) as conn:
            schema.init_schema(conn, list(fresh_settings.monitors), passwords[db.READER_ROLE],
                               passwords[db.PIPELINE_ROLE])
        for role, password in passwords.items():
            stored = _stored_password(server_url, role)
            assert stored.startswith("SCRAM-SHA-256$"), role
            assert _verifies(stored, password) and not _verifies(stored, password + "x"), role
            with psycopg.connect(_url_as(url, role, password)) as conn:
                assert conn.execute("select session_user").fetchone() == (role,)
    finally:
        if not (could_login and could_login[0]):  # the role is cluster-wide: leave it as found
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("alter role {} nologin").format(sql.Identifier(db.PIPELINE_ROLE)))


@pytest.mark.parametrize("databases", [1, 2], ids=["one-database", "two-databases"])
def test_concurrent_inits_both_succeed(server_url: str, databases: int) -> None:
    """Two inits at once, on one database (its advisory lock serialises them) or on two (roles are
    cluster-wide: the later ALTER ROLE failed with "tuple concurrently updated")."""
    password = uuid.uuid4().hex  # ALTER ROLE ... PASSWORD on both sides: the statement that raced
    monitors = list(Settings.from_env({}).monitors)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(db.scratch_database(server_url, scratch_name("mw_init_race")))
                for _ in range(databases)]
        started = threading.Barrier(2)
        failures: list[BaseException] = []

        def init(url: str) -> None:
            try:
                with db.connect(url, as_pipeline=False) as conn:
                    started.wait(timeout=30)
                    # the database half of pipeline.init (dbt's seed is per process)
                    schema.init_schema(conn, monitors, password)
            except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                failures.append(exc)

        threads = [threading.Thread(target=init, args=(urls[i % databases],)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
        for url in urls:
            assert _not_owned_by(url, db.PIPELINE_ROLE) == 0
            with db.connect(url) as conn:
                assert conn.execute(f"select count(*) from raw.{TAXI}__rows").fetchone() == (0,)
                assert conn.execute("select version from raw.schema_version").fetchall() == [
                    (schema.SCHEMA_VERSION,)]  # recorded once, not by both


@pytest.fixture
def database_owner(server_url: str, fresh_settings: Settings) -> Iterator[tuple[str, str]]:
    """A login with neither SUPERUSER nor CREATEROLE that owns a database of its own; the roles
    exist (an admin's init made them). Yields (login, URL of its database as it)."""
    pipeline.init(fresh_settings)
    login, password = scratch_name("mw_owner"), uuid.uuid4().hex
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login nosuperuser nocreaterole nocreatedb password {}").format(
            sql.Identifier(login), sql.Literal(password)))
    try:
        with db.scratch_database(server_url, scratch_name("mw_owned")) as url:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("alter database {} owner to {}").format(
                    sql.Identifier(conninfo_to_dict(url)["dbname"]), sql.Identifier(login)))
            yield login, _url_as(url, login, password)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(login)))


@pytest.mark.parametrize("member", [True, False], ids=["member-of-the-role", "not-a-member"])
def test_init_without_the_right_to_manage_roles(database_owner: tuple[str, str], server_url: str,
                                                tmp_path: Path, member: bool) -> None:
    login, url = database_owner
    if member:  # a DBA let this login SET ROLE modelwatch_pipeline
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(db.PIPELINE_ROLE), sql.Identifier(login)))
    settings = Settings(home=tmp_path / "owner_home", database_url=url)
    pipeline.init(settings)
    owner = db.PIPELINE_ROLE if member else login
    assert _not_owned_by(url, owner) == 0
    assert _owners(url)[("staging", owner)] >= 1  # the seed, loaded by dbt as `owner`
    with db.connect(url) as conn:
        assert conn.execute("select current_user").fetchone() == (owner,)


def test_init_says_in_one_line_what_it_cannot_hand_over(database_owner: tuple[str, str], server_url: str,
                                                       tmp_path: Path) -> None:
    login, url = database_owner
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(db.PIPELINE_ROLE), sql.Identifier(login)))
    with psycopg.connect(db.url_with_database(server_url, conninfo_to_dict(url)["dbname"]), autocommit=True) as conn:
        conn.execute("create schema raw")  # the admin's, which this login may not give away
    with pytest.raises(DatabaseError) as refused:
        pipeline.init(Settings(home=tmp_path / "owner_home", database_url=url))
    message = str(refused.value)
    assert message.startswith('cannot hand schema "raw" to modelwatch_pipeline (must be owner of schema raw)')
    assert message.endswith("run `modelwatch init` as a superuser or as the owner") and "\n" not in message
