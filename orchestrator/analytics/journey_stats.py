"""Counts for a journey's diagram and admin page: per step and for the whole journey.

Counts are by step key, so a step keeps its history across versions as long as its
key stays the same. History comes from the analytics rollups (a few rows per step and
day, however large the message history and step log grow); who is where *now* comes
from partial indexes over active and failed enrollments.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Sum

from journeys.models import Enrollment, Journey, JourneyVersion
from orchestrator.analytics.models import JourneyDay
from orchestrator.analytics.rollups import analytics_catch_up
from orchestrator.analytics.selectors import waiting_by_step


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


def journey_counts(journey: Journey) -> tuple[dict[str, StepCounts], JourneyTotals]:
    """Per step key (entered, waiting there now, messages sent, converted after it) and
    the journey's totals: one catch-up, one read of the rollup, one count of who is where."""
    analytics_catch_up()
    rows = (
        JourneyDay.objects.filter(
            journey=journey, metric__in=("enrolled", "entered", "sent", "converted", "exited")
        )
        .values_list("step", "metric")
        .annotate(n=Sum("count"))
        .order_by()
    )
    history = {(step, metric): n for step, metric, n in rows}
    waiting = waiting_by_step(journey)
    keys = {step for step, _metric in history if step} | set(waiting)
    steps = {
        key: StepCounts(
            entered=history.get((key, "entered"), 0),
            waiting=waiting.get(key, 0),
            sent=history.get((key, "sent"), 0),
            converted=history.get((key, "converted"), 0),
        )
        for key in keys
    }
    active = sum(waiting.values())
    failed = Enrollment.objects.filter(journey=journey, status=Enrollment.Status.FAILED).count()
    entered = history.get(("", "enrolled"), 0)
    exited = sum(n for (step, metric), n in history.items() if step and metric == "exited")
    totals = JourneyTotals(
        entered=entered,
        active=active,
        # The rollup may be a sweep behind the live counts: never below zero.
        completed=max(entered - active - exited - failed, 0),
        exited=exited,
        failed=failed,
        converted=history.get(("", "converted"), 0),
        sent=sum(n for (step, metric), n in history.items() if step and metric == "sent"),
    )
    return steps, totals


def active_on_other_versions(journey: Journey, version: JourneyVersion) -> int:
    """Customers still travelling on a version other than ``version`` (they finish on it)."""
    return (
        Enrollment.objects.filter(journey=journey, status=Enrollment.Status.ACTIVE)
        .exclude(version=version)
        .count()
    )
