"""Consent writes, each with its ledger row: a channel-wide STOP or START, a topic choice.

Each change that alters the current state writes one ``ConsentRecord`` (the
evidence) with it, in one transaction; a repeat that changes nothing writes
nothing (False or None), so a caller confirms only real changes.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from orchestrator.consent.models import (
    ChannelOptOut,
    ConsentRecord,
    Subscription,
    Suppression,
    address_hash,
)


def _ledger(
    customer_id: int,
    topic_id: int | None,
    channel: str,
    action: str,
    source: str,
    evidence: dict[str, Any],
) -> ConsentRecord:
    return ConsentRecord.objects.create(
        customer_id=customer_id,
        topic_id=topic_id,
        channel=channel,
        action=action,
        source=source,
        evidence=evidence,
    )


def channel_opt_out(
    *, customer_id: int, channel: str, source: str, evidence: dict[str, Any]
) -> bool:
    """Stop all marketing to the customer on ``channel``. True if it was not stopped yet."""
    return (
        channel_marketing_set(
            customer_id=customer_id,
            channel=channel,
            allowed=False,
            source=source,
            evidence=evidence,
        )
        is not None
    )


def channel_marketing_set(
    *, customer_id: int, channel: str, allowed: bool, source: str, evidence: dict[str, Any]
) -> ConsentRecord | None:
    """Set or lift the customer's channel-wide opt-out; the ledger row, None if no change.

    Lifting leaves a carrier-level STOP (a ``Suppression``) alone, unlike an inbound
    START: only the person's phone can undo that, the carrier would block the send.
    """
    with transaction.atomic():
        if allowed:
            removed, _ = ChannelOptOut.objects.filter(
                customer_id=customer_id, channel=channel
            ).delete()
            if not removed:
                return None
            action = ConsentRecord.Action.OPT_IN
        else:
            _row, created = ChannelOptOut.objects.get_or_create(
                customer_id=customer_id, channel=channel, defaults={"source": source}
            )
            if not created:
                return None
            action = ConsentRecord.Action.OPT_OUT
        return _ledger(customer_id, None, channel, action, source, evidence)


def channel_opt_in(
    *,
    customer_id: int | None,
    channel: str,
    address: str,
    source: str,
    evidence: dict[str, Any],
) -> bool:
    """Lift a channel-wide opt-out and a carrier STOP on ``address``. True if anything changed.

    Only a ``stop`` suppression is lifted: a START cannot undo a bounce, a complaint
    or an erasure.
    """
    with transaction.atomic():
        lifted, _ = Suppression.objects.filter(
            channel=channel,
            address_hash=address_hash(channel, address),
            reason=Suppression.Reason.STOP,
        ).delete()
        removed = 0
        if customer_id is not None:
            removed, _ = ChannelOptOut.objects.filter(
                customer_id=customer_id, channel=channel
            ).delete()
            if removed or lifted:
                _ledger(customer_id, None, channel, ConsentRecord.Action.OPT_IN, source, evidence)
    return bool(removed or lifted)


def topic_unsubscribe(
    *, customer_id: int, topic_id: int, channel: str, source: str, evidence: dict[str, Any]
) -> bool:
    """Unsubscribe from one topic on one channel. True if the customer was not already."""
    with transaction.atomic():
        current = (
            Subscription.objects.select_for_update()
            .filter(customer_id=customer_id, topic_id=topic_id, channel=channel)
            .first()
        )
        if current is not None and current.status == Subscription.Status.UNSUBSCRIBED:
            return False
        topic_subscription_set(
            customer_id=customer_id,
            topic_id=topic_id,
            channel=channel,
            subscribed=False,
            source=source,
            evidence=evidence,
        )
    return True


def topic_subscription_set(
    *,
    customer_id: int,
    topic_id: int,
    channel: str,
    subscribed: bool,
    source: str,
    evidence: dict[str, Any],
) -> ConsentRecord:
    """Record the customer's choice for one topic on one channel, and its ledger row.

    The caller has decided it is a change (against the recorded choice, or the
    topic's default where there is none).
    """
    status = Subscription.Status.SUBSCRIBED if subscribed else Subscription.Status.UNSUBSCRIBED
    action = ConsentRecord.Action.OPT_IN if subscribed else ConsentRecord.Action.OPT_OUT
    with transaction.atomic():
        Subscription.objects.update_or_create(
            customer_id=customer_id,
            topic_id=topic_id,
            channel=channel,
            defaults={"status": status},
        )
        return _ledger(customer_id, topic_id, channel, action, source, evidence)
