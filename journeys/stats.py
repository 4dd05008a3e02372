"""Live counts for a journey's diagram and admin page: per step and for the whole journey.

Counts are by step key, so a step keeps its history across versions as long as its
key stays the same. Each figure is one grouped query; nothing loops over customers.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Q

from journeys.models import Enrollment, Journey, JourneyVersion, StepRun
from orchestrator.delivery.models import Message, MessageStatus

#: A message the provider accepted: later outcomes (delivered, bounced, opened...) are
#: still messages that went out, so they count as sent.
SENT_OR_BEYOND = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNDELIVERED,
    MessageStatus.BOUNCED,
    MessageStatus.OPENED,
    MessageStatus.CLICKED,
    MessageStatus.REPLIED,
)


@dataclass(frozen=True)
class StepCounts:
    entered: int = 0
    waiting: int = 0
    sent: int = 0
    converted: int = 0


@dataclass(frozen=True)
class JourneyTotals:
    entered: int = 0
    active: int = 0
    completed: int = 0
    exited: int = 0
    failed: int = 0
    converted: int = 0
    sent: int = 0

    @property
    def conversion_rate(self) -> float | None:
        return self.converted / self.entered if self.entered else None


def _by_step(rows) -> dict[str, int]:
    return {row["step"]: row["n"] for row in rows}


def step_counts(journey: Journey) -> dict[str, StepCounts]:
    """Per step key: entered, waiting there now, messages sent, and converted."""
    runs = StepRun.objects.filter(journey=journey)
    entered = _by_step(
        runs.values("step").annotate(n=Count("enrollment_id", distinct=True)).order_by()
    )
    waiting = _by_step(
        Enrollment.objects.filter(journey=journey, status=Enrollment.Status.ACTIVE)
        .values("step")
        .annotate(n=Count("id"))
        .order_by()
    )
    # StepRun.message_id is a plain id (the log outlives messages), hence Exists over a join.
    went_out = Message.objects.filter(pk=OuterRef("message_id"), status__in=SENT_OR_BEYOND)
    sent = _by_step(
        runs.filter(message_id__isnull=False)
        .filter(Exists(went_out))
        .values("step")
        .annotate(n=Count("id"))
        .order_by()
    )
    converted = _by_step(
        runs.filter(enrollment__converted_at__isnull=False)
        .values("step")
        .annotate(n=Count("enrollment_id", distinct=True))
        .order_by()
    )
    keys = set(entered) | set(waiting) | set(sent) | set(converted)
    return {
        key: StepCounts(
            entered=entered.get(key, 0),
            waiting=waiting.get(key, 0),
            sent=sent.get(key, 0),
            converted=converted.get(key, 0),
        )
        for key in keys
    }


def journey_totals(journey: Journey) -> JourneyTotals:
    status = Enrollment.Status
    figures = Enrollment.objects.filter(journey=journey).aggregate(
        entered=Count("id"),
        active=Count("id", filter=Q(status=status.ACTIVE)),
        completed=Count("id", filter=Q(status=status.COMPLETED)),
        exited=Count("id", filter=Q(status=status.EXITED)),
        failed=Count("id", filter=Q(status=status.FAILED)),
        converted=Count("id", filter=Q(converted_at__isnull=False)),
    )
    went_out = Message.objects.filter(pk=OuterRef("message_id"), status__in=SENT_OR_BEYOND)
    sent = (
        StepRun.objects.filter(journey=journey, message_id__isnull=False)
        .filter(Exists(went_out))
        .count()
    )
    return JourneyTotals(sent=sent, **figures)


def active_on_other_versions(journey: Journey, version: JourneyVersion) -> int:
    """Customers still travelling on a version other than ``version`` (they finish on it)."""
    return (
        Enrollment.objects.filter(journey=journey, status=Enrollment.Status.ACTIVE)
        .exclude(version=version)
        .count()
    )
