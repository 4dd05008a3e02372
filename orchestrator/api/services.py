"""What the API endpoints do, beyond checking JSON types: resolve references, call the core.

The views stay thin: they check a request's shape with a serializer and call one
function here, which speaks in the API's error vocabulary (ApiError with field names
as the client sent them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection
from django.utils import timezone
from rest_framework import serializers

from orchestrator.api.errors import ApiError, flatten_errors
from orchestrator.api.plain import checker, validated
from orchestrator.api.serializers import CustomerInSerializer
from orchestrator.audience.models import Customer
from orchestrator.audience.services import EventInput, EventsRecorded, customers_upsert
from orchestrator.audience.services import events_record as audience_events_record
from orchestrator.consent.models import ChannelPreference, Topic
from orchestrator.delivery.models import Message
from orchestrator.delivery.services import (
    SendRefused,
    SendUnrenderable,
    message_build_checked,
    messages_queue,
    model_columns,
    model_from_row,
    templates_with_variants,
)


def _recipient_errors(named: str, count: int) -> ApiError | None:
    if not count:
        return ApiError(
            code="unknown_customer",
            message=f"No customer has {named}.",
            fields={"to": [f"No customer has {named}."]},
        )
    if count > 1:
        return ApiError(
            code="ambiguous_customer",
            message=f"Several customers have {named}; send to an external_id instead.",
            fields={"to": [f"Several customers have {named}."]},
        )
    return None


def _customers_with_preference(column: str, values: list[str]) -> list[Customer]:
    """Customers whose ``column`` is one of ``values``, each with its channel preference
    (or the knowledge that it has none) loaded; written out, as the ORM's compiling of
    this join cost more than the query on a single send."""
    split = len(Customer._meta.concrete_fields)
    customers = []
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT {model_columns(Customer, "c")}, {model_columns(ChannelPreference, "p")}
            FROM {Customer._meta.db_table} c
            LEFT JOIN {ChannelPreference._meta.db_table} p ON p.customer_id = c.id
            WHERE c.{column} = ANY(%s)
            """,  # noqa: S608 - table and column names are our own
            [values],
        )
        for row in cursor.fetchall():
            customer = model_from_row(Customer, row[:split])
            preference = model_from_row(ChannelPreference, row[split:]) if row[split] else None
            Customer.preference.related.set_cached_value(customer, preference)
            customers.append(customer)
    return customers


def recipients_resolve(tos: Sequence[Mapping[str, str]]) -> list[Customer | ApiError]:
    """The one customer each ``to`` names (by external_id, email or E.164 phone), else the
    ApiError saying why not; one query per kind of address, whatever the number of them.

    The customer's channel preference comes along (a "preferred" send reads it).
    """
    wanted: dict[str, set[str]] = {"external_id": set(), "email": set(), "phone": set()}
    for to in tos:
        if "external_id" in to:
            wanted["external_id"].add(to["external_id"])
        elif "email" in to:
            # Exact or all-lowercase, so the lookup stays on the email index.
            wanted["email"].update((to["email"], to["email"].lower()))
        else:
            wanted["phone"].add(to["phone"])
    found: dict[str, dict[str, list[Customer]]] = {kind: {} for kind in wanted}
    for kind, values in wanted.items():
        if values:
            for customer in _customers_with_preference(kind, sorted(values)):
                found[kind].setdefault(getattr(customer, kind), []).append(customer)
    results: list[Customer | ApiError] = []
    for to in tos:
        if "external_id" in to:
            matches = found["external_id"].get(to["external_id"], [])
            named = f"external_id {to['external_id']!r}"
        elif "email" in to:
            email = to["email"]
            matches = [*found["email"].get(email, [])]
            if email.lower() != email:
                matches += found["email"].get(email.lower(), [])
            named = "this email address"
        else:
            matches = found["phone"].get(to["phone"], [])
            named = "this phone number"
        results.append(_recipient_errors(named, len(matches)) or matches[0])
    return results


def recipient_resolve(to: Mapping[str, str]) -> Customer:
    """The one customer ``to`` names (by external_id, email or E.164 phone), else ApiError."""
    [resolved] = recipients_resolve([to])
    if isinstance(resolved, ApiError):
        raise resolved
    return resolved


def _send_error(exc: SendRefused) -> ApiError:
    """A refusal of the send rules in the API's words: 422 naming what the template
    cannot render, else 400 naming the field."""
    if isinstance(exc, SendUnrenderable):
        fields = {
            name: [f"Undefined; the template needs it ({', '.join(variants)})."]
            for name, variants in exc.missing.items()
        }
        if exc.problems:
            fields["template"] = [f"{v}: {p}" for v, p in exc.problems.items()]
        return ApiError(code=exc.code, message=str(exc), status_code=422, fields=fields)
    return ApiError(code=exc.code, message=str(exc), fields={exc.field: [str(exc)]})


def messages_send(sends: Sequence[Mapping[str, Any]]) -> list[Message | ApiError]:
    """Queue API-triggered messages (each the validated fields of one send) together,
    in the caller's transaction: the message or the ApiError refusing it, per send.

    The references are read set-based (customers, templates with their variants,
    topics: a query each), every send goes through the same rules as a single one
    (``message_build_checked``), and the accepted ones are written in two statements
    (``messages_queue``). Unknown references and refusals are 400, a template that
    cannot render with the data 422 naming the missing variables.
    """
    customers = recipients_resolve([send["to"] for send in sends])
    templates = templates_with_variants(send["template"] for send in sends)
    topic_keys = {send["topic"] for send in sends if send.get("topic") is not None}
    topics = {t.key: t for t in Topic.objects.filter(key__in=topic_keys)} if topic_keys else {}
    results: list[Message | ApiError] = []
    for send, customer in zip(sends, customers, strict=True):
        if isinstance(customer, ApiError):
            results.append(customer)
            continue
        template, variant_rows = templates.get(send["template"], (None, None))
        topic = send.get("topic")
        unknown: dict[str, list[str]] = {}
        if template is None:
            unknown["template"] = [f"Unknown template {send['template']!r}."]
        if topic is not None and topic not in topics:
            unknown["topic"] = [f"Unknown topic {topic!r}."]
        if unknown:
            code = "unknown_template" if "template" in unknown else "unknown_topic"
            message = " ".join(m[0] for m in unknown.values())
            results.append(ApiError(code=code, message=message, fields=unknown))
            continue
        try:
            results.append(
                message_build_checked(
                    variant_rows=variant_rows,
                    customer=customer,
                    template=template,
                    topic=topics.get(topic) if topic is not None else None,
                    channel=send.get("channel", "preferred"),
                    data=send.get("data") or {},
                    send_at=send.get("send_at"),
                    expires_at=send.get("expires_at"),
                    priority=send.get("priority", 5),
                    source=Message.Source.API,
                    fallback_channel=send.get("fallback_channel", ""),
                )
            )
        except SendRefused as exc:
            results.append(_send_error(exc))
    messages_queue([r for r in results if isinstance(r, Message)])
    return results


def message_send(**send: Any) -> Message:
    """Queue one API-triggered message (a batch of one); raises the ApiError refusing it."""
    [result] = messages_send([send])
    if isinstance(result, ApiError):
        raise result
    return result


def customers_bulk_upsert(items: list[Any]) -> dict[str, Any]:
    """Check each item on its own, then upsert the valid ones set-based in one transaction
    (``customers_upsert``): one bad item is reported and does not sink the others."""
    results: list[dict[str, Any]] = []
    valid: list[tuple[int, dict[str, Any]]] = []
    item_checker = checker(CustomerInSerializer)
    for index, item in enumerate(items):
        external_id = item.get("external_id") if isinstance(item, dict) else None
        result: dict[str, Any] = {
            "index": index,
            "external_id": external_id if isinstance(external_id, str) else None,
            "errors": {},
        }
        results.append(result)
        try:
            valid.append((index, validated(item_checker, item)))
        except serializers.ValidationError as exc:
            result.update(status="invalid", errors=flatten_errors(exc.detail))
    upserted = customers_upsert([fields for _index, fields in valid])
    for (index, _fields), outcome in zip(valid, upserted, strict=True):
        if outcome.created is None:
            results[index].update(status="invalid", errors=outcome.errors)
        else:
            results[index]["status"] = "created" if outcome.created else "updated"
    counts = {"created": 0, "updated": 0, "invalid": 0}
    for result in results:
        counts[result["status"]] += 1
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
