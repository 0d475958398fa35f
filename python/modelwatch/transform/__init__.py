"""Running dbt in process (dbtRunner) and reading its results.

A `dbt build` process costs seconds of start-up and parsing. In process, the
project is parsed once (see _manifest) and every invocation reuses it, so a
whole range of batches is built by two invocations (before and after the
drift step's results) plus one for the run results, in about 0.2 s of dbt's
own overhead each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from modelwatch import scaffold
from modelwatch.config import PACKAGE_PROJECT_ENV, PROJECT_DIR, Settings
from modelwatch.errors import TransformError
from modelwatch.postgres import db
from modelwatch.postgres.db import dbt_env
from modelwatch.transform import compilation, views

RUN_RESULTS_TAG = "run_results"
GATED_TAG = "gated"


@dataclass(frozen=True)
class TestOutcome:
    """One dbt test of one invocation; `relation` holds its failing rows (store_failures)."""

    name: str
    column: str | None
    status: str
    failures: int
    message: str | None
    relation: str | None
    invocation_id: str  # the dbt invocation that ran it
    seeds: tuple[str, ...] = ()  # the seeds it tests (a monitor's lookups)


@dataclass(frozen=True)
class BuildResult:
    tests: tuple[TestOutcome, ...]


# The profile's target modelwatch builds with: its schemas are raw, staging, marts and audit
# (macros/generate_schema_name.sql); any other target (`dev`, plain dbt's default) gets its own.
PIPELINE_TARGET = "pipeline"


def _base_args(settings: Settings) -> list[str]:
    return [
        "--project-dir", str(settings.project_dir),
        "--profiles-dir", str(settings.profiles_dir),
        "--target", PIPELINE_TARGET,
        "--target-path", str(settings.dbt_dir / "target"),
        "--log-path", str(settings.dbt_dir / "logs"),
    ]


# Flags of _base_args a command by hand may give itself (with their short forms).
_HAND_FLAGS = {"--project-dir": (), "--profiles-dir": (), "--target": ("-t",), "--target-path": (),
               "--log-path": ()}


def is_subcommand(args: list[str]) -> bool:
    """Whether dbt's command line names a command (`dbt --version` and `dbt --help` do not)."""
    return bool(args) and not args[0].startswith("-")


def by_hand(settings: Settings, url: str | None, args: list[str]) -> int:
    """Any dbt command (`args` as on dbt's command line) on the project and the database at
    `url`, as the pipeline role (the profile's role), while no build runs; returns dbt's exit
    code (0, 1: a node failed, 2: dbt could not run). dbt logs to stdout as it does alone.
    `url` None: dbt's own --version or --help, which reach no database."""
    command = list(args)
    if url is None or not is_subcommand(command):
        result = dbt_runner()().invoke(command)
        return 0 if result.success else (2 if result.exception is not None else 1)
    os.environ.update(dbt_env(url))
    prepare_project(settings)
    base = _base_args(settings)
    for flag, value in zip(base[::2], base[1::2], strict=True):
        given = (flag, *_HAND_FLAGS[flag])
        if not any(arg in given or arg.startswith(flag + "=") for arg in command):
            command += [flag, value]
    settings.dbt_dir.mkdir(parents=True, exist_ok=True)
    with db.connect(url, autocommit=True) as conn, db.build_lock(conn):
        result = dbt_runner()().invoke(command)
        if command[0] in ("build", "run", "seed", "snapshot", "clone"):
            views.forget(conn)  # what dbt made by hand may differ: the next build makes the views again
    if result.exception is not None:
        return 2
    return 0 if result.success else 1


def dbt_runner() -> Any:
    """dbt's runner class, imported on first use (the import costs about a second), its CTE
    injection a splice (compilation.splice_ctes)."""
    from dbt.cli.main import dbtRunner

    compilation.splice_ctes()
    return dbtRunner


def warm(settings: Settings, url: str) -> None:
    """dbt imported and the project parsed (what a build's first invocation would wait for), for
    a thread to do while the run loads its batches."""
    dbt_runner()
    _project_digest(settings)
    _manifest(settings, dbt_env(url), "build")


def invoke(settings: Settings, url: str, command: list[str], **options: Any) -> Any:
    """Run one dbt command in process; raise TransformError when dbt itself cannot run."""
    return _invoke(settings, dbt_env(url), command, **options)


def _invoke(settings: Settings, env: dict[str, str], command: list[str], **options: Any) -> Any:
    """invoke() with the profile's environment (db.dbt_env) found already: it costs a query."""
    settings.dbt_dir.mkdir(parents=True, exist_ok=True)
    args = [*command, *_base_args(settings), *_LOG_ARGS, *_json_args(command[0])]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, value]
    result = dbt_runner()(manifest=compilation.uncompiled(_manifest(settings, env, command[0]))).invoke(args)
    if result.exception is not None:
        raise TransformError(f"dbt {command[0]} could not run: {_first_line(result.exception)}")
    return result


_LOG_ARGS = ("--log-level", "none", "--log-level-file", "info")
# The pipeline's own commands read their results off the runner's result, never target/'s JSON:
# without --no-write-json each would write manifest.json (about 1 MB), graph.gpickle and
# run_results.json, three times a batch. (The partial-parse file is written all the same; other
# commands, `docs generate` and dbt by hand, write their artifacts as dbt does.)
_NO_JSON_COMMANDS = ("parse", "build", "run", "seed")


def _json_args(command: str) -> tuple[str, ...]:
    return ("--no-write-json",) if command in _NO_JSON_COMMANDS else ()
# The parsed projects of this process, keyed by what each was parsed from (see _manifest):
# the latest two, for a process that works on two databases in turn.
_parsed: dict[tuple, Any] = {}
PARSED_KEPT = 2


def _manifest(settings: Settings, env: dict[str, str], command: str) -> Any:
    """The project parsed once per process, without the batch vars, for every invocation to reuse.

    Parsing is the bulk of an invocation's start-up: a full parse takes about 1.5 s, and dbt
    parses in full whenever --vars change, which they do every run (the batch range). Parsed
    without them, the project's partial-parse file matches from one run to the next (0.2 s) and
    the parsed manifest serves every later invocation; the batch vars passed to those still
    reach the SQL, which is compiled at run time. The key holds the profile's environment
    (relations name their database) and the project files' sizes and times, so an edit
    re-parses.
    """
    os.environ.update(env)  # what profiles.yml reads, for the parse and the invocation that follows
    prepare_project(settings)
    key = (str(settings.project_dir), str(settings.dbt_dir), tuple(sorted(env.items())), _project_files(settings))
    if key not in _parsed:
        result = dbt_runner()().invoke(["parse", *_base_args(settings), *_LOG_ARGS, *_json_args("parse")])
        if result.exception is not None or not result.success:
            raise TransformError(f"dbt {command} could not run: "
                                 f"{_first_line(result.exception or 'the project does not parse')}")
        while len(_parsed) >= PARSED_KEPT:  # a manifest holds a few MB
            del _parsed[next(iter(_parsed))]
        _parsed[key] = result.result
    return _parsed[key]


# What a dbt project is made of here: the files and folders dbt reads.
PROJECT_PARTS = ("dbt_project.yml", "selectors.yml", "packages.yml", "dependencies.yml", "profiles", "models",
                 "macros", "seeds", "tests", "snapshots", "analyses")


def prepare_project(settings: Settings) -> None:
    """A project of one's own (`modelwatch new`) gets modelwatch's package installed (`dbt deps`:
    a link to the installed modelwatch's project) where it is missing or points elsewhere, and
    the package's selectors.yml, which modelwatch's builds select by (dbt reads the root's only)."""
    if not settings.uses_package:
        return
    shipped = (PROJECT_DIR / "selectors.yml").read_text()
    selectors = settings.project_dir / "selectors.yml"
    if not selectors.is_file() or selectors.read_text() != shipped:
        selectors.write_text(shipped)
    installed = settings.project_dir / "dbt_packages" / scaffold.PACKAGE_NAME
    if installed.exists() and installed.resolve() == PROJECT_DIR.resolve():
        return
    os.environ[PACKAGE_PROJECT_ENV] = str(PROJECT_DIR)
    result = dbt_runner()().invoke(["deps", "--project-dir", str(settings.project_dir), "--profiles-dir",
                                    str(settings.profiles_dir), "--log-path", str(settings.dbt_dir / "logs"),
                                    *_LOG_ARGS])
    if result.exception is not None or not result.success:
        raise TransformError(f"dbt deps could not install modelwatch's package into {settings.project_dir}: "
                             f"{_first_line(result.exception or 'see its log')}")


def _project_files(settings: Settings) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file dbt parses (the package's too, for a project that uses
    it), to notice an edited project or an upgraded modelwatch."""
    dirs = [settings.project_dir, PROJECT_DIR] if settings.uses_package else [settings.project_dir]
    roots = [project_dir / name for project_dir in dirs for name in PROJECT_PARTS]
    files = [root for root in roots if root.is_file()]
    files += [path for root in roots if root.is_dir() for path in root.rglob("*") if path.is_file()]
    return tuple(sorted((str(path), (stat := path.stat()).st_size, stat.st_mtime_ns) for path in files))


_digests: dict[tuple, str] = {}


def _project_digest(settings: Settings) -> str:
    """views.project_digest of the project, computed again only when a file's size or time changes."""
    files = _project_files(settings)
    if files not in _digests:
        from dbt.adapters.postgres.__version__ import version as adapter_version
        from dbt.version import __version__ as dbt_version

        _digests.clear()
        _digests[files] = views.project_digest(settings.project_dir, [Path(path) for path, _, _ in files],
                                               f"dbt-core {dbt_version}, dbt-postgres {adapter_version}")
    return _digests[files]


def _view_relations(manifest: Any) -> list[str]:
    """The relations of the project's view models, as dbt names them (database.schema.name)."""
    return [node.relation_name for node in manifest.nodes.values()
            if node.resource_type == "model" and node.config.materialized == "view"]


def batch_vars(monitor: str, start: date, end: date) -> str:
    """The vars of a build: the monitor and its batches start..end (batch dates)."""
    return json.dumps({"monitor": monitor, "batch_start": start.isoformat(), "batch_end": end.isoformat()})


def monitor_vars(monitor: str) -> str:
    return json.dumps({"monitor": monitor})


# selectors.yml: what a build runs while the drift step runs, and what reads its results.
BEFORE_DRIFT_SELECTOR = "before_drift"
BEFORE_DRIFT_KEEPING_VIEWS_SELECTOR = "before_drift_keeping_views"
AFTER_DRIFT_SELECTOR = "after_drift"  # reads_drift and the run results


def build(settings: Settings, url: str, conn: psycopg.Connection, monitor: str, start: date, end: date,
          drift_scored: Callable[[], None] = lambda: None,
          phase: Callable[[str], None] = lambda _: None,
          record: Callable[[BuildResult], Any] = lambda _: None) -> BuildResult:
    """`dbt build` for the monitor's batches start..end, then the gated marts for the batches
    that passed, with the batches' run results (test_results, batch_health).

    Two invocations: first every model and test that does not read the drift step's
    results, while that step runs in its own process, whose tests' outcomes `record` then
    stores (modelwatch.transform.results); once `drift_scored` returns (it waits for the
    step and raises its error), the drift marts, their tests and the run results, which read
    the recorded outcomes. Tests in the second invocation (of a drift mart) are recorded
    after it, and the run results built again. A failing contract test makes dbt skip the
    gated marts downstream of it; their SQL admits passing batches only, so running the
    skipped ones once more lets the gate decide batch by batch. The views are left out when
    the database (`conn`, the pipeline's session) holds this project's already
    (modelwatch.transform.views).
    """
    batch = batch_vars(monitor, start, end)
    # Unit tests check the SQL, not the batch: the test suite runs them, not every build. The
    # seeds (the monitors' lookups) are loaded by `init`; their tests still run with every build.
    common = {"vars": batch, "exclude_resource_type": "unit_test seed"}
    env = dbt_env(url)
    digest = _project_digest(settings)
    keep_views = views.current(conn, digest, _view_relations(_manifest(settings, env, "build")))
    selector = BEFORE_DRIFT_KEEPING_VIEWS_SELECTOR if keep_views else BEFORE_DRIFT_SELECTOR
    phase("dbt build: quality, performance, the contract (drift scored alongside)")
    first = _invoke(settings, env, ["build"], selector=selector, **common)
    _raise_errors(first)
    if not keep_views and _all_views_built(first):
        views.record(conn, digest)
    tests, skipped = _outcomes(first, _invocation_id())
    phase("recording the tests' outcomes")
    record(BuildResult(tests=tests))
    phase("drift: waiting for Evidently's scores")
    drift_scored()
    phase("dbt build: the drift marts, their tests, test_results and batch_health")
    second = _invoke(settings, env, ["build"], selector=AFTER_DRIFT_SELECTOR, **common)
    _raise_errors(second)
    drift_tests, drift_skipped = _outcomes(second, _invocation_id())
    if drift_tests:  # their outcomes reach test_results and batch_health once recorded
        record(BuildResult(tests=drift_tests))
        build_run_results(settings, url, monitor, start, end)
    if skipped + drift_skipped:
        _run_models(settings, env, " ".join(skipped + drift_skipped), vars=batch)
    return BuildResult(tests=tests + drift_tests)


def _outcomes(result: Any, invocation_id: str) -> tuple[tuple[TestOutcome, ...], list[str]]:
    """An invocation's tests' outcomes, and the gated models it skipped."""
    tests: list[TestOutcome] = []
    skipped: list[str] = []
    for node_result in result.result.results:
        node = node_result.node
        status = str(node_result.status)
        if node.resource_type == "test":
            tests.append(TestOutcome(
                name=node.name,
                column=getattr(node, "column_name", None),
                status=status,
                failures=int(node_result.failures or 0),
                message=node_result.message,
                relation=node.relation_name if node.config.get("store_failures") else None,
                invocation_id=invocation_id,
                seeds=tuple(parent.split(".")[-1] for parent in node.depends_on.nodes if parent.startswith("seed.")),
            ))
        elif status == "skipped" and GATED_TAG in node.tags:
            skipped.append(node.name)
    return tuple(tests), skipped


def _all_views_built(result: Any) -> bool:
    """Whether the invocation created every view of the project (none skipped or failed)."""
    built = [str(r.status) == "success" for r in result.result.results
             if r.node.resource_type == "model" and r.node.config.materialized == "view"]
    return bool(built) and all(built)


def _raise_errors(result: Any) -> None:
    """TransformError naming each model that failed (a failing test is an outcome, not an error)."""
    errors = [f"{r.node.resource_type} {r.node.name}: {_first_line(r.message)}"
              for r in result.result.results if r.node.resource_type != "test" and str(r.status) == "error"]
    if errors:
        hint = (" (a relation made by another role, e.g. a dbt run by hand as the login: `modelwatch init` hands "
                "them back to modelwatch_pipeline)" if any("permission denied" in error for error in errors) else "")
        raise TransformError("dbt build failed: " + "; ".join(errors) + hint)


def build_run_results(settings: Settings, url: str, monitor: str, start: date, end: date) -> None:
    """test_results and batch_health, once the tests' outcomes are recorded in raw."""
    _run_models(settings, dbt_env(url), f"tag:{RUN_RESULTS_TAG}", vars=batch_vars(monitor, start, end))


REFERENCE_TAG = "reference"


def bin_references(settings: Settings, url: str, monitor: str) -> None:
    """The reference models (tag reference: the PSI bins and the profile the contract checks
    against) for every reference set of the monitor not done yet: when a reference is stored,
    not in every build."""
    _run_models(settings, dbt_env(url), f"tag:{REFERENCE_TAG}", vars=monitor_vars(monitor))


def references_binned(conn: psycopg.Connection, monitor: str, start: date, end: date) -> bool:
    """Whether every reference set the monitor's batches start..end use has its bins."""
    if conn.execute("select to_regclass('staging.int_reference_bins')").fetchone()[0] is None:
        return False
    return conn.execute(
        """select not exists (
               select 1 from raw.batches as b
               where b.monitor = %s and b.batch_date between %s and %s and b.reference_version is not null
                 and not exists (select 1 from staging.int_reference_bins as bins
                                 where bins.monitor = b.monitor and bins.reference_version = b.reference_version))""",
        (monitor, start, end),
    ).fetchone()[0]


def create_views(settings: Settings, url: str, conn: psycopg.Connection) -> None:
    """The project's views, recorded in the database at `conn` (the pipeline's session, holding
    the build lock) as this project's: at `init`, so that builds need not make them. (The
    views read only the shared tables: the same for every monitor.)"""
    _run_models(settings, dbt_env(url), "config.materialized:view")
    views.record(conn, _project_digest(settings))


def _run_models(settings: Settings, env: dict[str, str], select: str, **options: Any) -> None:
    result = _invoke(settings, env, ["run"], select=select, **options)
    if not result.success:
        raise TransformError(f"dbt run of {select} failed: " + "; ".join(
            f"{r.node.name}: {_first_line(r.message)}" for r in result.result.results if str(r.status) == "error"
        ))


def seed(settings: Settings, url: str) -> None:
    result = invoke(settings, url, ["seed"])
    if not result.success:
        raise TransformError("dbt seed failed")


def _invocation_id() -> str:
    """The id of the dbt invocation that just ran (dbt keeps it per process)."""
    from dbt_common.invocation import get_invocation_id

    return get_invocation_id()


def _first_line(value: object, limit: int = 400) -> str:
    """dbt's messages span lines (where, then what): one line of both."""
    text = " ".join(str(value or "").split())
    return (text[:limit] + "...") if len(text) > limit else (text or "no message")
