"""Build hook: the taxi demo's dbt project and the Grafana dashboards go into the wheel.

They live at the repo root, where dbt reads them in a checkout; a wheel holds a copy under
modelwatch/project (modelwatch.config.PACKAGED_PROJECT_DIR). An editable install reads the
repo root itself, so it gets no copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# What dbt reads of the project (modelwatch.transform.PROJECT_PARTS, those that exist), and grafana/.
PROJECT_PARTS = ("dbt_project.yml", "selectors.yml", "packages.yml", "profiles", "models", "macros", "seeds",
                 "tests", "snapshots", "analyses", "grafana")


class ProjectInWheel(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        for part in PROJECT_PARTS:
            if (root / part).exists():
                build_data["force_include"][str(root / part)] = f"modelwatch/project/{part}"
