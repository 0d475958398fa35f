"""Settings: environment variables over defaults, read when asked, never at import.

The monitored columns and the contract live in `dbt_project.yml` vars, the one
place both dbt and Python read them from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

# The repo root is the dbt project; the package lives in python/modelwatch.
PROJECT_DIR = Path(__file__).resolve().parents[2]
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "data"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_identifier(name: str, where: str) -> str:
    """A configured column name must be a plain lower-case SQL identifier."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise UsageError(f"{where}: {name!r} is not a plain column name (lower-case letters, digits, _)")
    return name


@dataclass(frozen=True)
class Monitoring:
    """What is monitored, as declared in dbt_project.yml `vars.monitoring`."""

    timestamp: str
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    prediction: str
    target: str
    zone_columns: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        """Columns with quantiles: numeric features, the prediction and the target."""
        return self.numeric_features + (self.prediction, self.target)

    @classmethod
    def from_vars(cls, raw: Mapping[str, Any], where: str) -> Monitoring:
        try:
            monitoring = cls(
                timestamp=check_identifier(raw["timestamp"], f"{where}: timestamp"),
                numeric_features=tuple(check_identifier(c, f"{where}: numeric_features") for c in raw["numeric_features"]),
                categorical_features=tuple(
                    check_identifier(c, f"{where}: categorical_features") for c in raw["categorical_features"]
                ),
                prediction=check_identifier(raw["prediction"], f"{where}: prediction"),
                target=check_identifier(raw["target"], f"{where}: target"),
                zone_columns=tuple(check_identifier(c, f"{where}: zone_columns") for c in raw.get("zone_columns", ())),
            )
        except (KeyError, TypeError) as exc:
            raise UsageError(f"{where}: monitoring vars incomplete ({exc})") from None
        return monitoring


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
    def monitoring(self) -> Monitoring:
        return Monitoring.from_vars(self.dbt_vars.get("monitoring") or {}, "dbt_project.yml vars.monitoring")
