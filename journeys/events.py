"""What events do to journeys: enroll (event triggers), resume wait-for-event steps,
take customers out (exit events) and record conversions (goals).

Recording an event also writes a PendingEvent row in the same transaction; the
``journeys.events`` task, woken on commit, takes pending rows with SKIP LOCKED,
handles them set by set and deletes them in one transaction. An event is therefore
seen exactly once, even when the broker is down (beat sweeps the queue too) or two
workers run at once.

Exit events and goals are read from the version each enrollment runs on, like its steps:
editing them on a live journey changes them for new entries only. One query per batch
finds every enrollment the batch's events may act on, whatever its version.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment, Journey, StepRun
from journeys.triggers import event as event_trigger
from orchestrator.core.tasking import publish_on_commit
from orchestrator.segments import conditions

logger = logging.getLogger(__name__)

#: Journeys whose exit events take customers out (an archived one keeps them as they are).
_RUNNING = (Journey.Status.ACTIVE, Journey.Status.PAUSED)
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
    _enroll_from_events(events, _active_journeys(), now, stats)
    by_customer: dict[int, list[Enrollment]] = defaultdict(list)
    for enrollment in _listening(events):
        by_customer[enrollment.customer_id].append(enrollment)
    exited: list[tuple[Enrollment, str]] = []
    exit_events = 0
    resumed: list[Enrollment] = []
    converted: list[Enrollment] = []
    runs: list[StepRun] = []
    for event in events:
        for enrollment in by_customer.get(event.customer_id, []):
            if enrollment.status == Enrollment.Status.ACTIVE and not (
                # An old event reported late does not act on a newer enrollment.
                event.occurred_at < enrollment.entered_at - dt.timedelta(seconds=1)
            ):
                if _exits_on(enrollment, event):
                    enrollment.status = Enrollment.Status.EXITED
                    exited.append((enrollment, f"exit event {event.name}"))
                    exit_events += 1
                elif _resumes_on(enrollment, event):
                    enrollment.context = {
                        **enrollment.context,
                        "_matched_event": {"name": event.name, "id": event.id},
                        "event": event.properties,
                    }
                    enrollment.due_at = now
                    enrollment.waiting_for = ""
                    resumed.append(enrollment)
            if _converts_on(enrollment, event):
                enrollment.converted_at = event.occurred_at
                converted.append(enrollment)
                runs.append(
                    StepRun(
                        enrollment=enrollment,
                        journey_id=enrollment.journey_id,
                        step=enrollment.step,
                        kind="goal",
                        outcome="converted",
                        detail={"event": event.name, "event_id": event.id},
                        at=now,
                    )
                )
                if (enrollment.goal_rule or {}).get("exits", True) and (
                    enrollment.status == Enrollment.Status.ACTIVE
                ):
                    enrollment.status = Enrollment.Status.EXITED
                    exited.append((enrollment, f"goal {event.name}"))
    if resumed:
        Enrollment.objects.bulk_update(resumed, ["context", "due_at", "waiting_for"])
        stats.resumed = len(resumed)
        from journeys.engine import kick_engine

        kick_engine()
    if converted:
        Enrollment.objects.bulk_update(converted, ["converted_at"])
        StepRun.objects.bulk_create(runs)
        stats.converted = len(converted)
    if exited:
        from journeys.engine import enrollments_exit

        enrollments_exit(exited, now=now)
        stats.exited = exit_events


def _listening(events: list[_Event]) -> list[Enrollment]:
    """The enrollments of the batch's customers that one of its events may act on, locked,
    with the exit events and goal of the version each one runs on: one query.

    Exit events and the goal are part of the published definition, like the steps: a
    customer keeps those of the version they entered on, whatever was published since.
    """
    names = sorted({e.name for e in events})
    customers = {e.customer_id for e in events}
    on_exit = Q()
    for name in names:
        on_exit |= Q(version__definition__exit_events__contains=[{"event": name}])
    goal = Q(version__definition__goal__event__in=names)
    listening = (
        Q(status=Enrollment.Status.ACTIVE, waiting=True, waiting_for__in=names)
        | Q(on_exit, status=Enrollment.Status.ACTIVE, journey__status__in=_RUNNING)
        # A conversion counts after the journey ended too, within the goal's window.
        | Q(goal, converted_at__isnull=True)
    )
    rows = (
        Enrollment.objects.filter(listening, customer_id__in=customers)
        .annotate(
            exit_rules=KeyTransform("exit_events", "version__definition"),
            goal_rule=KeyTransform("goal", "version__definition"),
            journey_status=F("journey__status"),
        )
        .select_for_update(of=("self",))
        .order_by("id")
    )
    return list(rows)


def _exits_on(enrollment: Enrollment, event: _Event) -> bool:
    """Whether one of the enrollment's version's exit events is this event (with the same
    value under the rule's ``match`` key in the event and the enrollment's context)."""
    if enrollment.journey_status not in _RUNNING:
        return False
    return any(
        rule.get("event") == event.name and _same(rule, enrollment, event)
        for rule in enrollment.exit_rules or []
    )


def _resumes_on(enrollment: Enrollment, event: _Event) -> bool:
    if not (enrollment.waiting and enrollment.waiting_for == event.name):
        return False
    wanted = enrollment.context.get("_wait_filter") or []
    return conditions.matches_properties(wanted, event.properties)


def _converts_on(enrollment: Enrollment, event: _Event) -> bool:
    """An enrollment converts on the first event of its version's goal after entry, within
    the goal's window; the trigger event itself does not convert the enrollment it started."""
    goal = enrollment.goal_rule or {}
    if enrollment.converted_at is not None or goal.get("event") != event.name:
        return False
    if enrollment.occurrence == f"event:{event.id}":
        return False
    if event.occurred_at < enrollment.entered_at:
        return False
    window = goal.get("within_hours")
    return not window or event.occurred_at <= enrollment.entered_at + dt.timedelta(hours=window)


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
