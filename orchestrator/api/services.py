"""What the API endpoints do, beyond checking JSON types: resolve references, call the core.

The views stay thin: they check a request's shape with a serializer and call one
function here, which speaks in the API's error vocabulary (ApiError with field names
as the client sent them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from orchestrator.api.errors import ApiError, flatten_errors
from orchestrator.api.serializers import CustomerInSerializer
from orchestrator.audience.models import Customer
from orchestrator.audience.services import EventInput, EventsRecorded, customer_upsert
from orchestrator.audience.services import events_record as audience_events_record
from orchestrator.consent.models import Topic
from orchestrator.delivery.models import Message, MessageTemplate
from orchestrator.delivery.services import SendRefused, SendUnrenderable, message_create


def recipient_resolve(to: Mapping[str, str]) -> Customer:
    """The one customer ``to`` names (by external_id, email or E.164 phone), else ApiError."""
    if "external_id" in to:
        matches = list(Customer.objects.filter(external_id=to["external_id"]))
        named = f"external_id {to['external_id']!r}"
    elif "email" in to:
        email = to["email"]
        # Exact or all-lowercase, so the lookup stays on the email index.
        matches = list(Customer.objects.filter(email__in={email, email.lower()})[:2])
        named = "this email address"
    else:
        matches = list(Customer.objects.filter(phone=to["phone"])[:2])
        named = "this phone number"
    if not matches:
        raise ApiError(
            code="unknown_customer",
            message=f"No customer has {named}.",
            fields={"to": [f"No customer has {named}."]},
        )
    if len(matches) > 1:
        raise ApiError(
            code="ambiguous_customer",
            message=f"Several customers have {named}; send to an external_id instead.",
            fields={"to": [f"Several customers have {named}."]},
        )
    return matches[0]


def message_send(
    *,
    to: Mapping[str, str],
    template: str,
    topic: str | None = None,
    channel: str = "preferred",
    data: dict[str, Any] | None = None,
    send_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    priority: int = 5,
    fallback_channel: str = "",
) -> Message:
    """Queue one API-triggered message; unknown references and refusals raise ApiError 400,
    a template that cannot render with ``data`` ApiError 422 naming the missing variables."""
    customer = recipient_resolve(to)
    template_row = MessageTemplate.objects.filter(key=template).first()
    topic_row = Topic.objects.filter(key=topic).first() if topic is not None else None
    unknown: dict[str, list[str]] = {}
    if template_row is None:
        unknown["template"] = [f"Unknown template {template!r}."]
    if topic is not None and topic_row is None:
        unknown["topic"] = [f"Unknown topic {topic!r}."]
    if unknown:
        code = "unknown_template" if "template" in unknown else "unknown_topic"
        raise ApiError(code=code, message=" ".join(m[0] for m in unknown.values()), fields=unknown)
    try:
        return message_create(
            customer=customer,
            template=template_row,
            topic=topic_row,
            channel=channel,
            data=data or {},
            send_at=send_at,
            expires_at=expires_at,
            priority=priority,
            source=Message.Source.API,
            fallback_channel=fallback_channel,
            check_render=True,
        )
    except SendUnrenderable as exc:
        fields = {
            name: [f"Undefined; the template needs it ({', '.join(variants)})."]
            for name, variants in exc.missing.items()
        }
        if exc.problems:
            fields["template"] = [f"{v}: {p}" for v, p in exc.problems.items()]
        raise ApiError(code=exc.code, message=str(exc), status_code=422, fields=fields) from None
    except SendRefused as exc:
        raise ApiError(code=exc.code, message=str(exc), fields={exc.field: [str(exc)]}) from None


def customers_bulk_upsert(items: list[Any]) -> dict[str, Any]:
    """Upsert each item on its own: one bad item is reported and does not sink the others.

    Without an Idempotency-Key each upsert commits on its own, so a batch never holds a
    thousand row locks; with one, the batch commits together with its stored response
    (each item in its own savepoint, so a failed item still leaves the others).
    """
    results: list[dict[str, Any]] = []
    counts = {"created": 0, "updated": 0, "invalid": 0}
    for index, item in enumerate(items):
        external_id = item.get("external_id") if isinstance(item, dict) else None
        result: dict[str, Any] = {
            "index": index,
            "external_id": external_id if isinstance(external_id, str) else None,
            "errors": {},
        }
        serializer = CustomerInSerializer(data=item)
        if not serializer.is_valid():
            result.update(status="invalid", errors=flatten_errors(serializer.errors))
        else:
            try:
                _customer, created = customer_upsert(**serializer.validated_data)
            except ValidationError as exc:
                fields = exc.message_dict if hasattr(exc, "error_dict") else {}
                result.update(status="invalid", errors=fields or {"non_field_errors": exc.messages})
            else:
                result["status"] = "created" if created else "updated"
        counts[result["status"]] += 1
        results.append(result)
    return {**counts, "results": results}


def events_record(events: list[Mapping[str, Any]]) -> EventsRecorded:
    """Record validated events in one statement; ``occurred_at`` defaults to now."""
    now = timezone.now()
    return audience_events_record(
        [
            EventInput(
                customer=e["customer"],
                name=e["name"],
                properties=e.get("properties") or {},
                occurred_at=e.get("occurred_at") or now,
                event_id=e.get("event_id"),
            )
            for e in events
        ]
    )
