"""Topics, per-channel subscriptions, the append-only consent ledger, preferences, suppressions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import get_language

CHANNELS = ("email", "sms", "whatsapp", "line")


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    WHATSAPP = "whatsapp", "WhatsApp"
    LINE = "line", "LINE"


def default_channels() -> list[str]:
    return list(CHANNELS)


def validate_names(value: object) -> None:
    """A names object: language code -> a non-blank name, e.g. {"ja": "セール情報"}."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip()
        for k, v in value.items()
    ):
        raise ValidationError(
            'Must be an object of language code to name, e.g. {"ja": "セール情報"}.'
        )


def localized_name(names: object, default: str, language: str | None = None) -> str:
    """``names[language]``, else the name of its base language ("ja" for "ja-jp"), else
    ``default``: names written for customers, per language, in a JSON object."""
    language = (language or get_language() or "").lower()
    if isinstance(names, dict) and language:
        for candidate in (language, language.split("-")[0]):
            value = names.get(candidate)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return default


#: Checks a topic's digest template (key, the topic's channels) and returns what is
#: wrong, or None. Templates live in delivery, above consent: it registers the check
#: when the apps load, and every door that saves a topic (services, admin) asks here.
_digest_template_checks: list[Callable[[str, Sequence[str]], str | None]] = []


def digest_template_check_register(check: Callable[[str, Sequence[str]], str | None]) -> None:
    if check not in _digest_template_checks:
        _digest_template_checks.append(check)


def digest_template_problem(key: str, channels: Sequence[str]) -> str | None:
    """What is wrong with ``key`` as the digest template of a topic on ``channels``."""
    if not key:
        return None
    for check in _digest_template_checks:
        problem = check(key, channels)
        if problem:
            return problem
    return None


class Topic(models.Model):
    class Kind(models.TextChoices):
        MARKETING = "marketing", "Marketing"
        TRANSACTIONAL = "transactional", "Transactional"

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(
        max_length=200, help_text="What customers read where their language has no name below."
    )
    names = models.JSONField(
        default=dict,
        blank=True,
        help_text='The name customers read, per language: {"ja": "シューズの買い替え"}.',
        validators=[validate_names],
    )
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MARKETING)
    default_opt_in = models.BooleanField(
        default=False,
        help_text="Subscribed unless the customer opts out. Leave off where the law asks for "
        "explicit opt-in (e.g. marketing email in Japan and the EU).",
    )
    channels = ArrayField(
        models.CharField(max_length=16, choices=Channel.choices),
        default=default_channels,
        help_text="Channels this topic may use.",
    )

    class QuietHours(models.TextChoices):
        DEFAULT = "default", "Default (marketing waits, transactional goes through)"
        RESPECT = "respect", "Always wait for the end of quiet hours"
        IGNORE = "ignore", "Never wait (urgent)"

    quiet_hours = models.CharField(
        max_length=8, choices=QuietHours.choices, default=QuietHours.DEFAULT
    )
    digestible = models.BooleanField(
        default=False,
        help_text="Customers may choose a daily or weekly digest of this topic's messages "
        "instead of each one as it happens.",
    )
    digest_template = models.SlugField(
        max_length=100,
        blank=True,
        default="",
        help_text="Key of the template a digest of this topic is written with; it needs a "
        "variant on each of the topic's channels. Empty: the template '<topic key>-digest' "
        "if there is one, else the built-in layout.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        problem = digest_template_problem(self.digest_template, self.channels or ())
        if problem:
            raise ValidationError({"digest_template": problem})

    @property
    def is_transactional(self) -> bool:
        return self.kind == self.Kind.TRANSACTIONAL

    def name_in(self, language: str | None = None) -> str:
        """The name customers read in ``language`` (default: the active one)."""
        return localized_name(self.names, self.name, language)

    @property
    def customer_name(self) -> str:
        """The name in the active language, for templates."""
        return self.name_in()


class Subscription(models.Model):
    """The current consent of one customer for one topic on one channel."""

    class Status(models.TextChoices):
        SUBSCRIBED = "subscribed", "Subscribed"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"

    customer = models.ForeignKey(
        "audience.Customer", on_delete=models.CASCADE, related_name="subscriptions"
    )
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="subscriptions")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "topic", "channel"], name="subscription_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.topic_id}/{self.channel}: {self.status}"


class ConsentRecord(models.Model):
    """Append-only ledger: every consent change, with where it came from and its evidence.

    Rows are never updated (a database trigger refuses UPDATE); they go only with
    the customer they belong to.
    """

    class Action(models.TextChoices):
        OPT_IN = "opt_in", "Opted in"
        OPT_OUT = "opt_out", "Opted out"
        #: Quiet hours, a personal cap, a pause or the channel order changed: how, not
        #: whether, the customer hears from us (the evidence holds before and after).
        PREFERENCES = "preferences", "Changed delivery preferences"

    class Source(models.TextChoices):
        API = "api", "API"
        ADMIN = "admin", "Admin"
        PREFERENCE_CENTER = "preference_center", "Preference center"
        ONE_CLICK = "one_click", "One-click unsubscribe"
        INBOUND_KEYWORD = "inbound_keyword", "Inbound keyword (STOP/START)"
        PROVIDER = "provider", "Provider report (bounce, complaint)"
        IMPORT = "import", "Import"

    customer = models.ForeignKey(
        "audience.Customer", on_delete=models.CASCADE, related_name="consent_records"
    )
    # PROTECT: with SET_NULL, deleting a topic would turn its records into consent
    # to *all* marketing topics (an empty topic means that).
    topic = models.ForeignKey(
        Topic,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="consent_records",
        help_text="Empty: all marketing topics.",
    )
    channel = models.CharField(max_length=16, choices=Channel.choices, blank=True, default="")
    action = models.CharField(max_length=16, choices=Action.choices)
    source = models.CharField(max_length=32, choices=Source.choices)
    evidence = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["customer", "-created_at"], name="consent_customer_idx")]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.action} {self.topic_id or 'all'}/{self.channel or 'all'}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("Consent records are append-only; write a new record instead.")
        super().save(*args, **kwargs)


class ChannelPreference(models.Model):
    """How a customer wants to be reached: channel order, quiet hours, pauses."""

    customer = models.OneToOneField(
        "audience.Customer", on_delete=models.CASCADE, related_name="preference"
    )
    channel_order = ArrayField(
        models.CharField(max_length=16, choices=Channel.choices), default=list, blank=True
    )
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    paused_until = models.DateTimeField(null=True, blank=True)
    max_per_week = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="The customer's own limit on marketing messages per week.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.customer_id}"


class DigestPreference(models.Model):
    """A customer's choice for one digestible topic: each message as it happens, or held
    and folded into one digest a day or a week, at a local time in their own zone.

    No row means "as it happens"; the ledger holds the history of every choice.
    """

    class Cadence(models.TextChoices):
        IMMEDIATE = "immediate", "As it happens"
        DAILY = "daily", "Daily digest"
        WEEKLY = "weekly", "Weekly digest"

    customer = models.ForeignKey(
        "audience.Customer", on_delete=models.CASCADE, related_name="digest_preferences"
    )
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="digest_preferences")
    cadence = models.CharField(max_length=16, choices=Cadence.choices)
    #: The local time of day the digest goes, in the customer's time zone.
    at = models.TimeField()
    #: Weekly only: 0 is Monday.
    weekday = models.PositiveSmallIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "topic"], name="digest_preference_unique"),
            models.CheckConstraint(
                name="digest_preference_weekday",
                condition=(
                    (Q(cadence="weekly") & Q(weekday__gte=0) & Q(weekday__lte=6))
                    | (~Q(cadence="weekly") & Q(weekday__isnull=True))
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.topic_id}: {self.cadence}"


class ChannelOptOut(models.Model):
    """A customer's "no marketing on this channel at all", e.g. an SMS STOP.

    It covers every marketing topic on the channel, including topics created later;
    a per-topic ``Subscription`` cannot override it. Transactional sends are not
    affected (a carrier-level block is a ``Suppression`` instead). The ledger holds
    the evidence; this row is the current state.
    """

    customer = models.ForeignKey(
        "audience.Customer", on_delete=models.CASCADE, related_name="channel_opt_outs"
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    source = models.CharField(max_length=32, choices=ConsentRecord.Source.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "channel"], name="channel_opt_out_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} opted out of marketing on {self.channel}"


def address_hash(channel: str, address: str) -> str:
    """A stable hash of a normalized address, kept after erasure so nobody is re-messaged."""
    normalized = address.strip().lower() if channel == "email" else address.strip()
    return hashlib.sha256(f"{channel}:{normalized}".encode()).hexdigest()


class Suppression(models.Model):
    """A hard stop for one address on one channel. Even transactional sends respect it.

    A STOP is about a phone number and one of our senders, not about a customer
    record: a row with a ``sender`` (our number, as the STOP came in or as the
    carrier's 21610 refused us) blocks every send from that sender to the number,
    whichever records hold it, until START from the number to that sender. A row
    without one (a bounce, a complaint, an erasure, or a STOP whose sender is not
    known) blocks every sender.
    """

    class Reason(models.TextChoices):
        BOUNCE = "bounce", "Hard bounce"
        COMPLAINT = "complaint", "Spam complaint"
        STOP = "stop", "Opted out at the carrier (STOP)"
        INVALID = "invalid", "Invalid address"
        ERASED = "erased", "Erased on request"
        MANUAL = "manual", "Added by an operator"

    channel = models.CharField(max_length=16, choices=Channel.choices)
    address_hash = models.CharField(max_length=64)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    detail = models.TextField(blank=True, default="")
    #: Our sender the STOP was sent to (E.164, or a messaging service SID); empty: every sender.
    sender = models.CharField(max_length=64, blank=True, default="", db_default="")
    #: The one message that may still go despite the row: the confirmation of the STOP.
    allows_message_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "address_hash", "sender"], name="suppression_unique"
            ),
        ]

    def __str__(self) -> str:
        to = f" to {self.sender}" if self.sender else ""
        return f"{self.channel}:{self.address_hash[:12]} ({self.reason}{to})"


__all__ = [
    "CHANNELS",
    "Channel",
    "ChannelOptOut",
    "ChannelPreference",
    "ConsentRecord",
    "DigestPreference",
    "Subscription",
    "Suppression",
    "Topic",
    "address_hash",
]
