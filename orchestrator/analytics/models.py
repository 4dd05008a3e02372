"""Daily rollups the analytics pages read instead of the message history and step log.

Both tables are kept by :mod:`orchestrator.analytics.rollups`, which folds new rows of
the append-only sources (``delivery_messageevent``, ``journeys_steprun``,
``journeys_enrollment``) in once each, so a page reads a few hundred rows per journey
and day range however large the history grows. Days are calendar days in
``ANALYTICS_TIME_ZONE``.
"""

from __future__ import annotations

from django.db import models

from orchestrator.broadcasts.models import Broadcast


class JourneyDay(models.Model):
    """How many times something happened in a journey, per day, step, reason and arm.

    ``metric`` is one of: ``enrolled`` (journey level, ``step`` empty), ``entered``
    (a step), ``exited`` (at a step, ``reason`` the exit's), ``converted`` (journey
    level, and once for each step the converting enrollment had passed), a message
    outcome (``sent``, ``delivered``, ``opened``, ``clicked``, ``bounced``, ``failed``,
    ``undelivered``, ``complained``, ``replied``, ``expired``, ``canceled``) counted
    once per message, or a hold (``deferred``, ``suppressed``) once per cause with that
    cause's code (a hold with two causes is two rows), and ``held`` once per held message.
    A/B arms: ``arm_entered``, ``arm_converted``, ``arm_sent`` and ``arm_clicked``
    carry the split step as ``step`` and the arm taken there as ``arm``.
    """

    journey = models.ForeignKey(
        "journeys.Journey", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    step = models.CharField(max_length=50, blank=True, default="")
    metric = models.CharField(max_length=32)
    reason = models.CharField(max_length=64, blank=True, default="")
    arm = models.CharField(max_length=50, blank=True, default="")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["journey", "day", "step", "metric", "reason", "arm"],
                name="journeyday_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id} {self.day} {self.step} {self.metric}: {self.count}"


class ChannelDay(models.Model):
    """Message outcomes per day, channel and provider, for channel health.

    ``metric`` is a message outcome counted once per message (``sent``, ``delivered``,
    ``bounced``, ``complained``, ...) with the provider's error ``code`` for failures
    and holds; ``latency`` rows count delivered messages by how long they took from
    release to delivery (``code`` is the bucket's upper bound in seconds, ``inf`` for
    the last), and ``latency_ms`` sums those durations in milliseconds.
    """

    day = models.DateField()
    channel = models.CharField(max_length=16)
    provider = models.CharField(max_length=64, blank=True, default="")
    metric = models.CharField(max_length=32)
    code = models.CharField(max_length=64, blank=True, default="")
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "channel", "provider", "metric", "code"],
                name="channelday_unique",
            ),
        ]
        # The admin shows this table as one report page, "Channel health".
        verbose_name = "channel health"
        verbose_name_plural = "channel health"

    def __str__(self) -> str:
        return f"{self.day} {self.channel}/{self.provider} {self.metric}: {self.count}"


class BroadcastResults(Broadcast):
    """The "Broadcast results" entry of the analytics admin: each broadcast's outcome,
    read from the broadcasts app's own selectors. A proxy: no table of its own."""

    class Meta:
        proxy = True
        verbose_name = "broadcast results"
        verbose_name_plural = "broadcast results"
