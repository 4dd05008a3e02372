"""Incremental rollups over append-only tables, without skipping a late-committing row.

A rollup reads the rows of a table (message history, the journey step log) in id
order after a cursor, folds them into a summary table, and moves the cursor on. Ids
are allocated before commit, so "id > cursor" alone would skip a row whose
transaction commits after a higher id was already read. The cursor therefore only
advances to a *horizon*: the id sequence's value taken at an earlier pass, which is
safe to read up to once every transaction of this database that was open when it was
taken has ended (``pg_stat_activity``). A row is folded exactly once: the fold and the
cursor move are one transaction, and the cursor row is locked (SKIP LOCKED), so two
workers never fold the same rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import connection, transaction


@dataclass(frozen=True, slots=True)
class Rollup:
    """One incremental rollup.

    ``fold_sql`` reads the rows with ``id > %(last)s AND id <= %(horizon)s`` in id
    order, ``LIMIT %(batch)s``, folds them into its summary table (a data-modifying
    CTE), and ends with ``SELECT count(*), max(id)`` over the rows it read.
    """

    name: str
    table: str
    fold_sql: str
    #: Extra query parameters for ``fold_sql`` (beside last, horizon and batch).
    params: dict | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    read: int
    #: True when every row up to the current horizon has been folded.
    caught_up: bool


def rollup_pass(rollup: Rollup, *, batch: int) -> Progress | None:
    """Fold at most ``batch`` rows; None when another worker holds this rollup right now."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO core_rollupcursor (name, last_id) VALUES (%s, 0) ON CONFLICT DO NOTHING",
            [rollup.name],
        )
        cursor.execute(
            "SELECT last_id, horizon_id, horizon_at FROM core_rollupcursor"
            " WHERE name = %s FOR UPDATE SKIP LOCKED",
            [rollup.name],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        last_id, horizon_id, horizon_at = row
        read = 0
        if horizon_id is None or last_id >= horizon_id:
            # Sequence first, clock second: any id at or below it was taken by a
            # transaction that had started before the clock reading.
            cursor.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)",
                [rollup.table],
            )
            horizon_id = cursor.fetchone()[0] or 0
            cursor.execute("SELECT clock_timestamp()")
            horizon_at = cursor.fetchone()[0]
        if last_id < horizon_id and _settled(cursor, horizon_at):
            params = {**(rollup.params or {}), "last": last_id, "horizon": horizon_id}
            cursor.execute(rollup.fold_sql, {**params, "batch": batch})
            read, max_id = cursor.fetchone()
            # A short batch means every settled id up to the horizon has been read
            # (the others were rolled back, or deleted since).
            last_id = max_id if read == batch else horizon_id
        cursor.execute(
            "UPDATE core_rollupcursor SET last_id = %s, horizon_id = %s, horizon_at = %s"
            " WHERE name = %s",
            [last_id, horizon_id, horizon_at, rollup.name],
        )
    return Progress(read=read, caught_up=last_id >= horizon_id)


def rollup_run(rollup: Rollup, *, batch: int, budget_seconds: float = 20.0) -> int:
    """Fold until caught up with the current horizon or out of time; rows folded."""
    started = time.monotonic()
    total = 0
    while True:
        progress = rollup_pass(rollup, batch=batch)
        if progress is None:
            return total
        total += progress.read
        if progress.read == 0 or time.monotonic() - started > budget_seconds:
            return total


def _settled(cursor, horizon_at) -> bool:
    """True once no other transaction of this database that began before ``horizon_at`` is open."""
    cursor.execute(
        """
        SELECT NOT EXISTS (
            SELECT 1 FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND backend_type = 'client backend' AND xact_start < %s
        )
        """,
        [horizon_at],
    )
    return cursor.fetchone()[0]
