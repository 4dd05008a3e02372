"""Celery entry points of the scheduled triggers: fetch by id, call one service.

- ``journeys.fire_recurring`` (journey id): beat's per-journey crontab (``schedules``).
- ``sweeps.journey_triggers``: every minute, the sweeps of every active journey whose
  kind names this task (date, segment entry; see ``registry``), and the reconciliation
  of recurring schedules. With no such journey it costs two small queries.
- ``sweeps.replenishment``: refresh and sweep every active replenishment journey.

All of them are idempotent (occurrences are unique per journey and customer), so a
retried or doubled beat enrolls nobody twice. One journey's failure is logged and does
not stop the others.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from journeys.models import Journey
from journeys.triggers import recurring, registry, schedules

logger = logging.getLogger(__name__)

TRIGGERS_TASK = "sweeps.journey_triggers"
REPLENISHMENT_TASK = "sweeps.replenishment"


def _sweep(task: str) -> dict[str, int]:
    """Run the sweep of every active journey whose kind ``task`` sweeps."""
    now = timezone.now()
    enrolled: dict[str, int] = {}
    journeys = Journey.objects.filter(
        status=Journey.Status.ACTIVE,
        trigger_kind__in=registry.swept_by(task),
        current_version__isnull=False,
    ).order_by("id")
    for journey in journeys:
        try:
            enrolled[journey.key] = registry.KINDS[journey.trigger_kind].sweep(journey, now=now)
        except Exception:  # one journey's bad config must not hold up the others
            logger.exception("%s: sweep of journey %s failed", task, journey.key)
    return enrolled


@shared_task(name="journeys.fire_recurring", ignore_result=True)
def fire_recurring(journey_id: int) -> int:
    journey = Journey.objects.filter(pk=journey_id).first()
    if journey is None or journey.trigger_kind != recurring.KIND:
        return 0
    if journey.status != Journey.Status.ACTIVE or journey.current_version_id is None:
        return 0  # paused since beat read its schedule
    enrolled = recurring.fire(journey)
    if enrolled:
        logger.info("recurring journey %s enrolled %d", journey.key, enrolled)
    return enrolled


@shared_task(name=TRIGGERS_TASK, ignore_result=True)
def journey_triggers() -> dict[str, int]:
    enrolled = _sweep(TRIGGERS_TASK)
    schedules.sync_all()
    if any(enrolled.values()):
        logger.info("journey triggers enrolled: %s", {k: v for k, v in enrolled.items() if v})
    return enrolled


@shared_task(name=REPLENISHMENT_TASK, ignore_result=True)
def replenishment_sweep() -> dict[str, int]:
    enrolled = _sweep(REPLENISHMENT_TASK)
    if any(enrolled.values()):
        logger.info("replenishment enrolled: %s", {k: v for k, v in enrolled.items() if v})
    return enrolled
