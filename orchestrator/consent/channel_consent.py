"""Consent writes, each with its ledger row: a channel-wide STOP or START, a topic choice.

Each change that alters the current state writes one ``ConsentRecord`` (the
evidence) with it, in one transaction; a repeat that changes nothing writes
nothing (False or None), so a caller confirms only real changes.

A STOP or START texted from a phone number is about the number and our sender,
not one customer record: ``number_opt_out`` and ``number_opt_in`` keep it as a
sender-keyed ``Suppression`` and write a ledger row for every record holding the
number.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Q

from orchestrator.audience.models import ADDRESS_FIELDS, Customer
from orchestrator.consent.models import (
    ChannelOptOut,
    ConsentRecord,
    Subscription,
    Suppression,
    address_hash,
)
from orchestrator.consent.senders import channel_from_number, sender_applies
from orchestrator.core.logging import mask


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


# --- STOP and START from a phone number ----------------------------------------------


def address_holders(channel: str, addresses: Iterable[str]) -> dict[str, list[int]]:
    """The ids of the customer records holding each address on ``channel``, in id order.

    On WhatsApp a record without a WhatsApp number of its own holds its phone number,
    as inbound messages are matched.
    """
    wanted = sorted({a for a in addresses if a.strip()})
    field = ADDRESS_FIELDS.get(channel)
    if not wanted or field is None:
        return {}
    match = Q(**{f"{field}__in": wanted})
    if channel == "whatsapp":
        match |= Q(whatsapp="", phone__in=wanted)
    holders: dict[str, list[int]] = {}
    rows = Customer.objects.filter(match).order_by("id").values_list("id", field, "phone")
    for customer_id, own, phone in rows:
        address = own if own in wanted else phone
        holders.setdefault(address, []).append(customer_id)
    return holders


def number_evidence(channel: str, address: str, sender: str) -> dict[str, Any]:
    """What a ledger row says about the number and our sender: never the number itself."""
    return {
        "address": mask(address),
        "address_hash": address_hash(channel, address),
        "sender": sender,
    }


def _number_ledger(
    holders: list[int],
    *,
    channel: str,
    address: str,
    sender: str,
    action: str,
    source: str,
    evidence: dict[str, Any],
) -> None:
    """The same ledger row, naming the number and our sender, for every record holding it."""
    evidence = {**evidence, **number_evidence(channel, address, sender)}
    ConsentRecord.objects.bulk_create(
        ConsentRecord(
            customer_id=customer_id,
            topic=None,
            channel=channel,
            action=action,
            source=source,
            evidence=evidence,
        )
        for customer_id in holders
    )


def number_opt_out(
    *, channel: str, address: str, sender: str, source: str, evidence: dict[str, Any], detail: str
) -> Suppression | None:
    """STOP from ``address`` to our ``sender``: nothing more from that sender to it.

    Every send from ``sender`` to the number is refused from now on, transactional
    included and whichever customer record (also one created later) holds it, until
    ``number_opt_in``; the ledger of every record holding it records the STOP. Returns
    the new ``Suppression`` (the caller lets its one confirmation through with
    ``stop_confirmation_allow``), or None if the number had already stopped that sender.

    When ``sender`` is the one the channel sends from, the records holding the number
    are also opted out of marketing on the channel (``ChannelOptOut``), so that their
    preference page says so; a STOP to another of our numbers leaves them alone, as it
    leaves sends from this one.
    """
    with transaction.atomic():
        row, created = Suppression.objects.get_or_create(
            channel=channel,
            address_hash=address_hash(channel, address),
            sender=sender,
            defaults={"reason": Suppression.Reason.STOP, "detail": detail[:500]},
        )
        if not created:
            return None
        holders = address_holders(channel, [address]).get(address, [])
        if sender_applies(sender, channel_from_number(channel)):
            ChannelOptOut.objects.bulk_create(
                [ChannelOptOut(customer_id=c, channel=channel, source=source) for c in holders],
                ignore_conflicts=True,
            )
        _number_ledger(
            holders,
            channel=channel,
            address=address,
            sender=sender,
            action=ConsentRecord.Action.OPT_OUT,
            source=source,
            evidence=evidence,
        )
    return row


def stop_confirmation_allow(*, suppression_id: int, message_id: int) -> None:
    """Let ``message_id`` (the STOP's confirmation) through the STOP it confirms."""
    Suppression.objects.filter(id=suppression_id).update(allows_message_id=message_id)


def number_opt_in(
    *, channel: str, address: str, sender: str, source: str, evidence: dict[str, Any]
) -> bool:
    """START from ``address`` to our ``sender``: undo its STOP. True if anything changed.

    It lifts the number's STOP to that sender (and one whose sender is not known, as a
    carrier's 21610 recorded without one), never a bounce, complaint or erasure; and
    the channel-wide opt-outs a STOP by text left on the records holding the number (a
    choice made in the preference center stays). Every record holding the number gets
    the ledger row.
    """
    with transaction.atomic():
        lifted, _ = Suppression.objects.filter(
            channel=channel,
            address_hash=address_hash(channel, address),
            reason=Suppression.Reason.STOP,
            sender__in={sender, ""},
        ).delete()
        holders = address_holders(channel, [address]).get(address, [])
        removed, _ = ChannelOptOut.objects.filter(
            customer_id__in=holders, channel=channel, source=ConsentRecord.Source.INBOUND_KEYWORD
        ).delete()
        if not (lifted or removed):
            return False
        _number_ledger(
            holders,
            channel=channel,
            address=address,
            sender=sender,
            action=ConsentRecord.Action.OPT_IN,
            source=source,
            evidence=evidence,
        )
    return True
