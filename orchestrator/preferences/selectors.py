"""Reads for the preference center: what the customer has chosen, and what we sent and why."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from orchestrator.consent.models import (
    CHANNELS,
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    DigestPreference,
    Subscription,
    Topic,
)
from orchestrator.delivery.selectors import digest_held_counts

#: How many recent messages "why am I getting this?" explains.
RECENT_MESSAGES = 10

#: Statuses worth explaining: the message went out, or we held or dropped it.
EXPLAINED_STATUSES = (
    "sent",
    "delivered",
    "undelivered",
    "bounced",
    "opened",
    "clicked",
    "replied",
    "deferred",
    "suppressed",
    "expired",
    "held",
)


@dataclass(frozen=True)
class PreferenceState:
    """Everything the page edits, as the customer sees it (dates in their own time zone).

    ``subscriptions`` holds the *effective* consent per (topic id, channel): the
    customer's recorded choice, else the topic's default.
    """

    subscriptions: dict[tuple[int, str], bool] = field(default_factory=dict)
    #: Channel -> marketing allowed on it at all (False: a channel-wide opt-out).
    channels_allowed: dict[str, bool] = field(default_factory=dict)
    timezone: str = "UTC"
    quiet_start: dt.time | None = None
    quiet_end: dt.time | None = None
    max_per_week: int | None = None
    #: The local date marketing resumes on; None when not paused.
    paused_until: dt.date | None = None
    channel_order: tuple[str, ...] = ()
    #: Digestible topic id -> (cadence, local time, weekday or None); absent: as it happens.
    digests: dict[int, tuple[str, dt.time, int | None]] = field(default_factory=dict)
    #: Digestible topic id -> messages waiting in its open digest (absent: none).
    digest_held: dict[int, int] = field(default_factory=dict)


def digestible_topics() -> list[Topic]:
    return list(Topic.objects.filter(digestible=True).order_by("name"))


def reachable_channels(customer) -> list[str]:
    """Channels we hold an address for: the only ones worth a switch on the page."""
    return [c for c in CHANNELS if customer.address_for(c)]


def marketing_topics() -> list[Topic]:
    return list(Topic.objects.filter(kind=Topic.Kind.MARKETING).order_by("name"))


def service_topics() -> list[Topic]:
    return list(Topic.objects.filter(kind=Topic.Kind.TRANSACTIONAL).order_by("name"))


def preference_state(
    customer, *, now: dt.datetime, topics: list[Topic] | None = None
) -> PreferenceState:
    """The customer's current choices; ``topics`` defaults to every marketing topic."""
    topics = marketing_topics() if topics is None else topics
    recorded = {
        (s.topic_id, s.channel): s.status == Subscription.Status.SUBSCRIBED
        for s in Subscription.objects.filter(customer=customer)
    }
    subscriptions = {
        (t.id, c): recorded.get((t.id, c), t.default_opt_in) for t in topics for c in t.channels
    }
    opted_out = set(
        ChannelOptOut.objects.filter(customer=customer).values_list("channel", flat=True)
    )
    pref = ChannelPreference.objects.filter(customer=customer).first()
    tz = ZoneInfo(customer.timezone or "UTC")
    paused = None
    if pref is not None and pref.paused_until is not None and pref.paused_until > now:
        paused = pref.paused_until.astimezone(tz).date()
    return PreferenceState(
        subscriptions=subscriptions,
        channels_allowed={c: c not in opted_out for c in CHANNELS},
        timezone=customer.timezone or "UTC",
        quiet_start=pref.quiet_hours_start if pref else None,
        quiet_end=pref.quiet_hours_end if pref else None,
        max_per_week=pref.max_per_week if pref else None,
        paused_until=paused,
        channel_order=tuple(pref.channel_order) if pref else (),
        digests={
            d.topic_id: (d.cadence, d.at, d.weekday)
            for d in DigestPreference.objects.filter(customer=customer)
        },
        digest_held=digest_held_counts(customer.pk),
    )


@dataclass(frozen=True)
class ExplainedMessage:
    message: object
    #: The ledger entry in force when the message was decided, if the customer made one.
    consent_record: ConsentRecord | None


def recent_messages(customer, *, limit: int = RECENT_MESSAGES) -> list[ExplainedMessage]:
    """The latest messages the customer got (or we held), each with its consent record.

    Two queries: the messages, and the customer's ledger (short: one row per choice).
    """
    from orchestrator.delivery.models import Message

    messages = list(
        Message.objects.filter(customer=customer, status__in=EXPLAINED_STATUSES)
        .select_related("topic", "customer")
        .order_by("-created_at", "-id")[:limit]
    )
    ledger = list(
        ConsentRecord.objects.filter(customer=customer)
        .select_related("topic")
        .order_by("-created_at", "-id")
    )
    out = []
    for message in messages:
        at = message.decided_at or message.updated_at
        record = next(
            (
                r
                for r in ledger
                if r.created_at <= at
                and r.action in (ConsentRecord.Action.OPT_IN, ConsentRecord.Action.OPT_OUT)
                and r.topic_id in (None, message.topic_id)
                and r.channel in ("", message.channel)
            ),
            None,
        )
        out.append(ExplainedMessage(message, record))
    return out
