"""Segment-entry journeys: enroll customers when they come to match a segment.

Config (``Journey.trigger``)::

    {"segment": [conditions], "enroll_existing": false}

``SegmentMember`` holds who matched at the previous sweep. Each sweep evaluates the
segment once and, in one statement, removes the members who no longer match and adds
those who newly do (``since`` = this sweep's time); the newcomers are enrolled with the
occurrence ``segment:<since>``, so leaving and coming back is a new occurrence (the
journey's entry rule still applies). The first sweep of a journey only records who is
in the segment already - they did not *enter* it - unless ``enroll_existing`` is set.
Sweeps of one journey take turns on an advisory lock, so two at once enroll nobody
twice and never both count the same customer as new.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction
from django.utils import timezone

from journeys.enrollment import enroll_select
from journeys.models import Journey, JourneyCursor
from journeys.triggers.parsing import iso_utc
from journeys.triggers.segments import segment_sql

CURSOR = "segment"
#: Lock namespace for pg_advisory_xact_lock(namespace, journey id).
SEGMENT_LOCK = 7_303


def sweep(journey: Journey, now: dt.datetime | None = None) -> int:
    """Update the journey's members and enroll newcomers; returns how many were enrolled."""
    now = now or timezone.now()
    config = journey.trigger or {}
    where, params = segment_sql(config.get("segment") or [], now=now)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SEGMENT_LOCK, journey.id])
        state, created = JourneyCursor.objects.get_or_create(journey=journey, name=CURSOR)
        cursor.execute(
            f"""
            WITH matching AS MATERIALIZED (
                SELECT c.id FROM audience_customer c WHERE {where}
            ),
            gone AS (
                DELETE FROM journeys_segmentmember m
                WHERE m.journey_id = %s
                  AND NOT EXISTS (SELECT 1 FROM matching x WHERE x.id = m.customer_id)
                RETURNING 1
            ),
            added AS (
                INSERT INTO journeys_segmentmember (journey_id, customer_id, since)
                SELECT %s, x.id, %s FROM matching x
                WHERE NOT EXISTS (
                    SELECT 1 FROM journeys_segmentmember m
                    WHERE m.journey_id = %s AND m.customer_id = x.id
                )
                ON CONFLICT (journey_id, customer_id) DO NOTHING
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM added)
            """,  # noqa: S608 - fixed fragments; values are parameters
            [*params, journey.id, journey.id, now, journey.id],
        )
        _gone, added = cursor.fetchone()
        state.last_at = now
        state.save(update_fields=["last_at"])
        if not added or (created and not config.get("enroll_existing")):
            return 0
        select = f"""
            SELECT m.customer_id, 'segment:' || {iso_utc("m.since")} AS occurrence,
                   jsonb_build_object('segment_since', {iso_utc("m.since")}) AS context,
                   m.since AS due_at
            FROM journeys_segmentmember m
            WHERE m.journey_id = %s AND m.since = %s
        """  # noqa: S608 - fixed fragments; values are parameters
        return len(enroll_select(journey, select, [journey.id, now], now=now))
