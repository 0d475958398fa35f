"""The dbt project's views: created by `init`, kept by builds while the project is the same,
created again by a build when it changes or when one is missing (modelwatch.transform.views)."""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

import psycopg

from modelwatch import pipeline
from modelwatch.config import Settings

from .conftest import FEBRUARY, copy_project

VIEW = "staging.stg_batches"  # the batch log as dbt reads it; int_batch_volume is a view over it


def _state(settings: Settings) -> tuple[int | None, list[str]]:
    """The view's oid (a CREATE VIEW by dbt makes a new relation) and the recorded digests."""
    with psycopg.connect(settings.database_url) as conn:
        oid = conn.execute("select to_regclass(%s)::oid", (VIEW,)).fetchone()[0]
        digests = [row[0] for row in conn.execute("select project_digest from raw.dbt_views")]
    return oid, digests


def _run(settings: Settings, day: int) -> None:
    outcome = pipeline.run_batch(settings, date(2023, 2, day), FEBRUARY)
    assert outcome.status == "passed"


def test_views_are_created_once_per_project(trained_settings: Settings, tmp_path: Path) -> None:
    first, digests = _state(trained_settings)  # init created them
    assert first is not None and len(digests) == 1
    _run(trained_settings, 6)
    _run(trained_settings, 7)  # the same project: the views stay
    assert _state(trained_settings) == (first, digests)

    with psycopg.connect(trained_settings.database_url) as conn:
        conn.execute(f"drop view {VIEW} cascade")  # gone (and int_batch_volume with it): the next build creates them
    _run(trained_settings, 8)
    again, same_digests = _state(trained_settings)
    assert again is not None and again != first and same_digests == digests

    # An edited model (here only a comment) is another project: its views replace these.
    project = copy_project(tmp_path / "project")
    model = project / "models" / "staging" / "stg_batches.sql"
    model.write_text(model.read_text() + "\n-- edited\n")
    edited = dataclasses.replace(trained_settings, project_dir=project)
    _run(edited, 9)
    after_edit, edited_digests = _state(edited)
    assert after_edit != again and len(edited_digests) == 1 and edited_digests != digests
    with psycopg.connect(edited.database_url) as conn:
        definition = conn.execute("select pg_get_viewdef(%s::regclass)", (VIEW,)).fetchone()[0]
    assert "batch_date" in definition  # the view itself, still whole

    pipeline.init(edited)  # init makes them anew: the raw tables they read may have changed
    after_init = _state(edited)
    assert after_init[0] != after_edit and after_init[1] == edited_digests
    _run(edited, 10)
    assert _state(edited) == after_init
