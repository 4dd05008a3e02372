"""Which of our senders a channel sends from, as a STOP is keyed on it.

A STOP (and Twilio's 21610) is about one phone number and one of our senders: our
number, or a messaging service. Each chat channel has one Twilio adapter with one
sender (``from_number`` or ``messaging_service_sid`` in its ``CHANNEL_ADAPTERS``
options), so today a channel has one sender; the key is kept so that a second
number on a channel is not blocked by a STOP sent to the first.
"""

from __future__ import annotations

from django.conf import settings

#: Channels where a person's STOP stops one of our senders (carrier rules, Twilio 21610).
SENDER_KEYED = frozenset({"sms", "whatsapp"})


def sender_address(address: str) -> str:
    """Our number as a STOP is keyed on it: plain E.164, without WhatsApp's prefix."""
    return address.strip().removeprefix("whatsapp:")


def channel_from_number(channel: str) -> str:
    """The number the channel's adapter sends from; empty when it names none."""
    options = (settings.CHANNEL_ADAPTERS.get(channel) or {}).get("OPTIONS") or {}
    return sender_address(str(options.get("from_number") or ""))


def sender_applies(row_sender: str, from_number: str) -> bool:
    """Whether a STOP to ``row_sender`` holds for sends from ``from_number``.

    A STOP whose sender is not known holds for every sender. So does every STOP when
    the channel sends through a messaging service (or an adapter naming no number):
    which of its numbers a STOP went to cannot be told apart from it, so none is
    assumed to be another sender.
    """
    return not row_sender or not from_number or row_sender == from_number
