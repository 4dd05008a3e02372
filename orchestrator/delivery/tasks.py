"""Celery entry points of delivery: thin wrappers that call one dispatcher service each.

There is never one task per message: ``delivery.dispatch`` drains whatever is due
in batches, woken on commit by ``services.kick_dispatcher`` and every few seconds
by beat. Both tasks are safe to run concurrently and repeatedly - the claim uses
``FOR UPDATE SKIP LOCKED`` and every write is guarded by the claim's attempt id.
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task

from orchestrator.delivery import digests, dispatcher

logger = logging.getLogger(__name__)


@shared_task(name="delivery.dispatch", ignore_result=True)
def dispatch(time_budget_seconds: int = 20) -> dict[str, int]:
    """Send everything due, in batches, for at most ``time_budget_seconds``."""
    stats, more = dispatcher.dispatch_due(time_budget=float(time_budget_seconds))
    if stats.claimed:
        logger.info("dispatch: %s", stats.as_dict())
    if more:
        # Out of time with work left: hand over to a fresh task rather than hold the
        # worker, so sweeps and other queues get a turn.
        dispatch.apply_async(retry=False, expires=30)
    return stats.as_dict()


@shared_task(name="sweeps.recover_stalled", ignore_result=True)
def recover_stalled(stalled_minutes: int = 5) -> dict[str, int]:
    """Requeue sends of dead workers that never reached a provider; reconcile the rest
    (a resend under the same retry key where the provider dedupes, else settled after
    ``DISPATCH_UNKNOWN_OUTCOME_WAIT_SECONDS`` without a provider report)."""
    stats = dispatcher.recover_stalled(stalled_after=dt.timedelta(minutes=stalled_minutes))
    if any(stats.as_dict().values()):
        logger.warning("recover_stalled: %s", stats.as_dict())
    return stats.as_dict()


@shared_task(name="sweeps.build_digests", ignore_result=True)
def build_digests(time_budget_seconds: int = 20) -> dict[str, int]:
    """Send every due digest as one message and fold what it held into it."""
    stats = digests.digests_build_due(time_budget=float(time_budget_seconds))
    if stats.digests or stats.empty:
        logger.info("digests: %s", stats.as_dict())
    return stats.as_dict()
