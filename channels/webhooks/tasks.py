"""Celery entry points for webhook processing: woken on commit, and swept by beat."""

from __future__ import annotations

import logging

from celery import shared_task

from orchestrator.core.tasking import publish_on_commit

logger = logging.getLogger(__name__)


@shared_task(name="webhooks.process", ignore_result=True)
def process(batches: int = 20) -> dict[str, int]:
    """Process stored webhook events, up to ``batches`` batches per run."""
    from channels.webhooks.processing import process_pending

    total: dict[str, int] = {}
    for _ in range(batches):
        stats = process_pending()
        for key, value in stats.as_dict().items():
            total[key] = total.get(key, 0) + value
        if not (stats.statuses or stats.inbound or stats.errors):
            break
    if total.get("statuses") or total.get("inbound") or total.get("errors"):
        logger.info("webhooks: %s", total)
    return total


def kick_processing() -> None:
    """Ask a worker to process stored events once the current transaction commits."""
    publish_on_commit("webhooks.process", expires=60)
