"""Rollups the ``/metrics`` endpoint reads instead of counting large tables on every scrape."""

from __future__ import annotations

from django.db import models


class StatusCount(models.Model):
    """How many message history rows (``MessageEvent``) there have been per channel and status.

    A Prometheus counter kept in the database: only ever incremented, by
    :func:`orchestrator.core.metrics.rollup_status_counts`.
    """

    channel = models.CharField(max_length=16)
    status = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["channel", "status"], name="statuscount_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.status}: {self.count}"


class RollupCursor(models.Model):
    """How far a rollup has read an append-only table, and the next id it may safely read to.

    ``horizon_id`` is the id sequence's value when ``horizon_at`` was taken: once no
    transaction that started before ``horizon_at`` is still open, every id up to it is
    either committed or never will be, so reading to it skips nothing.
    """

    name = models.CharField(max_length=64, primary_key=True)
    last_id = models.BigIntegerField(default=0)
    horizon_id = models.BigIntegerField(null=True, blank=True)
    horizon_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_id}"
