"""Grafana's dashboards and alert rules as data: their SQL, expanded as Grafana would.

The JSON and YAML under grafana/ are the one source of truth for three readers:
Grafana itself, `modelwatch dashboard` (the overview without Grafana) and the
tests (every query run as modelwatch_reader). Expansion follows Grafana's
PostgreSQL datasource: dashboard variables first (the frontend's
interpolateVariable), then the macros (the backend's macro engine,
pkg/tsdb/grafana-postgresql-datasource/macros.go), with the same regular
expressions and the same timestamp format.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from modelwatch.config import PROJECT_DIR
from modelwatch.errors import UsageError

GRAFANA_DIR = PROJECT_DIR / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
OVERVIEW = DASHBOARDS_DIR / "modelwatch-overview.json"
COLUMN_DETAIL = DASHBOARDS_DIR / "modelwatch-column-detail.json"
ALERT_RULES = PROVISIONING_DIR / "alerting" / "modelwatch-rules.yaml"
DATASOURCE_UID = "modelwatch-pg"
MONITOR_VARIABLE = "monitor"  # every dashboard's: the monitor its panels show
EXPRESSION_UID = "__expr__"

# Grafana's macro syntax: `$name(args)`, args without a closing parenthesis.
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
# Grafana's template variable syntax: $var, [[var]], [[var:fmt]], ${var}, ${var:fmt}.
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^\}]+))?\}")
_RELATIVE = re.compile(r"^now(?:-(\d+)([smhdwMy]))?$")


@dataclass(frozen=True)
class TimeRange:
    """A dashboard's or an alert query's time range, in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def relative(cls, start: str, end: str, now: datetime) -> TimeRange:
        """`now-5y` .. `now` (Grafana's relative syntax, without rounding) at `now`."""
        return cls(parse_relative(start, now), parse_relative(end, now))

    @classmethod
    def of_days(cls, first: date, last: date) -> TimeRange:
        """From the start of `first` to the end of `last` (UTC): the time range of some batches."""
        start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
        end = datetime(last.year, last.month, last.day, tzinfo=timezone.utc) + timedelta(days=1, milliseconds=-1)
        return cls(start, end)


@dataclass(frozen=True)
class PanelQuery:
    """One query (target) of one panel."""

    dashboard_uid: str
    panel: Mapping[str, Any]
    ref_id: str
    format: str  # time_series | table
    raw_sql: str
    datasource_uid: str | None

    @property
    def title(self) -> str:
        return str(self.panel.get("title", ""))

    @property
    def panel_type(self) -> str:
        return str(self.panel.get("type", ""))


@dataclass(frozen=True)
class AlertRule:
    """A provisioned alert rule: its SQL query, reducer and threshold."""

    uid: str
    title: str
    raw_sql: str
    format: str
    datasource_uid: str
    relative_from_s: int
    relative_to_s: int
    reducer: str
    threshold_type: str
    threshold: tuple[float, ...]
    dashboard_uid: str | None
    panel_id: int | None

    def time_range(self, now: datetime) -> TimeRange:
        return TimeRange(now - timedelta(seconds=self.relative_from_s), now - timedelta(seconds=self.relative_to_s))


def parse_relative(text: str, now: datetime) -> datetime:
    """`now`, `now-7d`, `now-5y`: Grafana's relative times (no `/d` rounding: not used here)."""
    match = _RELATIVE.match(text.strip())
    if not match:
        raise UsageError(f"unsupported relative time {text!r} (expected now or now-<n><s|m|h|d|w|M|y>)")
    amount, unit = match.groups()
    if amount is None:
        return now
    n = int(amount)
    if unit in "smhdw":
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
        return now - timedelta(seconds=n * seconds)
    months = n * (12 if unit == "y" else 1)
    year, month = divmod(now.year * 12 + now.month - 1 - months, 12)
    day = min(now.day, _days_in_month(year, month + 1))
    return now.replace(year=year, month=month + 1, day=day)


def _days_in_month(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def rfc3339(moment: datetime) -> str:
    """Go's time.RFC3339Nano in UTC, as Grafana writes $__timeFilter's bounds."""
    moment = moment.astimezone(timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def expand_macros(sql: str, time_range: TimeRange) -> str:
    """Grafana's PostgreSQL macros for a time range; an unknown macro is an error, as in Grafana."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        args = [arg.strip() for arg in match.group(2).split(",")]
        start, end = rfc3339(time_range.start), rfc3339(time_range.end)
        if name in ("__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter") and not args[0]:
            raise UsageError(f"missing time column argument for macro ${name}")
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "__timeFrom":
            return f"'{start}'"
        if name == "__timeTo":
            return f"'{end}'"
        if name == "__unixEpochFilter":
            first, last = int(time_range.start.timestamp()), int(time_range.end.timestamp())
            return f"{args[0]} >= {first} AND {args[0]} <= {last}"
        if name == "__unixEpochFrom":
            return str(int(time_range.start.timestamp()))
        if name == "__unixEpochTo":
            return str(int(time_range.end.timestamp()))
        raise UsageError(f"unknown or unsupported macro ${name}")

    return _MACRO.sub(expand, sql)


def expand_variables(sql: str, values: Mapping[str, str]) -> str:
    """Single-value dashboard variables as the SQL datasources interpolate them.

    A plain reference gets the value with quotes doubled and no quotes around
    (write `'$column'`); `:sqlstring` quotes it. Names not in `values` (macros,
    Grafana's globals) are left alone, as Grafana leaves unknown variables.
    """

    def expand(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name not in values:
            return match.group(0)
        escaped = str(values[name]).replace("'", "''")
        if fmt is None:
            return escaped
        if fmt == "sqlstring":
            return f"'{escaped}'"
        raise UsageError(f"unsupported variable format {fmt!r} for ${name}")

    return _VARIABLE.sub(expand, sql)


def expand(sql: str, time_range: TimeRange, variables: Mapping[str, str] | None = None) -> str:
    """Variables, then macros: the SQL Grafana would send to PostgreSQL."""
    return expand_macros(expand_variables(sql, variables or {}), time_range)


def load_dashboard(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the dashboard ({exc})") from None


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves are left out."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """The SQL targets of a dashboard's panels, in layout order (top to bottom, left to right)."""
    ordered = sorted(panels(dashboard), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    return [
        PanelQuery(
            dashboard_uid=dashboard["uid"],
            panel=panel,
            ref_id=target["refId"],
            format=target.get("format", "time_series"),
            raw_sql=target["rawSql"],
            datasource_uid=(target.get("datasource") or panel.get("datasource") or {}).get("uid"),
        )
        for panel in ordered
        for target in panel.get("targets", [])
        if not target.get("hide")
    ]


def default_time_range(dashboard: Mapping[str, Any], now: datetime) -> TimeRange:
    """The dashboard's own time range at `now`: what Grafana shows before anyone touches the picker."""
    return TimeRange.relative(dashboard["time"]["from"], dashboard["time"]["to"], now)


def variable(dashboard: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for candidate in dashboard.get("templating", {}).get("list", []):
        if candidate.get("name") == name:
            return candidate
    raise UsageError(f"dashboard {dashboard.get('uid')} has no variable {name!r}")


def variable_sql(definition: Mapping[str, Any]) -> str:
    """A query variable's SQL (a string, or {rawSql: ...} in newer exports)."""
    query = definition.get("query")
    return query.get("rawSql", "") if isinstance(query, Mapping) else str(query)


def current_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Each variable's saved current value: what the panels show when the dashboard opens."""
    return {definition["name"]: str(definition["current"]["value"])
            for definition in dashboard.get("templating", {}).get("list", []) if "current" in definition}


def _references(text: str, names: Iterable[str]) -> bool:
    """Whether `text` uses one of the variables `names` (in any of Grafana's syntaxes)."""
    wanted = set(names)
    return any((match.group(1) or match.group(2) or match.group(4)) in wanted for match in _VARIABLE.finditer(text))


@dataclass(frozen=True)
class Query:
    """One statement Grafana sends, expanded: a query variable's, a panel target's or an alert rule's."""

    kind: str  # variable | panel | alert
    label: str
    sql: str


def all_queries(now: datetime, time_range: TimeRange | None = None,
                variable_values: Callable[[str], Sequence[Any]] | None = None,
                dashboards: Iterable[Mapping[str, Any]] | None = None) -> list[Query]:
    """Every statement of the provisioned dashboards (each query variable, then each panel target)
    and alert rules (evaluated at `now`), expanded as Grafana expands them.

    Panels get `time_range`, or else their dashboard's own default range at `now`. Without
    `variable_values` the variables take their saved current values, as the dashboard opens;
    with it (a variable's expanded SQL -> its values, e.g. run on a connection) a panel that uses
    variables comes once per combination of their values. Variables are chained as in Grafana: a
    variable's SQL may use the variables before it (the column-detail dashboard's `column` lists
    the chosen `monitor`'s columns), and then comes once per value of those. A statement run for
    some of the values is labelled with them. `dashboards` defaults to the files under grafana/dashboards.
    """
    if dashboards is None:
        dashboards = [load_dashboard(path) for path in dashboard_paths()]
    found: list[Query] = []
    for dashboard in dashboards:
        uid = dashboard["uid"]
        definitions = dashboard.get("templating", {}).get("list", [])
        saved = current_values(dashboard)
        choices: list[dict[str, str]] = [saved if variable_values is None else {}]
        for definition in definitions:
            if definition.get("type") != "query":
                continue
            text = variable_sql(definition)
            label = f"{uid}: variable ${definition['name']}"
            if variable_values is None:
                found.append(Query("variable", label, expand_variables(text, saved)))
                continue
            grown: list[dict[str, str]] = []
            for choice in choices:
                found.append(Query("variable", label + _values_label(text, choice), expand_variables(text, choice)))
                grown += [{**choice, definition["name"]: str(value)}
                          for value in variable_values(expand_variables(text, choice))]
            choices = grown
        names = {definition["name"] for definition in definitions}
        panel_range = time_range or default_time_range(dashboard, now)
        for query in panel_queries(dashboard):
            uses_variables = _references(query.raw_sql, names) or _references(query.title, names)
            for choice in (choices if uses_variables else [{}]):
                label = f"{uid}: {expand_variables(query.title, choice)}"
                if variable_values is not None:
                    label += _values_label(query.raw_sql, choice, query.title)
                found.append(Query("panel", label, expand(query.raw_sql, panel_range, choice)))
    for rule in alert_rules():
        found.append(Query("alert", f"alert: {rule.title}", expand(rule.raw_sql, rule.time_range(now))))
    return found


def _values_label(text: str, choice: Mapping[str, str], title: str = "") -> str:
    """` [monitor=nyc_taxi]`: the values `text` uses that `title` does not show, for a query's label."""
    used = [name for name in choice if _references(text, [name]) and not _references(title, [name])]
    return f" [{', '.join(f'{name}={choice[name]}' for name in used)}]" if used else ""


def alert_rules(path: Path = ALERT_RULES) -> list[AlertRule]:
    """The provisioned rules of one file, each reduced to query, reducer and threshold."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read the alert rules ({exc})") from None
    return [_alert_rule(rule) for group in document.get("groups", []) for rule in group.get("rules", [])]


def _alert_rule(rule: Mapping[str, Any]) -> AlertRule:
    steps = {step["refId"]: step for step in rule["data"]}
    condition = steps[rule["condition"]]["model"]
    reduce_step = steps[condition["expression"]]["model"]
    query_step = steps[reduce_step["expression"]]
    evaluator = condition["conditions"][0]["evaluator"]
    return AlertRule(
        uid=rule["uid"],
        title=rule["title"],
        raw_sql=query_step["model"]["rawSql"],
        format=query_step["model"].get("format", "time_series"),
        datasource_uid=query_step["datasourceUid"],
        relative_from_s=int(query_step["relativeTimeRange"]["from"]),
        relative_to_s=int(query_step["relativeTimeRange"]["to"]),
        reducer=reduce_step["reducer"],
        threshold_type=evaluator["type"],
        threshold=tuple(float(value) for value in evaluator["params"]),
        dashboard_uid=rule.get("dashboardUid"),
        panel_id=rule.get("panelId"),
    )


def firing(rule: AlertRule, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[tuple[str, ...], float]:
    """Evaluate a rule's reduce and threshold on its query result, as Grafana would.

    Each distinct combination of the string columns is a series (an alert
    instance); the reducer drops non-numbers (mode dropNN). Returns the
    firing series' labels and reduced values.
    """
    if not rows:
        return {}  # no data: the rule's noDataState decides
    label_columns = [i for i, name in enumerate(columns) if name != "time" and _is_text_column(rows, i)]
    value_columns = [i for i, name in enumerate(columns) if name != "time" and i not in label_columns]
    if len(value_columns) != 1:
        raise UsageError(f"rule {rule.uid}: expected one value column, got {[columns[i] for i in value_columns]}")
    series: dict[tuple[str, ...], list[float]] = {}
    for row in rows:  # rows are sorted by time, so `last` is the latest point
        value = row[value_columns[0]]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        series.setdefault(tuple(str(row[i]) for i in label_columns), []).append(float(value))
    reduced = {labels: _reduce(rule.reducer, values) for labels, values in series.items()}
    return {labels: value for labels, value in reduced.items() if _crosses(rule, value)}


def _is_text_column(rows: Sequence[Sequence[Any]], index: int) -> bool:
    return any(isinstance(row[index], str) for row in rows)


def _reduce(reducer: str, values: list[float]) -> float:
    reducers = {"last": lambda v: v[-1], "max": max, "min": min, "mean": lambda v: sum(v) / len(v), "sum": sum}
    if reducer not in reducers:
        raise UsageError(f"unsupported reducer {reducer!r}")
    return float(reducers[reducer](values))


def _crosses(rule: AlertRule, value: float) -> bool:
    if rule.threshold_type == "gt":
        return value > rule.threshold[0]
    if rule.threshold_type == "lt":
        return value < rule.threshold[0]
    raise UsageError(f"unsupported threshold type {rule.threshold_type!r}")
