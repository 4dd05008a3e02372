"""Celery entry points of the journeys: thin wrappers calling one service each.

``journeys.tick`` is woken on commit whenever something becomes due now and by beat
every few seconds; ``journeys.events`` is woken when events are recorded and swept by
beat. Both are safe to run concurrently and repeatedly (SKIP LOCKED claims).
"""

from __future__ import annotations

import logging

from celery import shared_task

from journeys import engine, events

logger = logging.getLogger(__name__)


@shared_task(name="journeys.tick", ignore_result=True)
def tick(time_budget_seconds: int = 20) -> dict[str, int]:
    stats, more = engine.tick(time_budget=float(time_budget_seconds))
    if stats.claimed:
        logger.info("journeys tick: %s", stats.as_dict())
    if more:
        tick.apply_async(retry=False, expires=30)
    return stats.as_dict()


@shared_task(name="journeys.events", ignore_result=True)
def process_events(limit: int = 1000) -> dict[str, int]:
    """Handle pending events (enroll, resume, exit, convert), then advance who is due."""
    total = events.EventStats()
    for _ in range(20):
        stats = events.process_pending(limit=limit)
        total.events += stats.events
        total.enrolled += stats.enrolled
        total.resumed += stats.resumed
        total.exited += stats.exited
        total.converted += stats.converted
        if stats.events < limit:
            break
    else:
        process_events.apply_async(retry=False, expires=30)
    if total.events:
        logger.info("journeys events: %s", total.as_dict())
    if total.enrolled or total.resumed:
        # Advance right here: the real-time path skips a second hop through the broker.
        engine.tick(time_budget=5.0)
    return total.as_dict()


# The trigger sweeps' tasks live with the triggers; importing them here registers them
# with Celery's autodiscovery, which looks for ``<app>.tasks``.
from journeys.triggers import tasks as _trigger_tasks  # noqa: E402, F401
