"""Materialising a broadcast into the outbox: one INSERT ... SELECT per phase.

One statement writes every customer's message and its first history row: the channel
routed by each customer's own order (``delivery.routing``'s rule, in SQL), the send
time computed from their time zone for a local-time send and spread by the rate limit,
the decision trail's first entry. Consent, suppression, caps, quiet hours and the
deadline are applied by the dispatcher at send time, as for every message; a
"preferred" message is re-routed there against consent. A unique constraint on
(broadcast, customer) makes a re-run insert nothing twice.

A large audience without a rate limit is written by two connections at once, each a
range of customer ids in its own transaction (the machine's cores work in parallel,
index maintenance and the foreign-key checks at commit included). That is safe because
of the same unique constraint: a range that committed is skipped by a re-run, one that
did not is written then.
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
from orchestrator.delivery.models import Message, MessageStatus, MessageTemplate

#: Which part of the audience a run writes.
ALL, TEST, REST = "all", "test", "rest"

#: Hash buckets for the A/B split: a customer's bucket is stable for a broadcast.
BUCKETS = 10_000

#: Connections writing one broadcast at once (the database's cores), and the smallest
#: span of customer ids worth splitting: below it one statement is quicker.
WORKERS = getattr(settings, "BROADCAST_MATERIALISE_WORKERS", 2)
PARALLEL_FROM = getattr(settings, "BROADCAST_MATERIALISE_PARALLEL_FROM", 50_000)

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
    """A LATERAL picking (channel, address): the first reachable channel in the customer's
    order for "preferred" (``routing.channel_order``: their own, then the default), else
    the channel asked for where they have an address."""
    if broadcast.channel == routing.PREFERRED:
        address = _ADDRESS.format(ch="o.ch")
        # Built from our own constants; every value is a bound parameter.
        return f"""
        CROSS JOIN LATERAL (
            SELECT o.ch::text AS channel, {address}::text AS address
            FROM unnest(coalesce(p.channel_order::text[], '{{}}') || %(default_order)s::text[])
                WITH ORDINALITY AS o(ch, n)
            WHERE o.ch = ANY(%(channels)s) AND {address} <> ''
            ORDER BY o.n LIMIT 1
        ) r"""  # noqa: S608
    address = _ADDRESS.format(ch="%(fixed)s")
    return f"""
        CROSS JOIN LATERAL (
            SELECT %(fixed)s::text AS channel, {address}::text AS address
            WHERE %(fixed)s = ANY(%(channels)s) AND {address} <> ''
        ) r"""


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


def materialise(
    broadcast: Broadcast,
    *,
    phase: str = ALL,
    variants: dict[str, MessageTemplate] | None = None,
    rest_variant: str = "",
    now: dt.datetime | None = None,
) -> int:
    """Write the phase's messages and their first history rows; returns how many were new.

    ``variants`` maps "a"/"b" to templates (the test); the rest and a broadcast without a
    test use ``rest_variant``'s template (default: the broadcast's).
    """
    now = now or timezone.now()
    variants = variants or {"a": broadcast.template}
    templates = list(variants.values())
    members, members_params = audience_sql(broadcast)
    where, variant_expr = _split_sql(phase)
    topic = broadcast.topic
    fixed = broadcast.channel != routing.PREFERRED
    how = (
        "' as requested'"
        if fixed
        else "': first reachable channel in the customer''s order (re-routed by consent at "
        "send time)'"
    )
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
    # Fragments are our own; every value (and the members query's) is a bound parameter.
    sql = f"""
    WITH picked AS (
        SELECT c.id AS customer_id, r.channel, r.address, {variant_expr}::text AS variant,
            {_base_sql(broadcast)} AS base
        FROM audience_customer c
        LEFT JOIN consent_channelpreference p ON p.customer_id = c.id
        {_route_sql(broadcast)}
        WHERE c.id IN ({members}) AND {where}
            AND c.id BETWEEN %(id_from)s AND %(id_to)s
    ),
    timed AS (
        SELECT t.*, GREATEST(t.base + {spread}, %(now)s::timestamptz) AS send_after,
            {template_expr} AS template_id
        FROM picked t
    ),
    rows AS (
        SELECT t.*,
            CASE WHEN t.send_after > %(now)s::timestamptz THEN 'scheduled' ELSE 'queued' END
                AS status,
            'Queued by broadcast ' || %(key_quoted)s || ' for topic ' || %(topic_quoted)s
                || '; channel ' || t.channel || {how} || '.' AS reason
        FROM timed t
        WHERE %(expires_at)s::timestamptz IS NULL OR %(expires_at)s::timestamptz > t.send_after
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
    )
    INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code)
    SELECT id, status, %(now)s, reason, '' FROM ins
    """  # noqa: S608
    # The members query comes with positional parameters; everything else is named.
    members_named, members_params_named = _named(members, members_params)
    sql = sql.replace(f"c.id IN ({members})", f"c.id IN ({members_named})")
    params = {
        "now": now,
        "now_iso": now.isoformat(),
        "default_order": list(routing.DEFAULT_CHANNEL_ORDER),
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
        "key_quoted": repr(broadcast.key),
        "topic_quoted": repr(topic.key),
        "topic_id": topic.id,
        "topic_key": topic.key,
        "topic_kind": topic.kind,
        "template_key": broadcast.template.key,
        "requested": broadcast.channel,
        "priority": broadcast.priority,
        "data": json.dumps(broadcast.data or {}),
        "source": Message.Source.BROADCAST,
        "key": broadcast.key,
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
            written = sum(pool.map(lambda r: _write_range(sql, params, r), ranges))
    else:
        written = _write(connection, sql, params)
    if written:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM delivery_message WHERE broadcast_id = %s"
                " AND status = %s)",
                [broadcast.id, MessageStatus.QUEUED],
            )
            if cursor.fetchone()[0]:
                from orchestrator.delivery.services import kick_dispatcher

                kick_dispatcher()
    return written


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
