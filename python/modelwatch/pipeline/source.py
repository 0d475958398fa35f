"""Reading a batch or reference file (parquet or CSV) for a monitor: rename, check
and coerce it to the columns the monitor declares.

Files of the same feed differ in physical schema (int32 vs int64 ids, an
all-null column typed `null`): every file is cast to the monitor's declared
types and each change is reported, so nothing is coerced silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from modelwatch.errors import InputError
from modelwatch.monitors import Monitor
from modelwatch.postgres import values

ARROW_TYPES = {
    "bigint": pa.int64(),
    "timestamp": pa.timestamp("us"),
    "text": pa.string(),
    "double precision": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
}


def arrow_schema(columns: tuple[tuple[str, str], ...]) -> pa.Schema:
    return pa.schema([(name, ARROW_TYPES[pg_type]) for name, pg_type in columns])


@dataclass(frozen=True)
class BatchFile:
    """A file read and coerced to a monitor's stored columns (those the file may provide)."""

    path: Path
    sha256: str
    table: pa.Table
    coercions: tuple[str, ...]

    @property
    def rows(self) -> int:
        return self.table.num_rows


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_table(path: Path | str) -> tuple[Path, pa.Table]:
    """The file as Arrow: parquet, or CSV by its suffix; InputError names the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    csv = path.suffix.lower() in (".csv", ".tsv") or path.name.lower().endswith((".csv.gz", ".tsv.gz"))
    try:
        if csv:
            delimiter = "\t" if ".tsv" in path.name.lower() else ","
            return path, pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
        return path, _read_parquet(path)
    except (pa.ArrowException, OSError) as exc:
        kind = "CSV" if csv else "parquet"
        raise InputError(f"{path}: not a readable {kind} file ({_first_line(exc)})") from None


SMALL_ROW_GROUP_ROWS = 10_000  # below this many rows per group on average, groups are read as batches
READ_BATCH_ROWS = 1 << 16


def _read_parquet(path: Path) -> pa.Table:
    """The file's rows; a file written in many tiny row groups is read batch by batch, which
    joins the groups, instead of one Arrow chunk per group (slower and far larger)."""
    file = pq.ParquetFile(path)
    groups = file.metadata.num_row_groups
    if groups <= 1 or file.metadata.num_rows / groups >= SMALL_ROW_GROUP_ROWS:
        return file.read()
    return pa.Table.from_batches(list(file.iter_batches(batch_size=READ_BATCH_ROWS)), schema=file.schema_arrow)


def read_batch_file(path: Path | str, monitor: Monitor) -> BatchFile:
    """Read a file of `monitor`'s rows; InputError names the file and the column at fault."""
    path, table = read_table(path)
    coerced, notes = coerce(table, monitor, str(path))
    return BatchFile(path=path, sha256=sha256_of(path), table=coerced, coercions=tuple(notes))


def coerce(table: pa.Table, monitor: Monitor, where: str) -> tuple[pa.Table, list[str]]:
    """Rename the file's columns (the monitor's `rename`), cast each declared column to its
    type and add absent optional ones as nulls. Columns modelwatch makes (a generated id, a
    model's prediction) and derived ones are left out."""
    renamed: dict[str, str] = {}
    for name in table.column_names:
        ours = monitor.rename.get(name, name)
        if ours in renamed:
            raise InputError(f"{where}: columns '{renamed[ours]}' and '{name}' both give column '{ours}'; "
                             "keep one of them")
        renamed[ours] = name
    required = monitor.required_columns
    missing = [name for name in required if name not in renamed]
    if missing:
        theirs = {ours: source for source, ours in monitor.rename.items()}
        listed = ", ".join(repr(theirs.get(name, name)) for name in missing)
        raise InputError(f"{where}: required column {listed} is missing" if len(missing) == 1
                         else f"{where}: required columns {listed} are missing")
    made = ({monitor.id} if monitor.generate_id else set()) | ({monitor.prediction} if monitor.model else set())
    wanted = [(name, pg_type) for name, pg_type in monitor.stored_columns if name not in made]
    schema = arrow_schema(tuple(wanted))
    columns: list[pa.ChunkedArray | pa.Array] = []
    notes: list[str] = []
    for field in schema:
        source_name = renamed.get(field.name)
        if source_name is None:
            columns.append(pa.nulls(table.num_rows, field.type))
            if field.name != monitor.target:  # a file without labels is the usual case
                notes.append(f"{field.name}: absent, filled with nulls")
            continue
        column = table.column(source_name)
        if pa.types.is_large_string(column.type) and pa.types.is_string(field.type):
            column = pc.cast(column, field.type)  # the same text, in Arrow's other layout: no change to report
        if column.type != field.type:
            before = table.schema.field(source_name).type
            note = f"{source_name}: {before} -> {field.type}"
            if pa.types.is_timestamp(before) and before.tz is not None and pa.types.is_timestamp(field.type):
                column, time_zone = _to_local(column, monitor.timezone, where, source_name)
                note += (f" (converted to {time_zone})" if monitor.timezone else
                         f" (converted to {time_zone}: the monitor declares no timezone)")
            column = _cast(column, field.type, where, source_name)
            notes.append(note)
        values.check_column(column, where, source_name, monitor.max_text_bytes)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema), notes


def _to_local(column: pa.ChunkedArray, time_zone: str | None, where: str, name: str) -> tuple[pa.ChunkedArray, str]:
    """Aware timestamps as the wall-clock time of the monitor's time zone (UTC by default), the
    time zone its batches are cut in."""
    time_zone = time_zone or "UTC"
    try:
        return pc.local_timestamp(column.cast(pa.timestamp(column.type.unit, tz=time_zone))), time_zone
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{where}: column '{name}' cannot be converted to time zone {time_zone} "
                         f"({_first_line(exc)})") from None


def _cast(column: pa.ChunkedArray, target: pa.DataType, where: str, name: str) -> pa.ChunkedArray:
    try:
        if pa.types.is_boolean(column.type) and pa.types.is_string(target):
            return pc.if_else(column, "true", "false")
        if pa.types.is_floating(column.type) and pa.types.is_string(target):
            return _floats_as_text(column)
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(
            f"{where}: column '{name}' has type {column.type} and cannot be read as {target} "
            f"({_first_line(exc)})"
        ) from None


def _floats_as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Whole floats as integers ("1", not "1.0"): a category read from a float column is the
    same category as from an integer one."""
    whole = pc.equal(column, pc.floor(column))
    as_int = pc.cast(pc.cast(pc.if_else(whole, column, 0.0), pa.int64(), safe=False), pa.string())
    return pc.if_else(whole, as_int, pc.cast(column, pa.string()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
