"""Monitor declarations: `vars.monitors.<name>` of dbt_project.yml, merged over
`vars.monitor_defaults`, checked before any of it reaches SQL.

dbt reads the same blocks (macros/monitor.sql merges them the same way), so a
monitor is declared once. A declaration that is wrong gets one line naming the
monitor and the key.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelwatch.errors import UsageError

TASKS = ("regression", "binary_classification", "multiclass_classification")
PERIODS = ("day", "week", "month")
COLUMN_TYPES = ("bigint", "double precision", "text", "timestamp", "boolean", "date")
ID_TYPES = ("bigint", "text")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MONITOR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # room for "__reference" in a table name
DEFAULT_MAX_TEXT_BYTES = 64 * 1024
# Columns every monitor's raw rows have besides the declared ones.
RESERVED = ("batch_date", "monitor")


# PostgreSQL's reserved key words: no plain column name (the models write names unquoted).
RESERVED_WORDS = frozenset("""all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time current_timestamp current_user default
    deferrable desc distinct do else end except false fetch for foreign from grant group having in initially intersect
    into lateral leading limit localtime localtimestamp not null offset on only or order placing primary references
    returning select session_user some symmetric system_user table then to trailing true union unique user using
    variadic when where window with""".split())


def check_identifier(name: Any, where: str) -> str:
    """A configured column name must be a plain lower-case SQL identifier."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise UsageError(f"{where}: {name!r} is not a plain column name (lower-case letters, digits, _)")
    if name in RESERVED_WORDS:
        raise UsageError(f"{where}: {name!r} is a reserved word of SQL; give the column another name "
                         "(the monitor's rename key maps a file's column to it)")
    return name


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, mappings merged key by key (as macros/monitor.sql does)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class Check:
    """One bound of the contract: a built-in check's or a custom one's."""

    name: str
    severity: str
    min: float | None = None
    max: float | None = None
    where: str | None = None  # custom: the SQL condition whose share of rows is bounded
    lookup: str | None = None  # custom: a lookup whose keys the columns' values must be
    lookup_where: str | None = None
    columns: tuple[str, ...] = ()
    per_column: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Monitor:
    """One monitored model, as declared (defaults filled in)."""

    name: str
    task: str
    id: str
    timestamp: str
    batch_period: str
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    prediction: str
    target: str
    probability: str | None = None  # binary: the positive class's probability
    probabilities: Mapping[str, str] = field(default_factory=dict)  # multiclass: class -> column
    positive_class: str = "1"
    id_type: str = "bigint"
    generate_id: bool = False
    rename: Mapping[str, str] = field(default_factory=dict)  # a file's column -> ours
    columns: Mapping[str, str] = field(default_factory=dict)  # further stored columns -> type
    derived: Mapping[str, str] = field(default_factory=dict)  # computed in SQL -> expression
    model: str | None = None  # a module that trains and scores (train, save, load_latest)
    performance_where: str | None = None
    lookups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    checks: tuple[Check, ...] = ()
    stale_after: str = "2 days"  # a PostgreSQL interval: no new batch for this long is an alert
    timezone: str | None = None  # the zone batches are cut in; None: naive timestamps' own, UTC for aware ones
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES  # a longer text value refuses the file
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def classifier(self) -> bool:
        return self.task != "regression"

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def probability_columns(self) -> tuple[str, ...]:
        if self.task == "binary_classification":
            return (self.probability,) if self.probability else ()
        return tuple(self.probabilities.values())

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.probabilities)

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        """Columns profiled as numbers: numeric features, probabilities, and a regression's
        prediction and target."""
        outputs = () if self.classifier else (self.prediction, self.target)
        return _unique(self.numeric_features + outputs + self.probability_columns)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        """Columns profiled as categories: categorical features and a classifier's labels."""
        outputs = (self.prediction, self.target) if self.classifier else ()
        return _unique(self.categorical_features + outputs)

    @property
    def drift_columns(self) -> tuple[tuple[str, str], ...]:
        """(column, kind) scored for drift: the features, the prediction and the probabilities
        (the target is performance, not drift). kind: numeric | categorical | prediction."""
        prediction_kind = "categorical" if self.classifier else "prediction"
        return (tuple((name, "numeric") for name in self.numeric_features)
                + tuple((name, "categorical") for name in self.categorical_features)
                + ((self.prediction, prediction_kind),)
                + tuple((name, "numeric") for name in self.probability_columns))

    def column_type(self, name: str) -> str:
        """The PostgreSQL type a stored column has."""
        if name == self.id:
            return self.id_type
        if name == self.timestamp:
            return "timestamp"
        if name in self.columns:
            return self.columns[name]
        if name in self.numeric_columns:
            return "double precision"
        return "text"

    @property
    def stored_columns(self) -> tuple[tuple[str, str], ...]:
        """(name, type) of the columns a batch's raw rows hold, after batch_date: the id, the
        timestamp, features, outputs and further columns; derived columns are computed in SQL."""
        names = _unique((self.id, self.timestamp) + self.features + (self.prediction,)
                        + self.probability_columns + (self.target,) + tuple(self.columns))
        return tuple((name, self.column_type(name)) for name in names if name not in self.derived)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """What a batch file must have: without these a row cannot be placed, scored or monitored.
        The target may land later; further columns are filled with nulls."""
        generated = {self.id} if self.generate_id else set()
        predicted = {self.prediction} if self.model else set()
        names = (self.id, self.timestamp) + self.features + (self.prediction,) + self.probability_columns
        return tuple(name for name in _unique(names)
                     if name not in generated | predicted | set(self.derived))

    @property
    def rows_table(self) -> str:
        """raw.<this> holds the batches' rows."""
        return f"{self.name}__rows"

    @property
    def reference_table(self) -> str:
        """raw.<this> holds the reference sets' rows."""
        return f"{self.name}__reference"


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Monitors:
    """Every declared monitor, and the default one."""

    by_name: Mapping[str, Monitor]
    default: str | None

    def get(self, name: str | None) -> Monitor:
        """The monitor `name`, or the default one; UsageError naming the known ones."""
        chosen = name or self.default
        if chosen is None and not self.by_name:
            raise UsageError("dbt_project.yml declares no monitor under vars.monitors")
        if chosen is None:
            raise UsageError("no monitor given (--monitor) and dbt_project.yml sets no vars.default_monitor")
        if chosen not in self.by_name:
            known = ", ".join(sorted(self.by_name)) or "none"
            raise UsageError(f"unknown monitor {chosen!r} (declared in dbt_project.yml vars.monitors: {known})")
        return self.by_name[chosen]

    def __iter__(self):  # noqa: ANN204 - the monitors in declaration order
        return iter(self.by_name.values())


def parse_monitors(dbt_vars: Mapping[str, Any], where: str = "dbt_project.yml") -> Monitors:
    """Every `vars.monitors` block, merged over `vars.monitor_defaults` and checked."""
    declared = dbt_vars.get("monitors") or {}
    defaults = dbt_vars.get("monitor_defaults") or {}
    if not isinstance(declared, Mapping) or not isinstance(defaults, Mapping):
        raise UsageError(f"{where}: vars.monitors and vars.monitor_defaults must be mappings")
    monitors = {}
    for name, block in declared.items():
        monitors[name] = parse_monitor(name, block, defaults, where)
    # Unset (or null): the first monitor declared, as macros/monitor.sql has it.
    default = dbt_vars.get("default_monitor") or next(iter(monitors), None)
    if default is not None and default not in monitors:
        raise UsageError(f"{where}: vars.default_monitor {default!r} is not declared under vars.monitors")
    return Monitors(monitors, default)


KNOWN_KEYS = ("task", "id", "timestamp", "batch_period", "features", "prediction", "probability", "target",
              "positive_class", "id_type", "generate_id", "rename", "columns", "derived", "model",
              "performance_where", "lookups", "contract", "checks", "drift", "timezone", "max_text_bytes",
              "stale_after")


_INTERVAL = re.compile(r"^[1-9][0-9]{0,3} (hour|day|week|month)s?$")


def _stale_after(value: Any, period: str, at: str) -> str:
    """How long without a new batch is silence: two of the monitor's periods unless declared."""
    if value is None:
        return f"2 {period}s"
    if not isinstance(value, str) or not _INTERVAL.match(value):
        raise UsageError(f"{at}: {value!r} is not a number of hours, days, weeks or months (e.g. '36 hours')")
    return value


def parse_monitor(name: Any, block: Any, defaults: Mapping[str, Any], where: str = "dbt_project.yml") -> Monitor:
    if not isinstance(name, str) or not _MONITOR_NAME.match(name):
        raise UsageError(f"{where}: monitor name {name!r} must be lower-case letters, digits and _ "
                         "(at most 40, starting with a letter)")
    at = f"{where}: monitor {name}"
    if not isinstance(block, Mapping):
        raise UsageError(f"{at}: the declaration must be a mapping of keys")
    unknown = sorted(set(block) - set(KNOWN_KEYS))
    if unknown:
        raise UsageError(f"{at}: unknown key {unknown[0]!r} (the keys of a monitor: {', '.join(KNOWN_KEYS)})")
    spec = deep_merge(defaults, block)

    def key(path: str, required: bool = True) -> Any:
        value: Any = spec
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is None and required:
            raise UsageError(f"{at}: key '{path}' is missing")
        return value

    def column(path: str, value: Any = None) -> str:
        return check_identifier(key(path) if value is None else value, f"{at}: {path}")

    def columns(path: str) -> tuple[str, ...]:
        value = key(path, required=False) or []
        if not isinstance(value, list):
            raise UsageError(f"{at}: key '{path}' must be a list of column names")
        return tuple(column(path, item) for item in value)

    task = key("task")
    if task not in TASKS:
        raise UsageError(f"{at}: task {task!r} is not one of {', '.join(TASKS)}")
    period = key("batch_period")
    if period not in PERIODS:
        raise UsageError(f"{at}: batch_period {period!r} is not one of {', '.join(PERIODS)}")
    id_type = key("id_type")
    if id_type not in ID_TYPES:
        raise UsageError(f"{at}: id_type {id_type!r} is not one of {', '.join(ID_TYPES)}")
    if not isinstance(key("features"), Mapping):
        raise UsageError(f"{at}: key 'features' must hold 'numeric' and/or 'categorical' lists")
    numeric, categorical = columns("features.numeric"), columns("features.categorical")
    if not numeric and not categorical:
        raise UsageError(f"{at}: key 'features' declares no column")

    probability, probabilities = None, {}
    if task == "binary_classification":
        value = key("probability", required=False)
        if value is None:
            raise UsageError(f"{at}: key 'probability' is missing (a binary classifier's positive-class "
                             "probability column)")
        if isinstance(value, Mapping):
            raise UsageError(f"{at}: key 'probability' must be one column for a binary classifier")
        probability = column("probability")
    elif task == "multiclass_classification":
        value = key("probability", required=False)
        if not isinstance(value, Mapping) or len(value) < 2:
            raise UsageError(f"{at}: key 'probability' must map each class to its probability column "
                             "({class: column, ...}, at least two) for a multiclass classifier")
        probabilities = {str(label): column(f"probability.{label}", col) for label, col in value.items()}
    elif key("probability", required=False) is not None:
        raise UsageError(f"{at}: key 'probability' is for classifiers; task is regression")

    stored_extra = key("columns", required=False) or {}
    if not isinstance(stored_extra, Mapping):
        raise UsageError(f"{at}: key 'columns' must map column names to types")
    for extra, pg_type in stored_extra.items():
        column("columns", extra)
        if pg_type not in COLUMN_TYPES:
            raise UsageError(f"{at}: columns.{extra}: type {pg_type!r} is not one of {', '.join(COLUMN_TYPES)}")
    derived = _mapping_of_text(key("derived", required=False), f"{at}: derived")
    for name_ in derived:
        column("derived", name_)
    rename = _mapping_of_text(key("rename", required=False), f"{at}: rename")
    for ours in rename.values():
        column("rename", ours)

    monitor = Monitor(
        name=name,
        task=task,
        id=column("id"),
        timestamp=column("timestamp"),
        batch_period=period,
        numeric_features=numeric,
        categorical_features=categorical,
        prediction=column("prediction"),
        target=column("target"),
        probability=probability,
        probabilities=probabilities,
        positive_class=str(key("positive_class")),
        id_type=id_type,
        generate_id=_flag(key("generate_id", required=False), f"{at}: generate_id"),
        rename=rename,
        columns=dict(stored_extra),
        derived=derived,
        model=_module_name(key("model", required=False), f"{at}: model"),
        performance_where=_text(key("performance_where", required=False), f"{at}: performance_where"),
        lookups=_lookups(key("lookups", required=False), at),
        stale_after=_stale_after(key("stale_after", required=False), period, f"{at}: stale_after"),
        timezone=_time_zone(key("timezone", required=False), f"{at}: timezone"),
        max_text_bytes=_positive(key("max_text_bytes", required=False), f"{at}: max_text_bytes",
                                 DEFAULT_MAX_TEXT_BYTES),
        raw=spec,
    )
    _check_roles(monitor, at)
    if monitor.generate_id and monitor.id_type != "bigint":
        raise UsageError(f"{at}: generate_id numbers the rows: it needs id_type bigint, not {monitor.id_type}")
    return _with_checks(monitor, spec, at)


def _flag(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {value!r} is not true or false")
    return value


_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _module_name(value: Any, where: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not _MODULE.match(value)):
        raise UsageError(f"{where}: {value!r} is not a Python module name (such as package.module)")
    return value


def _time_zone(value: Any, where: str) -> str | None:
    """An IANA time zone name (such as America/New_York), as the tz database knows it."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        zoneinfo.ZoneInfo(value)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise UsageError(f"{where}: {value!r} is not a time zone of the tz database (such as UTC or "
                         "America/New_York)") from None
    return value


def _positive(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"{where}: {value!r} is not a whole number of bytes above 0")
    return value


def _text(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{where}: must be text (a SQL condition)")
    return value


def _lookups(value: Any, at: str) -> dict[str, dict[str, str]]:
    """{name: {seed: SEED, key: COLUMN}}: both names reach SQL, so both are plain identifiers."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{at}: lookups must map names to {{seed: SEED, key: COLUMN}}")
    lookups = {}
    for name, spec in value.items():
        where = f"{at}: lookups.{name}"
        if not isinstance(spec, Mapping) or set(spec) != {"seed", "key"}:
            raise UsageError(f"{where}: must be {{seed: SEED, key: COLUMN}}")
        lookups[check_identifier(name, f"{at}: lookups")] = {
            "seed": check_identifier(spec["seed"], f"{where}: seed"), "key": check_identifier(spec["key"], f"{where}: key")}
    return lookups


def _number(value: Any, where: str, integer: bool = False) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise UsageError(f"{where}: {value!r} is not {'a whole number' if integer else 'a number'}")
    return value


def _mapping_of_text(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise UsageError(f"{where}: must map names to text")
    return {str(k): v for k, v in value.items()}


def _check_roles(monitor: Monitor, at: str) -> None:
    """Each column plays one role: a feature cannot also be the id, the prediction or the target."""
    roles: dict[str, str] = {}
    named = ([("id", monitor.id), ("timestamp", monitor.timestamp)]
             + [("features.numeric", c) for c in monitor.numeric_features]
             + [("features.categorical", c) for c in monitor.categorical_features]
             + [("prediction", monitor.prediction), ("target", monitor.target)]
             + [("probability", c) for c in monitor.probability_columns]
             + [("columns", c) for c in monitor.columns])
    for role, name in named:
        if name in RESERVED:
            raise UsageError(f"{at}: {role}: {name!r} is a name modelwatch uses itself; rename the column")
        if name in roles:
            raise UsageError(f"{at}: column {name!r} is declared both as {roles[name]} and as {role}")
        roles[name] = role
    for name in monitor.derived:
        if name in roles and roles[name] in ("id", "timestamp", "prediction", "columns"):
            raise UsageError(f"{at}: derived: {name!r} is the {roles[name]}, which is read from the file")


BUILT_IN_CHECKS = ("schema_mismatches", "row_count_min", "row_count_vs_trailing_median", "missing_share",
                   "non_finite_share", "duplicate_ids", "outside_period_share", "unseen_category_share",
                   "out_of_reference_range_share", "probability_out_of_range_share", "probability_sum_off_share")
SEVERITIES = ("error", "warn")


def _with_checks(monitor: Monitor, spec: Mapping[str, Any], at: str) -> Monitor:
    contract = spec.get("contract") or {}
    custom = spec.get("checks") or {}
    if not isinstance(contract, Mapping) or not isinstance(custom, Mapping):
        raise UsageError(f"{at}: keys 'contract' and 'checks' must be mappings")
    checks = []
    for name, bound in contract.items():
        if name not in BUILT_IN_CHECKS:
            raise UsageError(f"{at}: contract.{name}: no such check (built in: {', '.join(BUILT_IN_CHECKS)}; "
                             "a check of your own goes under 'checks' with a 'where' condition)")
        checks.append(_check(name, bound, f"{at}: contract.{name}", monitor))
    for name, bound in custom.items():
        check_identifier(name, f"{at}: checks")
        if name in BUILT_IN_CHECKS:
            raise UsageError(f"{at}: checks.{name}: a built-in check's name; bound it under 'contract'")
        check = _check(name, bound, f"{at}: checks.{name}", monitor)
        if (check.where is None) == (check.lookup is None):
            raise UsageError(f"{at}: checks.{name}: give either 'where' (a SQL condition) or 'lookup'")
        if check.lookup is not None:
            if check.lookup not in monitor.lookups:
                raise UsageError(f"{at}: checks.{name}: lookup {check.lookup!r} is not declared under 'lookups'")
            if not check.columns:
                raise UsageError(f"{at}: checks.{name}: a lookup check needs 'columns'")
        checks.append(check)
    return Monitor(**{**monitor.__dict__, "checks": tuple(checks)})


def _check(name: str, bound: Any, where: str, monitor: Monitor) -> Check:
    if not isinstance(bound, Mapping):
        raise UsageError(f"{where}: must be a mapping such as {{max: 0.2, severity: error}}")
    severity = bound.get("severity", "error")
    if severity not in SEVERITIES:
        raise UsageError(f"{where}: severity {severity!r} is not error or warn")
    numbers = {side: _number(bound.get(side), f"{where}: {side}") for side in ("min", "max")}
    _number(bound.get("min_history"), f"{where}: min_history", integer=True)  # these reach SQL as written
    _number(bound.get("tolerance"), f"{where}: tolerance")
    for text in ("where", "lookup_where"):
        _text(bound.get(text), f"{where}: {text}")
    per_column = bound.get("columns") if name in BUILT_IN_CHECKS else {}
    listed = bound.get("columns") if name not in BUILT_IN_CHECKS else None
    if per_column is not None and not isinstance(per_column, Mapping):
        raise UsageError(f"{where}: columns must map column names to bounds")
    if listed is not None and not isinstance(listed, list):
        raise UsageError(f"{where}: columns must be a list of column names")
    for column, override in (per_column or {}).items():
        check_identifier(column, f"{where}: columns")
        if not isinstance(override, Mapping):
            raise UsageError(f"{where}: columns.{column}: must be a mapping such as {{max: 0.05}}")
        for side in ("min", "max"):
            _number(override.get(side), f"{where}: columns.{column}: {side}")
        if override.get("severity", severity) not in SEVERITIES:
            raise UsageError(f"{where}: columns.{column}: severity {override.get('severity')!r} is not error or warn")
    return Check(
        name=name,
        severity=severity,
        min=None if numbers["min"] is None else float(numbers["min"]),
        max=None if numbers["max"] is None else float(numbers["max"]),
        where=bound.get("where"),
        lookup=bound.get("lookup"),
        lookup_where=bound.get("lookup_where"),
        columns=tuple(check_identifier(c, f"{where}: columns") for c in (listed or ())),
        per_column=dict(per_column or {}),
    )
