"""Saved segments: a named audience defined by a condition tree, and its size by day."""

from __future__ import annotations

from django.db import models


class Segment(models.Model):
    """An audience a marketer names once and uses in journeys and broadcasts.

    ``conditions`` is a tree (``orchestrator.segments.tree``); membership is never
    stored, it is computed in SQL when asked (``selectors.members_query``).
    """

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    conditions = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SegmentSize(models.Model):
    """How many customers a segment had on a day (the daily sweep writes one row)."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="sizes")
    day = models.DateField()
    size = models.PositiveIntegerField()
    #: Channel -> customers reachable on it that day (address, no suppression, no opt-out).
    reachable = models.JSONField(default=dict, blank=True)
    measured_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "day"], name="segmentsize_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.segment_id} on {self.day}: {self.size}"
