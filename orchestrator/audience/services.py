"""Writes for customers and events. Uniqueness is held by the database, not by checks here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.audience.validators import normalize_phone, validate_locale, validate_timezone

#: Fields a client may set on a customer (besides external_id).
CUSTOMER_FIELDS = ("email", "phone", "whatsapp", "line_user_id", "locale", "timezone", "attributes")


def clean_customer_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalize customer fields; raise ValidationError with per-field messages."""
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for name in CUSTOMER_FIELDS:
        if name not in data:
            continue
        value = data[name]
        try:
            if name == "attributes":
                if not isinstance(value, dict):
                    raise ValidationError("Must be an object.")
                cleaned[name] = value
                continue
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ValidationError("Must be a string.")
            value = value.strip()
            if name == "email" and value:
                if any(c in value for c in "\r\n\0"):
                    raise ValidationError("Must not contain line breaks.")
                validate_email(value)
                if len(value) > 254:
                    raise ValidationError("Must be at most 254 characters.")
            elif name in ("phone", "whatsapp"):
                value = normalize_phone(value)
            elif name == "timezone":
                validate_timezone(value)
            elif name == "locale":
                validate_locale(value)
            elif name == "line_user_id" and len(value) > 64:
                raise ValidationError("Must be at most 64 characters.")
            cleaned[name] = value
        except ValidationError as exc:
            errors[name] = list(exc.messages)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _validate_external_id(external_id: Any) -> str:
    if not isinstance(external_id, str) or not external_id.strip():
        raise ValidationError({"external_id": ["A non-empty string is required."]})
    if len(external_id) > 255:
        raise ValidationError({"external_id": ["Must be at most 255 characters."]})
    return external_id.strip()


def customer_upsert(*, external_id: str, **fields: Any) -> tuple[Customer, bool]:
    """Create or update a customer by ``external_id``. Attributes are merged; a null removes one.

    Safe under concurrency: two upserts of a new id never both insert.
    """
    external_id = _validate_external_id(external_id)
    cleaned = clean_customer_fields(fields)
    attributes = cleaned.pop("attributes", None)
    for _ in range(3):
        with transaction.atomic():
            customer = Customer.objects.select_for_update().filter(external_id=external_id).first()
            if customer is not None:
                for name, value in cleaned.items():
                    setattr(customer, name, value)
                if attributes is not None:
                    customer.attributes = _merge_attributes(customer.attributes, attributes)
                customer.save()
                return customer, False
            try:
                with transaction.atomic():
                    customer = Customer.objects.create(
                        external_id=external_id,
                        attributes=_merge_attributes({}, attributes or {}),
                        **cleaned,
                    )
                return customer, True
            except IntegrityError:
                continue  # created concurrently: go round and update it
    raise RuntimeError(f"could not upsert customer {external_id!r}")


def customer_attributes_merge(*, customer_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Set attributes in one statement (a None value removes one); returns the result."""
    import json

    removed = [k for k, v in changes.items() if v is None]
    kept = {k: v for k, v in changes.items() if v is not None}
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audience_customer SET attributes = (attributes - %s::text[]) || %s::jsonb, "
            "updated_at = now() WHERE id = %s RETURNING attributes",
            [removed, json.dumps(kept, default=str), customer_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Customer.DoesNotExist(customer_id)
    return row[0] if isinstance(row[0], dict) else json.loads(row[0])


def _merge_attributes(current: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def customers_ensure(external_ids: Iterable[str]) -> dict[str, int]:
    """Return {external_id: id}, creating minimal customers for unknown ids in one statement."""
    ids = sorted({_validate_external_id(e) for e in external_ids})
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audience_customer
                (external_id, email, phone, whatsapp, line_user_id, locale, timezone,
                 attributes, created_at, updated_at)
            SELECT x, '', '', '', '', 'en', 'UTC', '{}'::jsonb, now(), now()
            FROM unnest(%s::text[]) AS x
            ON CONFLICT (external_id) DO NOTHING
            """,
            [ids],
        )
        cursor.execute(
            "SELECT external_id, id FROM audience_customer WHERE external_id = ANY(%s)", [ids]
        )
        return dict(cursor.fetchall())


#: Called inside the recording transaction with the ids of newly inserted events.
#: The journeys app registers here (the core does not import journeys).
_event_listeners: list[Callable[[list[int]], None]] = []


def event_listener_add(listener: Callable[[list[int]], None]) -> None:
    if listener not in _event_listeners:
        _event_listeners.append(listener)


@dataclass(frozen=True)
class EventInput:
    customer: str
    name: str
    properties: dict[str, Any]
    occurred_at: dt.datetime
    event_id: str | None = None


@dataclass(frozen=True)
class EventsRecorded:
    accepted: int
    duplicates: int
    event_ids: list[int]


def events_record(events: list[EventInput], *, source: str = "api") -> EventsRecorded:
    """Insert events in one statement; a repeated client ``event_id`` per customer is skipped.

    Unknown customers are created with only their external id.
    """
    if not events:
        return EventsRecorded(0, 0, [])
    customer_ids = customers_ensure(e.customer for e in events)
    now = timezone.now()
    rows = [
        (
            customer_ids[e.customer.strip()],
            e.name,
            e.properties,
            e.occurred_at,
            e.event_id,
        )
        for e in events
    ]
    from psycopg.types.json import Jsonb

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audience_event
                (customer_id, name, properties, occurred_at, received_at, event_id, source)
            SELECT c, n, p, o, %s, e, %s
            FROM unnest(%s::bigint[], %s::text[], %s::jsonb[], %s::timestamptz[], %s::text[])
                AS t(c, n, p, o, e)
            ON CONFLICT (customer_id, event_id) WHERE event_id IS NOT NULL DO NOTHING
            RETURNING id
            """,
            [
                now,
                source,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [Jsonb(r[2]) for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
            ],
        )
        inserted = [row[0] for row in cursor.fetchall()]
        if inserted:
            for listener in _event_listeners:
                listener(inserted)
    return EventsRecorded(len(inserted), len(events) - len(inserted), inserted)


def event_record(
    *,
    customer: str,
    name: str,
    properties: dict[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
    event_id: str | None = None,
    source: str = "api",
) -> EventsRecorded:
    return events_record(
        [EventInput(customer, name, properties or {}, occurred_at or timezone.now(), event_id)],
        source=source,
    )
