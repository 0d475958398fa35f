"""Values only PostgreSQL would refuse, values that would be changed silently, inputs that would
crash: each refused with exit 2 and one line, on the taxi and on NannyML's car_price, with
everything stored (raw, marts, the batch log) byte-equal before and after."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from modelwatch import pipeline
from modelwatch.config import PROJECT_DIR, Settings
from modelwatch.errors import UsageError
from modelwatch.monitors import parse_monitors
from modelwatch.periods import batch_of

from .conftest import (FEBRUARY, Templates, copy_project, error_line, initialised_database, invoke_cli, nannyml_file,
                       trained_database)


@dataclass(frozen=True)
class Case:
    """A monitor with one good batch stored, and what its files look like."""

    settings: Settings
    monitor: str
    day: date
    good: Path  # the day's rows, as the shared file has them
    timestamp: str  # the file's column the batches are cut by
    text: str  # a text column of the file
    stamp: str  # a timestamp column of the file (the taxi: its dropoff)
    folder: Path


def _day_rows(path: Path, column: str, day: date) -> pa.Table:
    table = pq.read_table(path)
    return table.filter(pc.equal(pc.cast(table[column], pa.date32()), pa.scalar(day, pa.date32())))


@pytest.fixture(scope="module", params=["nyc_taxi", "car_price"])
def case(request: pytest.FixtureRequest, templates: Templates, server_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    monitor = request.param
    folder = tmp_path_factory.mktemp(monitor)
    database = trained_database if monitor == "nyc_taxi" else initialised_database  # the taxi's model trained
    with database(templates, server_url, folder / "home", "refused") as settings:
        if monitor == "nyc_taxi":
            day, source, timestamp, text, stamp = (date(2023, 2, 8), FEBRUARY, "lpep_pickup_datetime",
                                                   "store_and_fwd_flag", "lpep_dropoff_datetime")
        else:
            pipeline.reference(settings, monitor, nannyml_file("regression_synthetic_reference.parquet"))
            day, source, timestamp, text, stamp = (date(2017, 2, 20),
                                                   nannyml_file("regression_synthetic_analysis.parquet"),
                                                   "timestamp", "fuel", "timestamp")
        good = folder / "good.parquet"
        pq.write_table(_day_rows(source, timestamp, day), good)
        assert pipeline.run_batch(settings, day, good, monitor).status in ("passed", "warned")
        yield Case(settings, monitor, day, good, timestamp, text, stamp, folder)


def snapshot(url: str) -> dict[str, list[str]]:
    """Every row of every table and view of raw and marts, as PostgreSQL's text of it, sorted."""
    with psycopg.connect(url) as conn:
        names = conn.execute(
            """select table_schema, table_name from information_schema.tables
               where table_schema in ('raw', 'marts') order by 1, 2""").fetchall()
        return {f"{schema}.{name}": sorted(row for (row,) in conn.execute(
                    psycopg.sql.SQL("select t::text from {} t").format(psycopg.sql.Identifier(schema, name))))
                for schema, name in names}


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _replaced(column: pa.ChunkedArray, rows: int, value: object) -> pa.Array:
    """The column with its first `rows` values replaced by `value` (bytes: raw text bytes)."""
    if isinstance(value, bytes):  # written as the column's text type, bytes unchecked
        binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
        values = [value] * rows + [None if v is None else v.encode() for v in column.to_pylist()[rows:]]
        return pa.array(values, binary).view(column.type)
    if isinstance(value, int) and pa.types.is_timestamp(column.type):  # a raw int64 timestamp
        raw = pc.cast(column, pa.int64()).to_pylist()
        return pa.array([value] * rows + raw[rows:], pa.int64()).view(column.type)
    return pa.array([value] * rows + column.to_pylist()[rows:], column.type)


def _refused(case: Case, table: pa.Table, name: str, *extra: str, project_dir: Path | None = None) -> str:
    """Run `table` as the good batch's day: exit 2, nothing stored changed; the one line."""
    path = case.folder / f"{name}.parquet"
    pq.write_table(table, path)
    before = snapshot(case.settings.database_url)
    result = invoke_cli(case.settings, "run", "--monitor", case.monitor, "--batch-date", case.day.isoformat(),
                     "--file", str(path), *extra, project_dir=project_dir)
    assert result.exit_code == 2, result.output
    assert snapshot(case.settings.database_url) == before
    return error_line(result).replace(str(path), "FILE")


# --- values only PostgreSQL refuses -------------------------------------------------------------

def test_text_with_a_nul_byte(case: Case) -> None:
    table = pq.read_table(case.good)
    table = _with_column(table, case.text, _replaced(table[case.text], 3, "a\x00b"))
    assert _refused(case, table, "nul") == (
        f"Error: FILE: column '{case.text}': 3 rows hold text with a NUL byte (\\x00), which PostgreSQL cannot store")


def test_text_that_is_not_utf8(case: Case) -> None:
    table = pq.read_table(case.good)
    table = _with_column(table, case.text, _replaced(table[case.text], 1, b"\xff\xfeN"))
    assert _refused(case, table, "latin") == (
        f"Error: FILE: column '{case.text}': 1 row holds text that is not valid UTF-8, which PostgreSQL cannot store")


@pytest.mark.parametrize("raw", [-(2**63) + 1, -219_000_000_000_000_000, 9_000_000_000_000_000_000],
                         ids=["int64_min_plus_one", "5000_bc", "year_287000"])
def test_timestamp_outside_the_range_stored(case: Case, raw: int) -> None:
    table = pq.read_table(case.good)
    table = _with_column(table, case.stamp, _replaced(table[case.stamp], 2, raw))
    assert _refused(case, table, "far") == (
        f"Error: FILE: column '{case.stamp}': 2 rows hold timestamps outside 0001-01-01 .. 9999-12-31, which "
        "modelwatch cannot store")


def test_text_over_the_declared_limit(case: Case) -> None:
    table = pq.read_table(case.good)
    table = _with_column(table, case.text, _replaced(table[case.text], 2, "x" * (64 * 1024 + 1)))
    assert _refused(case, table, "long") == (
        f"Error: FILE: column '{case.text}': 2 rows hold text longer than the monitor's max_text_bytes "
        "(65,536 bytes; the longest is 65,537)")


def test_a_failed_copy_restores_the_batch_log(case: Case) -> None:
    """A failure only the database sees midway through COPY (here a constraint of the test's own):
    exit 3, the batch's rows and its log row as they were."""
    rows_table = f"{case.monitor}__rows"
    numeric = "trip_distance" if case.monitor == "nyc_taxi" else "km_driven"
    url = case.settings.database_url
    table = pq.read_table(case.good)
    table = _with_column(table, numeric, _replaced(table[numeric], 1, 1e12))
    path = case.folder / "constrained.parquet"
    pq.write_table(table, path)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"alter table raw.{rows_table} add constraint test_bound check ({numeric} < 1e11)")
    try:
        before = snapshot(url)
        result = invoke_cli(case.settings, "run", "--monitor", case.monitor, "--batch-date", case.day.isoformat(),
                         "--file", str(path))
        assert result.exit_code == 3, result.output
        assert error_line(result).startswith('Error: database: new row for relation "')
        assert snapshot(url) == before
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"alter table raw.{rows_table} drop constraint test_bound")


# --- values that would be changed silently --------------------------------------------------------

def _project(folder: Path, monitor: str, **keys: object) -> Path:
    project = copy_project(folder / f"project_{'_'.join(keys)}")
    config = yaml.safe_load((project / "dbt_project.yml").read_text())
    config["vars"]["monitors"][monitor].update(keys)
    (project / "dbt_project.yml").write_text(yaml.safe_dump(config))
    return project


def test_a_column_given_twice_by_its_name_and_the_name_it_maps_to(case: Case) -> None:
    table = pq.read_table(case.good)
    project = None
    if case.monitor == "nyc_taxi":
        source, ours = "lpep_pickup_datetime", "pickup_datetime"
    else:  # car_price renames nothing: a rename of the test's own
        source, ours = "sold_at", "timestamp"
        project = _project(case.folder, case.monitor, rename={"sold_at": "timestamp"})
    table = table.append_column(ours if case.monitor == "nyc_taxi" else source, table[case.timestamp])
    assert _refused(case, table, "twice", project_dir=project) == (
        f"Error: FILE: columns '{source}' and '{ours}' both give column '{ours}'; keep one of them"
        if case.monitor == "nyc_taxi" else
        f"Error: FILE: columns '{ours}' and '{source}' both give column '{ours}'; keep one of them")


def _aware(table: pa.Table, columns: list[str], zone: str) -> pa.Table:
    """The file's wall-clock timestamps as the same instants in `zone`, written time-zone aware."""
    for name in dict.fromkeys(columns):
        table = _with_column(table, name, pc.assume_timezone(table[name], zone))
    return table


def _stored_stamps(url: str, monitor: str, day: date) -> tuple:
    column = "pickup_datetime" if monitor == "nyc_taxi" else "timestamp"
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"select count(*), min({column}), max({column}) from raw.{monitor}__rows where batch_date = %s",
            (day,)).fetchone()


def test_aware_timestamps_are_cut_in_the_declared_zone(case: Case) -> None:
    """The day's rows written aware in New York: with `timezone` declared, the same rows, the same
    wall-clock times as the naive file's; the log says what was converted."""
    zone = "America/New_York"
    url = case.settings.database_url
    good = _stored_stamps(url, case.monitor, case.day)
    table = _aware(pq.read_table(case.good), [case.timestamp, case.stamp], zone)
    path = case.folder / "aware.parquet"
    pq.write_table(table, path)
    project = _project(case.folder, case.monitor, timezone=zone)
    result = invoke_cli(case.settings, "run", "--monitor", case.monitor, "--batch-date", case.day.isoformat(),
                     "--file", str(path), project_dir=project)
    assert result.exit_code == 0, result.output
    assert _stored_stamps(url, case.monitor, case.day) == good
    note = f"{case.timestamp}: timestamp[us, tz={zone}] -> timestamp[us] (converted to {zone})"
    assert note in _coercions(url, case.monitor, case.day).split("; ")
    assert [line for line in result.output.splitlines() if line.startswith("coerced:")][0].count(note) == 1


def test_aware_timestamps_default_to_utc_and_say_so(case: Case) -> None:
    zone = "America/New_York"
    url = case.settings.database_url
    day = case.day  # a winter day in New York: in UTC, its rows before 19:00 stay in the day, from 05:00
    table = _aware(pq.read_table(case.good), [case.timestamp, case.stamp], zone)
    path = case.folder / "aware_utc.parquet"
    pq.write_table(table, path)
    naive = pq.read_table(case.good)[case.timestamp]
    in_utc_day = pc.sum(pc.cast(pc.less(naive, pa.scalar(datetime(day.year, day.month, day.day, 19), naive.type)),
                                pa.int64())).as_py()
    result = invoke_cli(case.settings, "run", "--monitor", case.monitor, "--batch-date", day.isoformat(),
                     "--file", str(path))
    assert result.exit_code in (0, 1), result.output  # a shorter day may fail the contract: judged, not garbled
    count, first, _ = _stored_stamps(url, case.monitor, day)
    assert count == in_utc_day
    assert first >= datetime(day.year, day.month, day.day, 5)
    line = [line for line in result.output.splitlines() if line.startswith("coerced:")]
    assert len(line) == 1
    assert (f"{case.timestamp}: timestamp[us, tz={zone}] -> timestamp[us] (converted to UTC: the monitor "
            "declares no timezone)") in line[0]
    pipeline.run_batch(case.settings, day, case.good, case.monitor)  # the good batch back, for the tests after


def _coercions(url: str, monitor: str, day: date) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select coalesce(coercions, '') from raw.batches where monitor = %s and batch_date = %s",
                            (monitor, day)).fetchone()[0]


def test_an_unknown_time_zone_is_one_line() -> None:
    dbt_vars = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    dbt_vars["monitors"]["car_price"]["timezone"] = "Mars/Olympus_Mons"
    with pytest.raises(UsageError) as raised:
        parse_monitors(dbt_vars)
    assert str(raised.value) == ("dbt_project.yml: monitor car_price: timezone: 'Mars/Olympus_Mons' is not a time "
                                 "zone of the tz database (such as UTC or America/New_York)")
    dbt_vars["monitors"]["car_price"]["timezone"] = None
    dbt_vars["monitors"]["car_price"]["max_text_bytes"] = 0
    with pytest.raises(UsageError) as raised:
        parse_monitors(dbt_vars)
    assert str(raised.value) == ("dbt_project.yml: monitor car_price: max_text_bytes: 0 is not a whole number of "
                                 "bytes above 0")


# --- inputs that would crash --------------------------------------------------------------------

@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
def test_a_batch_date_at_the_calendar_edge(case: Case, day: str) -> None:
    before = snapshot(case.settings.database_url)
    result = invoke_cli(case.settings, "run", "--monitor", case.monitor, "--batch-date", day, "--file", str(case.good))
    assert result.exit_code == 2, result.output
    line = error_line(result).replace(str(case.good), "FILE")
    if day == "9999-12-31":
        assert line == ("Error: 9999-12-31: the day holding it reaches the calendar's last day (9999-12-31); "
                        "no batch can be cut there")
    else:
        column = "pickup_datetime" if case.monitor == "nyc_taxi" else "timestamp"
        assert line == (f"Error: FILE: no rows with a {column} in the day of 0001-01-01 (its rows' days run from "
                        f"{case.day} to {case.day})")
    assert snapshot(case.settings.database_url) == before


@pytest.mark.parametrize(("period", "day", "start"), [
    ("day", date(9999, 12, 30), date(9999, 12, 30)), ("day", date(1, 1, 1), date(1, 1, 1)),
    ("week", date(9999, 12, 26), date(9999, 12, 20)), ("week", date(1, 1, 3), date(1, 1, 1)),
    ("month", date(9999, 11, 30), date(9999, 11, 1)), ("month", date(1, 1, 31), date(1, 1, 1)),
])
def test_the_last_and_first_batches_the_calendar_holds(period: str, day: date, start: date) -> None:
    batch = batch_of("m", period, day)
    assert batch.start == start and batch.bounds[0] == datetime(start.year, start.month, start.day)


@pytest.mark.parametrize(("period", "day"), [
    ("day", date(9999, 12, 31)), ("week", date(9999, 12, 27)), ("week", date(9999, 12, 31)),
    ("month", date(9999, 12, 1)), ("month", date(9999, 12, 31)),
])
def test_a_batch_past_the_calendar_is_one_line(period: str, day: date) -> None:
    with pytest.raises(UsageError) as raised:
        batch_of("m", period, day)
    assert str(raised.value) == (f"{day}: the {period} holding it reaches the calendar's last day (9999-12-31); "
                                 "no batch can be cut there")


def test_a_weekly_monitor_at_the_calendar_edge_from_the_command_line(fresh_settings: Settings) -> None:
    result = invoke_cli(fresh_settings, "run", "--monitor", "work_from_home", "--batch-date", "9999-12-30",
                     "--file", "any.parquet")
    assert result.exit_code == 2
    assert error_line(result) == ("Error: 9999-12-30: the week holding it reaches the calendar's last day "
                                   "(9999-12-31); no batch can be cut there")


@pytest.mark.parametrize(("args", "line"), [
    (("status", "--limit", "-1"),
     "Error: modelwatch status: Invalid value for '--limit': -1 is not in the range x>=0. (--help shows the usage)"),
    (("run", "--batch-date", "2023-02-30", "--file", "x.parquet"),
     "Error: modelwatch run: Invalid value for '--batch-date': '2023-02-30' is not a date (YYYY-MM-DD) "
     "(--help shows the usage)"),
    (("run", "--file", "x.parquet"), "Error: modelwatch run: Missing option '--batch-date'. (--help shows the usage)"),
    (("runn",), "Error: No such command 'runn'. Did you mean 'run'? (--help shows the usage)"),
], ids=["negative_limit", "no_such_day", "missing_option", "unknown_command"])
def test_usage_errors_are_one_line(fresh_settings: Settings, args: tuple[str, ...], line: str) -> None:
    result = invoke_cli(fresh_settings, *args)
    assert result.exit_code == 2
    assert error_line(result) == line
    assert "Usage:" not in result.output


@pytest.mark.unsettled
def test_a_file_of_tiny_row_groups_loads_the_same_rows(case: Case) -> None:
    """The day's rows written three rows per row group (read batch by batch, joined): the same
    rows stored, the same marts."""
    url = case.settings.database_url
    path = case.folder / "tiny_groups.parquet"
    pq.write_table(pq.read_table(case.good), path, row_group_size=3)
    assert pq.ParquetFile(path).metadata.num_row_groups > 100
    before = snapshot(url)
    outcome = pipeline.run_batch(case.settings, case.day, path, case.monitor)
    after = snapshot(url)
    assert outcome.rows_loaded == pq.read_metadata(case.good).num_rows
    assert after[f"raw.{case.monitor}__rows"] == before[f"raw.{case.monitor}__rows"]
    assert after["marts.column_quality"] == before["marts.column_quality"]
    assert after["marts.model_performance"] == before["marts.model_performance"]
