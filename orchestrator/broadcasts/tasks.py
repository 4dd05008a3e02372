"""Celery entry point of broadcasts: beat's sweep, also woken when one is scheduled now."""

from __future__ import annotations

import logging

from celery import shared_task

from orchestrator.broadcasts.services import broadcasts_sweep

logger = logging.getLogger(__name__)


@shared_task(name="sweeps.broadcasts", ignore_result=True)
def sweep() -> dict[str, int]:
    stats = broadcasts_sweep()
    if any(stats.values()):
        logger.info("broadcasts sweep: %s", stats)
    return stats
