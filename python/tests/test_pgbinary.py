"""Binary COPY from Arrow: what PostgreSQL reads back equals what was sent. Real PostgreSQL."""

from __future__ import annotations

import math
from datetime import date, datetime

import psycopg
import pyarrow as pa
import pytest

from modelwatch.pipeline.load import copy_arrow
from modelwatch.postgres import pgbinary
from psycopg import sql

ROWS = [
    # every type, NULLs in every column, text of several lengths (empty, multi-byte), dates before 2000
    (date(2023, 6, 1), 1, datetime(2023, 6, 1, 12, 30, 1, 123456), "N", 1.5, 7, True),
    (None, None, None, None, None, None, None),
    (date(1999, 12, 31), -5, datetime(1970, 1, 1), "", -0.0, -1, False),
    (date(2000, 1, 1), 2**62, datetime(1999, 12, 31, 23, 59, 59, 999999), "héllo wörld", 1e300, 2**31 - 1, None),
    (date(2100, 2, 28), -(2**62), datetime(2038, 1, 19, 3, 14, 8), "Y", math.inf, None, True),
]
SCHEMA = pa.schema([("d", pa.date32()), ("i", pa.int64()), ("ts", pa.timestamp("us")), ("s", pa.string()),
                    ("f", pa.float64()), ("n", pa.int32()), ("b", pa.bool_())])
DDL = "create temporary table copied (d date, i bigint, ts timestamp, s text, f double precision, n integer, b boolean)"


def _copied(conn: psycopg.Connection, table: pa.Table) -> list[tuple]:
    conn.execute(DDL)
    copy_arrow(conn, sql.Identifier("copied"), table)
    return conn.execute("select * from copied order by i nulls first, d").fetchall()


def test_every_type_and_null_round_trips(server_url: str) -> None:
    table = pa.Table.from_pylist([dict(zip(SCHEMA.names, row)) for row in ROWS], schema=SCHEMA)
    with psycopg.connect(server_url) as conn:
        assert _copied(conn, table) == sorted(ROWS, key=lambda row: (row[1] is not None, row[1] or 0, row[0]))


def test_sliced_chunks_and_many_layouts_round_trip(server_url: str) -> None:
    """A sliced table (offsets into shared buffers), 250,000 rows in chunks, NULLs and text lengths mixed."""
    count = 250_000
    ids = pa.array(range(count), pa.int64())
    text = pa.array([None if k % 7 == 0 else "x" * (k % 5) for k in range(count)], pa.string())
    numbers = pa.array([None if k % 3 == 0 else k / 4 for k in range(count)], pa.float64())
    table = pa.table({"i": ids, "s": text, "f": numbers}).slice(1, count - 2)
    with psycopg.connect(server_url) as conn:
        conn.execute("create temporary table copied (i bigint, s text, f double precision)")
        copy_arrow(conn, sql.Identifier("copied"), table)
        figures = conn.execute(
            """select count(*), count(s), count(f), sum(length(s)), sum(f), min(i), max(i),
                      count(*) filter (where s is distinct from case when i % 7 = 0 then null
                                                                  else repeat('x', (i % 5)::int) end),
                      count(*) filter (where f is distinct from case when i % 3 = 0 then null else i / 4.0 end)
               from copied"""
        ).fetchone()
    kept = range(1, count - 1)
    assert figures == (
        count - 2,
        sum(1 for k in kept if k % 7),
        sum(1 for k in kept if k % 3),
        sum(k % 5 for k in kept if k % 7),
        pytest.approx(sum(k / 4 for k in kept if k % 3)),
        1,
        count - 2,
        0,  # every row's text with its own id: no value moved to another row within a layout group
        0,  # every row's number with its own id
    )


def test_columns_of_one_width_in_every_row_between_varying_ones_round_trip(server_url: str) -> None:
    """A wide table's shape: runs of columns whose fields are alike in every row (numbers and dates
    without NULL, text of one length, empty text, a column NULL throughout), between nullable ones
    that make dozens of layouts, in two chunks of a sliced table."""
    count = 40_000
    k = range(count)
    columns = {
        "i": pa.array(k, pa.int64()),
        "d": pa.array([date(2024, 1, 1 + j % 28) for j in k], pa.date32()),
        "a": pa.array([j / 8 for j in k], pa.float64()),
        "na": pa.array([None if j % 11 == 0 else j / 2 for j in k], pa.float64()),
        "c": pa.array([f"c{j % 97:03d}" for j in k], pa.string()),
        "e": pa.array([""] * count, pa.string()),
        "nb": pa.array([None if j % 13 == 0 else -j for j in k], pa.int32()),
        "z": pa.array([None] * count, pa.float64()),
        "t": pa.array([datetime(2024, 1, 1, j % 24, j % 60) for j in k], pa.timestamp("us")),
        "nc": pa.array([None if j % 5 == 0 else "é" * (j % 3) for j in k], pa.string()),
        "b": pa.array([j % 2 == 0 for j in k], pa.bool_()),
    }
    table = pa.table(columns).slice(3, count - 5)
    chunks = [table.slice(0, 17_000), table.slice(17_000)]
    ddl = ("create temporary table copied (i bigint, d date, a double precision, na double precision, c text,"
           " e text, nb integer, z double precision, t timestamp, nc text, b boolean)")
    with psycopg.connect(server_url) as conn:
        conn.execute(ddl)
        target = sql.SQL("copy copied ({}) from stdin (format binary)").format(
            sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names))
        with conn.cursor().copy(target) as copy:
            copy.write(pgbinary.HEADER)
            for chunk in chunks:
                copy.write(pgbinary.encode(chunk))
            copy.write(pgbinary.TRAILER)
        stored = conn.execute("select * from copied order by i").fetchall()
    assert stored == [tuple(row.values()) for row in table.to_pylist()]


def test_narrow_and_large_types_and_text_without_data_round_trip(server_url: str) -> None:
    table = pa.table({
        "small": pa.array([1, None, -32768], pa.int16()),
        "real": pa.array([0.5, None, -1.25], pa.float32()),
        "big_text": pa.array(["a", None, "ccc"], pa.large_string()),
        "empty_text": pa.array(["", "", None], pa.string()),  # no data buffer at all
    })
    with psycopg.connect(server_url) as conn:
        conn.execute("create temporary table copied (small smallint, real real, big_text text, empty_text text)")
        copy_arrow(conn, sql.Identifier("copied"), table)
        assert conn.execute("select * from copied order by small nulls first").fetchall() == [
            (None, None, None, ""), (-32768, -1.25, "ccc", None), (1, 0.5, "a", "")]


def test_an_unsupported_type_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="decimal128"):
        pgbinary.encode(pa.table({"x": pa.array([1], pa.decimal128(5, 2))}))


def test_long_text_in_slices_of_bounded_bytes_round_trips(server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text of many lengths (some rows longer than a slice's bound, some NULL, from a sliced
    Arrow array) is COPYed slice by slice and read back equal, in both of Arrow's text layouts."""
    from modelwatch.pipeline import load

    monkeypatch.setattr(load, "COPY_CHUNK_BYTES", 1_000)
    texts = [None if i % 7 == 3 else ("é" * (i * 37 % 900)) + str(i) for i in range(300)]
    for kind in (pa.string(), pa.large_string()):
        column = pa.array(["skipped"] * 5 + texts, kind).slice(5)
        table = pa.table({"i": pa.array(range(300), pa.int64()), "s": column})
        sizes = [8 + len((text or "").encode()) for text in texts]
        slices, start = [], 0
        for chunk in load.chunks(table):
            slices.append(sum(sizes[start:start + chunk.num_rows]) if chunk.num_rows > 1 else 0)
            start += chunk.num_rows
        assert start == 300 and max(slices) <= 1_000 and 50 < len(slices) < 300
        with psycopg.connect(server_url) as conn:
            conn.execute("create temporary table long_text (i bigint, s text)")
            copy_arrow(conn, sql.Identifier("long_text"), table)
            assert [s for (s,) in conn.execute("select s from long_text order by i")] == texts


def test_a_timestamp_whose_epoch_shift_would_wrap_is_refused() -> None:
    """The encoder itself never wraps a raw value (source refuses such files first, with a line)."""
    stamps = pa.array([-(2**63) + 1], pa.int64()).view(pa.timestamp("us"))
    with pytest.raises(ValueError, match="too far in the past"):
        pgbinary.encode(pa.table({"ts": stamps}))
