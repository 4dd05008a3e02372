"""A customer's preferences: read them, and the one service that changes them.

``preferences_update`` is the only writer, whichever door a change comes through
(the API, the preference page): every change that alters something writes the same
ledger rows (``ConsentRecord``), differing only in ``source`` and the caller's
evidence, so the evidence never depends on the door. A value that is already so
writes nothing.

- a topic on a channel: ``opt_in`` / ``opt_out`` with the topic and channel;
- marketing on a whole channel: ``opt_in`` / ``opt_out`` with the channel, no topic
  ("unsubscribe from all" is every channel off: it also covers topics added later);
- quiet hours, time zone, weekly cap, pause, channel order: one ``preferences`` row
  per update, its evidence holding ``changed``: {field: {"from": ..., "to": ...}}.
- the digest cadence of a digestible topic: one ``preferences`` row with the topic,
  its evidence holding ``changed``: {"digest": {"from": {...}, "to": {...}}}.
  They neither give nor withdraw consent, so an opt_in/opt_out would claim something
  the customer did not do.

The API reads and writes the same JSON document (a client may PATCH back what it read):

    {
      "topics": {"<marketing topic>": {"<channel>": true | false}},
      "channels": {"email": true, "sms": false, ...},   # marketing at all on the channel
      "quiet_hours": {"start": "22:00", "end": "08:00"} | null,   # in "timezone"
      "timezone": "Asia/Tokyo",
      "paused_until": "2025-07-01T00:00:00+09:00" | null,   # marketing paused until then
      "channel_order": ["line", "email"],   # for sends to "preferred"
      "max_per_week": 3 | null,             # the customer's own marketing cap
      "digests": {"<digestible topic>": {"cadence": "immediate" | "daily" | "weekly",
                  "time": "08:00", "weekday": null | "monday" ... "sunday"}}
    }

``topics`` lists marketing topics only (transactional messages cannot be turned off)
with the customer's choice per channel, or the topic's default where they made none.
A channel set to false (an SMS STOP, say) wins over every topic on it.
``digests`` lists digestible topics: each message as it happens, or held and sent as
one daily or weekly digest at ``time`` in the customer's zone (weekly: on ``weekday``).
``preferences_changes_from_document`` validates such a document completely before
anything is written, reporting every problem with its field (``topics.promos.sms``).

Messages already held for a digest follow a changed choice (or time zone) in the same
transaction: delivery, which owns the held messages and sits above this module,
subscribes with ``digest_choices_subscribe`` when the apps load.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.audience.validators import parse_aware_datetime, validate_timezone
from orchestrator.consent.channel_consent import channel_marketing_set, topic_subscription_set
from orchestrator.consent.models import (
    CHANNELS,
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    DigestPreference,
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
    "digests",
)
MAX_PER_WEEK = 100
#: The digest time of a topic the customer made no choice for.
DEFAULT_DIGEST_TIME = dt.time(8, 0)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CADENCES = tuple(DigestPreference.Cadence.values)


#: Called inside ``preferences_update``'s transaction, after the choices are saved:
#: (customer, changed digestible topic ids or None for all of them, the ledger rows
#: that record why). None is a time zone change: every digest moves with the zone.
DigestChoicesListener = Callable[[Customer, "frozenset[int] | None", list[ConsentRecord]], None]
_digest_listeners: list[DigestChoicesListener] = []


def digest_choices_subscribe(listener: DigestChoicesListener) -> None:
    """Have ``listener`` told of every change of a customer's digest choices (once)."""
    if listener not in _digest_listeners:
        _digest_listeners.append(listener)


class _Unset(enum.Enum):
    UNSET = "unset"


#: A field of ``PreferenceChanges`` left as it is (``None`` means "clear it").
UNSET: Final = _Unset.UNSET


@dataclass(frozen=True)
class PreferenceChanges:
    """What one update asks for; only what differs from the current state is applied.

    ``topics`` are (topic id, channel, subscribed) of marketing topics; ``channels``
    are (channel, marketing allowed). A field left ``UNSET`` is not touched.
    """

    topics: tuple[tuple[int, str, bool], ...] = ()
    channels: tuple[tuple[str, bool], ...] = ()
    quiet_hours: tuple[dt.time, dt.time] | _Unset | None = UNSET
    timezone: str | _Unset = UNSET
    paused_until: dt.datetime | _Unset | None = UNSET
    channel_order: tuple[str, ...] | _Unset = UNSET
    max_per_week: int | _Unset | None = UNSET
    #: (topic id, cadence, local time, weekday 0-6 or None) of digestible topics.
    digests: tuple[tuple[int, str, dt.time, int | None], ...] = ()


def unsubscribe_from_all() -> PreferenceChanges:
    """No marketing on any channel, topics created later included."""
    return PreferenceChanges(channels=tuple((channel, False) for channel in CHANNELS))


def _hhmm(value: dt.time | None) -> str | None:
    return value.strftime("%H:%M") if value is not None else None


def _chosen(customer_id: int) -> dict[tuple[int, str], bool]:
    """The customer's recorded choices: (topic id, channel) -> subscribed."""
    return {
        (topic_id, channel): status == Subscription.Status.SUBSCRIBED
        for topic_id, channel, status in Subscription.objects.filter(
            customer_id=customer_id
        ).values_list("topic_id", "channel", "status")
    }


def _digest_value(cadence: str, at: dt.time, weekday: int | None) -> dict[str, Any]:
    return {
        "cadence": cadence,
        "time": _hhmm(at),
        "weekday": WEEKDAYS[weekday] if weekday is not None else None,
    }


def digests_get(customer_id: int) -> dict[str, dict[str, Any]]:
    """Digest choice per digestible topic (key), "immediate" where none was made."""
    chosen = {p.topic_id: p for p in DigestPreference.objects.filter(customer_id=customer_id)}
    result = {}
    for topic in Topic.objects.filter(digestible=True).order_by("key"):
        choice = chosen.get(topic.pk)
        result[topic.key] = (
            _digest_value(choice.cadence, choice.at, choice.weekday)
            if choice
            else _digest_value(DigestPreference.Cadence.IMMEDIATE, DEFAULT_DIGEST_TIME, None)
        )
    return result


def preferences_get(*, customer: Customer) -> dict[str, Any]:
    """The preferences document of the customer (see the module docstring)."""
    chosen = _chosen(customer.pk)
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
        "digests": digests_get(customer.pk),
    }


class _Errors:
    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.by_field.setdefault(field, []).append(message)


def _clean_topics(value: Any, errors: _Errors) -> list[tuple[int, str, bool]]:
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
                cleaned.append((topic.pk, channel, wanted))
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


def _clean_quiet_hours(value: Any, errors: _Errors) -> tuple[dt.time, dt.time] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"start", "end"}:
        errors.add("quiet_hours", 'Must be null or {"start": "HH:MM", "end": "HH:MM"}.')
        return None
    start = _clean_time(value["start"], "quiet_hours.start", errors)
    end = _clean_time(value["end"], "quiet_hours.end", errors)
    if start is None or end is None:
        return None
    if start == end:
        errors.add("quiet_hours", "Start and end must differ.")
    return start, end


def _clean_paused_until(value: Any, errors: _Errors) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_aware_datetime(value)
    except ValidationError as exc:
        errors.add("paused_until", f"Must be null or a date-time: {exc.messages[0]}")
        return None


def _clean_channel_order(value: Any, errors: _Errors) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not all(isinstance(c, str) and c in CHANNELS for c in value)
        or len(set(value)) != len(value)
    ):
        allowed = ", ".join(CHANNELS)
        errors.add("channel_order", f"Must be a list of distinct channels of {allowed}.")
        return ()
    return tuple(value)


def _clean_max_per_week(value: Any, errors: _Errors) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PER_WEEK:
        errors.add("max_per_week", f"Must be null or a whole number from 1 to {MAX_PER_WEEK}.")
        return None
    return value


def _clean_digests(value: Any, errors: _Errors) -> list[tuple[int, str, dt.time, int | None]]:
    if not isinstance(value, dict):
        errors.add("digests", "Must be an object of digestible topic keys.")
        return []
    topics = Topic.objects.in_bulk([k for k in value if isinstance(k, str)], field_name="key")
    cleaned = []
    for key, choice in value.items():
        field = f"digests.{key}"
        topic = topics.get(key)
        if topic is None:
            errors.add(field, f"Unknown topic {key!r}.")
            continue
        if not topic.digestible:
            errors.add(field, f"Topic {key!r} does not offer a digest.")
            continue
        if not isinstance(choice, dict) or not set(choice) <= {"cadence", "time", "weekday"}:
            errors.add(field, 'Must be {"cadence": ..., "time": "HH:MM", "weekday": ...}.')
            continue
        cadence = choice.get("cadence")
        if cadence not in CADENCES:
            errors.add(f"{field}.cadence", f"Must be one of {', '.join(CADENCES)}.")
            continue
        at = DEFAULT_DIGEST_TIME
        if choice.get("time") is not None:
            at = _clean_time(choice["time"], f"{field}.time", errors)
            if at is None:
                continue
        weekday = choice.get("weekday")
        if cadence == DigestPreference.Cadence.WEEKLY:
            if weekday not in WEEKDAYS:
                errors.add(f"{field}.weekday", f"Must be one of {', '.join(WEEKDAYS)}.")
                continue
            day: int | None = WEEKDAYS.index(weekday)
        elif weekday is not None:
            errors.add(f"{field}.weekday", "Only a weekly digest has a weekday; use null.")
            continue
        else:
            day = None
        cleaned.append((topic.pk, cadence, at, day))
    return cleaned


def preferences_changes_from_document(document: Any) -> PreferenceChanges:
    """The changes a (partial) preferences document asks for, validated completely.

    Raises ValidationError with a message per field (``topics.promos.sms``).
    """
    if not isinstance(document, dict):
        raise ValidationError({"non_field_errors": ["Must be an object."]})
    errors = _Errors()
    for name in document:
        if name not in FIELDS:
            errors.add(str(name), f"Unknown field; allowed: {', '.join(FIELDS)}.")
    cleaned: dict[str, Any] = {}
    if "topics" in document:
        cleaned["topics"] = tuple(_clean_topics(document["topics"], errors))
    if "channels" in document:
        cleaned["channels"] = tuple(_clean_channels(document["channels"], errors))
    if "quiet_hours" in document:
        cleaned["quiet_hours"] = _clean_quiet_hours(document["quiet_hours"], errors)
    if "timezone" in document:
        try:
            if not isinstance(document["timezone"], str):
                raise ValidationError("Must be a string.")
            validate_timezone(document["timezone"])
            cleaned["timezone"] = document["timezone"]
        except ValidationError as exc:
            for message in exc.messages:
                errors.add("timezone", message)
    if "paused_until" in document:
        cleaned["paused_until"] = _clean_paused_until(document["paused_until"], errors)
    if "channel_order" in document:
        cleaned["channel_order"] = _clean_channel_order(document["channel_order"], errors)
    if "max_per_week" in document:
        cleaned["max_per_week"] = _clean_max_per_week(document["max_per_week"], errors)
    if "digests" in document:
        cleaned["digests"] = tuple(_clean_digests(document["digests"], errors))
    if errors.by_field:
        raise ValidationError(errors.by_field)
    return PreferenceChanges(**cleaned)


# --- the service --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Delivery:
    """How consented marketing reaches the customer: what a ``preferences`` row records."""

    timezone: str
    quiet_hours: tuple[dt.time, dt.time] | None
    max_per_week: int | None
    paused_until: dt.datetime | None
    channel_order: tuple[str, ...]

    def as_evidence(self) -> dict[str, Any]:
        """JSON-able values; the pause as an instant in the customer's own zone."""
        quiet = self.quiet_hours
        paused = self.paused_until
        return {
            "timezone": self.timezone,
            "quiet_hours": f"{quiet[0]:%H:%M}-{quiet[1]:%H:%M}" if quiet else None,
            "max_per_week": self.max_per_week,
            "paused_until": paused.astimezone(ZoneInfo(self.timezone)).isoformat()
            if paused
            else None,
            "channel_order": list(self.channel_order),
        }


def _delivery_current(
    customer: Customer, preference: ChannelPreference | None, now: dt.datetime
) -> _Delivery:
    quiet = None
    paused = None
    if preference is not None:
        if preference.quiet_hours_start is not None and preference.quiet_hours_end is not None:
            quiet = (preference.quiet_hours_start, preference.quiet_hours_end)
        # A pause that has ended is no pause: clearing it is no change to record.
        if preference.paused_until is not None and preference.paused_until > now:
            paused = preference.paused_until
    return _Delivery(
        timezone=customer.timezone or "UTC",
        quiet_hours=quiet,
        max_per_week=preference.max_per_week if preference else None,
        paused_until=paused,
        channel_order=tuple(preference.channel_order) if preference else (),
    )


def _delivery_wanted(current: _Delivery, changes: PreferenceChanges) -> _Delivery:
    wanted = {
        name: getattr(changes, name)
        for name in ("timezone", "quiet_hours", "max_per_week", "paused_until", "channel_order")
        if getattr(changes, name) is not UNSET
    }
    if "channel_order" in wanted:
        wanted["channel_order"] = tuple(wanted["channel_order"])
    return dataclasses.replace(current, **wanted)


def _delivery_save(customer: Customer, wanted: _Delivery) -> None:
    if wanted.timezone != customer.timezone:
        customer.timezone = wanted.timezone
        customer.save(update_fields=["timezone", "updated_at"])
    start, end = wanted.quiet_hours or (None, None)
    ChannelPreference.objects.update_or_create(
        customer=customer,
        defaults={
            "quiet_hours_start": start,
            "quiet_hours_end": end,
            "max_per_week": wanted.max_per_week,
            "paused_until": wanted.paused_until,
            "channel_order": list(wanted.channel_order),
        },
    )


def _digests_save(
    customer: Customer,
    digests: tuple[tuple[int, str, dt.time, int | None], ...],
    source: str,
    evidence: dict[str, Any],
) -> list[ConsentRecord]:
    """Each digest choice that differs: saved, and one ledger row with its topic."""
    topics = Topic.objects.filter(digestible=True).in_bulk({d[0] for d in digests})
    current = {
        p.topic_id: p
        for p in DigestPreference.objects.filter(customer=customer, topic_id__in=topics)
    }
    written = []
    for topic_id, cadence, at, weekday in sorted(set(digests), key=lambda d: d[0]):
        topic = topics.get(topic_id)
        if topic is None:
            continue
        now = current.get(topic_id)
        before = (
            (now.cadence, now.at, now.weekday)
            if now
            else (DigestPreference.Cadence.IMMEDIATE, DEFAULT_DIGEST_TIME, None)
        )
        if before == (cadence, at, weekday):
            continue
        if cadence == DigestPreference.Cadence.IMMEDIATE and at == DEFAULT_DIGEST_TIME:
            DigestPreference.objects.filter(customer=customer, topic_id=topic_id).delete()
        else:
            DigestPreference.objects.update_or_create(
                customer=customer,
                topic_id=topic_id,
                defaults={"cadence": cadence, "at": at, "weekday": weekday},
            )
        written.append(
            ConsentRecord.objects.create(
                customer=customer,
                topic=topic,
                channel="",
                action=ConsentRecord.Action.PREFERENCES,
                source=source,
                evidence={
                    **evidence,
                    "changed": {
                        "digest": {
                            "from": _digest_value(*before),
                            "to": _digest_value(cadence, at, weekday),
                        }
                    },
                },
            )
        )
    return written


def preferences_update(
    *,
    customer: Customer,
    changes: PreferenceChanges,
    source: str,
    evidence: dict[str, Any] | None = None,
) -> list[ConsentRecord]:
    """Apply ``changes`` in one transaction; return the ledger rows written.

    ``source`` is a ``ConsentRecord.Source`` (``api``, ``preference_center``...);
    ``evidence`` (the caller's: a user agent, an API key prefix) is stored with each
    row. Rows are written in a fixed order (topics, channels, digests, delivery), so
    the same change leaves the same ledger whichever door it came through. A topic
    cell that is not (or no longer) a marketing topic's is skipped: the page may have
    been open while a topic changed.
    """
    if source not in ConsentRecord.Source.values:
        raise ValueError(f"unknown consent source {source!r}")
    evidence = dict(evidence or {})
    written: list[ConsentRecord | None] = []
    with transaction.atomic():
        # The customer row is the lock: two updates (two tabs, two API calls) apply one
        # after the other, each diffing against what the other wrote. NO KEY: a message
        # being queued for them meanwhile (its foreign key takes KEY SHARE) is not held
        # up, so a hold that has locked their digest can finish, and our release of that
        # digest waits for it instead of the two waiting on each other.
        customer = Customer.objects.select_for_update(no_key=True).get(pk=customer.pk)
        if changes.topics:
            topics = Topic.objects.filter(kind=Topic.Kind.MARKETING).in_bulk(
                {topic_id for topic_id, _channel, _on in changes.topics}
            )
            chosen = _chosen(customer.pk)
            for topic_id, channel, on in sorted(set(changes.topics)):
                topic = topics.get(topic_id)
                if topic is None or channel not in topic.channels:
                    continue
                if on == chosen.get((topic_id, channel), topic.default_opt_in):
                    continue
                written.append(
                    topic_subscription_set(
                        customer_id=customer.pk,
                        topic_id=topic_id,
                        channel=channel,
                        subscribed=on,
                        source=source,
                        evidence=evidence,
                    )
                )
        if changes.channels:
            opted_out = set(
                ChannelOptOut.objects.filter(customer=customer).values_list("channel", flat=True)
            )
            wanted_channels = dict(changes.channels)
            for channel in CHANNELS:
                if channel not in wanted_channels:
                    continue
                allowed = wanted_channels[channel]
                if allowed == (channel not in opted_out):
                    continue
                written.append(
                    channel_marketing_set(
                        customer_id=customer.pk,
                        channel=channel,
                        allowed=allowed,
                        source=source,
                        evidence=evidence,
                    )
                )
        digest_rows: list[ConsentRecord] = []
        if changes.digests:
            digest_rows = _digests_save(customer, changes.digests, source, evidence)
            written.extend(digest_rows)
        preference = ChannelPreference.objects.filter(customer=customer).first()
        current = _delivery_current(customer, preference, timezone.now())
        wanted = _delivery_wanted(current, changes)
        delivery_row = None
        if wanted != current:
            _delivery_save(customer, wanted)
            before, after = current.as_evidence(), wanted.as_evidence()
            # Compared as values, not as text: the same pause reads differently in a
            # new time zone, and is still no change.
            changed = {
                name: {"from": before[name], "to": after[name]}
                for name in after
                if getattr(current, name) != getattr(wanted, name)
            }
            delivery_row = ConsentRecord.objects.create(
                customer=customer,
                topic=None,
                channel="",
                action=ConsentRecord.Action.PREFERENCES,
                source=source,
                evidence={**evidence, "changed": changed},
            )
            written.append(delivery_row)
        _digest_choices_changed(customer, digest_rows, delivery_row, current, wanted)
    return [record for record in written if record is not None]


def _digest_choices_changed(
    customer: Customer,
    digest_rows: list[ConsentRecord],
    delivery_row: ConsentRecord | None,
    current: _Delivery,
    wanted: _Delivery,
) -> None:
    """Tell the listeners which digest choices changed, in the update's transaction."""
    if delivery_row is not None and wanted.timezone != current.timezone:
        topic_ids, rows = None, [*digest_rows, delivery_row]
    elif digest_rows:
        topic_ids, rows = frozenset(r.topic_id for r in digest_rows), digest_rows
    else:
        return
    for listener in _digest_listeners:
        listener(customer, topic_ids, rows)
