"""Periodic API housekeeping, run by beat (schedule in settings.CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

import logging

from celery import shared_task

from orchestrator.api.idempotency import idempotency_records_purge

logger = logging.getLogger(__name__)


@shared_task(name="sweeps.purge_idempotency_records")
def purge_idempotency_records() -> int:
    """Delete idempotency records past IDEMPOTENCY_KEY_TTL_HOURS. One DELETE: safe to rerun."""
    deleted = idempotency_records_purge()
    if deleted:
        logger.info("purged %d idempotency records", deleted)
    return deleted
