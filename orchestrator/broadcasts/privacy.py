"""A person's part in broadcasts, for ``orchestrator.privacy``'s erasure: the pending
recipient rows naming them (frozen audiences hold no foreign key to the customer).
Their copies already in the outbox are messages, erased with the customer."""

from __future__ import annotations

from django.db import connection

from orchestrator.audience.models import Customer


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
