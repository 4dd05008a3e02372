"""Celery entry points for webhook processing: woken on commit, and swept by beat."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction

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


def _publish() -> None:
    try:
        process.apply_async(retry=False, expires=60)
    except Exception:  # the broker is down: beat's sweep finds the events later
        logger.warning("could not queue webhook processing; the periodic sweep will", exc_info=True)


def kick_processing() -> None:
    """Ask a worker to process stored events once the current transaction commits."""
    transaction.on_commit(_publish)
