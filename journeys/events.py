"""What events do to journeys: enroll (event triggers), resume wait-for-event steps,
take customers out (exit events) and record conversions (goals).

Recording an event also writes a PendingEvent row in the same transaction; the
``journeys.events`` task, woken on commit, takes pending rows with SKIP LOCKED,
handles them set by set and deletes them in one transaction. An event is therefore
seen exactly once, even when the broker is down (beat sweeps the queue too) or two
workers run at once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from journeys import conditions
from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment, Journey, StepRun
from journeys.triggers import event as event_trigger
from orchestrator.core.tasking import publish_on_commit

logger = logging.getLogger(__name__)

#: An event that happened longer ago than this (a history backfill) enrolls nobody.
STALE_EVENT = dt.timedelta(days=1)


def events_recorded(event_ids: list[int]) -> None:
    """Listener called by audience inside the recording transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO journeys_pendingevent (event_id) SELECT unnest(%s::bigint[]) "
            "ON CONFLICT DO NOTHING",
            [event_ids],
        )
    publish_on_commit("journeys.events")


@dataclass(frozen=True)
class _Event:
    id: int
    customer_id: int
    name: str
    properties: dict[str, Any]
    occurred_at: dt.datetime


@dataclass
class EventStats:
    events: int = 0
    enrolled: int = 0
    resumed: int = 0
    exited: int = 0
    converted: int = 0
    journeys: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {
            "events": self.events,
            "enrolled": self.enrolled,
            "resumed": self.resumed,
            "exited": self.exited,
            "converted": self.converted,
        }


def _take_pending(cursor, limit: int) -> list[_Event]:
    cursor.execute(
        """
        WITH taken AS (
            DELETE FROM journeys_pendingevent
            WHERE event_id IN (
                SELECT event_id FROM journeys_pendingevent ORDER BY event_id
                LIMIT %s FOR UPDATE SKIP LOCKED
            )
            RETURNING event_id
        )
        SELECT e.id, e.customer_id, e.name, e.properties, e.occurred_at
        FROM audience_event e JOIN taken t ON t.event_id = e.id
        ORDER BY e.id
        """,
        [limit],
    )
    # Django's psycopg setup hands raw-cursor jsonb back as text.
    return [
        _Event(i, c, n, json.loads(p) if isinstance(p, str) else p, o)
        for i, c, n, p, o in cursor.fetchall()
    ]


def process_pending(*, limit: int = 1000) -> EventStats:
    """Handle up to ``limit`` pending events in one transaction."""
    stats = EventStats()
    with transaction.atomic(), connection.cursor() as cursor:
        events = _take_pending(cursor, limit)
        stats.events = len(events)
        if events:
            handle_events(events, stats=stats)
    return stats


def _active_journeys() -> list[Journey]:
    return list(
        Journey.objects.filter(
            status__in=[Journey.Status.ACTIVE, Journey.Status.PAUSED],
            current_version__isnull=False,
        ).select_related("current_version")
    )


def handle_events(events: list[_Event], *, stats: EventStats) -> None:
    now = timezone.now()
    journeys = _active_journeys()
    names = {e.name for e in events}
    _enroll_from_events(events, journeys, now, stats)
    exit_journeys = [
        j for j in journeys if any(x.get("event") in names for x in j.exit_events or [])
    ]
    goal_journeys = [j for j in Journey.objects.filter(goal_event__in=names)]
    customers = {e.customer_id for e in events}
    active = list(
        Enrollment.objects.filter(customer_id__in=customers, status=Enrollment.Status.ACTIVE)
        .filter(journey_id__in={j.id for j in exit_journeys} | _waiting_journeys(names, customers))
        .select_for_update()
        .order_by("id")
    )
    by_customer: dict[int, list[Enrollment]] = defaultdict(list)
    for enrollment in active:
        by_customer[enrollment.customer_id].append(enrollment)
    exits = {j.id: j.exit_events for j in exit_journeys}
    exited: list[tuple[Enrollment, str]] = []
    resumed: list[Enrollment] = []
    for event in events:
        for enrollment in by_customer.get(event.customer_id, []):
            if enrollment.status != Enrollment.Status.ACTIVE:
                continue
            if event.occurred_at < enrollment.entered_at - dt.timedelta(seconds=1):
                continue  # an old event reported late does not act on a newer enrollment
            rule = next(
                (
                    x
                    for x in exits.get(enrollment.journey_id, [])
                    if x.get("event") == event.name and _same(x, enrollment, event)
                ),
                None,
            )
            if rule is not None:
                enrollment.status = Enrollment.Status.EXITED
                exited.append((enrollment, f"exit event {event.name}"))
                continue
            if enrollment.waiting and enrollment.waiting_for == event.name:
                wanted = enrollment.context.get("_wait_filter") or []
                if conditions.matches_properties(wanted, event.properties):
                    enrollment.context = {
                        **enrollment.context,
                        "_matched_event": {"name": event.name, "id": event.id},
                        "event": event.properties,
                    }
                    enrollment.due_at = now
                    enrollment.waiting_for = ""
                    resumed.append(enrollment)
    if resumed:
        Enrollment.objects.bulk_update(resumed, ["context", "due_at", "waiting_for"])
        stats.resumed = len(resumed)
        from journeys.engine import kick_engine

        kick_engine()
    if exited:
        from journeys.engine import enrollments_exit

        enrollments_exit(exited, now=now)
        stats.exited = len(exited)
    if goal_journeys:
        stats.converted = _convert(events, goal_journeys, now)


def _waiting_journeys(names: set[str], customers: set[int]) -> set[int]:
    return set(
        Enrollment.objects.filter(
            customer_id__in=customers,
            status=Enrollment.Status.ACTIVE,
            waiting=True,
            waiting_for__in=names,
        ).values_list("journey_id", flat=True)
    )


def _same(rule: dict[str, Any], enrollment: Enrollment, event: _Event) -> bool:
    key = rule.get("match")
    if not key:
        return True
    present, theirs = conditions.lookup(event.properties, key)
    ours_present, ours = conditions.lookup(enrollment.context, key)
    return present and ours_present and conditions.compare("eq", theirs, ours)


def _enroll_from_events(
    events: list[_Event], journeys: list[Journey], now: dt.datetime, stats: EventStats
) -> None:
    for journey in journeys:
        if journey.status != Journey.Status.ACTIVE:
            continue
        if journey.trigger_kind != event_trigger.KIND:
            continue
        wanted = journey.trigger.get("event")
        filters = journey.trigger.get("filter") or []
        candidates = [
            Candidate(
                customer_id=e.customer_id,
                occurrence=f"event:{e.id}",
                context={**e.properties, "_event": {"name": e.name, "id": e.id}},
            )
            for e in events
            if e.name == wanted
            and e.occurred_at >= now - STALE_EVENT
            and conditions.matches_properties(filters, e.properties)
        ]
        if candidates:
            stats.enrolled += len(enroll(journey, candidates, now=now))


def _convert(events: list[_Event], journeys: list[Journey], now: dt.datetime) -> int:
    """Mark conversions: an enrollment converts on the first goal event after entry."""
    by_name = defaultdict(list)
    for journey in journeys:
        by_name[journey.goal_event].append(journey)
    converted = 0
    exiting: list[tuple[Enrollment, str]] = []
    for event in events:
        for journey in by_name.get(event.name, []):
            candidates = Enrollment.objects.select_for_update().filter(
                journey=journey,
                customer_id=event.customer_id,
                converted_at__isnull=True,
                entered_at__lte=event.occurred_at,
            )
            if journey.goal_within_hours:
                window = dt.timedelta(hours=journey.goal_within_hours)
                candidates = candidates.filter(entered_at__gte=event.occurred_at - window)
            # The trigger event itself does not convert the enrollment it started.
            candidates = candidates.exclude(occurrence=f"event:{event.id}")
            for enrollment in candidates:
                enrollment.converted_at = event.occurred_at
                enrollment.save(update_fields=["converted_at"])
                StepRun.objects.create(
                    enrollment=enrollment,
                    journey=journey,
                    step=enrollment.step,
                    kind="goal",
                    outcome="converted",
                    detail={"event": event.name, "event_id": event.id},
                    at=now,
                )
                converted += 1
                if journey.goal_exits and enrollment.status == Enrollment.Status.ACTIVE:
                    exiting.append((enrollment, f"goal {event.name}"))
    if exiting:
        from journeys.engine import enrollments_exit

        enrollments_exit(exiting, now=now)
    return converted
