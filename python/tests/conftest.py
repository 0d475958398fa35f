"""Test fixtures: a real PostgreSQL server, real TLC data, no mocks.

The server is the embedded one in a temporary directory, or the server of
MODELWATCH_TEST_DATABASE_URL / MODELWATCH_DATABASE_URL when set. Each test
that writes gets a database of its own on that server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from modelwatch import embedded, pipeline
from modelwatch.config import PACKAGE_DATA_DIR, Settings

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nyc_tlc"
JANUARY = PACKAGE_DATA_DIR / "green_tripdata_2023-01.parquet"
FEBRUARY = PACKAGE_DATA_DIR / "green_tripdata_2023-02.parquet"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared TLC data not found at {path}")
    return path


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An admin URL to a PostgreSQL server (its maintenance database)."""
    url = os.environ.get("MODELWATCH_TEST_DATABASE_URL") or os.environ.get("MODELWATCH_DATABASE_URL")
    if url:
        yield url
        return
    pgdata = tmp_path_factory.mktemp("pg") / "pgdata"
    embedded.start(pgdata)
    try:
        yield embedded.running_url(pgdata, database="postgres")
    finally:
        embedded.stop(pgdata)


def _create_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def _drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_settings(server_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for an empty database of this test's own and a home in tmp_path."""
    name = f"mw_test_{uuid.uuid4().hex[:10]}"
    url = _create_database(server_url, name)
    try:
        yield Settings(home=tmp_path / "home", database_url=url)
    finally:
        _drop_database(server_url, name)


@pytest.fixture
def trained_settings(fresh_settings: Settings) -> Settings:
    """A fresh database, initialised, with the baseline trained on January 2023."""
    pipeline.init(fresh_settings)
    pipeline.train(fresh_settings, JANUARY)
    return fresh_settings


@pytest.fixture(scope="session")
def demo_settings(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The demo, run once: trained on January 2023, February 2023 as 28 batches. Read only."""
    name = f"mw_demo_{uuid.uuid4().hex[:10]}"
    url = _create_database(server_url, name)
    settings = Settings(home=tmp_path_factory.mktemp("demo_home"), database_url=url)
    pipeline.init(settings)
    pipeline.train(settings, JANUARY)
    pipeline.backfill(settings, FEBRUARY)
    try:
        yield settings
    finally:
        _drop_database(server_url, name)


@pytest.fixture
def demo_conn(demo_settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(demo_settings.database_url, autocommit=True) as conn:
        yield conn
