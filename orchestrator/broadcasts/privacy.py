"""A person's part in broadcasts, for ``orchestrator.privacy``'s export and erasure: the
pending recipient rows naming them (frozen audiences hold no foreign key to the
customer). Their copies already in the outbox are messages, exported and erased with
the customer's other messages."""

from __future__ import annotations

from typing import Any

from django.db import connection

from orchestrator.audience.models import Customer
from orchestrator.broadcasts.models import Broadcast, Recipient
from orchestrator.core.jsonable import iso


def broadcasts_export(customer: Customer) -> list[dict[str, Any]]:
    """The broadcasts the customer is due to get a copy of, not yet in the outbox."""
    pending = list(
        Recipient.objects.filter(customer_id=customer.pk).order_by("send_at", "broadcast_id")
    )
    names = dict(
        Broadcast.objects.filter(pk__in={r.broadcast_id for r in pending}).values_list("pk", "name")
    )
    return [
        {
            "broadcast": names.get(r.broadcast_id, ""),
            "due_at": iso(r.send_at),
            "variant": r.variant or None,
        }
        for r in pending
        if r.broadcast_id in names
    ]


def broadcasts_erase(customer: Customer) -> dict[str, int]:
    """Delete the customer's pending recipient rows of every broadcast.

    Called before the erasure locks anything else: an expansion step that holds one of
    these rows finishes first (its copy is then a message the erasure cancels and
    deletes), and one that starts later skips the rows this transaction holds.
    """
    with connection.cursor() as cursor:
        # One primary-key probe per broadcast: (broadcast, customer).
        cursor.execute(
            "DELETE FROM broadcasts_recipient WHERE customer_id = %s"
            " AND broadcast_id IN (SELECT id FROM broadcasts_broadcast)",
            [customer.pk],
        )
        deleted = max(cursor.rowcount, 0)
    return {"broadcasts.Recipient": deleted} if deleted else {}
