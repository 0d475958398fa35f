"""Evidently's drift tests without the rest of its package, for the drift worker.

`import evidently` (which any of its submodules runs first) loads its Reports,
presets, LLM evaluations and UI models: most of its import time, which the
worker pays on every run while the run loads its batch, and which it does not
use (it calls the drift tests a Report would, batch_drift.run_evidently). In
the worker only, the package is entered as a bare namespace so that importing
the tests' modules runs their own code alone; the tests are Evidently's own
functions, unchanged. Should that import fail (another Evidently), everything
imported is dropped and Evidently is imported whole.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
from typing import Any

_BARE = "__modelwatch_bare_package__"  # marks the namespace standing in for evidently/__init__.py


def drift_tests() -> tuple[str, Any, Any] | None:
    """(version, get_stattest, ColumnType) imported with no evidently/__init__.py; None when
    Evidently is imported already (use it) or cannot be imported this way."""
    if "evidently" in sys.modules:
        return None
    spec = importlib.util.find_spec("evidently")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = types.ModuleType("evidently")
    package.__path__ = list(spec.submodule_search_locations)
    package.__version__ = importlib.metadata.version("evidently")
    setattr(package, _BARE, True)
    sys.modules["evidently"] = package
    try:
        from evidently.legacy.calculations.stattests.registry import get_stattest
        from evidently.legacy.core import ColumnType
    except Exception:  # noqa: BLE001 - an Evidently laid out otherwise: imported whole instead
        forget()
        return None
    return package.__version__, get_stattest, ColumnType


def forget() -> None:
    """Drop a bare import, so that the next `import evidently` loads the whole package."""
    if getattr(sys.modules.get("evidently"), _BARE, False):
        for name in [name for name in sys.modules if name == "evidently" or name.startswith("evidently.")]:
            del sys.modules[name]
