"""Test fixtures: a real PostgreSQL server, real TLC data, no mocks.

The server is the embedded one in a temporary directory, or the server of
MODELWATCH_TEST_DATABASE_URL / MODELWATCH_DATABASE_URL when set. Each test
that writes gets a database of its own on that server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from click.testing import CliRunner, Result

from modelwatch import pipeline, transform
from modelwatch.cli import main
from modelwatch.config import PACKAGE_DATA_DIR, PROJECT_DIR, Settings
from modelwatch.postgres import db, embedded, roles

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nyc_tlc"
NANNYML_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nannyml"
TAXI = "nyc_taxi"  # the demo's monitor, the project's default
JANUARY = PACKAGE_DATA_DIR / "green_tripdata_2023-01.parquet"
FEBRUARY = PACKAGE_DATA_DIR / "green_tripdata_2023-02.parquet"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared TLC data not found at {path}")
    return path


def nannyml_file(name: str) -> Path:
    """One of NannyML's datasets in ../shared/data/nannyml (see its README)."""
    path = NANNYML_DATA / name
    if not path.exists():
        pytest.skip(f"shared NannyML data not found at {path}")
    return path


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An admin URL to a PostgreSQL server (its maintenance database)."""
    url = os.environ.get("MODELWATCH_TEST_DATABASE_URL") or os.environ.get("MODELWATCH_DATABASE_URL")
    # Outside pytest's basetemp: a later pytest session makes that folder 0700, which
    # locks the embedded server's own user out of its data directory mid-run.
    home = Path(tempfile.mkdtemp(prefix="modelwatch-test-pg-"))
    try:
        with embedded.admin_server(home, url) as admin_url:
            yield admin_url
    finally:
        shutil.rmtree(home, ignore_errors=True)


def copy_project(destination: Path) -> Path:
    """A copy of the dbt project (what dbt reads of it) at `destination`, to edit."""
    for name in transform.PROJECT_PARTS:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, destination / name)
        elif source.exists():
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, destination / name)
    return destination


def invoke_cli(settings: Settings, *args: str, project_dir: Path | None = None, home: Path | None = None) -> Result:
    """`modelwatch ARGS` in process, on the settings' database and home (or `home`)."""
    env = {"MODELWATCH_DATABASE_URL": settings.database_url, "MODELWATCH_HOME": str(home or settings.home)}
    if project_dir is not None:
        env["MODELWATCH_PROJECT_DIR"] = str(project_dir)
    return CliRunner().invoke(main, list(args), env=env)


def error_line(output: Result | str) -> str:
    """The output's one `Error:` line (a command's or a process's output), with no traceback."""
    text = output if isinstance(output, str) else output.output
    lines = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def scratch_name(prefix: str) -> str:
    """A database name of its own (the server may be shared by concurrent sessions)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fresh_settings(server_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for an empty database of this test's own and a home in tmp_path."""
    with db.scratch_database(server_url, scratch_name("mw_test")) as url:
        yield Settings(home=tmp_path / "home", database_url=url)


@dataclass(frozen=True)
class Template:
    """A template database (nothing connects to it) and the home made with it."""

    database: str
    home: Path  # what init (and train) wrote: models, dbt's target with its partial parse, logs


@dataclass(frozen=True)
class Templates:
    """The databases tests copy instead of running `init` (and `train`) each (see templates)."""

    initialised: Template  # `init` of the shipped project
    trained: Template  # then `train(JANUARY)`
    trained_name: str  # the name `trained` was made under, which trained_settings' copies take in turn


@pytest.fixture(scope="session")
def templates(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    """`init`, then `train(JANUARY)`, once per session, each kept as a template database.

    A copy (CREATE DATABASE ... TEMPLATE, a fraction of a second) replaces `init` and `train`
    (seconds each) in every test that needs them. A session's names are its own (concurrent
    sessions may share the server). The trained database is made under the name that
    trained_settings' copies take, one test at a time: dbt's partial-parse state includes the
    profile's database, so under that name the partial parse copied with the home matches.
    """
    session = uuid.uuid4().hex[:10]
    folder = tmp_path_factory.mktemp("templates")
    made = Templates(initialised=Template(f"mw_tmpl_init_{session}", folder / "initialised"),
                     trained=Template(f"mw_tmpl_trained_{session}", folder / "trained"),
                     trained_name=f"mw_trained_{session}")
    names = (made.trained_name, made.initialised.database, made.trained.database)
    with psycopg.connect(server_url, autocommit=True) as admin:
        try:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(made.trained_name)))
            settings = Settings(home=made.trained.home, database_url=db.url_with_database(server_url, made.trained_name))
            pipeline.init(settings)
            _end_sessions(admin, made.trained_name)
            admin.execute(sql.SQL("create database {} template {}").format(
                sql.Identifier(made.initialised.database), sql.Identifier(made.trained_name)))
            shutil.copytree(made.trained.home, made.initialised.home, symlinks=True)
            pipeline.train(settings, JANUARY)
            _end_sessions(admin, made.trained_name)
            admin.execute(sql.SQL("alter database {} rename to {}").format(
                sql.Identifier(made.trained_name), sql.Identifier(made.trained.database)))
            yield made
        finally:
            for name in names:
                admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _end_sessions(admin: psycopg.Connection, database: str) -> None:
    """No session may be on a database copied or renamed (dbt closes its own with each
    invocation): end any left, waiting for each to exit."""
    admin.execute("select pg_terminate_backend(pid, 10000) from pg_stat_activity where datname = %s", (database,))


@contextmanager
def copied_database(server_url: str, template: Template, name: str, home: Path) -> Iterator[str]:
    """A copy of the template database named `name` (dropped after), and of its home at `home`;
    yields its URL."""
    shutil.copytree(template.home, home, symlinks=True, dirs_exist_ok=True)
    with db.scratch_database(server_url, name, template=template.database) as url:
        # A database's own privileges (GRANT ... ON DATABASE, which init grants the pipeline
        # role) are not copied from its template; what is in it (schemas, tables, roles' grants
        # there, default privileges) is, and roles are the cluster's.
        with db.connect(url, autocommit=True, as_pipeline=False) as conn:
            owner = roles.pipeline_role(conn)
            if owner:
                roles.grant_database(conn, owner)
        yield url


@contextmanager
def initialised_database(templates: Templates, server_url: str, home: Path, label: str) -> Iterator[Settings]:
    """A database of its own (dropped after) as `init` leaves it, the shipped project's."""
    with copied_database(server_url, templates.initialised, scratch_name(f"mw_{label}"), home) as url:
        yield Settings(home=home, database_url=url)


@pytest.fixture
def initialised_settings(templates: Templates, server_url: str, tmp_path: Path) -> Iterator[Settings]:
    """A database of this test's own as `init` leaves it (the shipped project), and its home."""
    with initialised_database(templates, server_url, tmp_path / "home", "test") as settings:
        yield settings


@pytest.fixture
def trained_settings(server_url: str, templates: Templates, tmp_path: Path) -> Iterator[Settings]:
    """A database of this test's own, initialised, with the baseline trained on January 2023,
    and its home: copies of the session's (templates), as `init` and `train` leave them.

    Tests run one at a time in a session, so each copy takes the same name in turn (see
    templates); the URL's application_name is the test's own (a drift worker kept across
    tests reads each test's database afresh, and sessions tell which test they serve)."""
    home = tmp_path / "home"
    with copied_database(server_url, templates.trained, templates.trained_name, home) as url:
        yield Settings(home=home, database_url=make_conninfo(url, application_name=scratch_name("mw_test")))


@contextmanager
def trained_database(templates: Templates, server_url: str, home: Path, label: str) -> Iterator[Settings]:
    """A database of its own (dropped after), initialised, with the baseline trained on January 2023."""
    with copied_database(server_url, templates.trained, scratch_name(f"mw_{label}"), home) as url:
        yield Settings(home=home, database_url=url)


@pytest.fixture(scope="session")
def demo_settings(templates: Templates, server_url: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The demo, run once: trained on January 2023, February 2023 as 28 batches. Read only."""
    with trained_database(templates, server_url, tmp_path_factory.mktemp("demo_home"), "demo") as settings:
        pipeline.backfill(settings, FEBRUARY)
        yield settings


@pytest.fixture
def demo_conn(demo_settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(demo_settings.database_url, autocommit=True) as conn:
        yield conn
