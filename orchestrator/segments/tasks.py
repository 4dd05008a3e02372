"""Celery entry point: ``sweeps.segment_sizes`` (daily, beat) records every segment's size."""

from __future__ import annotations

from celery import shared_task

from orchestrator.segments.services import segment_sizes_record

SIZES_TASK = "sweeps.segment_sizes"


@shared_task(name=SIZES_TASK, ignore_result=True)
def record_sizes() -> int:
    return segment_sizes_record()
