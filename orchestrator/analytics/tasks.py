"""Beat keeps the analytics rollups a minute or less behind the message history."""

from __future__ import annotations

from celery import shared_task

from orchestrator.analytics.rollups import analytics_rollup


@shared_task(name="sweeps.analytics_rollup", ignore_result=True)
def rollup(budget_seconds: int = 20) -> dict[str, int]:
    return analytics_rollup(budget_seconds=float(budget_seconds))
