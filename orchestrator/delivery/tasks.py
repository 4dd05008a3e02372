"""Celery entry points of delivery: thin wrappers that call one dispatcher service each.

There is never one task per message: ``delivery.dispatch`` drains whatever is due
in batches, woken on commit by ``services.kick_dispatcher`` and every few seconds
by beat; ``delivery.dispatch_lane`` drains only the urgent share on a worker of its
own. All are safe to run concurrently and repeatedly - the claim uses ``FOR UPDATE
SKIP LOCKED`` and every write is guarded by the claim's attempt id.
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.conf import settings

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


@shared_task(name="delivery.dispatch_lane", ignore_result=True)
def dispatch_lane(time_budget_seconds: int = 20) -> dict[str, int]:
    """Send what is due of at least ``DISPATCH_LANE_PRIORITY``, and nothing else.

    Runs on its own queue ("lane") and worker, woken by ``services.kick_dispatcher``:
    while the dispatch workers are deep in a broadcast, a transactional or triggered
    send still goes out at once. The claim is the same one as ``delivery.dispatch``'s
    (``FOR UPDATE SKIP LOCKED``), so the two never take the same message.
    """
    stats, more = dispatcher.dispatch_due(
        time_budget=float(time_budget_seconds), above=settings.DISPATCH_LANE_PRIORITY - 1
    )
    if stats.claimed:
        logger.info("dispatch_lane: %s", stats.as_dict())
    if more:
        dispatch_lane.apply_async(retry=False, expires=30)
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
