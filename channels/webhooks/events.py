"""The one vocabulary every provider's webhook is parsed into.

A provider module (``channels.webhooks.providers.<name>``) turns a request into
``RawEvent`` rows to store, and a stored row into one of ``StatusChange``,
``Inbound`` or ``ContactChange``; ``channels.webhooks.processing`` reads only these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpResponse


class BadPayload(ValueError):
    """A genuine request whose body is not what the provider sends (answered 400)."""


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One provider event as received, to be stored once per ``(provider, event_id)``."""

    kind: str  # a ``WebhookEvent.Kind``
    event_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Received:
    """What a verified request holds, and how to answer it once stored."""

    events: list[RawEvent]
    #: The response, given how many of ``events`` were new.
    answer: Callable[[int], HttpResponse]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A stored event as a provider module parses it (the ``WebhookEvent`` fields)."""

    kind: str
    event_id: str
    payload: dict[str, Any]
    received_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StatusChange:
    """The provider's report on a message we sent."""

    #: Our message id, as the provider echoes it back; None when it names none.
    message_id: int | None
    #: The ``MessageStatus`` it reports; None: kept in the history only.
    status: str | None
    provider_message_id: str
    occurred_at: dt.datetime
    code: str
    reason: str
    #: A ``Suppression.Reason`` when the report says the address itself is unusable.
    suppress: str = ""
    #: The recipient unsubscribed at the provider: a channel opt-out.
    opt_out: bool = False
    #: A chat message failed because the 24-hour customer-care window had closed.
    window_closed: bool = False


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message a person sent us."""

    provider: str
    channel: str
    provider_message_id: str
    from_address: str
    to_address: str
    body: str
    received_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ContactChange:
    """A person followed (``following``) or unfollowed/blocked our account on a channel."""

    channel: str
    address: str
    following: bool
    #: The provider's name for it ("follow", "unfollow") and its event id, as evidence.
    event: str
    event_id: str
    evidence: dict[str, Any] = field(default_factory=dict)


Event = StatusChange | Inbound | ContactChange


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
