"""A customer's preferences as one document: read it, or change any part of it.

The same document is read and written (a client may PATCH back what it read):

    {
      "topics": {"<marketing topic>": {"<channel>": true | false}},
      "channels": {"email": true, "sms": false, ...},   # marketing at all on the channel
      "quiet_hours": {"start": "22:00", "end": "08:00"} | null,   # in "timezone"
      "timezone": "Asia/Tokyo",
      "paused_until": "2025-07-01T00:00:00+09:00" | null,   # marketing paused until then
      "channel_order": ["line", "email"],   # for sends to "preferred"
      "max_per_week": 3 | null              # the customer's own marketing cap
    }

``topics`` lists marketing topics only (transactional messages cannot be turned off)
with the customer's choice per channel, or the topic's default where they made none.
A channel set to false (an SMS STOP, say) wins over every topic on it.

Every consent change writes the ledger (``ConsentRecord``) with its source; a value
that is already so writes nothing. Input is validated completely before anything is
written, and every problem is reported with its field (``topics.promos.sms``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orchestrator.audience.models import Customer
from orchestrator.audience.validators import validate_timezone
from orchestrator.consent.channel_consent import channel_opt_out, topic_unsubscribe
from orchestrator.consent.models import (
    CHANNELS,
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    Subscription,
    Topic,
)

FIELDS = (
    "topics",
    "channels",
    "quiet_hours",
    "timezone",
    "paused_until",
    "channel_order",
    "max_per_week",
)
MAX_PER_WEEK = 100


def _hhmm(value: dt.time | None) -> str | None:
    return value.strftime("%H:%M") if value is not None else None


def preferences_get(*, customer: Customer) -> dict[str, Any]:
    """The preferences document of the customer (see the module docstring)."""
    chosen = {
        (topic_id, channel): status == Subscription.Status.SUBSCRIBED
        for topic_id, channel, status in Subscription.objects.filter(
            customer_id=customer.pk
        ).values_list("topic_id", "channel", "status")
    }
    opted_out = set(
        ChannelOptOut.objects.filter(customer_id=customer.pk).values_list("channel", flat=True)
    )
    preference = ChannelPreference.objects.filter(customer_id=customer.pk).first()
    quiet = None
    if preference and preference.quiet_hours_start and preference.quiet_hours_end:
        quiet = {
            "start": _hhmm(preference.quiet_hours_start),
            "end": _hhmm(preference.quiet_hours_end),
        }
    paused = preference.paused_until if preference else None
    return {
        "topics": {
            topic.key: {
                channel: chosen.get((topic.id, channel), topic.default_opt_in)
                for channel in CHANNELS
                if channel in topic.channels
            }
            for topic in Topic.objects.filter(kind=Topic.Kind.MARKETING).order_by("key")
        },
        "channels": {channel: channel not in opted_out for channel in CHANNELS},
        "quiet_hours": quiet,
        "timezone": customer.timezone,
        "paused_until": paused.isoformat() if paused else None,
        "channel_order": list(preference.channel_order) if preference else [],
        "max_per_week": preference.max_per_week if preference else None,
    }


class _Errors:
    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.by_field.setdefault(field, []).append(message)


def _clean_topics(value: Any, errors: _Errors) -> list[tuple[Topic, str, bool]]:
    if not isinstance(value, dict):
        errors.add("topics", "Must be an object of topic keys.")
        return []
    topics = Topic.objects.in_bulk([k for k in value if isinstance(k, str)], field_name="key")
    cleaned = []
    for key, channels in value.items():
        topic = topics.get(key)
        if topic is None:
            errors.add(f"topics.{key}", f"Unknown topic {key!r}.")
            continue
        if topic.is_transactional:
            errors.add(f"topics.{key}", "A transactional topic cannot be turned off or on.")
            continue
        if not isinstance(channels, dict):
            errors.add(f"topics.{key}", "Must be an object of channel: true or false.")
            continue
        for channel, wanted in channels.items():
            if channel not in CHANNELS:
                errors.add(f"topics.{key}.{channel}", f"Unknown channel {channel!r}.")
            elif channel not in topic.channels:
                errors.add(f"topics.{key}.{channel}", f"Topic {key!r} does not use {channel}.")
            elif not isinstance(wanted, bool):
                errors.add(f"topics.{key}.{channel}", "Must be true or false.")
            else:
                cleaned.append((topic, channel, wanted))
    return cleaned


def _clean_channels(value: Any, errors: _Errors) -> list[tuple[str, bool]]:
    if not isinstance(value, dict):
        errors.add("channels", "Must be an object of channel: true or false.")
        return []
    cleaned = []
    for channel, wanted in value.items():
        if channel not in CHANNELS:
            errors.add(f"channels.{channel}", f"Unknown channel {channel!r}.")
        elif not isinstance(wanted, bool):
            errors.add(f"channels.{channel}", "Must be true or false.")
        else:
            cleaned.append((channel, wanted))
    return cleaned


def _clean_time(value: Any, field: str, errors: _Errors) -> dt.time | None:
    if isinstance(value, str) and len(value) == 5 and value[2] == ":":
        try:
            return dt.time.fromisoformat(value)
        except ValueError:
            pass
    errors.add(field, "Must be a time as HH:MM, e.g. 21:30.")
    return None


def _clean_quiet_hours(value: Any, errors: _Errors) -> tuple[dt.time | None, dt.time | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        errors.add("quiet_hours", 'Must be null or {"start": "HH:MM", "end": "HH:MM"}.')
        return None, None
    start = _clean_time(value["start"], "quiet_hours.start", errors)
    end = _clean_time(value["end"], "quiet_hours.end", errors)
    if start is not None and start == end:
        errors.add("quiet_hours", "Start and end must differ.")
    return start, end


def _clean_paused_until(value: Any, errors: _Errors) -> dt.datetime | None:
    if value is None:
        return None
    parsed = None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
    if parsed is None or timezone.is_naive(parsed):
        errors.add("paused_until", "Must be null or an ISO 8601 date and time with an offset.")
        return None
    return parsed


def _clean_channel_order(value: Any, errors: _Errors) -> list[str]:
    if (
        not isinstance(value, list)
        or not all(isinstance(c, str) and c in CHANNELS for c in value)
        or len(set(value)) != len(value)
    ):
        allowed = ", ".join(CHANNELS)
        errors.add("channel_order", f"Must be a list of distinct channels of {allowed}.")
        return []
    return list(value)


def _clean_max_per_week(value: Any, errors: _Errors) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PER_WEEK:
        errors.add("max_per_week", f"Must be null or a whole number from 1 to {MAX_PER_WEEK}.")
        return None
    return value


def _clean(changes: Any) -> dict[str, Any]:
    if not isinstance(changes, dict):
        raise ValidationError({"non_field_errors": ["Must be an object."]})
    errors = _Errors()
    for name in changes:
        if name not in FIELDS:
            errors.add(str(name), f"Unknown field; allowed: {', '.join(FIELDS)}.")
    cleaned: dict[str, Any] = {}
    if "topics" in changes:
        cleaned["topics"] = _clean_topics(changes["topics"], errors)
    if "channels" in changes:
        cleaned["channels"] = _clean_channels(changes["channels"], errors)
    if "quiet_hours" in changes:
        cleaned["quiet_hours"] = _clean_quiet_hours(changes["quiet_hours"], errors)
    if "timezone" in changes:
        try:
            if not isinstance(changes["timezone"], str):
                raise ValidationError("Must be a string.")
            validate_timezone(changes["timezone"])
            cleaned["timezone"] = changes["timezone"]
        except ValidationError as exc:
            for message in exc.messages:
                errors.add("timezone", message)
    if "paused_until" in changes:
        cleaned["paused_until"] = _clean_paused_until(changes["paused_until"], errors)
    if "channel_order" in changes:
        cleaned["channel_order"] = _clean_channel_order(changes["channel_order"], errors)
    if "max_per_week" in changes:
        cleaned["max_per_week"] = _clean_max_per_week(changes["max_per_week"], errors)
    if errors.by_field:
        raise ValidationError(errors.by_field)
    return cleaned


def _subscribe(
    *, customer_id: int, topic: Topic, channel: str, source: str, evidence: dict[str, Any]
) -> bool:
    """The counterpart of ``topic_unsubscribe``: True if the customer was not subscribed."""
    current = (
        Subscription.objects.select_for_update()
        .filter(customer_id=customer_id, topic=topic, channel=channel)
        .first()
    )
    if current is not None and current.status == Subscription.Status.SUBSCRIBED:
        return False
    Subscription.objects.update_or_create(
        customer_id=customer_id,
        topic=topic,
        channel=channel,
        defaults={"status": Subscription.Status.SUBSCRIBED},
    )
    ConsentRecord.objects.create(
        customer_id=customer_id,
        topic=topic,
        channel=channel,
        action=ConsentRecord.Action.OPT_IN,
        source=source,
        evidence=evidence,
    )
    return True


def _channel_allow(*, customer_id: int, channel: str, source: str, evidence: dict) -> bool:
    """Lift the customer's channel-wide opt-out. Unlike an inbound START this leaves a
    carrier-level STOP suppression alone: only the person's phone can undo that."""
    removed, _ = ChannelOptOut.objects.filter(customer_id=customer_id, channel=channel).delete()
    if removed:
        ConsentRecord.objects.create(
            customer_id=customer_id,
            topic=None,
            channel=channel,
            action=ConsentRecord.Action.OPT_IN,
            source=source,
            evidence=evidence,
        )
    return bool(removed)


def preferences_update(
    *,
    customer: Customer,
    changes: dict[str, Any],
    source: str,
    evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply a partial preferences document; returns the whole document afterwards.

    ``source`` is a ``ConsentRecord.Source`` (``api``, ``preference_center``...);
    ``evidence`` is stored with each consent change (add a user agent, a request id).
    Raises ValidationError with per-field messages, before writing anything.
    """
    if source not in ConsentRecord.Source.values:
        raise ValueError(f"unknown consent source {source!r}")
    cleaned = _clean(changes)
    evidence = {"via": source, **(evidence or {})}
    with transaction.atomic():
        # One change at a time per customer, so two concurrent updates do not interleave.
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        for topic, channel, wanted in cleaned.get("topics", []):
            if wanted:
                _subscribe(
                    customer_id=customer.pk,
                    topic=topic,
                    channel=channel,
                    source=source,
                    evidence=evidence,
                )
            else:
                topic_unsubscribe(
                    customer_id=customer.pk,
                    topic_id=topic.pk,
                    channel=channel,
                    source=source,
                    evidence=evidence,
                )
        for channel, wanted in cleaned.get("channels", []):
            change = _channel_allow if wanted else channel_opt_out
            change(customer_id=customer.pk, channel=channel, source=source, evidence=evidence)
        own = {"quiet_hours", "paused_until", "channel_order", "max_per_week"} & set(cleaned)
        if own:
            preference, _ = ChannelPreference.objects.get_or_create(customer=customer)
            if "quiet_hours" in cleaned:
                preference.quiet_hours_start, preference.quiet_hours_end = cleaned["quiet_hours"]
            for name in ("paused_until", "channel_order", "max_per_week"):
                if name in cleaned:
                    setattr(preference, name, cleaned[name])
            preference.save()
        if "timezone" in cleaned and cleaned["timezone"] != customer.timezone:
            customer.timezone = cleaned["timezone"]
            customer.save(update_fields=["timezone", "updated_at"])
    return preferences_get(customer=customer)
