"""Consent decisions for many sends at once: a handful of queries, whatever the batch size.

The rules, in the order they are applied:

1. no address on the channel -> not sent;
2. a hard ``Suppression`` of the address (bounce, complaint, erasure) blocks every
   send, transactional included; a STOP from the number to one of our senders
   blocks every send from that sender (see ``senders``) but its one confirmation,
   whichever customer record holds the number;
3. a channel the topic does not allow is refused;
4. a transactional topic ignores marketing opt-outs;
5. a ``ChannelOptOut`` (a choice in the preference center, a STOP on LINE)
   refuses every marketing topic on that channel;
6. a marketing topic needs consent: the customer's ``Subscription`` for
   (topic, channel) if there is one, else the topic's ``default_opt_in``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from orchestrator.consent.models import Subscription, Suppression, Topic, address_hash
from orchestrator.consent.senders import channel_from_number, sender_applies

# Reason codes, stable for admin filters and reports.
NO_ADDRESS = "no_address"
SUPPRESSED = "suppressed"
CHANNEL_NOT_ALLOWED = "channel_not_allowed"
UNSUBSCRIBED = "unsubscribed"
CHANNEL_OPTED_OUT = "channel_opted_out"
NO_OPT_IN = "no_opt_in"
TRANSACTIONAL = "transactional"
SUBSCRIBED = "subscribed"
DEFAULT_OPT_IN = "default_opt_in"


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    customer_id: int
    topic_id: int
    channel: str
    address: str
    #: The outbox message asking; the confirmation of a STOP is let through by its id.
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    allowed: bool
    code: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def consent_decisions(
    requests: Sequence[ConsentRequest], *, topics: Mapping[int, Topic] | None = None
) -> list[ConsentDecision]:
    """One decision per request, in order. Three queries at most (topics, suppressions, subs).

    The sender of each channel is the one its adapter is configured with
    (``settings.CHANNEL_ADAPTERS``), read once per call.
    """
    if not requests:
        return []
    if topics is None:
        topics = Topic.objects.in_bulk({r.topic_id for r in requests})
    # Hashed once per request; a suppression is matched on (channel, hash of the address).
    hashes = [address_hash(r.channel, r.address) if r.address.strip() else "" for r in requests]
    # "= ANY(array)": one parameter per list, where IN (...) would be a placeholder
    # per element that the driver quotes one by one.
    suppressed: dict[tuple[str, str], list[tuple[str, str, int | None]]] = defaultdict(list)
    marketing = [r for r in requests if not topics[r.topic_id].is_transactional]
    subscriptions: dict[tuple[int, int | None, str], str] = {}
    with connection.cursor() as cursor:
        if any(hashes):
            cursor.execute(
                "SELECT channel, address_hash, reason, sender, allows_message_id"
                " FROM consent_suppression WHERE address_hash = ANY(%s)"
                # Rows for every sender first: their reason (a bounce, an erasure) wins.
                " ORDER BY sender = '' DESC, id",
                [sorted(set(hashes) - {""})],
            )
            for c, h, reason, sender, allows in cursor.fetchall():
                suppressed[(c, h)].append((reason, sender, allows))
        if marketing:
            # A channel-wide opt-out comes back as a row with no topic.
            cursor.execute(
                "SELECT customer_id, topic_id, channel, status FROM consent_subscription"
                " WHERE customer_id = ANY(%s) AND topic_id = ANY(%s)"
                " UNION ALL"
                " SELECT customer_id, NULL, channel, 'opted_out' FROM consent_channeloptout"
                " WHERE customer_id = ANY(%s)",
                [
                    sorted({r.customer_id for r in marketing}),
                    sorted({r.topic_id for r in marketing}),
                    sorted({r.customer_id for r in marketing}),
                ],
            )
            subscriptions = {(c, t, ch): status for c, t, ch, status in cursor.fetchall()}
    senders = {channel: channel_from_number(channel) for channel in {r.channel for r in requests}}
    return [
        _decide(r, h, topics[r.topic_id], suppressed, subscriptions, senders[r.channel])
        for r, h in zip(requests, hashes, strict=True)
    ]


def _suppression(
    request: ConsentRequest,
    rows: Sequence[tuple[str, str, int | None]],
    from_number: str,
) -> ConsentDecision | None:
    """The first of the address's suppressions that holds for this send, as a decision."""
    channel = request.channel
    for reason, sender, allows in rows:
        if not sender_applies(sender, from_number):
            continue  # a STOP to another of our senders
        if allows is not None and allows == request.message_id:
            continue  # the one confirmation of this STOP
        details: dict[str, Any] = {"suppression": reason}
        if sender:
            details["sender"] = sender
            return ConsentDecision(
                False,
                SUPPRESSED,
                f"the {channel} number replied STOP to {sender}: nothing from that sender "
                "until it replies START",
                details,
            )
        label = Suppression.Reason(reason).label if reason in Suppression.Reason.values else reason
        return ConsentDecision(
            False,
            SUPPRESSED,
            f"the {channel} address is suppressed ({label}); no send of any kind",
            details,
        )
    return None


def _decide(
    request: ConsentRequest,
    hashed_address: str,
    topic: Topic,
    suppressed: Mapping[tuple[str, str], list[tuple[str, str, int | None]]],
    subscriptions: Mapping[tuple[int, int | None, str], str],
    from_number: str,
) -> ConsentDecision:
    channel = request.channel
    if not request.address.strip():
        return ConsentDecision(False, NO_ADDRESS, f"the customer has no {channel} address")
    rows = suppressed.get((channel, hashed_address))
    if rows:
        refused = _suppression(request, rows, from_number)
        if refused is not None:
            return refused
    if channel not in topic.channels:
        return ConsentDecision(
            False,
            CHANNEL_NOT_ALLOWED,
            f"topic {topic.key!r} does not allow {channel}",
            {"allowed_channels": list(topic.channels)},
        )
    if topic.is_transactional:
        reason = f"transactional topic {topic.key!r}: marketing opt-outs do not apply"
        return ConsentDecision(True, TRANSACTIONAL, reason)
    if (request.customer_id, None, channel) in subscriptions:
        return ConsentDecision(False, CHANNEL_OPTED_OUT, f"opted out of all marketing on {channel}")
    status = subscriptions.get((request.customer_id, request.topic_id, channel))
    if status == Subscription.Status.UNSUBSCRIBED:
        return ConsentDecision(False, UNSUBSCRIBED, f"unsubscribed from {topic.key!r} on {channel}")
    if status == Subscription.Status.SUBSCRIBED:
        return ConsentDecision(True, SUBSCRIBED, f"subscribed to {topic.key!r} on {channel}")
    if topic.default_opt_in:
        return ConsentDecision(
            True,
            DEFAULT_OPT_IN,
            f"no choice recorded; topic {topic.key!r} is opt-out (subscribed by default)",
        )
    return ConsentDecision(
        False,
        NO_OPT_IN,
        f"no opt-in recorded for {topic.key!r} on {channel}, and the topic needs one",
    )
