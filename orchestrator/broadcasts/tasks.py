"""Celery entry points of broadcasts: beat's sweep (also woken when one is scheduled
now) and the expansion of frozen recipients into the outbox (beat's, and re-kicked by
itself while due recipients remain)."""

from __future__ import annotations

import logging

from celery import shared_task

from orchestrator.broadcasts.services import broadcasts_expand, broadcasts_sweep

logger = logging.getLogger(__name__)


@shared_task(name="sweeps.broadcasts", ignore_result=True)
def sweep() -> dict[str, int]:
    stats = broadcasts_sweep()
    if any(stats.values()):
        logger.info("broadcasts sweep: %s", stats)
    return stats


@shared_task(name="sweeps.broadcasts_expand", ignore_result=True)
def expand() -> dict[str, int]:
    stats = broadcasts_expand()
    if stats["messages"]:
        logger.info("broadcasts expansion: %s", stats)
    return stats
