"""What providers tell us: status callbacks and inbound messages, kept raw, processed later.

A webhook request is verified, stored as ``WebhookEvent`` rows (one per provider
event, unique per provider: a retried or replayed delivery finds its row and adds
nothing) and answered at once; a worker processes the rows afterwards.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from orchestrator.consent.models import Channel


class WebhookEvent(models.Model):
    class Kind(models.TextChoices):
        STATUS = "status", "Delivery status"
        INBOUND = "inbound", "Inbound message"
        CONTACT = "contact", "Follow / unfollow"

    provider = models.CharField(max_length=32)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    #: The provider's id for this event (Twilio: message sid and status; SendGrid:
    #: sg_event_id; LINE: webhookEventId).
    event_id = models.CharField(max_length=255)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_unique"),
        ]
        indexes = [
            models.Index(
                fields=["id"], name="webhook_event_pending_idx", condition=Q(processed_at=None)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} {self.event_id}"


class InboundMessage(models.Model):
    """A message a person sent us, and what we made of it."""

    class Outcome(models.TextChoices):
        OPTED_OUT = "opted_out", "STOP: opted out"
        OPTED_IN = "opted_in", "START: opted back in"
        HELP = "help", "HELP: help text sent"
        REPLY = "reply", "Reply: recorded as an event"
        UNKNOWN_SENDER = "unknown_sender", "From nobody we know"

    provider = models.CharField(max_length=32)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    provider_message_id = models.CharField(max_length=255)
    customer = models.ForeignKey(
        "audience.Customer",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="inbound_messages",
    )
    from_address = models.CharField(max_length=320)
    to_address = models.CharField(max_length=320, blank=True, default="")
    body = models.TextField(blank=True, default="")
    keyword = models.CharField(max_length=16, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    in_reply_to = models.ForeignKey(
        "delivery.Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replies",
    )
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_message_id"], name="inbound_message_unique"
            ),
        ]
        indexes = [
            models.Index(
                fields=["customer", "channel", "-received_at"], name="inbound_customer_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} from {self.customer_id or '?'}: {self.outcome}"
