"""The debugging report: Evidently's HTML for one batch against its reference set.

For the ad-hoc root-cause work the course did in a notebook: data drift and
data summary presets, with Evidently's tests, in one self-contained HTML file
(scripts and fonts inlined; it fetches nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from modelwatch.config import Settings
from modelwatch.drift import batch_drift
from modelwatch.errors import ModelwatchError, UsageError
from modelwatch.monitors import Monitor
from modelwatch.periods import batch_of
from modelwatch.postgres import db, schema


def default_path(settings: Settings, monitor: str, batch_date: date) -> Path:
    return settings.reports_dir / f"drift_{monitor}_{batch_date.isoformat()}.html"


@dataclass(frozen=True)
class BatchData:
    """One batch of a monitor and the reference set it was compared with, as Evidently sees them."""

    monitor: Monitor
    batch_date: date
    reference_version: str
    reference: batch_drift.Rows
    current: batch_drift.Rows
    columns: tuple[batch_drift.MonitoredColumn, ...]
    options: batch_drift.DriftOptions


def batch_data(settings: Settings, batch_date: date, monitor_name: str | None = None) -> BatchData:
    """The monitor's batch of `batch_date` (the period holding it) and its reference, read back
    from the database; UsageError when either has no rows."""
    monitor = settings.monitor(monitor_name)
    batch_date = batch_of(monitor.name, monitor.batch_period, batch_date).start
    options = batch_drift.DriftOptions.from_settings(settings, monitor)
    columns = batch_drift.monitored_columns(monitor)
    with db.connect(db.database_url(settings)) as conn:
        schema.check_version(conn)
        schema.check_monitor_tables(conn, monitor)
        version = batch_drift.batch_reference_version(conn, monitor, batch_date)
        reference = batch_drift.read_reference(conn, monitor, version, columns, options)
        current = batch_drift.read_batch(conn, monitor, batch_date, columns, options)
    if current.total == 0:
        raise UsageError(f"monitor {monitor.name}: batch {batch_date} has no rows to report on")
    if reference.total == 0:
        raise UsageError(f"monitor {monitor.name}: reference {version} has no rows: store one with "
                         "`modelwatch reference`")
    return BatchData(monitor, batch_date, version, reference, current, columns, options)


def write_report(settings: Settings, batch_date: date, out: Path | None = None,
                 monitor_name: str | None = None) -> Path:
    """Write the report for the monitor's batch of `batch_date` (the period holding it) to `out`
    (default: under reports_dir) and return its path."""
    data = batch_data(settings, batch_date, monitor_name)
    path = Path(out) if out is not None else default_path(settings, data.monitor.name, data.batch_date)
    _write(path, evidently_snapshot(data).get_html_str(as_iframe=False))
    return path


def evidently_snapshot(data: BatchData) -> Any:
    """Evidently's data drift and data summary presets, with their tests, run on the batch against
    its reference: a Snapshot (shown inline by a notebook, or written as HTML)."""
    api = batch_drift.evidently_api()
    # Drift only where Evidently can score (it raises on an empty column); the
    # summary shows every column, empty and constant ones included.
    scorable = [column.name for column in data.columns
                if batch_drift.skip_reason(column, data.reference, data.current) is None]
    presets: list[Any] = [api.DataSummaryPreset(columns=[column.name for column in data.columns])]
    if scorable:
        presets.insert(0, api.DataDriftPreset(columns=scorable, drift_share=data.options.drift_share))
    report = api.Report(presets, include_tests=True)
    columns = list(data.columns)
    try:
        with batch_drift.quiet_numerics():
            return report.run(data.current.dataset(api, columns), data.reference.dataset(api, columns))
    except Exception as exc:  # noqa: BLE001 - one line for the user, not Evidently's traceback
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelwatchError(f"Evidently could not build the report: {first}") from None


def _write(path: Path, html: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
