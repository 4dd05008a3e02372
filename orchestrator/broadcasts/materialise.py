"""Materialising a broadcast: its audience frozen in one narrow write, its copies moved
into the outbox a slice at a time, ahead of when they are due.

Freezing (``freeze``): one INSERT ... SELECT writes a ``Recipient`` row per customer of
the audience who has an address on a channel the broadcast may use: the send time
computed from their time zone for a local-time send and spread by the rate limit, the
template of their A/B variant. Those due after the deadline are left out. A large
audience without a rate limit is written by two connections at once, each a range of
customer ids in its own transaction (the machine's cores work in parallel); a re-run
skips who is frozen or expanded already, and the primary key (broadcast, customer)
refuses a second row whatever happens.

Expanding (``expand``): one statement takes a slice of the recipients due by now (or
within ``LOOKAHEAD``), deletes their rows and writes each one's message and first
history row into the outbox: the channel routed by the customer's own order
(``delivery.routing``'s rule, in SQL) against their live row, so an address changed
since the freeze is used and a customer deleted since is never expanded. Consent,
suppression, caps, quiet hours and the deadline are applied by the dispatcher at send
time, as for every message; a "preferred" message is re-routed there against consent.
A recipient still pending when the deadline has passed is written as expired, and one
who has no address any more as suppressed, each with its cause in the decision trail.
Rows are taken with ``FOR UPDATE SKIP LOCKED`` and the whole slice is one transaction:
a worker killed mid-slice leaves the rows pending for the next run, and the unique
constraint on the outbox's (broadcast, customer) makes a copy written twice impossible.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from orchestrator.audience.models import ADDRESS_FIELDS
from orchestrator.broadcasts.audience import audience_sql
from orchestrator.broadcasts.models import Broadcast
from orchestrator.consent.models import CHANNELS
from orchestrator.delivery import routing
from orchestrator.delivery.models import Message, MessageTemplate

#: Which part of the audience a run freezes.
ALL, TEST, REST = "all", "test", "rest"

#: Hash buckets for the A/B split: a customer's bucket is stable for a broadcast.
BUCKETS = 10_000

#: Connections freezing one audience at once (the database's cores), and the smallest
#: span of customer ids worth splitting: below it one statement is quicker.
WORKERS = getattr(settings, "BROADCAST_MATERIALISE_WORKERS", 2)
PARALLEL_FROM = getattr(settings, "BROADCAST_MATERIALISE_PARALLEL_FROM", 50_000)

#: Copies one expansion step writes into the outbox, at most (one transaction).
SLICE = getattr(settings, "BROADCAST_EXPAND_SLICE", 20_000)
#: Copies due this soon are written ahead, as ``scheduled``: the dispatcher has them
#: when their time comes.
LOOKAHEAD = dt.timedelta(seconds=getattr(settings, "BROADCAST_EXPAND_LOOKAHEAD_SECONDS", 300))

_ADDRESS = (
    "CASE {ch} "
    + " ".join(f"WHEN '{channel}' THEN c.{field}" for channel, field in ADDRESS_FIELDS.items())
    + " ELSE '' END"
)


@dataclass(frozen=True)
class Variant:
    letter: str
    template: MessageTemplate


def _channels(broadcast: Broadcast, templates: list[MessageTemplate]) -> list[str]:
    """Channels the topic allows and every variant's template has."""
    allowed = set(broadcast.topic.channels)
    for template in templates:
        allowed &= set(template.variants.values_list("channel", flat=True))
    return [c for c in CHANNELS if c in allowed]


def _route_sql(broadcast: Broadcast) -> str:
    """A LEFT JOIN LATERAL picking (channel, address): the first reachable channel in the
    customer's order for "preferred" (``routing.channel_order``: their own, then the
    default), else the channel asked for where they have an address; none, no row."""
    if broadcast.channel == routing.PREFERRED:
        address = _ADDRESS.format(ch="o.ch")
        # Built from our own constants; every value is a bound parameter.
        return f"""
        LEFT JOIN LATERAL (
            SELECT o.ch::text AS channel, {address}::text AS address
            FROM unnest(coalesce(p.channel_order::text[], '{{}}') || %(default_order)s::text[])
                WITH ORDINALITY AS o(ch, n)
            WHERE o.ch = ANY(%(channels)s) AND {address} <> ''
            ORDER BY o.n LIMIT 1
        ) r ON TRUE"""  # noqa: S608
    address = _ADDRESS.format(ch="%(fixed)s")
    return f"""
        LEFT JOIN LATERAL (
            SELECT %(fixed)s::text AS channel, {address}::text AS address
            WHERE %(fixed)s = ANY(%(channels)s) AND {address} <> ''
        ) r ON TRUE"""


def _reachable_sql(broadcast: Broadcast) -> str:
    """True when the customer has an address on a channel the broadcast may use: the
    route above exists (the default order names every channel, so "preferred" reaches
    whoever has any usable address), without reading their preferences."""
    if broadcast.channel != routing.PREFERRED:
        return f"(%(fixed)s = ANY(%(channels)s) AND {_ADDRESS.format(ch='%(fixed)s')} <> '')"
    return (
        "("
        + " OR ".join(
            f"('{channel}' = ANY(%(channels)s) AND c.{field} <> '')"
            for channel, field in ADDRESS_FIELDS.items()
        )
        + ")"
    )


def _base_sql(broadcast: Broadcast) -> str:
    if broadcast.schedule == Broadcast.Schedule.LOCAL_TIME:
        # The wall-clock time on that date in the customer's zone, as an instant.
        return "((%(local_date)s::date + %(local_time)s::time) AT TIME ZONE c.timezone)"
    if broadcast.schedule == Broadcast.Schedule.AT:
        return "%(send_at)s::timestamptz"
    return "%(now)s::timestamptz"


def _split_sql(phase: str) -> tuple[str, str]:
    """(WHERE clause, variant expression) of a phase of the A/B split."""
    bucket = f"mod(abs(hashtext(%(salt)s || c.id::text)), {BUCKETS})"
    in_test = f"{bucket} < %(test_buckets)s"
    if phase == TEST:
        return in_test, f"CASE WHEN mod({bucket}, 2) = 0 THEN 'a' ELSE 'b' END"
    if phase == REST:
        # The rest is no variant of the test: results keep the test's figures apart.
        return f"NOT ({in_test})", "''"
    return "TRUE", "''"


def _named(sql: str, params: list) -> tuple[str, dict]:
    """Positional ``%s`` placeholders as named ones (``%(m0)s``...), ``%%`` kept."""
    names: dict = {}

    def name(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%%"
        key = f"m{len(names)}"
        names[key] = params[len(names)]
        return f"%({key})s"

    return re.sub(r"%%|%s", name, sql), names


def freeze(
    broadcast: Broadcast,
    *,
    phase: str = ALL,
    variants: dict[str, MessageTemplate] | None = None,
    rest_variant: str = "",
    now: dt.datetime | None = None,
) -> int:
    """Freeze the phase's audience as pending recipients; returns how many were new.

    ``variants`` maps "a"/"b" to templates (the test); the rest and a broadcast without a
    test use ``rest_variant``'s template (default: the broadcast's).
    """
    now = now or timezone.now()
    variants = variants or {"a": broadcast.template}
    templates = list(variants.values())
    members, members_params = audience_sql(broadcast)
    where, variant_expr = _split_sql(phase)
    rest_template = variants.get(rest_variant or "a", broadcast.template)
    template_expr = (
        "CASE t.variant WHEN 'b' THEN %(template_b)s::bigint ELSE %(template_a)s::bigint END"
        if phase == TEST
        else "%(template_rest)s::bigint"
    )
    spread = (
        "((row_number() OVER (PARTITION BY t.base ORDER BY t.customer_id) - 1)"
        " / %(rate)s) * interval '1 minute'"
        if broadcast.rate_per_minute
        else "interval '0'"
    )
    members_named, members_params_named = _named(members, members_params)
    # Fragments are our own; every value (and the members query's) is a bound parameter.
    sql = f"""
    WITH picked AS (
        SELECT c.id AS customer_id, {variant_expr}::text AS variant,
            {_base_sql(broadcast)} AS base
        FROM audience_customer c
        WHERE c.id IN ({members_named}) AND {where} AND {_reachable_sql(broadcast)}
            AND c.id BETWEEN %(id_from)s AND %(id_to)s
            -- A re-run (a crash after one range committed) writes nobody twice: not
            -- frozen already, nor expanded already. A plain insert, no ON CONFLICT: its
            -- speculative insertion costs a third more CPU, and only the sweep holding
            -- the broadcast's row lock freezes it, one range per connection.
            AND NOT EXISTS (SELECT 1 FROM broadcasts_recipient x
                WHERE x.broadcast_id = %(broadcast_id)s AND x.customer_id = c.id)
            AND NOT EXISTS (SELECT 1 FROM delivery_message m
                WHERE m.broadcast_id = %(broadcast_id)s AND m.customer_id = c.id)
    ),
    timed AS (
        SELECT t.customer_id, t.variant, {template_expr} AS template_id,
            GREATEST(t.base + {spread}, %(now)s::timestamptz) AS send_at
        FROM picked t
    )
    INSERT INTO broadcasts_recipient (broadcast_id, customer_id, send_at, template_id, variant)
    SELECT %(broadcast_id)s, t.customer_id, t.send_at, t.template_id, t.variant
    FROM timed t
    WHERE %(expires_at)s::timestamptz IS NULL OR %(expires_at)s::timestamptz > t.send_at
    """  # noqa: S608
    params = {
        "now": now,
        "channels": _channels(broadcast, templates),
        "fixed": broadcast.channel,
        "local_date": broadcast.local_date,
        "local_time": broadcast.local_time,
        "send_at": broadcast.send_at,
        "salt": f"{broadcast.id}:",
        "test_buckets": broadcast.ab_share * BUCKETS // 100,
        "template_a": variants.get("a", broadcast.template).id,
        "template_b": variants.get("b", broadcast.template).id,
        "template_rest": rest_template.id,
        "rate": broadcast.rate_per_minute or 1,
        "expires_at": broadcast.expires_at,
        "broadcast_id": broadcast.id,
        "id_from": 0,
        "id_to": 2**63 - 1,
        **members_params_named,
    }
    ranges = _id_ranges() if phase == ALL and not broadcast.rate_per_minute else []
    if len(ranges) > 1:
        # The rate limit numbers the whole audience in one order and an A/B phase may
        # use a template written by the caller's open transaction: those stay one
        # statement. Here every row depends on its own customer only.
        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            return sum(pool.map(lambda r: _write_range(sql, params, r), ranges))
    return _write(connection, sql, params)


@dataclass(frozen=True)
class Expanded:
    #: Copies written into the outbox (queued, scheduled, or expired/suppressed with
    #: their cause).
    written: int
    #: Whether recipients due by the horizon are still pending after this slice.
    more: bool


def _expand_sql(broadcast: Broadcast) -> str:
    fixed = broadcast.channel != routing.PREFERRED
    how = (
        "' as requested'"
        if fixed
        else "': first reachable channel in the customer''s order (re-routed by consent at "
        "send time)'"
    )
    # Fragments are our own; every value is a bound parameter.
    return f"""
    WITH slice AS (
        SELECT r.customer_id FROM broadcasts_recipient r
        WHERE r.broadcast_id = %(broadcast_id)s AND r.send_at <= %(horizon)s
        ORDER BY r.send_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ),
    taken AS (
        DELETE FROM broadcasts_recipient r USING slice s
        WHERE r.broadcast_id = %(broadcast_id)s AND r.customer_id = s.customer_id
        RETURNING r.customer_id, r.send_at, r.template_id, r.variant
    ),
    picked AS (
        SELECT t.customer_id, t.template_id, t.variant,
            coalesce(r.channel, %(first_channel)s) AS channel,
            coalesce(r.address, '') AS address, r.channel IS NULL AS unreachable,
            GREATEST(t.send_at, %(now)s::timestamptz) AS send_after
        FROM taken t
        JOIN audience_customer c ON c.id = t.customer_id
        LEFT JOIN consent_channelpreference p ON p.customer_id = c.id
        {_route_sql(broadcast)}
    ),
    rows AS (
        SELECT t.*,
            CASE WHEN %(expired)s THEN 'expired'
                WHEN t.unreachable THEN 'suppressed'
                WHEN t.send_after > %(now)s::timestamptz THEN 'scheduled'
                ELSE 'queued' END AS status,
            CASE WHEN %(expired)s THEN 'expired'
                WHEN t.unreachable THEN 'consent:no_address'
                ELSE '' END AS code,
            CASE WHEN %(expired)s THEN
                'Not sent: the deadline of broadcast ' || %(key_quoted)s || ' ('
                    || %(expires_iso)s || ') passed before its copy reached the outbox.'
                WHEN t.unreachable THEN
                'Not sent: the customer has no address on a channel broadcast '
                    || %(key_quoted)s || ' may use any more.'
                ELSE 'Queued by broadcast ' || %(key_quoted)s || ' for topic '
                    || %(topic_quoted)s || '; channel ' || t.channel || {how} || '.'
                END AS reason
        FROM picked t
    ),
    ins AS (
        INSERT INTO delivery_message (
            customer_id, topic_id, template_id, channel, requested_channel, to_address, locale,
            status, priority, send_after, expires_at, data, idempotency_key, journey,
            enrollment_id, journey_step, fallback_channel, decided_at, source, rendered,
            provider, provider_message_id, attempts, attempt_id, claimed_at, handed_off_at,
            retry_key, sent_at, last_error, explanation, created_at, updated_at,
            broadcast_id, broadcast_variant
        )
        SELECT r.customer_id, %(topic_id)s, r.template_id, r.channel, %(requested)s, r.address,
            '', r.status, %(priority)s, r.send_after, %(expires_at)s, %(data)s::jsonb, NULL,
            '', NULL, '', '', NULL, %(source)s, NULL, '', '', 0, NULL, NULL, NULL, NULL, NULL,
            '',
            jsonb_build_array(jsonb_build_object(
                'at', %(now_iso)s, 'step', 'created', 'decision', r.status, 'reason', r.reason,
                'details', jsonb_build_object(
                    'topic', %(topic_key)s, 'topic_kind', %(topic_kind)s,
                    'template', %(template_key)s, 'send_after', r.send_after,
                    'broadcast', %(key)s, 'variant', r.variant))),
            %(now)s, %(now)s, %(broadcast_id)s, r.variant
        FROM rows r
        ON CONFLICT (broadcast_id, customer_id) WHERE broadcast_id IS NOT NULL DO NOTHING
        RETURNING id, status, explanation -> 0 ->> 'reason' AS reason
    ),
    history AS (
        INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code)
        SELECT id, status, %(now)s, reason,
            CASE status WHEN 'expired' THEN 'expired'
                WHEN 'suppressed' THEN 'consent:no_address' ELSE '' END
        FROM ins
        RETURNING status
    )
    SELECT count(*), count(*) FILTER (WHERE status = 'queued') FROM history
    """  # noqa: S608


def expand(
    broadcast: Broadcast, *, now: dt.datetime | None = None, limit: int | None = None
) -> Expanded:
    """Write one slice of the broadcast's due recipients into the outbox, in the
    caller's transaction (or one of its own). Past the deadline, every pending recipient
    is due and is written as expired."""
    now = now or timezone.now()
    expired = broadcast.expires_at is not None and broadcast.expires_at <= now
    horizon = dt.datetime.max.replace(tzinfo=dt.UTC) if expired else now + LOOKAHEAD
    topic = broadcast.topic
    templates = [broadcast.template] + ([broadcast.ab_template] if broadcast.ab_template else [])
    channels = _channels(broadcast, templates) or list(CHANNELS)
    params = {
        "broadcast_id": broadcast.id,
        "horizon": horizon,
        "limit": limit or SLICE,
        "now": now,
        "now_iso": now.isoformat(),
        "expired": expired,
        "expires_iso": broadcast.expires_at.isoformat() if broadcast.expires_at else "",
        "default_order": list(routing.DEFAULT_CHANNEL_ORDER),
        "channels": channels,
        "first_channel": (
            broadcast.channel if broadcast.channel != routing.PREFERRED else channels[0]
        ),
        "fixed": broadcast.channel,
        "key_quoted": repr(broadcast.key),
        "topic_quoted": repr(topic.key),
        "topic_id": topic.id,
        "topic_key": topic.key,
        "topic_kind": topic.kind,
        "template_key": broadcast.template.key,
        "requested": broadcast.channel,
        "priority": broadcast.priority,
        "expires_at": broadcast.expires_at,
        "data": json.dumps(broadcast.data or {}),
        "source": Message.Source.BROADCAST,
        "key": broadcast.key,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        # A slice is a few thousand rows of tables of millions: each one's customer,
        # preference and recipient row found by its key (nested loops over the primary
        # keys), never a scan of the whole table per slice, whatever the estimates.
        cursor.execute("SET LOCAL enable_hashjoin = off")
        cursor.execute("SET LOCAL enable_mergejoin = off")
        cursor.execute(_expand_sql(broadcast), params)
        written, queued = cursor.fetchone()
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM broadcasts_recipient"
            " WHERE broadcast_id = %s AND send_at <= %s)",
            [broadcast.id, horizon],
        )
        more = cursor.fetchone()[0]
        if queued:
            from orchestrator.delivery.services import kick_dispatcher

            kick_dispatcher(priority=broadcast.priority)
    return Expanded(written, more)


def outbox_backlog(limit: int) -> int:
    """Broadcast copies waiting in the outbox (any broadcast), counted up to ``limit``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM delivery_message WHERE broadcast_id IS NOT NULL"
            " AND status IN ('queued', 'scheduled', 'deferred') LIMIT %s) AS waiting",
            [limit],
        )
        return cursor.fetchone()[0]


def _write(conn, sql: str, params: dict) -> int:
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        # One statement hashes the audience and the preferences: room to do it in memory.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(sql, params)
        return max(cursor.rowcount, 0)


def _id_ranges() -> list[tuple[int, int]]:
    """The customers' ids in ``WORKERS`` contiguous ranges, or one range if few."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id), max(id) FROM audience_customer")
        low, high = cursor.fetchone()
    if low is None or WORKERS < 2 or high - low + 1 < PARALLEL_FROM:
        return []
    step = (high - low + WORKERS) // WORKERS
    return [(start, min(start + step - 1, high)) for start in range(low, high + 1, step)]


def _write_range(sql: str, params: dict, id_range: tuple[int, int]) -> int:
    """One range in this thread's own connection and transaction, committed on return."""
    conn = connections[connection.alias]
    try:
        return _write(conn, sql, {**params, "id_from": id_range[0], "id_to": id_range[1]})
    finally:
        conn.close()
