"""Values a column may hold, checked before COPY: text PostgreSQL can store, timestamps and
dates the database and the Python steps that read them back can hold, text within the
monitor's limit.

PostgreSQL refuses a NUL byte or invalid UTF-8 in text and a timestamp out of its range
only midway through COPY, with a message that names no column; the binary encoder's
epoch shift would wrap a raw value near the int64 limits. Each is refused here instead,
with one line naming the file, the column and how many rows.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelwatch.errors import InputError

# The range Python's datetime holds (the drift step and reports read stored rows back into
# it); PostgreSQL's own is wider, so every value inside is one PostgreSQL stores too.
FIRST_DAY, LAST_DAY = date(1, 1, 1), date(9999, 12, 31)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_FIRST_US = (datetime(1, 1, 1, tzinfo=timezone.utc) - _EPOCH) // _US
_LAST_US = (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc) - _EPOCH) // _US
_FIRST_DAY_N = (FIRST_DAY - date(1970, 1, 1)).days
_LAST_DAY_N = (LAST_DAY - date(1970, 1, 1)).days


def check_column(column: pa.ChunkedArray, where: str, name: str, max_text_bytes: int) -> None:
    """InputError (one line: file, column, rows) when a value of `column` cannot be stored as is."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        _check_text(column, where, name, max_text_bytes)
    elif pa.types.is_timestamp(kind):
        raw = pc.cast(column, pa.int64())
        _check_range(raw, _FIRST_US, _LAST_US, where, name, "timestamps")
    elif pa.types.is_date32(kind):
        raw = pc.cast(column, pa.int32())
        _check_range(raw, _FIRST_DAY_N, _LAST_DAY_N, where, name, "dates")


def _rows(count: int) -> str:
    return "1 row holds" if count == 1 else f"{count:,} rows hold"


def _check_range(raw: pa.ChunkedArray, low: int, high: int, where: str, name: str, what: str) -> None:
    bounds = pc.min_max(raw).as_py()
    if bounds["min"] is None or (bounds["min"] >= low and bounds["max"] <= high):
        return
    outside = pc.or_(pc.less(raw, low), pc.greater(raw, high))
    count = pc.sum(pc.cast(pc.fill_null(outside, False), pa.int64())).as_py()
    raise InputError(f"{where}: column '{name}': {_rows(count)} {what} outside {FIRST_DAY} .. {LAST_DAY}, "
                     "which modelwatch cannot store")


def _check_text(column: pa.ChunkedArray, where: str, name: str, max_text_bytes: int) -> None:
    invalid = sum(_invalid_utf8(chunk) for chunk in column.chunks)
    if invalid:
        raise InputError(f"{where}: column '{name}': {_rows(invalid)} text that is not valid UTF-8, "
                         "which PostgreSQL cannot store")
    if any(_has_nul(chunk) for chunk in column.chunks):
        with_nul = pc.sum(pc.cast(pc.fill_null(pc.match_substring(column, "\x00"), False), pa.int64())).as_py()
        raise InputError(f"{where}: column '{name}': {_rows(with_nul)} text with a NUL byte (\\x00), "
                         "which PostgreSQL cannot store")
    lengths = pc.binary_length(column)
    longest = pc.max(lengths).as_py()
    if longest is not None and longest > max_text_bytes:
        count = pc.sum(pc.cast(pc.greater(lengths, max_text_bytes), pa.int64())).as_py()
        raise InputError(f"{where}: column '{name}': {_rows(count)} text longer than the monitor's "
                         f"max_text_bytes ({max_text_bytes:,} bytes; the longest is {longest:,})")


def _has_nul(chunk: pa.Array) -> bool:
    """Whether any value's bytes hold a zero byte: one pass over the chunk's text bytes."""
    _, offset_buffer, data = chunk.buffers()
    if data is None or len(chunk) == 0:
        return False
    width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offsets = np.frombuffer(offset_buffer, dtype=width)[chunk.offset:chunk.offset + len(chunk) + 1]
    return not np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]].all()


def _invalid_utf8(chunk: pa.Array) -> int:
    """How many values of a string chunk are not valid UTF-8 (0 without a Python loop when all are)."""
    try:
        chunk.validate(full=True)
        return 0
    except pa.ArrowInvalid:
        pass
    values = pc.cast(chunk, pa.large_binary()) if pa.types.is_large_string(chunk.type) else chunk.view(pa.binary())
    count = 0
    for value in values.to_pylist():  # only a file already at fault gets here
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                count += 1
    return count


def out_of_int64(values: np.ndarray, shift: int) -> bool:
    """Whether `values - shift` would wrap around int64."""
    if not len(values):
        return False
    info = np.iinfo(np.int64)
    return bool(values.min() < info.min + shift) if shift > 0 else bool(values.max() > info.max + shift)
