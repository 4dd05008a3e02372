"""Templates, and the Message table: the outbox and the ledger of every send."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

from orchestrator.consent.models import Channel


class MessageTemplate(models.Model):
    """A named message with one variant per channel and locale, written in Liquid."""

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    topic = models.ForeignKey(
        "consent.Topic",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="templates",
        help_text="Default topic for sends of this template.",
    )
    description = models.TextField(blank=True, default="")
    track_clicks = models.BooleanField(
        default=True,
        help_text="Send links through /r/ to record clicks. Off: links go out as written.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name


class TemplateVariant(models.Model):
    template = models.ForeignKey(MessageTemplate, on_delete=models.CASCADE, related_name="variants")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    locale = models.CharField(max_length=16, default="en")
    subject = models.CharField(
        max_length=500, blank=True, default="", help_text="Email only. Liquid."
    )
    body = models.TextField(help_text="Plain text (SMS, chat, email text part). Liquid.")
    html = models.TextField(blank=True, default="", help_text="Email only, optional. Liquid.")
    provider_options = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "Channel extras; string values are Liquid. WhatsApp: the approved template sent "
            'outside the 24-hour window, {"content_sid": "HX...", "content_variables": '
            '{"1": "{{ customer.first_name }}"}}. LINE: a buttons template or a flex '
            'message, {"kind": "template", "alt_text": ..., "title": ..., "text": ..., '
            '"actions": [{"label": ..., "uri": ...}]} or {"kind": "flex", "alt_text": ..., '
            '"contents": {...}}.'
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["template", "channel", "locale"], name="template_variant_unique"
            ),
        ]
        ordering = ["template_id", "channel", "locale"]

    def __str__(self) -> str:
        return f"{self.template_id}:{self.channel}:{self.locale}"


class MessageStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SCHEDULED = "scheduled", "Scheduled"
    DEFERRED = "deferred", "Deferred"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    UNDELIVERED = "undelivered", "Undelivered"
    BOUNCED = "bounced", "Bounced"
    FAILED = "failed", "Failed"
    OPENED = "opened", "Opened"
    CLICKED = "clicked", "Clicked"
    REPLIED = "replied", "Replied"
    SUPPRESSED = "suppressed", "Suppressed"
    EXPIRED = "expired", "Expired"
    CANCELED = "canceled", "Canceled"
    #: Waiting for the customer's digest (or a journey's digest step): never claimed by
    #: the dispatcher; the digest build folds it into one message (canceled, "digested").
    HELD = "held", "Held for a digest"


#: Statuses a dispatcher may claim once ``send_after`` has passed.
WAITING_STATUSES = (MessageStatus.QUEUED, MessageStatus.SCHEDULED, MessageStatus.DEFERRED)


class Message(models.Model):
    class Source(models.TextChoices):
        API = "api", "API"
        JOURNEY = "journey", "Journey"
        BROADCAST = "broadcast", "Broadcast"
        ADMIN = "admin", "Admin"
        DEMO = "demo", "Demo"
        SYSTEM = "system", "System"

    # Indexed by message_customer_idx and message_decided_idx, which lead with it.
    customer = models.ForeignKey(
        "audience.Customer", on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    topic = models.ForeignKey("consent.Topic", on_delete=models.PROTECT, related_name="messages")
    template = models.ForeignKey(MessageTemplate, on_delete=models.PROTECT, related_name="messages")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    requested_channel = models.CharField(
        max_length=16, blank=True, default="", help_text="As asked, e.g. 'preferred'."
    )
    to_address = models.CharField(max_length=320, blank=True, default="")
    locale = models.CharField(max_length=16, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=MessageStatus.choices, default=MessageStatus.QUEUED
    )
    priority = models.PositiveSmallIntegerField(default=5, help_text="0 (lowest) to 9 (highest).")
    send_after = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="Request data for the template.")
    #: Unique where set (message_idempotency_key_uniq).
    idempotency_key = models.CharField(max_length=300, null=True, blank=True)
    journey = models.CharField(
        max_length=100, blank=True, default="", help_text="Key of the journey that sent it."
    )
    #: The journey enrollment that queued it (journeys.Enrollment id; no foreign key, so
    #: delivery does not depend on journeys). An exit cancels what is still waiting.
    enrollment_id = models.BigIntegerField(null=True, blank=True)
    #: The key of the journey step that queued it: journey analytics count per step.
    journey_step = models.CharField(max_length=50, blank=True, default="")
    #: The broadcast that queued it (broadcasts.Broadcast id; no foreign key, so delivery
    #: does not depend on broadcasts) and its A/B variant ("a", "b"; "" without a test).
    broadcast_id = models.BigIntegerField(null=True, blank=True)
    broadcast_variant = models.CharField(max_length=1, blank=True, default="", db_default="")
    fallback_channel = models.CharField(
        max_length=16,
        choices=Channel.choices,
        blank=True,
        default="",
        help_text="Tried once if the first channel fails permanently.",
    )
    decided_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the fatigue policy let it through; what frequency caps count.",
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    rendered = models.JSONField(
        null=True, blank=True, help_text="What was handed to the provider, as rendered."
    )
    provider = models.CharField(max_length=64, blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_id = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    handed_off_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set just before the provider call: a stalled send with this set may have "
        "gone out and is reconciled, never blindly resent.",
    )
    #: LINE's ``X-Line-Retry-Key`` of the current attempt: random, set when the attempt is
    #: handed off, reused only to reconcile that same attempt (LINE runs a key once).
    retry_key = models.UUIDField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    explanation = models.JSONField(
        default=list, blank=True, help_text="The decision trail: why sent, deferred or suppressed."
    )
    #: The digest a held message waits in (and, once folded, went out in).
    digest = models.ForeignKey(
        "Digest", on_delete=models.SET_NULL, null=True, blank=True, related_name="held_messages"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=MessageStatus.values), name="message_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(priority__gte=0, priority__lte=9), name="message_priority_range"
            ),
            # Partial: most messages have no key, and they need no index entry.
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="message_idempotency_key_uniq",
                condition=Q(idempotency_key__isnull=False),
            ),
            # A broadcast reaches a customer once, whichever variant: a re-run of its
            # materialisation inserts nothing twice (ON CONFLICT DO NOTHING).
            models.UniqueConstraint(
                fields=["broadcast_id", "customer"],
                name="message_broadcast_customer_uniq",
                condition=Q(broadcast_id__isnull=False),
            ),
        ]
        indexes = [
            # The dispatcher's claim walks waiting rows in claim order (highest priority,
            # then oldest) and stops after one batch, instead of sorting the whole backlog.
            models.Index(
                F("priority").desc(),
                "send_after",
                name="message_claim_idx",
                condition=Q(status__in=["queued", "scheduled", "deferred"]),
            ),
            models.Index(fields=["customer", "-created_at"], name="message_customer_idx"),
            # The policy's history: what counted against caps for a customer, recently.
            models.Index(
                fields=["customer", "decided_at"],
                name="message_decided_idx",
                condition=Q(decided_at__isnull=False),
            ),
            models.Index(
                fields=["provider", "provider_message_id"],
                name="message_provider_id_idx",
                condition=~Q(provider_message_id=""),
            ),
            models.Index(
                fields=["claimed_at"], name="message_sending_idx", condition=Q(status="sending")
            ),
            models.Index(
                fields=["enrollment_id"],
                name="message_enrollment_idx",
                condition=Q(enrollment_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.channel} to {self.customer_id} ({self.status})"


class Digest(models.Model):
    """Messages held for one customer and one key, sent as one message when it is due.

    A topic digest (the customer chose a daily or weekly digest of a topic) is due at
    their chosen local time; a journey digest (a digest step) after its window or once
    it holds its count. One open digest per customer and key (a partial unique
    constraint), so concurrent holds join the same one.
    """

    class Kind(models.TextChoices):
        TOPIC = "topic", "Topic digest"
        JOURNEY = "journey", "Journey digest step"

    class Status(models.TextChoices):
        OPEN = "open", "Collecting"
        SENT = "sent", "Sent as one message"
        EMPTY = "empty", "Closed with nothing to send"

    customer = models.ForeignKey(
        "audience.Customer", on_delete=models.CASCADE, related_name="digests"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    #: topic:<topic key> or journey:<journey key>:<step key>[:<value of the step's key>]
    key = models.CharField(max_length=300)
    topic = models.ForeignKey("consent.Topic", on_delete=models.PROTECT, related_name="+")
    #: The template of the digest message (a journey step's; empty for a topic: the
    #: topic's own "<topic>-digest" template, else the built-in layout).
    template_key = models.CharField(max_length=100, blank=True, default="")
    #: daily, weekly (topic) or window, count (journey step): for the trail and the page.
    cadence = models.CharField(max_length=16)
    #: A journey step's count: the digest is due as soon as it holds this many.
    max_items = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    due_at = models.DateTimeField()
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    built_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "key"],
                name="digest_one_open_per_key",
                condition=Q(status="open"),
            ),
        ]
        indexes = [
            models.Index(fields=["due_at"], name="digest_due_idx", condition=Q(status="open")),
        ]

    def __str__(self) -> str:
        return f"digest #{self.pk} {self.key} for {self.customer_id} ({self.status})"


class MessageEvent(models.Model):
    """One step in a message's status history, with the raw provider payload if any."""

    # Indexed by msgevent_message_idx, which leads with it.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="history", db_index=False
    )
    status = models.CharField(max_length=16, choices=MessageStatus.choices)
    occurred_at = models.DateTimeField()
    reason = models.TextField(blank=True, default="")
    code = models.CharField(
        max_length=120,
        blank=True,
        default="",
        help_text="What decided it, e.g. rule:<key>, quiet_hours, consent:unsubscribed.",
    )
    #: Unique where set (msgevent_provider_event_uniq): a provider's event recorded once.
    provider_event_id = models.CharField(max_length=255, null=True, blank=True)
    raw = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            # Partial: only provider webhooks carry an id; our own history rows need no entry.
            models.UniqueConstraint(
                fields=["provider_event_id"],
                name="msgevent_provider_event_uniq",
                condition=Q(provider_event_id__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["message", "occurred_at"], name="msgevent_message_idx"),
            # The fatigue overview reads holds by day: only rows with a code are indexed.
            models.Index(fields=["occurred_at"], name="msgevent_holds_idx", condition=~Q(code="")),
        ]
        ordering = ["occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.message_id} {self.status}"


class FrequencyRule(models.Model):
    """A fatigue rule: at most N messages per window, or a minimum gap between them."""

    class Kind(models.TextChoices):
        CAP = "cap", "At most N per window"
        GAP = "gap", "Minimum gap between messages"

    class Scope(models.TextChoices):
        GLOBAL = "global", "All messages"
        CHANNEL = "channel", "One channel"
        TOPIC = "topic", "One topic"
        JOURNEY = "journey", "One journey"

    class Calendar(models.TextChoices):
        DAY = "day", "Calendar day"
        WEEK = "week", "Calendar week (Monday to Sunday)"
        MONTH = "month", "Calendar month"

    class AppliesTo(models.TextChoices):
        MARKETING = "marketing", "Marketing only (transactional exempt)"
        ALL = "all", "All messages, transactional included"

    class Action(models.TextChoices):
        DEFER = "defer", "Defer to the earliest allowed time"
        DROP = "drop", "Drop (suppress)"

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    active = models.BooleanField(default=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.CAP)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.GLOBAL)
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True, default="")
    topic = models.ForeignKey(
        "consent.Topic",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="frequency_rules",
    )
    journey = models.CharField(max_length=100, blank=True, default="")
    limit = models.PositiveIntegerField(default=1, help_text="N: messages allowed per window.")
    window = models.DurationField(
        null=True,
        blank=True,
        help_text="Rolling window (e.g. 1 day, 7 days), or the minimum gap. "
        "Leave empty for a calendar window.",
    )
    calendar = models.CharField(
        max_length=8,
        choices=Calendar.choices,
        blank=True,
        default="",
        help_text="Calendar window in each customer's own time zone.",
    )
    applies_to = models.CharField(
        max_length=16, choices=AppliesTo.choices, default=AppliesTo.MARKETING
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.DEFER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                name="frequencyrule_scope_target",
                condition=(
                    Q(scope="global")
                    | (Q(scope="channel") & ~Q(channel=""))
                    | (Q(scope="topic") & Q(topic__isnull=False))
                    | (Q(scope="journey") & ~Q(journey=""))
                ),
            ),
            models.CheckConstraint(
                name="frequencyrule_window",
                condition=(
                    (Q(kind="gap") & Q(window__isnull=False))
                    | (
                        Q(kind="cap")
                        & (
                            (Q(window__isnull=False) & Q(calendar=""))
                            | (Q(window__isnull=True) & ~Q(calendar=""))
                        )
                    )
                ),
            ),
            models.CheckConstraint(name="frequencyrule_limit", condition=Q(limit__gte=1)),
        ]

    def __str__(self) -> str:
        return self.name


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
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replies",
    )
    received_at = models.DateTimeField()

    class Meta:
        # Created by the webhooks app, which kept it until replies moved down to delivery.
        db_table = "webhooks_inboundmessage"
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
