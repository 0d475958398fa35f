"""`modelwatch dashboard`: the Grafana overview's panels as one static HTML page.

The SQL is read out of grafana/dashboards/modelwatch-overview.json and expanded
for one monitor (the dashboard's `monitor` variable) and the time range of its
batches, as Grafana would expand it, so the page and Grafana cannot disagree.
Charts are plotly with plotly.js inlined: the page opens offline, without
Grafana or Docker.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from modelwatch.config import Settings
from modelwatch.dashboards import grafana
from modelwatch.errors import UsageError
from modelwatch.postgres import db, schema

# Grafana's classic palette, so the page looks like the dashboard.
PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0")
NAMED_COLORS = {"green": "#73BF69", "yellow": "#FADE2A", "red": "#F2495C", "text": "#8E8E8E",
                "blue": "#5794F2", "orange": "#FF9830", "purple": "#B877D9", "transparent": "rgba(0,0,0,0)"}
ROW_HEIGHT_PX = 30  # one unit of gridPos.h, as in Grafana


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class PanelResult:
    """One panel as rendered: its rows and time, or why it could not be drawn."""

    query: grafana.PanelQuery
    result: QueryResult | None
    seconds: float
    error: str | None = None

    @property
    def rows(self) -> int:
        return len(self.result.rows) if self.result else 0


@dataclass(frozen=True)
class DashboardPage:
    path: Path
    monitor: str
    time_range: grafana.TimeRange
    panels: tuple[PanelResult, ...] = field(default=())

    @property
    def failed(self) -> tuple[PanelResult, ...]:
        return tuple(panel for panel in self.panels if panel.error)


@dataclass(frozen=True)
class Series:
    name: str
    times: list[datetime]
    values: list[float | None]


def render_overview(settings: Settings, out: Path, monitor: str | None = None,
                    dashboard_path: Path | None = None) -> DashboardPage:
    """Query every panel of the overview (the project's, by default) for `monitor`'s batches (the
    default monitor when None) and write the page to `out`."""
    name = settings.monitor(monitor).name  # a monitor not declared is a UsageError
    dashboard_path = dashboard_path or settings.grafana_dir / grafana.OVERVIEW.relative_to(grafana.GRAFANA_DIR)
    dashboard = grafana.load_dashboard(dashboard_path)
    variables = {**grafana.current_values(dashboard), grafana.MONITOR_VARIABLE: name}
    url = db.database_url(settings)
    with db.connect(url) as conn:
        conn.read_only = True  # the page only reads, like Grafana's role
        schema.check_version(conn)
        time_range = data_time_range(conn, name)
        results = tuple(run_panel(conn, query, time_range, variables) for query in grafana.panel_queries(dashboard))
    page = DashboardPage(path=out, monitor=name, time_range=time_range, panels=results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page_html(dashboard, page, db.describe(url)), encoding="utf-8")
    return page


def data_time_range(conn: psycopg.Connection, monitor: str | None = None) -> grafana.TimeRange:
    """From the first to the last batch of `monitor` (of every monitor when None) in marts.batch_health."""
    try:
        with conn.transaction():
            first, last = conn.execute(
                "select min(batch_date), max(batch_date) from marts.batch_health"
                " where %(monitor)s::text is null or monitor = %(monitor)s", {"monitor": monitor}).fetchone()
    except psycopg.errors.UndefinedTable:
        raise UsageError("no marts yet: run `modelwatch demo`, or `modelwatch run`/`backfill`, first") from None
    if first is None:
        of = f" of monitor {monitor}" if monitor else ""
        raise UsageError(f"no batches{of} in marts.batch_health yet: run a batch first")
    return grafana.TimeRange.of_days(first, last)


def run_panel(conn: psycopg.Connection, query: grafana.PanelQuery, time_range: grafana.TimeRange,
              variables: Mapping[str, str] | None = None) -> PanelResult:
    """One panel's SQL, expanded as Grafana would (`variables`: the dashboard variables' values);
    a missing mart becomes a note, not a crash."""
    sql = grafana.expand(query.raw_sql, time_range, variables)
    clock = time.perf_counter()
    try:
        with conn.transaction(), conn.cursor() as cursor:
            cursor.execute(sql)  # no parameters: psycopg sends the SQL as it is
            columns = tuple(column.name for column in cursor.description or ())
            rows = tuple(tuple(row) for row in cursor.fetchall())
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        return PanelResult(query, None, time.perf_counter() - clock, _first_line(exc))
    return PanelResult(query, QueryResult(columns, rows), time.perf_counter() - clock)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def time_series(result: QueryResult) -> list[Series]:
    """Grafana's time_series format: string columns are labels, the others values.

    Three columns with a string one named `metric`: that column names the series.
    """
    columns = result.columns
    time_index = columns.index("time")
    label_indexes = [i for i in range(len(columns)) if i != time_index and _is_text(result.rows, i)]
    value_indexes = [i for i in range(len(columns)) if i not in label_indexes and i != time_index]
    metric_naming = len(columns) == 3 and [columns[i] for i in label_indexes] == ["metric"]
    found: dict[str, Series] = {}
    for row in result.rows:
        labels = ", ".join(f"{columns[i]}={row[i]}" for i in label_indexes)
        for i in value_indexes:
            if metric_naming:
                name = str(row[label_indexes[0]])
            else:
                name = f"{columns[i]} {{{labels}}}" if labels else columns[i]
            series = found.setdefault(name, Series(name, [], []))
            series.times.append(_as_datetime(row[time_index]))
            series.values.append(_as_number(row[i]))
    return list(found.values())


def _is_text(rows: Sequence[Sequence[Any]], index: int) -> bool:
    return any(isinstance(row[index], str) for row in rows)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def _as_number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, (int, float, Decimal)) else None


def _overrides(panel: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Field overrides by name: {field: {property id: value}}."""
    found: dict[str, dict[str, Any]] = {}
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override.get("matcher", {}).get("id") == "byName":
            properties = found.setdefault(override["matcher"]["options"], {})
            properties.update({item["id"]: item.get("value") for item in override.get("properties", [])})
    return found


def figure(panel: PanelResult, time_range: grafana.TimeRange) -> Any:  # -> plotly Figure
    """The plotly figure of one panel, by its Grafana type."""
    import plotly.graph_objects as go

    assert panel.result is not None
    kind = panel.query.panel_type
    if kind == "table":
        fig = _table_figure(go, panel.result)
    elif kind == "state-timeline":
        fig = _state_figure(go, panel)
    else:
        fig = _timeseries_figure(go, panel)
    if kind != "table":
        pad = timedelta(hours=12)
        fig.update_xaxes(range=[time_range.start - pad, time_range.end + pad], showgrid=True, tickformat="%b %d")
        if not panel.result.rows:
            fig.add_annotation(text="No data in this time range", showarrow=False, xref="paper", yref="paper",
                               x=0.5, y=0.5)
    height = int(panel.query.panel["gridPos"]["h"]) * ROW_HEIGHT_PX
    fig.update_layout(title={"text": html.escape(panel.query.title), "x": 0.01, "font": {"size": 14}},
                      height=height, margin={"l": 50, "r": 50, "t": 40, "b": 30}, template="plotly_white",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.12},
                      hovermode="x unified" if kind == "timeseries" else "closest")
    return fig


def _timeseries_figure(go: Any, panel: PanelResult) -> Any:
    defaults = panel.query.panel.get("fieldConfig", {}).get("defaults", {})
    overrides = _overrides(panel.query.panel)
    fig = go.Figure()
    for index, series in enumerate(time_series(panel.result)):
        props = overrides.get(series.name, {})
        draw = props.get("custom.drawStyle", defaults.get("custom", {}).get("drawStyle", "line"))
        right = props.get("custom.axisPlacement") == "right"
        color = PALETTE[index % len(PALETTE)]
        common = {"x": series.times, "y": series.values, "name": series.name, "yaxis": "y2" if right else "y"}
        if draw == "bars":
            fig.add_trace(go.Bar(marker_color=color, opacity=0.8, **common))
        else:
            fig.add_trace(go.Scatter(mode="lines+markers", line={"color": color, "width": 2},
                                     marker={"size": 5}, connectgaps=False, **common))
    right_fields = [props for props in overrides.values() if props.get("custom.axisPlacement") == "right"]
    if right_fields:
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero",
                                  **_axis_range(right_fields[0])})
    if defaults.get("min") == 0:
        fig.update_layout(yaxis={"rangemode": "tozero"})
    for props in overrides.values():
        for level in _threshold_lines(props):  # e.g. the alert threshold on the drifted share
            fig.add_shape(type="line", xref="paper", x0=0, x1=1, y0=level, y1=level,
                          yref="y2" if props.get("custom.axisPlacement") == "right" else "y",
                          line={"color": NAMED_COLORS["red"], "dash": "dash", "width": 1})
    return fig


def _axis_range(props: Mapping[str, Any]) -> dict[str, Any]:
    if props.get("min") is not None and props.get("max") is not None:
        return {"range": [props["min"], props["max"]]}
    return {}


def _threshold_lines(props: Mapping[str, Any]) -> list[float]:
    """Threshold steps drawn as lines (thresholdsStyle line or line+area), the base step excepted."""
    if "line" not in str((props.get("custom.thresholdsStyle") or {}).get("mode", "")):
        return []
    steps = (props.get("thresholds") or {}).get("steps", [])
    return [float(step["value"]) for step in steps if step.get("value") is not None]


def _state_figure(go: Any, panel: PanelResult) -> Any:
    """A state timeline, coloured by the panel's value mappings: as in Grafana, each state lasts
    from its row to the next (a day, a week or a month for a monitor's batches), the last a day."""
    mappings: dict[str, Any] = {}
    for mapping in panel.query.panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
        mappings.update(mapping.get("options", {}))
    columns = panel.result.columns
    time_index = columns.index("time")
    state_index = next(i for i in range(len(columns)) if i != time_index)
    moments = [_as_datetime(row[time_index]) for row in panel.result.rows]
    ends = moments[1:] + [moments[-1] + timedelta(days=1)] if moments else []
    fig = go.Figure()
    states = [str(row[state_index]) for row in panel.result.rows if row[state_index] is not None]
    for state in dict.fromkeys(states):  # first-seen order
        spans = [(start, end) for row, start, end in zip(panel.result.rows, moments, ends)
                 if row[state_index] == state]
        color = NAMED_COLORS.get(mappings.get(state, {}).get("color", "text"), "#8E8E8E")
        fig.add_trace(go.Bar(x=[start + (end - start) / 2 for start, end in spans], y=[1] * len(spans),
                             width=[(end - start).total_seconds() * 1000 * 0.95 for start, end in spans],
                             customdata=[f"{start:%Y-%m-%d}" for start, _ in spans], name=state, marker_color=color,
                             hovertemplate="%{customdata}: " + state + "<extra></extra>"))
    fig.update_yaxes(visible=False, range=[0, 1])
    fig.update_layout(barmode="overlay", bargap=0)
    return fig


def _table_figure(go: Any, result: QueryResult) -> Any:
    cells = [[_cell(row[i]) for row in result.rows] for i in range(len(result.columns))]
    fig = go.Figure(go.Table(header={"values": [html.escape(c) for c in result.columns], "align": "left",
                                     "fill_color": "#EEEEEE"},
                             cells={"values": cells, "align": "left"}))
    if not result.rows:
        fig.add_annotation(text="No failing tests in this time range", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.4)
    return fig


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def page_html(dashboard: Mapping[str, Any], page: DashboardPage, where: str) -> str:
    """The whole page: plotly.js inline once, then one block per panel on Grafana's 24-column grid."""
    import plotly.offline

    blocks = [_panel_html(panel, page.time_range) for panel in page.panels]
    span = f"{page.time_range.start:%Y-%m-%d} to {page.time_range.end:%Y-%m-%d}"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = html.escape(page_title(dashboard, page.monitor))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #222; background: #fff; }}
header p {{ color: #555; margin: 4px 0 16px; }}
.grid {{ display: grid; grid-template-columns: repeat(24, minmax(0, 1fr)); gap: 8px; }}
.panel {{ border: 1px solid #ddd; border-radius: 4px; padding: 4px; min-width: 0; }}
.note {{ color: #8a5a00; background: #fff8e1; padding: 12px; }}
</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>{title}</h1>
<p>Monitor <code>{html.escape(page.monitor)}</code>: batches {span} in {html.escape(where)}; the same SQL
as Grafana's dashboard <code>{html.escape(str(dashboard.get("uid", "")))}</code>. Generated {generated}.</p>
</header>
<main class="grid">
{chr(10).join(blocks)}
</main>
</body>
</html>
"""


def page_title(dashboard: Mapping[str, Any], monitor: str) -> str:
    """The dashboard's title and the monitor it shows: `modelwatch: monitoring overview of nyc_taxi`."""
    return f"{dashboard.get('title', 'modelwatch')} of {monitor}"


def _panel_html(panel: PanelResult, time_range: grafana.TimeRange) -> str:
    grid_pos = panel.query.panel["gridPos"]
    style = f"grid-column: {int(grid_pos['x']) + 1} / span {int(grid_pos['w'])};"
    description = html.escape(str(panel.query.panel.get("description", "")), quote=True)
    if panel.error:
        return (f'<section class="panel note" style="{style}" title="{description}">'
                f"<h3>{html.escape(panel.query.title)}</h3><p>Not drawn: {html.escape(panel.error)}</p></section>")
    chart = figure(panel, time_range).to_html(full_html=False, include_plotlyjs=False,
                                              config={"displaylogo": False, "responsive": True})
    return f'<section class="panel" style="{style}" title="{description}">{chart}</section>'
