"""The journeys' part of a customer's timeline: entries, exits and conversions.

Read by ``orchestrator.analytics.timeline``.
"""

from __future__ import annotations

import datetime as dt

from django.db.models.functions import Greatest
from django.urls import reverse

from journeys.models import Enrollment
from orchestrator.audience.models import Customer
from orchestrator.core.timeline import Entry


def journeys_timeline(
    customer: Customer, limit: int, before: dt.datetime | None = None
) -> list[Entry]:
    """Up to ``limit`` enrollments, ordered by their latest moment (entry, exit or goal)."""
    enrollments = Enrollment.objects.filter(customer=customer)  # the customer FK's index
    if before is not None:
        # Nothing happens to an enrollment before it starts.
        enrollments = enrollments.filter(entered_at__lt=before)
    # GREATEST ignores NULLs on PostgreSQL: an unfinished trip sorts by its entry.
    enrollments = (
        enrollments.annotate(last_at=Greatest("entered_at", "finished_at", "converted_at"))
        .select_related("journey")
        .only(
            "id",
            "journey__key",
            "journey__name",
            "occurrence",
            "status",
            "entered_at",
            "finished_at",
            "exit_reason",
            "converted_at",
        )
        .order_by("-last_at", "-id")[:limit]
    )
    entries: list[Entry] = []
    for e in enrollments:
        url = reverse("admin:journeys_enrollment_change", args=[e.pk])
        name = e.journey.name or e.journey.key
        moments = [
            (e.entered_at, f"Entered journey {name}", f"occurrence {e.occurrence}"),
            (e.converted_at, f"Converted in journey {name}", ""),
        ]
        if e.finished_at is not None:
            verb = "Exited" if e.status == Enrollment.Status.EXITED else e.get_status_display()
            moments.append((e.finished_at, f"{verb} journey {name}", e.exit_reason))
        entries.extend(
            Entry(at=at, kind="journey", title=title, detail=detail, url=url)
            for at, title, detail in moments
            if at is not None and (before is None or at < before)
        )
    return entries
