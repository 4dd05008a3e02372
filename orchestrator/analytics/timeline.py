"""One customer's history on one page: events, messages and their fates, consent, journeys.

``customer_timeline`` merges a few sources, newest first. Each source is read with one
query that is bounded by the customer and by ``limit`` (through an index leading with
the customer), so a customer with a million messages costs the same as one with ten,
and no query scans a whole table.

Each source is ``fn(customer, limit, before)`` returning entries older than ``before``
(all when None), newest first, at most ``limit``; the journeys' part is
``journeys.timeline``, the rest is read here.

Pagination: the next page is ``before=<the oldest entry's at>``. Entries at exactly
that instant on the far side of the cut are skipped; with microsecond timestamps that
is accepted. Status changes are looked for among the messages on the page's window
(the customer's latest ``limit`` messages created before ``before``), so a click today
on a message from months ago appears when paging reaches that message's window.
"""

from __future__ import annotations

import datetime as dt

from django.urls import reverse

from journeys.timeline import journeys_timeline
from orchestrator.audience.models import Customer
from orchestrator.consent.models import ConsentRecord
from orchestrator.core.timeline import Entry
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus

#: The status changes worth a line of their own; the rest (queued, sending...) is noise.
NOTABLE_STATUSES = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.OPENED,
        MessageStatus.CLICKED,
        MessageStatus.REPLIED,
        MessageStatus.BOUNCED,
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.SUPPRESSED,
        MessageStatus.DEFERRED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELED,
    }
)
#: Ties (one instant, e.g. a journey step that queues and sends) read in causal order:
#: an event enrolls, the journey queues a message, the message changes status.
_CAUSAL_ORDER = {"event": 0, "journey": 1, "message": 2, "status": 3, "consent": 4}
#: How many event properties to show; the event's own page has them all.
EVENT_PROPERTIES_SHOWN = 4


def customer_timeline(
    *, customer: Customer, limit: int = 100, before: dt.datetime | None = None
) -> list[Entry]:
    """The customer's latest ``limit`` entries older than ``before``, newest first."""
    entries: list[Entry] = []
    for source in (_events, _messages, _consent, journeys_timeline):
        entries.extend(source(customer, limit, before))
    entries.sort(key=lambda e: (e.at, _CAUSAL_ORDER.get(e.kind, 0)), reverse=True)
    return entries[:limit]


def _before(qs, field: str, before: dt.datetime | None):
    return qs.filter(**{f"{field}__lt": before}) if before is not None else qs


def _events(customer: Customer, limit: int, before: dt.datetime | None) -> list[Entry]:
    # event_customer_name_idx leads with customer; the customer FK index serves too.
    events = _before(customer.events.all(), "occurred_at", before).order_by("-occurred_at")
    return [
        Entry(
            at=e.occurred_at,
            kind="event",
            title=e.name,
            detail=", ".join(
                f"{k}: {v}" for k, v in list((e.properties or {}).items())[:EVENT_PROPERTIES_SHOWN]
            ),
            url=reverse("admin:audience_event_change", args=[e.pk]),
        )
        for e in events.only("id", "name", "properties", "occurred_at")[:limit]
    ]


def latest_reason(message: Message) -> str:
    """The newest decision on the message's trail, as the prose it was written in."""
    for entry in reversed(message.explanation or []):
        if entry.get("reason"):
            return str(entry["reason"])
    return ""


def _messages(customer: Customer, limit: int, before: dt.datetime | None) -> list[Entry]:
    # message_customer_idx: (customer, -created_at).
    messages = list(
        _before(Message.objects.filter(customer=customer), "created_at", before)
        .select_related("template", "topic")
        .only(
            "id",
            "created_at",
            "status",
            "channel",
            "journey",
            "explanation",
            "template__key",
            "topic__key",
        )
        .order_by("-created_at")[:limit]
    )
    by_id = {m.pk: m for m in messages}
    entries = []
    for m in messages:
        parts = [f"now {m.get_status_display().lower()}", m.channel, m.template.key, m.topic.key]
        if m.journey:
            parts.append(f"journey {m.journey}")
        reason = latest_reason(m)
        entries.append(
            Entry(
                at=m.created_at,
                kind="message",
                title=f"Message #{m.pk} created",
                detail=" · ".join(parts) + (f" - {reason}" if reason else ""),
                url=reverse("admin:delivery_message_change", args=[m.pk]),
            )
        )
    if not by_id:
        return entries
    # msgevent_message_idx: (message, occurred_at), for just these messages.
    history = _before(
        MessageEvent.objects.filter(message_id__in=by_id, status__in=NOTABLE_STATUSES),
        "occurred_at",
        before,
    ).order_by("-occurred_at", "-id")[:limit]
    for h in history.only("id", "message_id", "status", "occurred_at", "reason", "code"):
        m = by_id[h.message_id]
        why = h.reason or h.code
        entries.append(
            Entry(
                at=h.occurred_at,
                kind="status",
                title=f"Message #{m.pk} {h.get_status_display().lower()}",
                detail=f"{m.channel} · {m.template.key}" + (f" - {why}" if why else ""),
                url=reverse("admin:delivery_message_change", args=[m.pk]),
            )
        )
    return entries


def _consent(customer: Customer, limit: int, before: dt.datetime | None) -> list[Entry]:
    # consent_customer_idx: (customer, -created_at).
    records = _before(
        ConsentRecord.objects.filter(customer=customer), "created_at", before
    ).select_related("topic")
    entries = []
    for r in records.order_by("-created_at", "-id")[:limit]:
        topic = r.topic.key if r.topic else "all marketing"
        entries.append(
            Entry(
                at=r.created_at,
                kind="consent",
                title=f"{r.get_action_display()}: {topic}",
                detail=f"channel {r.channel or 'all'} · via {r.get_source_display()}",
            )
        )
    return entries
