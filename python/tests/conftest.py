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
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from modelwatch import pipeline, transform
from modelwatch.cli import main
from modelwatch.config import PACKAGE_DATA_DIR, PROJECT_DIR, Settings
from modelwatch.postgres import db, embedded

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


@pytest.fixture
def trained_settings(fresh_settings: Settings) -> Settings:
    """A fresh database, initialised, with the baseline trained on January 2023."""
    pipeline.init(fresh_settings)
    pipeline.train(fresh_settings, JANUARY)
    return fresh_settings


@contextmanager
def trained_database(server_url: str, home: Path, label: str) -> Iterator[Settings]:
    """A database of its own (dropped after), initialised, with the baseline trained on January 2023."""
    with db.scratch_database(server_url, scratch_name(f"mw_{label}")) as url:
        settings = Settings(home=home, database_url=url)
        pipeline.init(settings)
        pipeline.train(settings, JANUARY)
        yield settings


@pytest.fixture(scope="session")
def demo_settings(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The demo, run once: trained on January 2023, February 2023 as 28 batches. Read only."""
    with trained_database(server_url, tmp_path_factory.mktemp("demo_home"), "demo") as settings:
        pipeline.backfill(settings, FEBRUARY)
        yield settings


@pytest.fixture
def demo_conn(demo_settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(demo_settings.database_url, autocommit=True) as conn:
        yield conn
