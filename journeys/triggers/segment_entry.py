"""Segment-entry journeys: enroll customers when they come to match a segment.

Config (``Journey.trigger``)::

    {"segment": [conditions], "enroll_existing": false}
    {"segment": "recent-buyers"}    (a saved segment, ``orchestrator.segments``, by key)

``SegmentMember`` holds who matched at the previous sweep. Each sweep evaluates the
segment once and, in one statement, removes the members who no longer match and adds
those who newly do (``since`` = this sweep's time); the newcomers are enrolled with the
occurrence ``segment:<since>``, so leaving and coming back is a new occurrence (the
journey's entry rule still applies). The first sweep of a journey only records who is
in the segment already - they did not *enter* it - unless ``enroll_existing`` is set.
Sweeps of one journey take turns on an advisory lock, so two at once enroll nobody
twice and never both count the same customer as new.

The forecast has everyone who matches today and is not in yet enter at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django import forms
from django.db import connection, transaction
from django.utils import timezone

from journeys.enrollment import enroll_select
from journeys.forecasting import Entrant, Forecast, Window
from journeys.form_fields import ConditionsField
from journeys.models import Journey, JourneyCursor
from journeys.problems import Problem, conditions_problems
from orchestrator.segments.parsing import iso_utc
from orchestrator.segments.selectors import SegmentMissing, where_sql
from orchestrator.segments.sql import segment_sql, segment_where

KIND = "segment"
LABEL = "A customer enters a segment"
#: The beat task whose sweep enrolls this kind (run at once when a journey starts).
SWEEP_TASK = "sweeps.journey_triggers"
CONTEXT_FROM_EVENT = False
EXAMPLE: dict[str, Any] = {
    "segment": [{"type": "attribute", "name": "tier", "op": "eq", "value": "gold"}]
}
DEFAULTS: dict[str, Any] = {}
#: Trigger setting -> the builder's form field for it.
FORM_PLACES = {"segment": "segment"}
FIELDSETS = (("Segment", ("saved_segment", "segment")),)
CURSOR = "segment"
#: Lock namespace for pg_advisory_xact_lock(namespace, journey id).
SEGMENT_LOCK = 7_303


def sweep(journey: Journey, now: dt.datetime | None = None) -> int:
    """Update the journey's members and enroll newcomers; returns how many were enrolled."""
    now = now or timezone.now()
    config = journey.trigger or {}
    where, params = _where(config.get("segment"), now)
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


def _where(segment: Any, now: dt.datetime) -> tuple[str, list[Any]]:
    """Inline conditions, or a saved segment named by its key."""
    if isinstance(segment, str):
        return where_sql(segment, now=now)
    return segment_sql(segment or [], now=now)


# --- definition, builder and forecast ------------------------------------------------


def validate(trigger: Mapping[str, Any]) -> list[Problem]:
    segment = trigger.get("segment")
    if isinstance(segment, str):
        try:
            where_sql(segment)
        except SegmentMissing as exc:
            return [Problem("trigger.segment", str(exc))]
        return []
    return conditions_problems(
        trigger.get("segment"), "trigger.segment", allowed=("attribute", "event"), required=True
    )


def form_fields() -> dict[str, forms.Field]:
    return {
        "saved_segment": forms.CharField(
            required=False,
            label="Saved segment (its key)",
            help_text="Or leave empty and write the conditions below.",
        ),
        "segment": ConditionsField(
            types=("attribute", "event"), label="Segment: customers who", required=False
        ),
    }


def form_initial(trigger: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(trigger.get("segment"), str):
        return {"saved_segment": trigger["segment"]}
    return {name: trigger[key] for key, name in FORM_PLACES.items() if key in trigger}


def form_values(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    if (cleaned.get("saved_segment") or "").strip():
        return {"segment": cleaned["saved_segment"].strip()}
    return {"segment": cleaned.get("segment")}


def forecast(journey: Journey, trigger: Mapping[str, Any], window: Window, sample: int) -> Forecast:
    segment = trigger.get("segment")
    if isinstance(segment, str):
        where, params = where_sql(segment, now=window.now)
    else:
        where, params = segment_where(segment, now=window.now)
    rule_sql = ""
    rule_params: list[Any] = []
    if journey.entry == Journey.Entry.ONCE:
        rule_sql = " AND NOT EXISTS (SELECT 1 FROM journeys_enrollment p"
        rule_sql += " WHERE p.journey_id = %s AND p.customer_id = c.id)"
        rule_params = [journey.id]
    elif journey.entry == Journey.Entry.ONCE_PER:
        rule_sql = " AND NOT EXISTS (SELECT 1 FROM journeys_enrollment p"
        rule_sql += " WHERE p.journey_id = %s AND p.customer_id = c.id AND p.entered_at > %s)"
        rule_params = [journey.id, window.now - dt.timedelta(days=journey.entry_days or 1)]
    base = f"""
        FROM audience_customer c WHERE {where}
        AND NOT EXISTS (SELECT 1 FROM journeys_segmentmember m
                        WHERE m.journey_id = %s AND m.customer_id = c.id)
        {rule_sql}
    """  # noqa: S608 - our own fragments; values are parameters
    args = [*params, journey.id, *rule_params]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) {base}", args)
        total = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT c.id {base} ORDER BY md5(c.id::text) LIMIT %s",
            [*args, sample],
        )
        chosen = [row[0] for row in cursor.fetchall()]
    per_day = [0.0] * len(window.dates)
    per_day[0] = float(total)
    entrants = [Entrant(customer_id, window.now, {}, 0) for customer_id in chosen]
    notes = [
        "Everyone who matches the segment today and is not in it yet enters at once; "
        "who will join the segment later is not foreseen."
    ]
    return Forecast(per_day, entrants, notes)
