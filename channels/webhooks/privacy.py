"""The webhooks' part of a customer's export and erasure (called by ``orchestrator.privacy``).

What providers told us about a person: the messages they sent us (``InboundMessage``)
and the raw webhook payloads, which carry their address (Twilio ``From``/``To``,
SendGrid ``email``, LINE ``userId``) and our message ids.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from channels.webhooks.models import WebhookEvent
from orchestrator.audience.models import Customer
from orchestrator.audience.selectors import customer_addresses
from orchestrator.core.jsonable import iso
from orchestrator.delivery.models import InboundMessage

#: What a scrubbed payload becomes.
ERASED_PAYLOAD = {"erased": True}


def _inbound(customer: Customer) -> Q:
    """Theirs: linked to them, or from one of their addresses before we knew it was them."""
    q = Q(customer=customer)
    for channel, address in customer_addresses(customer):
        if channel != "email":
            q |= Q(channel=channel, from_address=address)
    return q


def _webhook_event_ids(customer: Customer) -> list[int]:
    """Events whose payload names one of the customer's messages, or holds one of their
    addresses as a whole string value at any depth (exact match, so another person's
    longer number that merely contains theirs is not caught)."""
    values: set[str] = set()
    for channel, address in customer_addresses(customer):
        values.add(address.lower())
        if channel in ("sms", "whatsapp"):
            values.add(f"whatsapp:{address}".lower())
    message_ids = [str(i) for i in customer.messages.values_list("id", flat=True)]
    if not values and not message_ids:
        return []
    with connection.cursor() as cursor:
        # A scan of the webhook table: an erasure is rare, and a payload has no index
        # by address (adding one would keep the addresses we mean to forget).
        cursor.execute(
            """
            SELECT w.id FROM webhooks_webhookevent w
            WHERE w.payload ->> 'message_ref' = ANY(%s)
               OR w.payload ->> 'message_id' = ANY(%s)
               OR EXISTS (
                   SELECT 1 FROM jsonb_path_query(w.payload, 'lax $.**') AS v
                   WHERE jsonb_typeof(v) = 'string' AND lower(v #>> '{}') = ANY(%s)
               )
            ORDER BY w.id
            """,
            [message_ids, message_ids, sorted(values)],
        )
        return [row[0] for row in cursor.fetchall()]


def webhooks_export(customer: Customer) -> dict[str, Any]:
    inbound = InboundMessage.objects.filter(_inbound(customer)).order_by("received_at", "id")
    events = WebhookEvent.objects.filter(id__in=_webhook_event_ids(customer)).order_by("id")
    return {
        "inbound_messages": [
            {
                "provider": m.provider,
                "channel": m.channel,
                "provider_message_id": m.provider_message_id,
                "from_address": m.from_address,
                "to_address": m.to_address,
                "body": m.body,
                "keyword": m.keyword,
                "outcome": m.outcome,
                "in_reply_to": m.in_reply_to_id,
                "received_at": iso(m.received_at),
            }
            for m in inbound
        ],
        "webhook_events": [
            {
                "provider": e.provider,
                "kind": e.kind,
                "event_id": e.event_id,
                "payload": e.payload,
                "received_at": iso(e.received_at),
                "processed_at": iso(e.processed_at),
            }
            for e in events
        ],
    }


def webhooks_lock(customer: Customer) -> None:
    """Lock the webhook events naming them, in id order, before erasure locks their
    messages: webhook processing locks events first and then their messages, so taking
    them in the same order means the two wait for each other instead of deadlocking."""
    list(
        WebhookEvent.objects.select_for_update()
        .filter(id__in=_webhook_event_ids(customer))
        .order_by("id")
        .values_list("id", flat=True)
    )


def webhooks_erase(customer: Customer) -> dict[str, int]:
    """Delete their inbound messages; scrub (not delete) the webhook events naming them.

    The event row stays, payload replaced and marked processed: its unique (provider,
    event id) is what makes a provider's retry or a replay a no-op, and a deleted row
    would let a replayed inbound message re-create the address we are forgetting.
    """
    deleted, _ = InboundMessage.objects.filter(_inbound(customer)).delete()
    scrubbed = WebhookEvent.objects.filter(id__in=_webhook_event_ids(customer)).update(
        payload=ERASED_PAYLOAD,
        error="",
        processed_at=Coalesce(F("processed_at"), Value(timezone.now())),
    )
    counts = {"webhooks.InboundMessage": deleted, "webhooks.WebhookEvent scrubbed": scrubbed}
    return {what: n for what, n in counts.items() if n}
