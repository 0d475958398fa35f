"""Reading a TLC trip file: check it against the declared schema and coerce to it.

Months of the same feed differ in physical schema (int32 vs int64 ids, an
all-null column typed `null`): every file is cast to one declared schema and
each change is reported, so nothing is coerced silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .db import TRIP_COLUMNS
from .errors import InputError

# TLC column name -> our column name (raw.trips).
TLC_NAMES: dict[str, str] = {
    "VendorID": "vendor_id",
    "lpep_pickup_datetime": "pickup_datetime",
    "lpep_dropoff_datetime": "dropoff_datetime",
    "store_and_fwd_flag": "store_and_fwd_flag",
    "RatecodeID": "ratecode_id",
    "PULocationID": "pu_location_id",
    "DOLocationID": "do_location_id",
    "passenger_count": "passenger_count",
    "trip_distance": "trip_distance",
    "fare_amount": "fare_amount",
    "extra": "extra",
    "mta_tax": "mta_tax",
    "tip_amount": "tip_amount",
    "tolls_amount": "tolls_amount",
    "ehail_fee": "ehail_fee",
    "improvement_surcharge": "improvement_surcharge",
    "total_amount": "total_amount",
    "payment_type": "payment_type",
    "trip_type": "trip_type",
    "congestion_surcharge": "congestion_surcharge",
}

_ARROW_TYPES = {
    "bigint": pa.int64(),
    "timestamp": pa.timestamp("us"),
    "text": pa.string(),
    "double precision": pa.float64(),
}
SCHEMA = pa.schema([(name, _ARROW_TYPES[pg_type]) for name, pg_type in TRIP_COLUMNS])

# Without these a batch cannot be placed in time, scored or monitored.
REQUIRED = (
    "pickup_datetime",
    "dropoff_datetime",
    "pu_location_id",
    "do_location_id",
    "passenger_count",
    "trip_distance",
    "fare_amount",
    "total_amount",
)


@dataclass(frozen=True)
class TripFile:
    """A trip file read and coerced to SCHEMA."""

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


def read_trip_file(path: Path | str) -> TripFile:
    """Read a TLC parquet file; InputError names the file and the column at fault."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable parquet file ({_first_line(exc)})") from None
    coerced, notes = coerce(table, str(path))
    return TripFile(path=path, sha256=sha256_of(path), table=coerced, coercions=tuple(notes))


def coerce(table: pa.Table, where: str) -> tuple[pa.Table, list[str]]:
    """Rename TLC columns, cast each to the declared type, add absent optional ones as null."""
    renamed = {TLC_NAMES.get(name, name): name for name in table.column_names}
    missing = [name for name in REQUIRED if name not in renamed]
    if missing:
        tlc = {ours: theirs for theirs, ours in TLC_NAMES.items()}
        listed = ", ".join(repr(tlc[name]) for name in missing)
        raise InputError(f"{where}: required column {listed} is missing" if len(missing) == 1
                         else f"{where}: required columns {listed} are missing")
    columns: list[pa.Array] = []
    notes: list[str] = []
    for field in SCHEMA:
        source_name = renamed.get(field.name)
        if source_name is None:
            columns.append(pa.nulls(table.num_rows, field.type))
            notes.append(f"{field.name}: absent, filled with nulls")
            continue
        column = table.column(source_name)
        if column.type != field.type:
            column = _cast(column, field.type, where, source_name)
            notes.append(f"{source_name}: {table.schema.field(source_name).type} -> {field.type}")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=SCHEMA), notes


def _cast(column: pa.ChunkedArray, target: pa.DataType, where: str, name: str) -> pa.ChunkedArray:
    try:
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(
            f"{where}: column '{name}' has type {column.type} and cannot be read as {target} "
            f"({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
