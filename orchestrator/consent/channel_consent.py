"""Channel-wide consent changes: a customer's STOP or START on one channel.

Each change that alters the current state writes one ``ConsentRecord`` (the
evidence) with it, in one transaction; a repeat that changes nothing writes
nothing and returns False, so a caller confirms only real changes.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from orchestrator.consent.models import ChannelOptOut, ConsentRecord, Suppression, address_hash


def _ledger(
    customer_id: int,
    topic_id: int | None,
    channel: str,
    action: str,
    source: str,
    evidence: dict[str, Any],
) -> None:
    ConsentRecord.objects.create(
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
    with transaction.atomic():
        _row, created = ChannelOptOut.objects.get_or_create(
            customer_id=customer_id, channel=channel, defaults={"source": source}
        )
        if created:
            _ledger(customer_id, None, channel, ConsentRecord.Action.OPT_OUT, source, evidence)
    return created


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
    from orchestrator.consent.models import Subscription

    with transaction.atomic():
        current = (
            Subscription.objects.select_for_update()
            .filter(customer_id=customer_id, topic_id=topic_id, channel=channel)
            .first()
        )
        if current is not None and current.status == Subscription.Status.UNSUBSCRIBED:
            return False
        Subscription.objects.update_or_create(
            customer_id=customer_id,
            topic_id=topic_id,
            channel=channel,
            defaults={"status": Subscription.Status.UNSUBSCRIBED},
        )
        _ledger(customer_id, topic_id, channel, ConsentRecord.Action.OPT_OUT, source, evidence)
    return True
