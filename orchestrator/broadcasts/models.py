"""A broadcast: one message to an audience, when and how fast it goes, and its A/B test."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.db.models import Q

#: Low by default: the dispatcher claims the highest priority first, so a broadcast
#: backlog never delays a transactional (5 by default) or a triggered send.
DEFAULT_PRIORITY = 1


class Broadcast(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        CANCELED = "canceled", "Canceled"

    class Audience(models.TextChoices):
        SEGMENT = "segment", "A saved segment"
        TOPIC = "topic", "The topic's subscribers"

    class Schedule(models.TextChoices):
        NOW = "now", "As soon as it is scheduled"
        AT = "at", "At a set time"
        LOCAL_TIME = "local_time", "At a local time in each customer's own time zone"

    class AbKind(models.TextChoices):
        TEMPLATE = "template", "Two templates"
        SUBJECT = "subject", "Two subject lines"

    class AbMetric(models.TextChoices):
        CLICKS = "clicks", "Clicks"
        CONVERSIONS = "conversions", "Conversions"

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    template = models.ForeignKey(
        "delivery.MessageTemplate", on_delete=models.PROTECT, related_name="broadcasts"
    )
    topic = models.ForeignKey(
        "consent.Topic",
        on_delete=models.PROTECT,
        related_name="broadcasts",
        help_text="What customers consent to; also the audience when it is the topic's.",
    )
    audience = models.CharField(max_length=8, choices=Audience.choices, default=Audience.TOPIC)
    segment = models.CharField(
        max_length=100, blank=True, default="", help_text="The saved segment's key."
    )
    channel = models.CharField(
        max_length=16,
        default="preferred",
        help_text="'preferred' (each customer's channel order) or one channel.",
    )
    data = models.JSONField(default=dict, blank=True, help_text="Template data, as `data.*`.")
    schedule = models.CharField(max_length=12, choices=Schedule.choices, default=Schedule.NOW)
    send_at = models.DateTimeField(null=True, blank=True, help_text="For 'at a set time'.")
    local_date = models.DateField(null=True, blank=True, help_text="For 'local time'.")
    local_time = models.TimeField(null=True, blank=True, help_text="For 'local time', e.g. 09:00.")
    rate_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Spread the send-out: at most this many a minute."
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Deadline: copies not sent by then expire."
    )
    priority = models.PositiveSmallIntegerField(default=DEFAULT_PRIORITY)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)

    ab_share = models.PositiveSmallIntegerField(
        default=0,
        help_text="Percent of the audience in the A/B test (0: no test). The rest gets the winner.",
    )
    ab_kind = models.CharField(max_length=8, choices=AbKind.choices, default=AbKind.TEMPLATE)
    ab_template = models.ForeignKey(
        "delivery.MessageTemplate",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Variant B's template (two templates).",
    )
    ab_subject = models.CharField(
        max_length=500, blank=True, default="", help_text="Variant B's subject line. Liquid."
    )
    ab_wait = models.DurationField(
        default=dt.timedelta(hours=4), help_text="How long the test runs before a winner."
    )
    ab_metric = models.CharField(max_length=12, choices=AbMetric.choices, default=AbMetric.CLICKS)
    ab_conversion_event = models.CharField(
        max_length=200, blank=True, default="order.completed", help_text="For conversions."
    )
    ab_winner = models.CharField(max_length=1, blank=True, default="")

    #: When the beat sweep materialises it (set by scheduling).
    due_at = models.DateTimeField(null=True, blank=True)
    #: When the test group was materialised; the winner is picked ``ab_wait`` after.
    materialised_at = models.DateTimeField(null=True, blank=True)
    ab_decided_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    #: Recipients whose copy had not reached the outbox when the broadcast was canceled.
    canceled_pending = models.PositiveIntegerField(default=0)
    canceled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                name="broadcast_audience_target",
                condition=Q(audience="topic") | (Q(audience="segment") & ~Q(segment="")),
            ),
            models.CheckConstraint(
                name="broadcast_schedule_fields",
                condition=Q(schedule="now")
                | (Q(schedule="at") & Q(send_at__isnull=False))
                | (
                    Q(schedule="local_time")
                    & Q(local_date__isnull=False)
                    & Q(local_time__isnull=False)
                ),
            ),
            models.CheckConstraint(
                name="broadcast_priority_range", condition=Q(priority__gte=0, priority__lte=9)
            ),
            models.CheckConstraint(
                name="broadcast_ab_share_range", condition=Q(ab_share__gte=0, ab_share__lte=100)
            ),
            models.CheckConstraint(
                name="broadcast_rate_positive",
                condition=Q(rate_per_minute__isnull=True) | Q(rate_per_minute__gte=1),
            ),
        ]
        indexes = [
            models.Index(
                fields=["due_at"],
                name="broadcast_due_idx",
                condition=Q(status__in=["scheduled", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_test(self) -> bool:
        return self.ab_share > 0

    @property
    def ab_decide_at(self) -> dt.datetime | None:
        if not self.has_test or self.materialised_at is None:
            return None
        return self.materialised_at + self.ab_wait


class Recipient(models.Model):
    """A customer of a broadcast's frozen audience whose copy is not in the outbox yet.

    Scheduling freezes the audience here in one narrow write (who, when, which
    template and A/B variant); the expansion moves the due ones into the outbox a slice
    at a time and deletes their rows, so a row exists only while its copy is pending.
    No foreign keys: an erased customer's rows are deleted by the erasure, and the
    expansion joins the live customers, so a deleted customer is never expanded.
    """

    pk = models.CompositePrimaryKey("broadcast_id", "customer_id")
    broadcast_id = models.BigIntegerField()
    customer_id = models.BigIntegerField()
    #: When the copy is due (local time and rate limit applied).
    send_at = models.DateTimeField()
    template_id = models.BigIntegerField()
    variant = models.CharField(max_length=1, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["broadcast_id", "send_at"], name="broadcast_recipient_due_idx")
        ]

    def __str__(self) -> str:
        return f"broadcast {self.broadcast_id} customer {self.customer_id}"
