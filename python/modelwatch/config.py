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

from .errors import UsageError
from .monitors import Monitor, Monitors, parse_monitors

# The repo root is the dbt project; the package lives in python/modelwatch.
PROJECT_DIR = Path(__file__).resolve().parents[2]
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "data"

@dataclass(frozen=True)
class Settings:
    """Everything configurable, from the environment (MODELWATCH_*) over defaults."""

    home: Path
    database_url: str | None = None
    project_dir: Path = PROJECT_DIR
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        home = Path(env.get("MODELWATCH_HOME") or ".modelwatch").expanduser().resolve()
        return cls(
            home=home,
            database_url=env.get("MODELWATCH_DATABASE_URL") or None,
            project_dir=Path(env.get("MODELWATCH_PROJECT_DIR") or PROJECT_DIR).resolve(),
            environ=env,
        )

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

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

    @cached_property
    def dbt_vars(self) -> dict[str, Any]:
        path = self.project_dir / "dbt_project.yml"
        try:
            return dict(yaml.safe_load(path.read_text())["vars"])
        except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
            raise UsageError(f"{path}: cannot read vars ({exc})") from None

    @cached_property
    def monitors(self) -> Monitors:
        return parse_monitors(self.dbt_vars, str(self.project_dir / "dbt_project.yml"))

    def monitor(self, name: str | None = None) -> Monitor:
        """The declared monitor `name`, or the project's default one."""
        return self.monitors.get(name)
