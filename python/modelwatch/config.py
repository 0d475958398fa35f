"""Settings: environment variables over defaults, read when asked, never at import.

The monitors (what is monitored, the contract) live in `dbt_project.yml` vars,
the one place both dbt and Python read them from (modelwatch.monitors).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from modelwatch.errors import UsageError
from modelwatch.monitors import Monitor, Monitors, parse_monitors

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_DATA_DIR = PACKAGE_DIR / "data"
# The project that ships the taxi demo: in a wheel, the copy made at build time (pyproject's
# force-include); in a checkout or an editable install, the repo root itself.
PACKAGED_PROJECT_DIR = PACKAGE_DIR / "project"
PROJECT_DIR = (PACKAGED_PROJECT_DIR if (PACKAGED_PROJECT_DIR / "dbt_project.yml").is_file()
               else PACKAGE_DIR.parents[1])
# Where a project of one's own finds modelwatch's generic models and macros (a dbt package).
PACKAGE_PROJECT_ENV = "MODELWATCH_PACKAGE_DIR"


def find_project(explicit: Path | str | None, environ: Mapping[str, str], cwd: Path | None = None) -> Path:
    """The dbt project to run: --project, else MODELWATCH_PROJECT_DIR, else the current folder
    when it holds a dbt_project.yml, else the one shipped with modelwatch (the taxi demo's)."""
    chosen = explicit or environ.get("MODELWATCH_PROJECT_DIR") or None
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not (path / "dbt_project.yml").is_file():
            raise UsageError(f"{path}: no dbt_project.yml there (`modelwatch new {chosen}` makes a project)")
        return path
    here = (cwd or Path.cwd()).resolve()
    return here if (here / "dbt_project.yml").is_file() else PROJECT_DIR

def _project_vars(path: Path) -> dict[str, Any]:
    try:
        return dict(yaml.safe_load(path.read_text())["vars"] or {})
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read vars ({exc})") from None


@dataclass(frozen=True)
class Settings:
    """Everything configurable, from the environment (MODELWATCH_*) over defaults."""

    home: Path
    database_url: str | None = None
    project_dir: Path = PROJECT_DIR
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, project: Path | str | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("MODELWATCH_HOME") or ".modelwatch").expanduser().resolve()
        return cls(
            home=home,
            database_url=env.get("MODELWATCH_DATABASE_URL") or None,
            project_dir=find_project(project, env),
            environ=env,
        )

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def profiles_dir(self) -> Path:
        """Where the project's profiles.yml is: its `profiles/` folder, or the project itself."""
        folder = self.project_dir / "profiles"
        return folder if (folder / "profiles.yml").exists() else self.project_dir

    @property
    def grafana_dir(self) -> Path:
        """The project's Grafana dashboards and provisioning, or those shipped with modelwatch."""
        own = self.project_dir / "grafana"
        return own if (own / "dashboards").is_dir() else PROJECT_DIR / "grafana"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def reference_cache_dir(self) -> Path:
        """Reference sets as the drift step read them (modelwatch.drift.reference_cache)."""
        return self.home / "cache" / "references"

    @property
    def dbt_dir(self) -> Path:
        """dbt's target and logs: per home, so two homes never share a manifest."""
        return self.home / "dbt"

    @property
    def reader_password(self) -> str | None:
        return self.environ.get("MODELWATCH_READER_PASSWORD") or None

    @property
    def pipeline_password(self) -> str | None:
        """Makes modelwatch_pipeline a login role with this password (init); unset: it stays as it is."""
        return self.environ.get("MODELWATCH_PIPELINE_PASSWORD") or None

    @property
    def uses_package(self) -> bool:
        """Whether the project is one of its own (`modelwatch new`) that uses modelwatch's models as
        a dbt package, rather than modelwatch's project (or a copy of it)."""
        return (self.project_dir / "packages.yml").is_file() and self.project_dir != PROJECT_DIR

    @cached_property
    def dbt_vars(self) -> dict[str, Any]:
        """The project's vars; a project that uses the package gets the package's for every var it
        does not set (dbt resolves them the same way)."""
        own = _project_vars(self.project_dir / "dbt_project.yml")
        return {**_project_vars(PROJECT_DIR / "dbt_project.yml"), **own} if self.uses_package else own

    @cached_property
    def monitors(self) -> Monitors:
        return parse_monitors(self.dbt_vars, str(self.project_dir / "dbt_project.yml"))

    def monitor(self, name: str | None = None) -> Monitor:
        """The declared monitor `name`, or the project's default one."""
        return self.monitors.get(name)
