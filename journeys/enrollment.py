"""Enrolling customers in bulk, with the journey's entry rule applied in the same statement.

Every trigger ends here: it hands over a SELECT yielding
``(customer_id bigint, occurrence text, context jsonb, due_at timestamptz)`` and one
INSERT ... SELECT enrolls them. The unique (journey, customer, occurrence) constraint
makes every trigger idempotent: two beats, a rerun or two workers racing enroll once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from journeys.models import Journey

#: Lock namespace for pg_advisory_xact_lock(namespace, journey id).
ENTRY_LOCK = 7_301


@dataclass(frozen=True)
class Candidate:
    customer_id: int
    occurrence: str
    context: dict[str, Any]
    due_at: dt.datetime | None = None


def _first_step(journey: Journey) -> str:
    return journey.current_version.definition["steps"][0]["key"]


def enroll_select(
    journey: Journey, select_sql: str, params: Sequence[Any], *, now: dt.datetime | None = None
) -> list[int]:
    """Enroll the rows ``select_sql`` yields; returns the new enrollment ids.

    The journey must be active with a published version. Call inside or outside a
    transaction; the engine is woken once the enrollments are committed.
    """
    if journey.current_version_id is None:
        raise ValueError(f"journey {journey.key!r} has no published version")
    now = now or timezone.now()
    rule = journey.entry
    source = f"({select_sql})"
    occurrence = "c.occurrence"
    where = "TRUE"
    extra: list[Any] = []
    if rule == Journey.Entry.ONCE:
        occurrence = "'once'"
    elif rule == Journey.Entry.ONCE_PER:
        # One candidate per customer, and none who entered within the last N days.
        source = (
            f"(SELECT DISTINCT ON (customer_id) * FROM {source} "  # noqa: S608 - our fragments
            "AS s (customer_id, occurrence, context, due_at) ORDER BY customer_id, due_at)"
        )
        where = (
            "NOT EXISTS (SELECT 1 FROM journeys_enrollment p WHERE p.journey_id = %s "
            "AND p.customer_id = c.customer_id AND p.entered_at > %s)"
        )
        extra = [journey.id, now - dt.timedelta(days=journey.entry_days or 1)]
    sql = f"""
        INSERT INTO journeys_enrollment
            (journey_id, version_id, customer_id, occurrence, status, step, due_at, waiting,
             waiting_for, context, arm, entered_at, exit_reason)
        SELECT %s, %s, c.customer_id, {occurrence}, 'active', %s, COALESCE(c.due_at, %s), FALSE,
               '', COALESCE(c.context, '{{}}'::jsonb), '', %s, ''
        FROM {source} AS c (customer_id, occurrence, context, due_at)
        WHERE {where}
        ON CONFLICT (journey_id, customer_id, occurrence) DO NOTHING
        RETURNING id
    """  # noqa: S608 - the fragments are ours; values are parameters
    head = [journey.id, journey.current_version_id, _first_step(journey), now, now]
    with transaction.atomic(), connection.cursor() as cursor:
        if rule == Journey.Entry.ONCE_PER:
            # Serialize entries of this journey so two workers cannot both see "not recently".
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ENTRY_LOCK, journey.id])
        cursor.execute(sql, [*head, *params, *extra])
        ids = [row[0] for row in cursor.fetchall()]
        if ids:
            from journeys.engine import kick_engine

            kick_engine()
    return ids


def enroll(
    journey: Journey, candidates: Iterable[Candidate], *, now: dt.datetime | None = None
) -> list[int]:
    """Enroll a list of candidates (the event trigger, tests, test sends)."""
    rows = list(candidates)
    if not rows:
        return []
    select = "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::jsonb[], %s::timestamptz[])"
    params = [
        [c.customer_id for c in rows],
        [c.occurrence for c in rows],
        [json.dumps(c.context, default=str) for c in rows],
        [c.due_at for c in rows],
    ]
    return enroll_select(journey, select, params, now=now)
