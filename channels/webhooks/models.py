"""What providers tell us: status callbacks and inbound messages, kept raw, processed later.

A webhook request is verified, stored as ``WebhookEvent`` rows (one per provider
event, unique per provider: a retried or replayed delivery finds its row and adds
nothing) and answered at once; a worker processes the rows afterwards. What we made
of an inbound message is ``orchestrator.delivery.models.InboundMessage``.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


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
