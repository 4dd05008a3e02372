"""Creating messages (the outbox) and waking the dispatcher once they are committed."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.expressions import DatabaseDefault
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.consent.models import CHANNELS, Topic
from orchestrator.core.tasking import publish_on_commit
from orchestrator.delivery import holds, routing
from orchestrator.delivery.models import (
    Message,
    MessageEvent,
    MessageStatus,
    MessageTemplate,
    TemplateVariant,
)
from orchestrator.delivery.rendering import build_context, link_variables_read, render_check
from orchestrator.delivery.trail import explain

logger = logging.getLogger(__name__)


class SendRefused(ValueError):
    """The send cannot be queued as asked; ``field`` names the offending input."""

    def __init__(self, message: str, *, field: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.code = code


class SendUnrenderable(SendRefused):
    """The template cannot render with the data given on a variant the send could use.

    ``missing`` maps each undefined variable (``data.order_id``) to the variants that
    need it (``email/en``); ``problems`` are other failures, by variant.
    """

    def __init__(
        self, message: str, *, missing: dict[str, list[str]], problems: dict[str, str]
    ) -> None:
        super().__init__(message, field="data", code="template_cannot_render")
        self.missing = missing
        self.problems = problems


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
        consented=routing.topic_consent(customer, topic),
    )
    if route is None:
        raise SendRefused(
            "No channel the customer can be reached on is allowed for this topic and template.",
            field="channel",
            code="no_reachable_channel",
        )
    return route


#: What ``_check_renderable`` needs of each variant, in this order.
VARIANT_COLUMNS = ("channel", "locale", "subject", "body", "html", "provider_options")


def template_variant_rows(template_ids: Iterable[int]) -> dict[int, list[tuple]]:
    """The variants of each template (``VARIANT_COLUMNS``), for many templates in one query."""
    rows: dict[int, list[tuple]] = {i: [] for i in template_ids}
    if rows:
        for template_id, *row in TemplateVariant.objects.filter(
            template_id__in=rows.keys()
        ).values_list("template_id", *VARIANT_COLUMNS):
            rows[template_id].append(tuple(row))
    return rows


def model_columns(model: type[models.Model], alias: str) -> str:
    """``alias.col, ...`` of every column of ``model``, in the order ``model_from_row`` reads."""
    return ", ".join(f'{alias}."{f.column}"' for f in model._meta.concrete_fields)


def model_from_row(model: type[models.Model], values: Sequence[Any]) -> models.Model:
    """An instance of ``model`` from the raw values of ``model_columns``, each converted
    as the ORM would (a JSON field's text decoded, for one)."""
    fields = model._meta.concrete_fields
    converted = [
        f.from_db_value(v, None, connection) if hasattr(f, "from_db_value") else v
        for f, v in zip(fields, values, strict=True)
    ]
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


@functools.cache
def _templates_query() -> str:
    variant_row = ", ".join(f"v.{name}" for name in VARIANT_COLUMNS)
    return f"""
        SELECT {model_columns(MessageTemplate, "t")}, {model_columns(Topic, "p")},
            (SELECT coalesce(jsonb_agg(jsonb_build_array({variant_row}) ORDER BY v.id), '[]')
             FROM {TemplateVariant._meta.db_table} v WHERE v.template_id = t.id)::text
        FROM {MessageTemplate._meta.db_table} t
        LEFT JOIN {Topic._meta.db_table} p ON p.id = t.topic_id
        WHERE t.key = ANY(%s)
    """  # noqa: S608 - table and column names come from the models


def templates_with_variants(keys: Iterable[str]) -> dict[str, tuple[MessageTemplate, list[tuple]]]:
    """Templates by key, each with its topic and its variants (``VARIANT_COLUMNS``): one
    query for any number of them (written out: the ORM's compiling of it cost more than
    the query on a single send)."""
    split = len(MessageTemplate._meta.concrete_fields)
    found: dict[str, tuple[MessageTemplate, list[tuple]]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_templates_query(), [sorted(set(keys))])
        for row in cursor.fetchall():
            template = model_from_row(MessageTemplate, row[:split])
            template.topic = (
                model_from_row(Topic, row[split:-1]) if template.topic_id is not None else None
            )
            found[template.key] = (template, [tuple(v) for v in json.loads(row[-1])])
    return found


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
    check_render: bool = False,
) -> Message:
    """Queue one message in the caller's transaction; the dispatcher is woken on commit.

    Consent, suppression and rendering are decided by the dispatcher at send time,
    so a message queued for later honours whatever the customer says until then.
    With ``check_render`` the template is also rendered now with ``data``, on every
    variant the send could use, and a send that could not render is refused
    (``SendUnrenderable``) rather than queued to fail later.
    """
    fields = {
        "customer": customer,
        "template": template,
        "topic": topic,
        "channel": channel,
        "data": data,
        "send_at": send_at,
        "expires_at": expires_at,
        "priority": priority,
        "idempotency_key": idempotency_key,
        "source": source,
        "fallback_channel": fallback_channel,
        "journey": journey,
        "enrollment_id": enrollment_id,
    }
    if check_render:
        message = message_build_checked(
            variant_rows=template_variant_rows([template.pk])[template.pk], **fields
        )
    else:
        message = message_build(**fields)
    messages_queue([message])
    return message


def message_build_checked(*, variant_rows: list[tuple], **fields: Any) -> Message:
    """``message_build``, then render the template now with the message's data on every
    variant the send could use (``_check_renderable``); ``variant_rows`` are the
    template's variants (``template_variant_rows``). Raises SendRefused/SendUnrenderable.
    """
    message = message_build(variants=[(row[0], row[1]) for row in variant_rows], **fields)
    _check_renderable(message, variant_rows)
    return message


def _check_renderable(message: Message, rows: list[tuple]) -> None:
    """Render each variant ``message`` could go out on, as the dispatcher will; raise
    SendUnrenderable naming the missing variables and the variants that need them.

    A named channel uses its own variant; "preferred" any reachable channel, since the
    customer's order and consent are read again at send time. A fallback channel the
    customer has an address on is checked too.
    """
    customer = message.customer
    by_channel: dict[str, dict[str, tuple]] = {}
    for channel, locale, subject, body, html, options in rows:
        by_channel.setdefault(channel, {})[locale] = (subject, body, html, options)
    if message.requested_channel == routing.PREFERRED:
        channels = routing.reachable_channels(
            CHANNELS,
            topic_channels=message.topic.channels,
            template_channels=by_channel.keys(),
            address_for=customer.address_for,
        ) or [message.channel]
    else:
        channels = [message.channel]
    fallback = message.fallback_channel
    if fallback and fallback not in channels and customer.address_for(fallback):
        channels.append(fallback)
    checked = []
    for channel in channels:
        locales = by_channel.get(channel, {})
        locale = routing.pick_locale(message.locale or customer.locale, locales.keys())
        if locale is not None:
            checked.append((channel, locale, *locales[locale]))
    # The preference links are signed (an HMAC each): made only if a variant reads them,
    # as the dispatcher makes them; a variable no variant reads cannot change a render.
    reads_links = any(
        link_variables_read(subject, body, html, options)
        for _c, _l, subject, body, html, options in checked
    )
    context = build_context(
        customer=customer, message_data=message.data, links=None if reads_links else {}
    )
    missing: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    for channel, locale, subject, body, html, options in checked:
        check = render_check(
            channel=channel,
            subject=subject,
            body=body,
            html=html,
            options=options,
            context=context,
        )
        variant = f"{channel}/{locale}"
        for name in check.missing:
            missing.setdefault(name, []).append(variant)
        if check.problem is not None:
            problems[variant] = str(check.problem)
    if not missing and not problems:
        return
    which = (
        "a variant a 'preferred' send could use"
        if message.requested_channel == routing.PREFERRED
        else "the variant this send uses"
    )
    parts = [f"{name} is undefined ({', '.join(v)})" for name, v in missing.items()]
    parts += [f"{variant}: {problem}" for variant, problem in problems.items()]
    raise SendUnrenderable(
        f"Template {message.template.key!r} cannot render with the data given on {which}: "
        + "; ".join(parts)
        + ".",
        missing=missing,
        problems=problems,
    )


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


def _json_default(value: Any) -> str:
    """What ``json.dumps`` cannot write of a row: times and UUIDs, as PostgreSQL reads them."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a column value")


def _constant(default: Any) -> Any:
    """A column's database default as a value (every one the models declare is a constant)."""
    if isinstance(default, models.Value):
        return default.value
    if isinstance(default, models.expressions.BaseExpression):
        raise TypeError(f"messages_queue writes constant database defaults only, not {default}")
    return default


@functools.cache
def _queue_statement() -> tuple[str, tuple[models.Field, ...]]:
    """The statement ``messages_queue`` runs, and the message fields it writes.

    One statement for both tables: the messages' ids are drawn from their sequence in
    the batch's order, the history rows take them, and the ids come back by position.
    Each row is a JSON object keyed ``i`` (its position), ``f0``, ``f1``... (the fields,
    in order: short keys, as PostgreSQL parses the whole document), ``r`` and ``k`` (the
    history row's reason and code).
    """
    quote = connection.ops.quote_name
    fields = tuple(f for f in Message._meta.concrete_fields if not f.primary_key)
    keys = [f"f{n}" for n in range(len(fields))]
    typed = [f"{key} {f.db_type(connection)}" for key, f in zip(keys, fields, strict=True)]
    record = ", ".join(["i integer", *typed, "r text", "k text"])
    columns = ", ".join(quote(f.column) for f in fields)
    status = keys[next(n for n, f in enumerate(fields) if f.name == "status")]
    events = MessageEvent._meta.db_table
    statement = f"""
        WITH src AS (
            SELECT nextval(pg_get_serial_sequence(%s, 'id')) AS id, t.*
            FROM (
                SELECT * FROM json_to_recordset(%s::json) AS t({record}) ORDER BY i
            ) t
        ), written AS (
            INSERT INTO {quote(Message._meta.db_table)} (id, {columns})
            SELECT id, {", ".join(keys)} FROM src
        ), history AS (
            INSERT INTO {quote(events)} (message_id, status, occurred_at, reason, code)
            SELECT id, {status}, %s::timestamptz, r, k FROM src
        )
        SELECT i, id FROM src
    """  # noqa: S608 - table and column names come from the models
    return statement, fields


def messages_queue(messages: list[Message]) -> list[Message]:
    """Insert built messages and their first history rows: one statement for the batch,
    the rows passed as one JSON document (the ORM's building of a thousand-row INSERT
    cost more than the database's work on it). The messages come back saved, with ids.

    In one transaction: a dispatcher must never find a message whose first history row
    is not there yet (its trail would start with its own "deferred" before "queued").
    """
    if not messages:
        return messages
    now = timezone.now()
    statement, fields = _queue_statement()
    stamped = [
        f.attname for f in fields if getattr(f, "auto_now", 0) or getattr(f, "auto_now_add", 0)
    ]
    # JSON values nest as they are (a JSON column's null is SQL NULL, as the ORM stores
    # None); a database default left in place is written as its constant (a Value).
    columns = [(f"f{n}", f.attname) for n, f in enumerate(fields)]
    constants = [
        (f"f{n}", _constant(f.db_default)) for n, f in enumerate(fields) if f.has_db_default()
    ]
    # No savepoint inside a caller's transaction (two round trips per send): no caller
    # catches a failure here and carries on, so the whole transaction fails with it.
    with transaction.atomic(savepoint=False):
        # Those the customer (or a journey's digest step) wants in a digest wait there.
        digests = holds.messages_hold(messages, now=now)
        rows = []
        for index, m in enumerate(messages):
            for attname in stamped:
                setattr(m, attname, now)
            held = m.status == MessageStatus.HELD
            row = {column: getattr(m, attname) for column, attname in columns}
            for column, default in constants:
                if isinstance(row[column], DatabaseDefault):
                    row[column] = default
            row["i"] = index
            # A held message's history says so from its first row.
            row["r"] = m.explanation[-1 if held else 0]["reason"]
            row["k"] = "digest_held" if held else ""
            rows.append(row)
        with connection.cursor() as cursor:
            cursor.execute(
                statement, [Message._meta.db_table, json.dumps(rows, default=_json_default), now]
            )
            ids = dict(cursor.fetchall())
        for index, m in enumerate(messages):
            m.pk = ids[index]
            m._state.adding = False
            m._state.db = connection.alias
        holds.digests_after_hold(digests, now=now)
    queued = [m.priority for m in messages if m.status == MessageStatus.QUEUED]
    if queued:
        kick_dispatcher(priority=max(queued))
    return messages


def kick_dispatcher(*, priority: int = 0) -> None:
    """Ask a worker to dispatch now, once the current transaction commits (once per
    transaction). The outbox row, not the task, is the truth: beat's periodic dispatch
    finds the message if the broker is down.

    A message of at least ``DISPATCH_LANE_PRIORITY`` also wakes the lane worker, which
    dispatches only such messages: a broadcast backlog keeping every dispatcher busy
    does not stand between a transactional or triggered send and its provider.
    """
    if priority >= settings.DISPATCH_LANE_PRIORITY:
        publish_on_commit("delivery.dispatch", "delivery.dispatch_lane")
    else:
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
            # A message held for a digest is waiting too: canceled, it is left out of it.
            .filter(id__in=message_ids, status__in=[*WAITING_STATUSES, MessageStatus.HELD])
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
