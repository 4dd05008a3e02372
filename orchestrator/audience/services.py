"""Writes for customers and events. Uniqueness is held by the database, not by checks here."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
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


#: String fields of a customer and the value a new customer gets when one is left out.
_FIELD_DEFAULTS = {
    "email": "",
    "phone": "",
    "whatsapp": "",
    "line_user_id": "",
    "locale": "en",
    "timezone": "UTC",
}
_RECORD = ", ".join(f"{name} text" for name in _FIELD_DEFAULTS)


@dataclass(frozen=True)
class CustomerUpserted:
    """One item's outcome: ``created`` (None when invalid) and the errors by field."""

    external_id: str | None
    created: bool | None
    errors: dict[str, list[str]]


def customer_upsert(*, external_id: str, **fields: Any) -> tuple[Customer, bool]:
    """Create or update a customer by ``external_id``. Attributes are merged; a null removes one.

    Safe under concurrency: two upserts of a new id never both insert. Raises
    ValidationError naming the invalid fields.
    """
    [outcome] = customers_upsert([{"external_id": external_id, **fields}])
    if outcome.created is None:
        raise ValidationError(outcome.errors)
    return Customer.objects.get(external_id=outcome.external_id), outcome.created


def customers_upsert(items: Sequence[Mapping[str, Any]]) -> list[CustomerUpserted]:
    """Upsert customers (each ``{"external_id", **fields}``) set-based, in one transaction:
    fields left out are left unchanged, attributes merged (a null removes one).

    Each item is checked on its own; an invalid one is reported and the others go
    through. The rows are written in two statements whatever their number - an INSERT
    of the new ids, then an UPDATE of the others after locking them in external_id
    order (concurrent batches lock in the same order, so they never deadlock). An id
    given twice is applied in order, as two upserts one after the other would be.
    """
    outcomes: list[CustomerUpserted] = []
    merged: dict[str, dict[str, Any]] = {}
    for item in items:
        try:
            external_id = _validate_external_id(item.get("external_id"))
            cleaned = clean_customer_fields(item)
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {}
            raw = item.get("external_id")
            outcomes.append(
                CustomerUpserted(
                    raw if isinstance(raw, str) else None,
                    None,
                    errors or {"non_field_errors": exc.messages},
                )
            )
            continue
        attributes = cleaned.pop("attributes", None)
        row = merged.setdefault(external_id, {"external_id": external_id})
        row.update(cleaned)
        if attributes is not None:
            row["attributes"] = {**row.get("attributes", {}), **attributes}
        outcomes.append(CustomerUpserted(external_id, False, {}))
    if not merged:
        return outcomes
    rows = []
    for external_id in sorted(merged):
        row = merged[external_id]
        changes = row.pop("attributes", None)
        if changes is not None:
            row["kept"] = {k: v for k, v in changes.items() if v is not None}
            row["removed"] = [k for k, v in changes.items() if v is None]
        rows.append(row)
    document = json.dumps(rows, default=str)
    record = f"external_id text, {_RECORD}, kept jsonb, removed text[]"
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        defaults = ", ".join(f"COALESCE(v.{name}, %s)" for name in _FIELD_DEFAULTS)
        cursor.execute(
            f"""
            INSERT INTO audience_customer (external_id, {", ".join(_FIELD_DEFAULTS)},
                attributes, created_at, updated_at)
            SELECT v.external_id, {defaults}, COALESCE(v.kept, '{{}}'::jsonb), %s, %s
            FROM jsonb_to_recordset(%s::jsonb) AS v({record})
            ORDER BY v.external_id
            ON CONFLICT (external_id) DO NOTHING
            RETURNING external_id
            """,  # noqa: S608 - the column names are our own constants
            [*_FIELD_DEFAULTS.values(), now, now, document],
        )
        created = {row[0] for row in cursor.fetchall()}
        rest = [row["external_id"] for row in rows if row["external_id"] not in created]
        if rest:
            kept = ", ".join(f"{name} = COALESCE(v.{name}, c.{name})" for name in _FIELD_DEFAULTS)
            cursor.execute(
                f"""
                WITH locked AS (
                    SELECT id FROM audience_customer WHERE external_id = ANY(%s)
                    ORDER BY external_id FOR UPDATE
                )
                UPDATE audience_customer AS c
                SET {kept},
                    attributes = (c.attributes - COALESCE(v.removed, '{{}}'::text[]))
                        || COALESCE(v.kept, '{{}}'::jsonb),
                    updated_at = %s
                FROM locked, jsonb_to_recordset(%s::jsonb) AS v({record})
                WHERE c.id = locked.id AND c.external_id = v.external_id
                RETURNING c.external_id
                """,  # noqa: S608 - the column names are our own constants
                [rest, now, document],
            )
            updated = {row[0] for row in cursor.fetchall()}
            if len(updated) != len(rest):
                # Erased between the two statements: nothing to update; it is not lost
                # silently either - the caller sees the error.
                missing = sorted(set(rest) - updated)
                raise IntegrityError(f"customers vanished while being upserted: {missing[:5]}")
    first: set[str] = set()
    for index, outcome in enumerate(outcomes):
        if outcome.created is None:
            continue
        is_new = outcome.external_id in created and outcome.external_id not in first
        first.add(outcome.external_id)
        outcomes[index] = CustomerUpserted(outcome.external_id, is_new, {})
    return outcomes


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
