"""The debugging report: Evidently's HTML for one batch against its reference set.

For the ad-hoc root-cause work the course did in a notebook: data drift and
data summary presets, with Evidently's tests, in one self-contained HTML file
(scripts and fonts inlined; it fetches nothing).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from . import db, drift, schema
from .config import Settings
from .errors import ModelwatchError, UsageError
from .periods import batch_of


def default_path(settings: Settings, monitor: str, batch_date: date) -> Path:
    return settings.reports_dir / f"drift_{monitor}_{batch_date.isoformat()}.html"


def write_report(settings: Settings, batch_date: date, out: Path | None = None,
                 monitor_name: str | None = None) -> Path:
    """Write the report for the monitor's batch of `batch_date` (the period holding it) to `out`
    (default: under reports_dir) and return its path."""
    monitor = settings.monitor(monitor_name)
    batch_date = batch_of(monitor.name, monitor.batch_period, batch_date).start
    path = Path(out) if out is not None else default_path(settings, monitor.name, batch_date)
    options = drift.DriftOptions.from_settings(settings, monitor)
    columns = drift.monitored_columns(monitor)
    with db.connect(db.database_url(settings)) as conn:
        schema.check_version(conn)
        schema.check_monitor_tables(conn, monitor)
        version = drift.batch_reference_version(conn, monitor, batch_date)
        reference = drift.read_reference(conn, monitor, version, columns, options)
        current = drift.read_batch(conn, monitor, batch_date, columns, options)
    if current.total == 0:
        raise UsageError(f"monitor {monitor.name}: batch {batch_date} has no rows to report on")
    if reference.total == 0:
        raise UsageError(f"monitor {monitor.name}: reference {version} has no rows: store one with "
                         "`modelwatch reference`")
    html = _render(drift.evidently_api(), reference, current, columns, options)
    _write(path, html)
    return path


def _render(api: drift.EvidentlyApi, reference: drift.Rows, current: drift.Rows,
            columns: tuple[drift.MonitoredColumn, ...], options: drift.DriftOptions) -> str:
    # Drift only where Evidently can score (it raises on an empty column); the
    # summary shows every column, empty and constant ones included.
    scorable = [column.name for column in columns
                if drift.skip_reason(column, reference, current) is None]
    presets: list[Any] = [api.DataSummaryPreset(columns=[column.name for column in columns])]
    if scorable:
        presets.insert(0, api.DataDriftPreset(columns=scorable, drift_share=options.drift_share))
    report = api.Report(presets, include_tests=True)
    try:
        with drift.quiet_numerics():
            snapshot = report.run(current.dataset(api, list(columns)), reference.dataset(api, list(columns)))
        return snapshot.get_html_str(as_iframe=False)
    except Exception as exc:  # noqa: BLE001 - one line for the user, not Evidently's traceback
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelwatchError(f"Evidently could not build the report: {first}") from None


def _write(path: Path, html: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report ({exc.strerror or exc})") from None
