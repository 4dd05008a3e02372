"""The dev inbox's part of an erasure: its copies of what was "sent" hold addresses
and rendered content, so they go with the person (called by ``orchestrator.privacy``)."""

from __future__ import annotations

from django.db.models import Q

from channels.devinbox.models import InboxMessage
from orchestrator.audience.models import Customer
from orchestrator.audience.selectors import customer_addresses


def devinbox_erase(customer: Customer) -> None:
    addresses = customer_addresses(customer)
    if not addresses:
        return
    q = Q()
    for channel, address in addresses:
        q |= Q(channel=channel, to_address__iexact=address)
    InboxMessage.objects.filter(q).delete()
