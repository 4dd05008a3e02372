"""Celery entry points of the scheduled triggers: fetch by id, call one service.

- ``journeys.fire_recurring`` (journey id): beat's per-journey crontab (``schedules``).
- ``sweeps.journey_triggers``: every minute, date and segment-entry sweeps of every
  active journey of those kinds, and the reconciliation of recurring schedules. With no
  such journey it costs two small queries.
- ``sweeps.replenishment``: refresh and sweep every active replenishment journey.

All of them are idempotent (occurrences are unique per journey and customer), so a
retried or doubled beat enrolls nobody twice. One journey's failure is logged and does
not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import shared_task
from django.utils import timezone

from journeys.models import Journey
from journeys.triggers import date, recurring, replenishment, schedules, segment_entry

logger = logging.getLogger(__name__)

SWEEPS: dict[str, Callable[..., int]] = {
    Journey.TriggerKind.DATE: date.sweep,
    Journey.TriggerKind.SEGMENT: segment_entry.sweep,
}


def _active(*kinds: str) -> list[Journey]:
    return list(
        Journey.objects.filter(
            status=Journey.Status.ACTIVE, trigger_kind__in=kinds, current_version__isnull=False
        ).order_by("id")
    )


@shared_task(name="journeys.fire_recurring", ignore_result=True)
def fire_recurring(journey_id: int) -> int:
    journey = Journey.objects.filter(pk=journey_id).first()
    if journey is None or journey.trigger_kind != Journey.TriggerKind.RECURRING:
        return 0
    if journey.status != Journey.Status.ACTIVE or journey.current_version_id is None:
        return 0  # paused since beat read its schedule
    enrolled = recurring.fire(journey)
    if enrolled:
        logger.info("recurring journey %s enrolled %d", journey.key, enrolled)
    return enrolled


@shared_task(name="sweeps.journey_triggers", ignore_result=True)
def journey_triggers() -> dict[str, int]:
    now = timezone.now()
    enrolled: dict[str, int] = {}
    for journey in _active(*SWEEPS):
        try:
            enrolled[journey.key] = SWEEPS[journey.trigger_kind](journey, now=now)
        except Exception:  # one journey's bad config must not hold up the others
            logger.exception("trigger sweep of journey %s failed", journey.key)
    schedules.sync_all()
    if any(enrolled.values()):
        logger.info("journey triggers enrolled: %s", {k: v for k, v in enrolled.items() if v})
    return enrolled


@shared_task(name="sweeps.replenishment", ignore_result=True)
def replenishment_sweep() -> dict[str, int]:
    now = timezone.now()
    enrolled: dict[str, int] = {}
    for journey in _active(Journey.TriggerKind.REPLENISHMENT):
        try:
            enrolled[journey.key] = replenishment.sweep(journey, now=now)
        except Exception:  # one journey's bad config must not hold up the others
            logger.exception("replenishment sweep of journey %s failed", journey.key)
    if any(enrolled.values()):
        logger.info("replenishment enrolled: %s", {k: v for k, v in enrolled.items() if v})
    return enrolled
