"""A build's test outcomes, recorded per batch, and the failing checks said in words.

dbt tests the contract with two tests, one per severity (contract_errors,
contract_warnings), whose failing rows are the checks out of bounds. Each check
is recorded per batch as a test run of its own, `contract_<check>` (with its
column), passed or not, so test_results and batch_health say which check failed,
not only that the contract did.
"""

from __future__ import annotations

from datetime import date, datetime

import psycopg
from psycopg import sql

from modelwatch.periods import Batch
from modelwatch.transform import BuildResult, TestOutcome

CONTRACT_TESTS = ("contract_errors", "contract_warnings")


def record_tests(conn: psycopg.Connection, monitor: str, build: BuildResult, batches: list[Batch],
                 lookups: tuple[str, ...] = (), executed_at: datetime | None = None,
                 verdict: dict[date, str] | None = None) -> dict[date, str]:
    """Store each test's outcome per batch in raw.dbt_test_runs; return each batch's verdict. A test
    of a seed counts only for a monitor whose lookups (`lookups`: seed names) include it.
    A build recorded in two calls (transform.build) passes both the same `executed_at` (default:
    now), which batch_health reads as one run (the latest executed_at of each batch), and the
    same `verdict`, which the second call makes worse where its tests are."""
    days = [batch.start for batch in batches]
    rows: list[tuple] = []
    verdict = {day: "passed" for day in days} if verdict is None else verdict

    def add(invocation_id: str, day: date, name: str, column: str | None, status: str, failures: int,
            message: str | None) -> None:
        rows.append((monitor, invocation_id, day, name, column, status, failures, message))
        if status in ("fail", "error"):
            verdict[day] = "failed"
        elif status == "warn" and verdict[day] == "passed":
            verdict[day] = "warned"

    contract = [test for test in build.tests if test.name in CONTRACT_TESTS]
    for test in build.tests:
        if test.name in CONTRACT_TESTS or (test.seeds and not set(test.seeds) & set(lookups)):
            continue
        per_batch = _failures_per_batch(conn, test, days)
        for day in days:
            failures = per_batch[day]
            # A failing or warning test passes for the batches it found nothing in.
            status = test.status if failures or test.status in ("error", "skipped") else "pass"
            add(test.invocation_id, day, test.name, test.column, status, failures, test.message)
    if contract:
        invocation_id = contract[0].invocation_id
        errored = [test for test in contract if test.status == "error"]
        for day in days:
            for check, column, passed, severity in _checks(conn, monitor, day):
                status = "pass" if passed else ("fail" if severity == "error" else "warn")
                add(invocation_id, day, f"contract_{check}", column or None, status, 0 if passed else 1, None)
            for test in errored:  # the contract could not be tested: the batch cannot pass
                add(test.invocation_id, day, test.name, None, "error", 0, test.message)
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(
            """insert into raw.dbt_test_runs
               (monitor, invocation_id, executed_at, batch_date, test_name, column_name, status, failures, message)
               values (%s, %s, coalesce(%s, now()), %s, %s, %s, %s, %s, %s)""",
            [(row[0], row[1], executed_at, *row[2:]) for row in rows],
        )
    return verdict


def _checks(conn: psycopg.Connection, monitor: str, day: date) -> list[tuple]:
    return conn.execute(
        """select check_name, column_name, passed, severity from marts.batch_checks
           where monitor = %s and batch_date = %s order by check_name, column_name""",
        (monitor, day),
    ).fetchall()


def _failures_per_batch(conn: psycopg.Connection, test: TestOutcome, days: list[date]) -> dict[date, int]:
    """A test whose failing rows carry their batch counts per batch; other tests count for every batch."""
    counts = {day: 0 for day in days}
    if test.status not in ("fail", "warn"):
        return counts
    if test.relation is None:
        return {day: test.failures for day in days}
    schema, table = (part.strip('"') for part in test.relation.split(".")[-2:])
    query = sql.SQL("select batch_date, count(*) from {}.{} group by batch_date").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    try:
        found = conn.execute(query).fetchall()
    except psycopg.errors.UndefinedColumn:  # its rows carry no batch
        return {day: test.failures for day in days}
    for day, count in found:
        if day in counts:
            counts[day] = int(count)
    return counts


def failing_checks(conn: psycopg.Connection, monitor: str, start: date, end: date) -> dict[date, list[str]]:
    """Human-readable failing checks per batch of the monitor, from marts.batch_checks."""
    rows = conn.execute(
        """select batch_date, check_name, column_name, measured_value, lower_bound, upper_bound, severity
           from marts.batch_checks
           where monitor = %s and batch_date between %s and %s and not passed
           order by batch_date, severity, check_name, column_name""",
        (monitor, start, end),
    ).fetchall()
    found: dict[date, list[str]] = {}
    for day, check, column, measured, lower, upper, severity in rows:
        name = f"{check}[{column}]" if column else check
        bound = " and ".join(part for part in (
            f">= {lower:g}" if lower is not None else "", f"<= {upper:g}" if upper is not None else "") if part)
        found.setdefault(day, []).append(f"{name} = {measured:.4g}, expected {bound} ({severity})")
    return found
