"""Writes for the preference center: one submit is one transaction, and every change is evidenced.

Consent changes (a topic on a channel, marketing on a whole channel) are ledger
rows with action opt_in / opt_out, the same shape the one-click unsubscribe and
STOP/START write. Changes to *how* consented marketing reaches the customer
(quiet hours, time zone, weekly cap, pause, channel order) are one ledger row per
submit with action ``preferences`` and the before/after values as evidence: they
neither give nor withdraw consent to a topic, so recording them as opt_in/opt_out
would make the ledger claim something the customer did not do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.consent.models import (
    CHANNELS,
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    Subscription,
)
from orchestrator.preferences.selectors import PreferenceState, marketing_topics, preference_state

SOURCE = ConsentRecord.Source.PREFERENCE_CENTER
#: Ledger action for a change of delivery preferences (see the module docstring).
PREFERENCES_CHANGED = ConsentRecord.Action.PREFERENCES


def _ledger(
    customer_id: int, topic_id: int | None, channel: str, action: str, evidence: dict[str, Any]
) -> ConsentRecord:
    return ConsentRecord.objects.create(
        customer_id=customer_id,
        topic_id=topic_id,
        channel=channel,
        action=action,
        source=SOURCE,
        evidence=evidence,
    )


def _local_midnight(day: dt.date, tz: str) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)


def _delivery(state: PreferenceState) -> dict[str, Any]:
    """The delivery preferences as JSON-able values, for the ledger's before/after."""
    return {
        "timezone": state.timezone,
        "quiet_hours": (
            f"{state.quiet_start:%H:%M}-{state.quiet_end:%H:%M}"
            if state.quiet_start is not None and state.quiet_end is not None
            else None
        ),
        "max_per_week": state.max_per_week,
        "paused_until": state.paused_until.isoformat() if state.paused_until else None,
        "channel_order": list(state.channel_order),
    }


def preferences_update(
    *,
    customer: Customer,
    wanted: PreferenceState,
    cells: Iterable[tuple[int, str]],
    channels: Iterable[str],
    evidence: dict[str, Any],
) -> list[ConsentRecord]:
    """Apply one submit of the page; return the ledger rows written (none if nothing changed).

    Only the ``cells`` (topic id, channel) and ``channels`` the customer was shown are
    applied, so a topic added while the page was open is not switched off by a form
    that never showed it.
    """
    cells, channels = set(cells), set(channels) & set(CHANNELS)
    written: list[ConsentRecord] = []
    with transaction.atomic():
        # The customer row is the lock: two submits from two tabs apply one after the
        # other, each diffing against what the other wrote.
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        now = timezone.now()
        current = preference_state(customer, now=now, topics=marketing_topics())
        for key in sorted(cells & current.subscriptions.keys()):
            on = wanted.subscriptions.get(key, False)
            if on == current.subscriptions[key]:
                continue
            topic_id, channel = key
            Subscription.objects.update_or_create(
                customer=customer,
                topic_id=topic_id,
                channel=channel,
                defaults={
                    "status": Subscription.Status.SUBSCRIBED
                    if on
                    else Subscription.Status.UNSUBSCRIBED
                },
            )
            action = ConsentRecord.Action.OPT_IN if on else ConsentRecord.Action.OPT_OUT
            written.append(_ledger(customer.id, topic_id, channel, action, evidence))
        for channel in sorted(channels):
            allowed = wanted.channels_allowed.get(channel, True)
            if allowed == current.channels_allowed[channel]:
                continue
            written.append(_channel_set(customer.id, channel, allowed, evidence))
        before, after = _delivery(current), _delivery(wanted)
        if before != after:
            _delivery_save(customer, wanted)
            changed = {k: {"from": before[k], "to": v} for k, v in after.items() if before[k] != v}
            proof = {**evidence, "changed": changed}
            written.append(_ledger(customer.id, None, "", PREFERENCES_CHANGED, proof))
    return written


def _channel_set(customer_id: int, channel: str, allowed: bool, evidence: dict[str, Any]):
    if allowed:
        # Only the channel-wide opt-out goes: a carrier STOP or a bounce (a Suppression)
        # is not ours to lift from a web page - the carrier would still block the send.
        ChannelOptOut.objects.filter(customer_id=customer_id, channel=channel).delete()
        return _ledger(customer_id, None, channel, ConsentRecord.Action.OPT_IN, evidence)
    ChannelOptOut.objects.create(customer_id=customer_id, channel=channel, source=SOURCE)
    return _ledger(customer_id, None, channel, ConsentRecord.Action.OPT_OUT, evidence)


def _delivery_save(customer: Customer, wanted: PreferenceState) -> None:
    if wanted.timezone != customer.timezone:
        Customer.objects.filter(pk=customer.pk).update(timezone=wanted.timezone)
    paused_until = (
        _local_midnight(wanted.paused_until, wanted.timezone) if wanted.paused_until else None
    )
    ChannelPreference.objects.update_or_create(
        customer=customer,
        defaults={
            "quiet_hours_start": wanted.quiet_start,
            "quiet_hours_end": wanted.quiet_end,
            "max_per_week": wanted.max_per_week,
            "paused_until": paused_until,
            "channel_order": list(wanted.channel_order),
        },
    )


def marketing_unsubscribe_all(*, customer: Customer, evidence: dict[str, Any]) -> int:
    """Stop all marketing on every channel, topics added later included; return rows written.

    A channel-wide opt-out per channel, not a row per topic: it also covers topics
    created after today, which is what "unsubscribe from all" promises.
    """
    written = 0
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        opted_out = set(
            ChannelOptOut.objects.filter(customer=customer).values_list("channel", flat=True)
        )
        for channel in CHANNELS:
            if channel not in opted_out:
                _channel_set(customer.id, channel, False, {**evidence, "how": "unsubscribe all"})
                written += 1
    return written
