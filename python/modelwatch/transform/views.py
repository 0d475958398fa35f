"""The dbt project's views, created when the project changes, not by every build.

A view holds no data, so re-creating the staging views in every build costs
time and changes nothing: a CREATE VIEW for each, a create, two renames and a
drop, ahead of every table that reads them (about a second of a month's
backfill). `modelwatch init` creates them, and the database records the digest
of the project that last created its views (raw.dbt_views); a build leaves the
views out when that digest is the current project's and every view exists, and
creates them (and records the digest) otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import psycopg

DDL = """
-- The dbt project whose views this database holds (modelwatch.transform.views).
create table if not exists raw.dbt_views (
    project_digest text not null,
    created_at timestamptz not null default now()
);
"""


def project_digest(project_dir: Path, files: Iterable[Path], dbt_versions: str) -> str:
    """What the views are made from: every project file's path and content, and dbt's versions
    (dbt-core's and the adapter's, whose macros write the CREATE VIEW)."""
    digest = hashlib.sha256(dbt_versions.encode())
    for path in sorted(files):
        name = path.relative_to(project_dir) if path.is_relative_to(project_dir) else path  # a package's file
        digest.update(str(name).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def current(conn: psycopg.Connection, digest: str, relations: Iterable[str]) -> bool:
    """Whether the database holds the views of the project with this digest, all of them."""
    if conn.execute("select to_regclass('raw.dbt_views')").fetchone()[0] is None:
        return False  # a database from before this record: `init` adds it
    stored = [row[0] for row in conn.execute("select project_digest from raw.dbt_views")]
    if stored != [digest]:
        return False
    return all(conn.execute("select to_regclass(%s)", (relation,)).fetchone()[0] is not None
               for relation in relations)


def record(conn: psycopg.Connection, digest: str) -> None:
    """The views of the project with this digest were just created."""
    if conn.execute("select to_regclass('raw.dbt_views')").fetchone()[0] is None:
        return
    with conn.transaction():
        conn.execute("delete from raw.dbt_views")
        conn.execute("insert into raw.dbt_views (project_digest) values (%s)", (digest,))


def forget(conn: psycopg.Connection) -> None:
    """The next build creates the views again (`init`, until it has created them: the raw tables
    they read may have changed)."""
    conn.execute("delete from raw.dbt_views")
