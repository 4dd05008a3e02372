"""Counts for a journey's admin page: who is still travelling on an older version.

(The per-step counts of a journey's graph are the canvas's, ``journeys.canvas.counts``.)
"""

from __future__ import annotations

from journeys.models import Enrollment, Journey, JourneyVersion


def active_on_other_versions(journey: Journey, version: JourneyVersion) -> int:
    """Customers still travelling on a version other than ``version`` (they finish on it)."""
    return (
        Enrollment.objects.filter(journey=journey, status=Enrollment.Status.ACTIVE)
        .exclude(version=version)
        .count()
    )
