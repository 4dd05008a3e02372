"""Reads about customers that other apps share."""

from __future__ import annotations

from orchestrator.audience.models import ADDRESS_FIELDS, Customer


def customer_addresses(customer: Customer) -> set[tuple[str, str]]:
    """Every (channel, address) we hold for the customer: the current ones, and those
    their messages went to (an address changed since is still one they had).

    The messages are read through the customer's ``messages`` relation, so the export,
    the erasure and the channels' parts of them agree on one set of addresses.
    """
    held = {(channel, customer.address_for(channel)) for channel in ADDRESS_FIELDS}
    held |= set(
        customer.messages.exclude(to_address="").values_list("channel", "to_address").distinct()
    )
    return {(channel, address.strip()) for channel, address in held if address.strip()}
