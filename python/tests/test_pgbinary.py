"""Binary COPY from Arrow: what PostgreSQL reads back equals what was sent. Real PostgreSQL."""

from __future__ import annotations

import math
from datetime import date, datetime

import psycopg
import pyarrow as pa
import pytest

from modelwatch import pgbinary
from modelwatch.load import copy_arrow
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
