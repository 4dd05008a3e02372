"""Writes of saved segments: save (create or replace), delete, and the daily sizes."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestrator.segments.models import Segment, SegmentSize
from orchestrator.segments.selectors import segment_count, segment_problems, segments_using
from orchestrator.segments.tree import Problem

logger = logging.getLogger(__name__)


class SegmentInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems

    def as_fields(self) -> dict[str, list[str]]:
        fields: dict[str, list[str]] = {}
        for p in self.problems:
            fields.setdefault(p.path, []).append(p.message)
        return fields


class SegmentExists(ValueError):
    pass


class SegmentInUse(ValueError):
    pass


def segment_save(
    *,
    key: str,
    name: str,
    conditions: Any,
    description: str = "",
    create_only: bool = False,
) -> tuple[Segment, bool]:
    """Create or replace the segment ``key``; returns it and whether it was created.

    Raises ``SegmentInvalid`` with every problem of the conditions (a reference to an
    unknown segment, a cycle through this one, an unknown topic...).
    """
    if isinstance(conditions, list):
        conditions = {"all": conditions}
    problems = segment_problems(conditions, key=key)
    if not isinstance(name, str) or not name.strip():
        problems.insert(0, Problem("name", "Give the segment a name."))
    if problems:
        raise SegmentInvalid(problems)
    with transaction.atomic():
        segment = Segment.objects.select_for_update().filter(key=key).first()
        if segment is not None and create_only:
            raise SegmentExists(
                f"A segment {key!r} exists; PUT /api/v1/segments/{key} replaces it."
            )
        created = segment is None
        segment = segment or Segment(key=key)
        segment.name = name.strip()
        segment.description = description or ""
        segment.conditions = conditions
        segment.save()
    return segment, created


def segment_delete(*, segment: Segment) -> None:
    """Delete a segment no other segment names (journeys and broadcasts name it by key
    and say so when it is gone)."""
    users = segments_using(segment.key)
    if users:
        raise SegmentInUse(
            f"Segment {segment.key!r} is part of {', '.join(users)}: change those first."
        )
    segment.delete()


def segment_sizes_record(*, now: dt.datetime | None = None) -> int:
    """Count every segment and store today's size (again, if run twice a day)."""
    now = now or timezone.now()
    day = now.date()
    recorded = 0
    for segment in Segment.objects.order_by("id"):
        try:
            count = segment_count(segment, now=now)
        except Exception:  # one broken segment (a deleted reference) must not stop the rest
            logger.exception("segment sizes: counting %s failed", segment.key)
            continue
        SegmentSize.objects.update_or_create(
            segment=segment,
            day=day,
            defaults={"size": count.size, "reachable": count.reachable, "measured_at": now},
        )
        recorded += 1
    return recorded
