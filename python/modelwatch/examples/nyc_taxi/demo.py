"""The demo: the nyc_taxi monitor trained on January 2023, February 2023 run as 28 daily batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from modelwatch import pipeline
from modelwatch.config import PACKAGE_DATA_DIR, Settings
from modelwatch.pipeline.progress import SILENT

MONITOR = "nyc_taxi"
REFERENCE_FILE = PACKAGE_DATA_DIR / "green_tripdata_2023-01.parquet"
BATCH_FILE = PACKAGE_DATA_DIR / "green_tripdata_2023-02.parquet"


def run_demo(
    settings: Settings,
    on_step: Callable[[str], None] = lambda _: None,
    progress: pipeline.Progress = SILENT,
    reference: Path = REFERENCE_FILE,
    batches: Path = BATCH_FILE,
) -> pipeline.RangeOutcome:
    on_step("preparing the database (schemas, tables, roles, seed)")
    pipeline.init(settings)
    on_step(f"training the baseline model on {reference.name}")
    trained = pipeline.train(settings, reference, MONITOR)
    on_step(f"model {trained.version}: validation MAE {trained.validation_mae:.2f} min")
    on_step(f"running the days of {batches.name} as daily batches")
    return pipeline.backfill(settings, batches, progress=progress, monitor_name=MONITOR)

