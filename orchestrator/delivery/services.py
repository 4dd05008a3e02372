"""Creating messages (the outbox) and waking the dispatcher once they are committed."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.consent.models import CHANNELS, Topic
from orchestrator.core.tasking import publish_on_commit
from orchestrator.delivery import routing
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus, MessageTemplate
from orchestrator.delivery.trail import explain

logger = logging.getLogger(__name__)


class SendRefused(ValueError):
    """The send cannot be queued as asked; ``field`` names the offending input."""

    def __init__(self, message: str, *, field: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


def _route(
    *, customer: Customer, topic: Topic, template_channels: set[str], requested: str
) -> tuple[str, str]:
    """(channel, how it was chosen) by the routing rule, or raise SendRefused."""
    if requested != routing.PREFERRED and requested not in CHANNELS:
        raise SendRefused(f"Unknown channel {requested!r}.", field="channel")
    # Only "preferred" reads the customer's order (a query unless it was loaded).
    order, own = (
        routing.customer_channel_order(customer) if requested == routing.PREFERRED else ([], False)
    )
    route = routing.resolve_channel(
        requested,
        order=order,
        own_order=own,
        topic_channels=topic.channels,
        template_channels=template_channels,
        address_for=customer.address_for,
    )
    if route is None:
        raise SendRefused(
            "No channel the customer can be reached on is allowed for this topic and template.",
            field="channel",
            code="no_reachable_channel",
        )
    return route


def message_create(
    *,
    customer: Customer,
    template: MessageTemplate,
    topic: Topic | None = None,
    channel: str = "preferred",
    data: dict[str, Any] | None = None,
    send_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    priority: int = 5,
    idempotency_key: str | None = None,
    source: str = Message.Source.API,
    fallback_channel: str = "",
    journey: str = "",
    enrollment_id: int | None = None,
) -> Message:
    """Queue one message in the caller's transaction; the dispatcher is woken on commit.

    Consent, suppression and rendering are decided by the dispatcher at send time,
    so a message queued for later honours whatever the customer says until then.
    """
    message = message_build(
        customer=customer,
        template=template,
        topic=topic,
        channel=channel,
        data=data,
        send_at=send_at,
        expires_at=expires_at,
        priority=priority,
        idempotency_key=idempotency_key,
        source=source,
        fallback_channel=fallback_channel,
        journey=journey,
        enrollment_id=enrollment_id,
    )
    messages_queue([message])
    return message


def message_build(
    *,
    customer: Customer,
    template: MessageTemplate,
    topic: Topic | None = None,
    channel: str = "preferred",
    data: dict[str, Any] | None = None,
    send_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    priority: int = 5,
    idempotency_key: str | None = None,
    source: str = Message.Source.API,
    fallback_channel: str = "",
    journey: str = "",
    enrollment_id: int | None = None,
    journey_step: str = "",
    variants: list[tuple[str, str]] | None = None,
) -> Message:
    """Validate and build one message, unsaved; ``messages_queue`` writes a batch of them.

    ``variants`` ((channel, locale) pairs of the template) saves a query per message
    when the caller builds many from one template. Raises SendRefused.
    """
    topic = topic or template.topic
    if topic is None:
        raise SendRefused("A topic is required (the template has no default).", field="topic")
    if not 0 <= priority <= 9:
        raise SendRefused("Priority must be between 0 and 9.", field="priority")
    if variants is None:
        variants = list(template.variants.values_list("channel", "locale"))
    template_channels = {c for c, _ in variants}
    resolved, how = _route(
        customer=customer, topic=topic, template_channels=template_channels, requested=channel
    )
    if resolved not in template_channels:
        raise SendRefused(f"Template {template.key!r} has no {resolved} variant.", field="template")
    if fallback_channel:
        if fallback_channel not in CHANNELS:
            raise SendRefused(f"Unknown channel {fallback_channel!r}.", field="fallback_channel")
        if fallback_channel == resolved and channel != "preferred":
            raise SendRefused(
                "The fallback must differ from the channel.", field="fallback_channel"
            )
        if fallback_channel not in template_channels:
            raise SendRefused(
                f"Template {template.key!r} has no {fallback_channel} variant for the fallback.",
                field="fallback_channel",
            )
    locale = routing.pick_locale(customer.locale, {loc for c, loc in variants if c == resolved})
    now = timezone.now()
    send_after = max(send_at, now) if send_at else now
    if expires_at is not None and expires_at <= send_after:
        raise SendRefused("expires_at must be after the send time.", field="expires_at")
    status = MessageStatus.SCHEDULED if send_after > now else MessageStatus.QUEUED
    trail = [
        explain(
            "created",
            status,
            f"Queued by {source} for topic {topic.key!r}; channel {how}.",
            topic=topic.key,
            topic_kind=topic.kind,
            template=template.key,
            send_after=send_after.isoformat(),
        )
    ]
    return Message(
        customer=customer,
        topic=topic,
        template=template,
        channel=resolved,
        requested_channel=channel,
        to_address=customer.address_for(resolved),
        locale=locale or "",
        status=status,
        priority=priority,
        send_after=send_after,
        expires_at=expires_at,
        data=data or {},
        idempotency_key=idempotency_key,
        source=source,
        fallback_channel=fallback_channel,
        journey=journey,
        enrollment_id=enrollment_id,
        journey_step=journey_step,
        explanation=trail,
    )


def messages_queue(messages: list[Message]) -> list[Message]:
    """Insert built messages and their first history rows, two statements for the batch."""
    if not messages:
        return messages
    Message.objects.bulk_create(messages)
    now = timezone.now()
    MessageEvent.objects.bulk_create(
        MessageEvent(message=m, status=m.status, occurred_at=now, reason=m.explanation[0]["reason"])
        for m in messages
    )
    if any(m.status == MessageStatus.QUEUED for m in messages):
        kick_dispatcher()
    return messages


def kick_dispatcher() -> None:
    """Ask a worker to dispatch now, once the current transaction commits (once per
    transaction). The outbox row, not the task, is the truth: beat's periodic dispatch
    finds the message if the broker is down."""
    publish_on_commit("delivery.dispatch")


def messages_cancel(*, message_ids: list[int], reason: str) -> list[int]:
    """Cancel the given messages that are still waiting; returns the ids canceled.

    A message already claimed by a dispatcher (``sending``) or finished is left alone:
    cancel only stops what has not started.
    """
    import json

    from django.db.models.expressions import RawSQL

    from orchestrator.delivery.models import WAITING_STATUSES

    now = timezone.now()
    entry = explain("canceled", MessageStatus.CANCELED, reason)
    with transaction.atomic():
        ids = list(
            Message.objects.select_for_update()
            .filter(id__in=message_ids, status__in=WAITING_STATUSES)
            .values_list("id", flat=True)
        )
        if not ids:
            return []
        Message.objects.filter(id__in=ids).update(
            status=MessageStatus.CANCELED,
            updated_at=now,
            explanation=RawSQL("explanation || jsonb_build_array(%s::jsonb)", [json.dumps(entry)]),
        )
        MessageEvent.objects.bulk_create(
            MessageEvent(
                message_id=i,
                status=MessageStatus.CANCELED,
                occurred_at=now,
                reason=reason,
                code="canceled",
            )
            for i in ids
        )
    return ids
