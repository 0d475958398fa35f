"""Running dbt in process (dbtRunner) and reading its results.

A `dbt build` process costs seconds of start-up and parsing; in process the
first call costs 2-4 s and later ones about 1 s, so modelwatch builds a whole
range of batches in one invocation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .config import Settings
from .db import dbt_env
from .errors import TransformError

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


@dataclass(frozen=True)
class BuildResult:
    invocation_id: str
    tests: tuple[TestOutcome, ...]
    skipped: tuple[str, ...] = field(default=())


def _base_args(settings: Settings) -> list[str]:
    return [
        "--project-dir", str(settings.project_dir),
        "--profiles-dir", str(settings.project_dir / "profiles"),
        "--target-path", str(settings.dbt_dir / "target"),
        "--log-path", str(settings.dbt_dir / "logs"),
    ]


def dbt_runner() -> Any:
    """dbt's runner class, imported on first use: the import costs about a second."""
    from dbt.cli.main import dbtRunner

    return dbtRunner


def invoke(settings: Settings, url: str, command: list[str], **options: Any) -> Any:
    """Run one dbt command in process; raise TransformError when dbt itself cannot run."""
    os.environ.update(dbt_env(url))
    settings.dbt_dir.mkdir(parents=True, exist_ok=True)
    args = [*command, *_base_args(settings), "--log-level", "none", "--log-level-file", "info"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, value]
    runner = dbt_runner()
    result = runner().invoke(args)
    if result.exception is not None:
        raise TransformError(f"dbt {command[0]} could not run: {_first_line(result.exception)}")
    return result


def batch_vars(start: date, end: date) -> str:
    return json.dumps({"batch_start": start.isoformat(), "batch_end": end.isoformat()})


def build(settings: Settings, url: str, start: date, end: date) -> BuildResult:
    """`dbt build` for batches start..end, then the gated marts for the batches that passed.

    A failing contract test makes dbt skip the gated marts for the whole range;
    their SQL admits passing batches only, so running them once more lets the
    gate decide batch by batch.
    """
    # Unit tests check the SQL, not the batch: the test suite runs them, not every build.
    result = invoke(settings, url, ["build"], vars=batch_vars(start, end), exclude=f"tag:{RUN_RESULTS_TAG}",
                    exclude_resource_type="unit_test")
    tests: list[TestOutcome] = []
    skipped: list[str] = []
    errors: list[str] = []
    invocation_id = _invocation_id()
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
            ))
        elif status == "error":
            errors.append(f"{node.resource_type} {node.name}: {_first_line(node_result.message)}")
        elif status == "skipped":
            skipped.append(node.name)
    if errors:
        raise TransformError("dbt build failed: " + "; ".join(errors))
    if skipped:
        invoke(settings, url, ["run"], vars=batch_vars(start, end), select=f"tag:{GATED_TAG}")
    return BuildResult(invocation_id=invocation_id, tests=tuple(tests), skipped=tuple(skipped))


def build_run_results(settings: Settings, url: str, start: date, end: date) -> None:
    """test_results and batch_health, once the tests' outcomes are recorded in raw."""
    result = invoke(settings, url, ["run"], vars=batch_vars(start, end), select=f"tag:{RUN_RESULTS_TAG}")
    if not result.success:
        raise TransformError("dbt run of test_results/batch_health failed: " + "; ".join(
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
