"""Writes for suppressions: hard stops on an address, kept as a hash of it."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.consent.channel_consent import address_holders, number_evidence
from orchestrator.consent.models import ConsentRecord, Suppression, address_hash
from orchestrator.consent.senders import SENDER_KEYED, channel_from_number


def suppressions_add(entries: Iterable[tuple[str, str, str, str]]) -> int:
    """Suppress each ``(channel, address, reason, detail)``; an existing one is kept as is.

    Only the address's hash is stored. Returns how many were new. Call it inside the
    transaction that records why (a provider's refusal, a complaint), so both land or
    neither does.

    A carrier's STOP on a phone number (Twilio 21610: the number replied STOP to the
    sender we used) is the number's STOP to that sender, as if it had been texted:
    keyed on the channel's sender, and recorded in the ledger of every customer
    record holding the number.
    """
    senders = {channel: channel_from_number(channel) for channel in SENDER_KEYED}
    rows: dict[tuple[str, str, str], Suppression] = {}
    stops: dict[tuple[str, str, str], tuple[str, str]] = {}
    for channel, address, reason, detail in entries:
        if not address.strip():
            continue
        sender = senders[channel] if reason == "stop" and channel in SENDER_KEYED else ""
        key = (channel, address_hash(channel, address), sender)
        rows[key] = Suppression(
            channel=channel,
            address_hash=key[1],
            sender=sender,
            reason=reason,
            detail=detail[:500],
        )
        if reason == "stop" and channel in SENDER_KEYED:
            stops[key] = (address, detail)
    if not rows:
        return 0
    existing = set(
        Suppression.objects.filter(
            address_hash__in=[h for _c, h, _s in rows], channel__in={c for c, _h, _s in rows}
        ).values_list("channel", "address_hash", "sender")
    )
    new = rows.keys() - existing
    Suppression.objects.bulk_create([rows[key] for key in new], ignore_conflicts=True)
    _carrier_stops_ledger({key: stops[key] for key in new if key in stops})
    return len(new)


def _carrier_stops_ledger(stops: dict[tuple[str, str, str], tuple[str, str]]) -> None:
    records: list[ConsentRecord] = []
    for channel in {c for c, _h, _s in stops}:
        mine = {key: value for key, value in stops.items() if key[0] == channel}
        holders = address_holders(channel, [address for address, _detail in mine.values()])
        for (_c, _h, sender), (address, detail) in mine.items():
            evidence = {"provider_code": detail, **number_evidence(channel, address, sender)}
            records.extend(
                ConsentRecord(
                    customer_id=customer_id,
                    channel=channel,
                    action=ConsentRecord.Action.OPT_OUT,
                    source=ConsentRecord.Source.PROVIDER,
                    evidence=evidence,
                )
                for customer_id in holders.get(address, [])
            )
    ConsentRecord.objects.bulk_create(records)
