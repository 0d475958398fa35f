"""Which batches the marts' readers (Grafana, as modelwatch_reader) see: the finished ones.

dbt rebuilds a range's marts one model at a time, each in its own transaction,
so a run killed mid-build leaves some marts with the new version of a batch and
others with the old one, or without it. Every mart therefore has row-level
security for the reader (macro `published_only`, a post-hook): it shows only
the batches listed in marts.published_batches. A run withdraws its batches
just before `dbt build` and publishes them once they are built, tested and
marked, so readers see a batch whole or not at all.
"""

from __future__ import annotations

from datetime import date

import psycopg

FINISHED = ("passed", "warned", "failed")  # a failed batch is shown, as failed

DDL = """
create table if not exists marts.published_batches (
    monitor text not null,
    batch_date date not null,
    published_at timestamptz not null default now(),
    primary key (monitor, batch_date)
);
"""


def withdraw(conn: psycopg.Connection, monitor: str, days: list[date]) -> None:
    """Hide the monitor's batches from readers while their marts are rebuilt."""
    conn.execute("delete from marts.published_batches where monitor = %s and batch_date = any(%s)",
                 (monitor, days))


def publish(conn: psycopg.Connection, monitor: str, days: list[date]) -> None:
    """Show the monitor's batches that finished (in the caller's transaction, with their status)."""
    conn.execute(
        """insert into marts.published_batches (monitor, batch_date)
           select monitor, batch_date from raw.batches
           where monitor = %s and batch_date = any(%s) and status = any(%s)
           on conflict (monitor, batch_date) do update set published_at = now()""",
        (monitor, days, list(FINISHED)),
    )


def sync(conn: psycopg.Connection) -> None:
    """Publish every finished batch (init: the readers see what was finished before)."""
    conn.execute(
        """insert into marts.published_batches (monitor, batch_date)
           select monitor, batch_date from raw.batches where status = any(%s)
           on conflict (monitor, batch_date) do nothing""",
        (list(FINISHED),),
    )
