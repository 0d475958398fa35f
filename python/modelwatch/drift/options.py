"""vars.drift of dbt_project.yml, the part the Evidently step uses (no heavy imports: the run reads it too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelwatch.config import Settings
from modelwatch.errors import UsageError
from modelwatch.monitors import deep_merge, Monitor


@dataclass(frozen=True)
class DriftOptions:
    """vars.drift of dbt_project.yml, the part the Evidently step uses."""

    max_rows: int = 100_000
    sample_seed: int = 42
    drift_share: float = 0.5

    @classmethod
    def from_vars(cls, raw: Mapping[str, Any] | None) -> DriftOptions:
        raw = raw or {}
        try:
            options = cls(
                max_rows=int(raw.get("evidently_max_rows", cls.max_rows)),
                sample_seed=int(raw.get("evidently_sample_seed", cls.sample_seed)),
                drift_share=float(raw.get("dataset_drift_share", cls.drift_share)),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"dbt_project.yml vars.drift: {exc}") from None
        if options.max_rows < 1 or not 0 < options.drift_share <= 1:
            raise UsageError("dbt_project.yml vars.drift: evidently_max_rows must be >= 1 and "
                             "dataset_drift_share in (0, 1]")
        return options

    @classmethod
    def from_settings(cls, settings: Settings, monitor: Monitor | None = None) -> DriftOptions:
        """vars.drift, with the monitor's own `drift` key merged over it."""
        own = (monitor.raw.get("drift") if monitor is not None else None) or {}
        return cls.from_vars(deep_merge(settings.dbt_vars.get("drift") or {}, own))
