"""The dispatcher: claim due messages in batches, decide, render, hand off, record.

One batch is a handful of set-based statements whatever its size:

1. **claim** - one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``
   marks due rows ``sending`` under a fresh attempt id (or ``expired`` when their
   TTL passed), so concurrent dispatchers never claim the same row;
2. **load** what the batch needs (customers, topics, variants, consent) in bulk;
3. **decide and render** in Python: consent, then Liquid; a render error fails
   the message, it is never sent blank;
4. **hand off** - one ``UPDATE`` stores the rendered snapshot and
   ``handed_off_at``, then the adapters are called per channel *outside* any
   transaction. From here on a crash means "may have gone out": the row is
   reconciled from provider status, never resent by us;
5. **record** - one statement (``UPDATE ... FROM jsonb_to_recordset(...)`` feeding an
   ``INSERT`` of the history rows) writes every outcome.

Every write after the claim is guarded by ``attempt_id``: if a row was reclaimed
(e.g. ``recover_stalled`` requeued it while this worker was stuck), this
worker's late writes match nothing and its provider call is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from channels.adapters import OutboundMessage, SendResult, get_adapter
from orchestrator.audience.models import Customer
from orchestrator.consent.message_links import LINK_VARIABLES, preference_link
from orchestrator.consent.models import ChannelPreference, Topic
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.consent.suppressions import suppressions_add
from orchestrator.consent.unsubscribe import one_click_headers, unsubscribe_url
from orchestrator.core.metrics import outcome_counts, provider_call_observe
from orchestrator.delivery import fatigue, policy
from orchestrator.delivery.clicks import links_rewrite
from orchestrator.delivery.explain import explain
from orchestrator.delivery.models import (
    MessageStatus,
    MessageTemplate,
    TemplateVariant,
)
from orchestrator.delivery.rendering import (
    TemplateProblem,
    build_context,
    customer_context,
    render_options,
    render_variant,
    variables_used,
)
from orchestrator.delivery.services import DEFAULT_CHANNEL_ORDER, pick_locale

logger = logging.getLogger(__name__)

#: Provider attempts before a transiently failing message is given up as ``failed``.
MAX_ATTEMPTS = getattr(settings, "DISPATCH_MAX_ATTEMPTS", 5)
#: Backoff after the n-th transient failure: BASE * 2**(n-1), at most MAX, with jitter.
BACKOFF_BASE = dt.timedelta(seconds=getattr(settings, "DISPATCH_BACKOFF_BASE_SECONDS", 30))
BACKOFF_MAX = dt.timedelta(seconds=getattr(settings, "DISPATCH_BACKOFF_MAX_SECONDS", 3600))
#: A claim this old that never reached the provider belongs to a dead worker.
STALLED_AFTER = dt.timedelta(minutes=5)


@dataclass
class DispatchStats:
    batches: int = 0
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    expired: int = 0
    retrying: int = 0
    deferred: int = 0
    unknown: int = 0
    #: Rows this worker claimed but lost before handing off (reclaimed elsewhere).
    lost: int = 0
    #: Claimed but left due for a later batch: another dispatcher was deciding for the
    #: same customer.
    busy: int = 0
    #: Wall time spent in the fatigue policy stage (locks, history, decisions, writes).
    policy_seconds: float = 0.0

    def add(self, other: DispatchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class _Claimed:
    id: int
    customer_id: int
    topic_id: int
    template_id: int
    channel: str
    locale: str
    data: dict[str, Any]
    #: Provider attempts made before this one.
    attempts: int
    priority: int
    expires_at: dt.datetime | None
    journey: str
    requested_channel: str
    fallback_channel: str


@dataclass(slots=True)
class _Outcome:
    """What to write for one message: new status, history reason, trail entry, columns."""

    message_id: int
    status: str
    reason: str
    entry: dict[str, Any]
    provider: str | None = None
    provider_message_id: str | None = None
    sent_at: dt.datetime | None = None
    last_error: str | None = None
    send_after: dt.datetime | None = None
    keep_handed_off: bool = True
    #: Machine code for the history row (e.g. rule:<key>, quiet_hours, consent:...).
    code: str = ""
    #: Move the message to this channel (a fallback after a permanent failure).
    channel: str | None = None
    address: str | None = None


@dataclass
class _Prepared:
    sendable: list[tuple[OutboundMessage, dict[str, Any]]] = field(default_factory=list)
    outcomes: list[_Outcome] = field(default_factory=list)


# --- claim ---------------------------------------------------------------------------

_LOCK_SQL = """
SELECT id, customer_id, topic_id, template_id, channel, locale, data, attempts, priority,
    expires_at, journey, requested_channel, fallback_channel
FROM delivery_message
WHERE status IN ('queued', 'scheduled', 'deferred') AND send_after <= %(now)s
ORDER BY priority DESC, send_after
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


def _lock_due(cursor, *, limit: int, now: dt.datetime) -> tuple[list[_Claimed], list[_Outcome]]:
    """Lock up to ``limit`` due messages for this transaction; split off the expired ones.

    The claim is a row lock, not a write: the rows stay waiting until the hand-off
    marks them ``sending`` in the same transaction, so a worker that dies before
    the hand-off leaves nothing to recover (its transaction rolls back).
    """
    cursor.execute(_LOCK_SQL, {"now": now, "limit": limit})
    claimed: list[_Claimed] = []
    expired: list[_Outcome] = []
    for row in cursor.fetchall():
        message = _Claimed(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            json.loads(row[6]) if isinstance(row[6], str) else (row[6] or {}),
            *row[7:],
        )
        if message.expires_at is not None and message.expires_at <= now:
            reason = "its expiry time passed before it could be sent"
            expired.append(
                _Outcome(
                    message.id,
                    MessageStatus.EXPIRED,
                    reason,
                    explain(
                        "expiry",
                        MessageStatus.EXPIRED,
                        reason,
                        expires_at=message.expires_at.isoformat(),
                    ),
                    keep_handed_off=False,
                    code="expired",
                )
            )
        else:
            claimed.append(message)
    return claimed, expired


# --- decide and render -----------------------------------------------------------


def _load_variants(template_ids: Iterable[int]) -> dict[tuple[int, str], dict[str, tuple]]:
    variants: dict[tuple[int, str], dict[str, tuple]] = defaultdict(dict)
    rows = TemplateVariant.objects.filter(template_id__in=set(template_ids)).values_list(
        "template_id", "channel", "locale", "subject", "body", "html", "provider_options"
    )
    for template_id, channel, locale, subject, body, html, options in rows:
        variants[(template_id, channel)][locale] = (subject, body, html, options)
    return variants


@dataclass
class _Loaded:
    """What a batch needs, loaded in a few set-based queries."""

    customers: dict[int, Customer]
    topics: dict[int, Topic]
    variants: dict[tuple[int, str], dict[str, tuple]]
    addresses: dict[int, str]
    consent: dict[int, Any]
    #: For "preferred" messages: further consented channels, in the customer's order.
    alternatives: dict[int, tuple[str, ...]]
    #: Customers who wrote to us on WhatsApp within its customer-care window.
    whatsapp_sessions: set[int] = field(default_factory=set)


def _preferred_channels(
    message: _Claimed, customer: Customer, topic: Topic, variants: dict, order: list[str]
) -> list[str]:
    """Channels a "preferred" message could use: reachable, allowed, with a variant."""
    return [
        channel
        for channel in order
        if channel in topic.channels
        and (message.template_id, channel) in variants
        and customer.address_for(channel)
    ]


def _load(claimed: Sequence[_Claimed]) -> _Loaded:
    """Load the batch's customers, topics and variants; route "preferred"; check consent.

    A "preferred" message was given the customer's first reachable channel when it was
    queued; here, at send time, it takes the first one the customer has consented to,
    and keeps the others as alternatives for the fatigue policy.
    """
    # "= ANY(array)": one parameter, where IN (...) would be a thousand placeholders the
    # driver splits in Python.
    customers = {
        c.id: c
        for c in Customer.objects.raw(
            "SELECT * FROM audience_customer WHERE id = ANY(%s)",
            [sorted({m.customer_id for m in claimed})],
        )
    }
    topics = Topic.objects.in_bulk({m.topic_id for m in claimed})
    variants = _load_variants(m.template_id for m in claimed)
    preferred = [m for m in claimed if m.requested_channel == "preferred"]
    orders: dict[int, list[str]] = {}
    if preferred:
        own = dict(
            ChannelPreference.objects.filter(
                customer_id__in={m.customer_id for m in preferred}
            ).values_list("customer_id", "channel_order")
        )
        for m in preferred:
            mine = list(own.get(m.customer_id) or [])
            orders[m.id] = mine + [c for c in DEFAULT_CHANNEL_ORDER if c not in mine]
    requests: list[ConsentRequest] = []
    owners: list[tuple[int, str]] = []
    for m in claimed:
        customer = customers[m.customer_id]
        options = (
            _preferred_channels(m, customer, topics[m.topic_id], variants, orders[m.id])
            if m.id in orders
            else []
        ) or [m.channel]
        for channel in options:
            requests.append(
                ConsentRequest(m.customer_id, m.topic_id, channel, customer.address_for(channel))
            )
            owners.append((m.id, channel))
    decisions = consent_decisions(requests, topics=topics)
    per_message: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for (message_id, channel), decision in zip(owners, decisions, strict=True):
        per_message[message_id].append((channel, decision))
    consent: dict[int, Any] = {}
    alternatives: dict[int, tuple[str, ...]] = {}
    addresses: dict[int, str] = {}
    for m in claimed:
        options = per_message[m.id]
        allowed = [(c, d) for c, d in options if d.allowed]
        channel, decision = allowed[0] if allowed else options[0]
        m.channel = channel
        consent[m.id] = decision
        alternatives[m.id] = tuple(c for c, _d in allowed[1:])
        addresses[m.id] = customers[m.customer_id].address_for(channel)
    sessions = _whatsapp_sessions({m.customer_id for m in claimed if m.channel == "whatsapp"})
    return _Loaded(customers, topics, variants, addresses, consent, alternatives, sessions)


#: WhatsApp allows free-form messages this long after the customer last wrote, less a
#: margin for the time between deciding and the provider receiving the message.
WHATSAPP_SESSION = dt.timedelta(hours=24) - dt.timedelta(minutes=5)


def _link_variables(subject: str, body: str, html: str, options: Any) -> frozenset[str]:
    """Which of ``preferences_url`` and ``unsubscribe_url`` a variant reads."""
    used = variables_used(subject) | variables_used(body) | variables_used(html, True)
    for text in _strings(options):
        used |= variables_used(text)
    return used & LINK_VARIABLES


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _links(
    message: _Claimed,
    topic: Topic,
    used: frozenset[str],
    preference_links: dict[tuple[int, str], str],
) -> tuple[dict[str, str], dict[str, str]]:
    """The link variables the template reads, and the email's List-Unsubscribe headers.

    Each link is an HMAC (10-25 us), so only the ones needed are made: RFC 8058
    one-click headers go on every marketing email and transactional mail has none;
    the variables only when the template reads them. A customer's preference link
    names no message, so ``preference_links`` keeps it for the rest of the batch.
    """
    marketing = not topic.is_transactional
    email = message.channel == "email"
    one_click = ""
    if marketing and (email or "unsubscribe_url" in used):
        one_click = unsubscribe_url(
            customer_id=message.customer_id,
            topic_id=topic.id,
            channel=message.channel,
            message_id=message.id,
        )
    links: dict[str, str] = {}
    if "preferences_url" in used or ("unsubscribe_url" in used and not one_click):
        key = (message.customer_id, message.channel)
        if key not in preference_links:
            preference_links[key] = preference_link(
                customer_id=message.customer_id, channel=message.channel
            )
        links["preferences_url"] = preference_links[key]
    if "unsubscribe_url" in used:
        # Nothing to unsubscribe from on a transactional topic: the preference center.
        links["unsubscribe_url"] = one_click or links["preferences_url"]
    headers = one_click_headers(one_click) if marketing and email else {}
    return links, headers


def _whatsapp_sessions(customer_ids: set[int]) -> set[int]:
    """Customers whose WhatsApp window is open: they wrote to us within it, and Twilio
    has not since reported a send to them failing because the window had closed."""
    if not customer_ids:
        return set()
    from django.db.models import Max

    from orchestrator.delivery.models import InboundMessage
    from orchestrator.delivery.models import MessageEvent

    since = timezone.now() - WHATSAPP_SESSION
    last_wrote = dict(
        InboundMessage.objects.filter(
            customer_id__in=customer_ids, channel="whatsapp", received_at__gte=since
        )
        .values("customer_id")
        .annotate(last=Max("received_at"))
        .values_list("customer_id", "last")
    )
    if not last_wrote:
        return set()
    closed = MessageEvent.objects.filter(
        code="twilio:63016",
        occurred_at__gte=since,
        message__customer_id__in=list(last_wrote),
        message__channel="whatsapp",
    ).values_list("message__customer_id", "occurred_at")
    for customer_id, at in closed:
        if at >= last_wrote.get(customer_id, at):
            last_wrote.pop(customer_id, None)
    return set(last_wrote)


def _channel_metadata(
    message: _Claimed, options: dict, context: dict[str, Any], sessions: set[int]
) -> dict[str, Any]:
    """What the chat adapters need beyond the text: the WhatsApp window and template, LINE kinds."""
    if message.channel == "whatsapp":
        rendered = render_options(options or {}, context)
        variables = rendered.get("content_variables") or {}
        return {
            "whatsapp": {
                "session_open": message.customer_id in sessions,
                "content_sid": str(rendered.get("content_sid") or ""),
                "content_variables": {str(k): str(v) for k, v in variables.items()},
            }
        }
    if message.channel == "line" and (options or {}).get("kind"):
        return {"line": render_options(options, context)}
    return {}


def _prepare(claimed: Sequence[_Claimed], loaded: _Loaded, now: dt.datetime) -> _Prepared:
    """Render what consent and the fatigue policy let through; fail what cannot render."""
    customers, topics, variants = loaded.customers, loaded.topics, loaded.variants
    template_rows = list(
        MessageTemplate.objects.filter(id__in={m.template_id for m in claimed}).values_list(
            "id", "key", "track_clicks"
        )
    )
    template_keys = {template_id: key for template_id, key, _track in template_rows}
    tracks_clicks = {template_id for template_id, _key, track in template_rows if track}
    addresses = [loaded.addresses[m.id] for m in claimed]
    decisions = [loaded.consent[m.id] for m in claimed]
    sender = settings.DEFAULT_FROM_EMAIL
    brand = {"name": settings.BRAND_NAME}
    contexts: dict[int, dict[str, Any]] = {}
    link_variables: dict[tuple[int, str, str], frozenset[str]] = {}
    preference_links: dict[tuple[int, str], str] = {}

    def customer_vars(customer: Customer) -> dict[str, Any]:
        # Built once per customer in the batch; templates only read it.
        if customer.id not in contexts:
            contexts[customer.id] = customer_context(customer)
        return contexts[customer.id]

    unconfigured: dict[str, str] = {}
    for channel in {m.channel for m in claimed}:
        try:
            get_adapter(channel)
        except ImproperlyConfigured as exc:
            # Found before the hand-off, so the message is known not to have gone out.
            unconfigured[channel] = str(exc)
    prepared = _Prepared()
    for message, address, consent in zip(claimed, addresses, decisions, strict=True):
        topic = topics[message.topic_id]
        if consent.allowed and message.channel in unconfigured:
            reason = f"no adapter configured for {message.channel}; not sent"
            prepared.outcomes.append(
                _Outcome(
                    message.id,
                    MessageStatus.FAILED,
                    reason,
                    explain("send", MessageStatus.FAILED, reason),
                    last_error=unconfigured[message.channel],
                    keep_handed_off=False,
                )
            )
            continue
        if not consent.allowed:
            prepared.outcomes.append(
                _Outcome(
                    message.id,
                    MessageStatus.SUPPRESSED,
                    consent.reason,
                    explain(
                        "consent",
                        MessageStatus.SUPPRESSED,
                        consent.reason,
                        code=consent.code,
                        **consent.details,
                    ),
                    keep_handed_off=False,
                    code=f"consent:{consent.code}",
                )
            )
            continue
        customer = customers[message.customer_id]
        by_locale = variants.get((message.template_id, message.channel), {})
        locale = pick_locale(message.locale or customer.locale, set(by_locale))
        if locale is None:
            key = template_keys.get(message.template_id)
            reason = f"template {key!r} has no {message.channel} variant"
            prepared.outcomes.append(
                _Outcome(
                    message.id,
                    MessageStatus.FAILED,
                    reason,
                    explain("render", MessageStatus.FAILED, reason),
                    last_error=reason,
                    keep_handed_off=False,
                )
            )
            continue
        subject, body, html, options = by_locale[locale]
        variant_key = (message.template_id, message.channel, locale)
        if variant_key not in link_variables:
            link_variables[variant_key] = _link_variables(subject, body, html, options)
        links, headers = _links(message, topic, link_variables[variant_key], preference_links)
        try:
            context = build_context(
                customer=customer,
                message_data=message.data,
                customer_vars=customer_vars(customer),
                brand=brand,
                links=links,
            )
            rendered = render_variant(
                subject=subject if message.channel == "email" else "",
                body=body,
                html=html if message.channel == "email" else "",
                channel=message.channel,
                context=context,
            )
            extras = _channel_metadata(message, options, context, loaded.whatsapp_sessions)
        except TemplateProblem as exc:
            reason = f"template did not render ({exc}); nothing was sent"
            prepared.outcomes.append(
                _Outcome(
                    message.id,
                    MessageStatus.FAILED,
                    reason,
                    explain(
                        "render",
                        MessageStatus.FAILED,
                        reason,
                        field=exc.field,
                        line=exc.line,
                        locale=locale,
                    ),
                    last_error=str(exc),
                    keep_handed_off=False,
                )
            )
            continue
        body, html, tracked = rendered.body, rendered.html, None
        if message.template_id in tracks_clicks:
            # Links go out as /r/<token>; the originals stay in the snapshot, where the
            # redirect reads them (see clicks.py).
            tracked = links_rewrite(message_id=message.id, body=body, html=html)
            body, html = tracked.body, tracked.html
        metadata = {"topic": topic.key, "attempt": message.attempts + 1, **extras}
        if message.channel == "email":
            # What only this recipient's copy says: SendGrid sends copies that differ in
            # nothing else as one request, with these as substitutions.
            personal = [*links.values(), *(tracked.tracked if tracked else ())]
            if personal:
                metadata["personal"] = list(dict.fromkeys(personal))
        outbound = OutboundMessage(
            message_id=message.id,
            channel=message.channel,
            to=address,
            body=body,
            subject=rendered.subject,
            html=html,
            sender=sender if message.channel == "email" else "",
            headers=headers,
            metadata=metadata,
        )
        snapshot = {
            "subject": rendered.subject,
            "body": body,
            "html": html,
            "to": address,
            "locale": locale,
            "consent": consent.code,
        }
        if tracked is not None and tracked.links:
            snapshot["links"] = tracked.links
        prepared.sendable.append((outbound, snapshot))
    return prepared


# --- writes ----------------------------------------------------------------------

# Each batch statement takes its rows as one JSON document (``jsonb_to_recordset``): one
# parameter to quote instead of thousands of array elements, which the driver would
# otherwise escape one by one in Python.

_WAITING = "m.status IN ('queued', 'scheduled', 'deferred')"

# Rows locked by this transaction (_lock_due) become ``sending`` under this attempt.
_HANDOFF_SQL = """
UPDATE delivery_message AS m SET
    status = 'sending', attempt_id = %(attempt_id)s, claimed_at = %(now)s,
    rendered = u.rendered, to_address = u.address, channel = u.channel,
    handed_off_at = %(now)s, decided_at = %(now)s, updated_at = %(now)s,
    attempts = m.attempts + 1, explanation = m.explanation || u.entries
FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(
    id bigint, rendered jsonb, address text, channel text, entries jsonb)
WHERE m.id = u.id AND m.status IN ('queued', 'scheduled', 'deferred')
RETURNING m.id
"""

# The outcome update and its history rows in one statement: history is written only
# for the rows the update matched - rows still locked and waiting (before the hand-off)
# or still under this worker's attempt id (after the provider call).
_RECORD_SQL = """
WITH u AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(
        id bigint, status text, reason text, entry jsonb, provider text,
        provider_message_id text, sent_at timestamptz, last_error text,
        send_after timestamptz, keep_handed_off boolean, code text, channel text,
        address text)
), updated AS (
    UPDATE delivery_message AS m SET
        status = u.status,
        provider = COALESCE(u.provider, m.provider),
        provider_message_id = COALESCE(u.provider_message_id, m.provider_message_id),
        sent_at = COALESCE(u.sent_at, m.sent_at),
        last_error = COALESCE(u.last_error, m.last_error),
        send_after = COALESCE(u.send_after, m.send_after),
        handed_off_at = CASE WHEN u.keep_handed_off THEN m.handed_off_at END,
        channel = COALESCE(u.channel, m.channel),
        to_address = COALESCE(u.address, m.to_address),
        -- A fallback is used once: moving to it clears it.
        fallback_channel = CASE WHEN u.channel IS NULL THEN m.fallback_channel ELSE '' END,
        decided_at = CASE WHEN u.channel IS NULL THEN m.decided_at END,
        explanation = m.explanation || jsonb_build_array(u.entry),
        updated_at = %(now)s
    FROM u
    WHERE m.id = u.id AND {guard}
    RETURNING m.id, u.status, u.reason, u.code
)
INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code)
SELECT id, status, %(now)s, reason, COALESCE(code, '') FROM updated
RETURNING message_id
"""


def _json_default(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _as_json(rows: Any) -> str:
    return json.dumps(rows, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _insert_events(cursor, rows: Sequence[tuple[int, str, str]], now: dt.datetime) -> None:
    if not rows:
        return
    cursor.execute(
        "INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code) "
        "SELECT u.id, u.status, %(now)s, u.reason, '' "
        "FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(id bigint, status text, reason text)",
        {
            "now": now,
            "rows": _as_json([{"id": i, "status": st, "reason": r} for i, st, r in rows]),
        },
    )


_RECORD_LOCKED_SQL = _RECORD_SQL.format(guard=_WAITING)
_RECORD_SENT_SQL = _RECORD_SQL.format(
    guard="m.attempt_id = %(attempt_id)s AND m.status = 'sending'"
)


def _record(
    cursor,
    outcomes: Sequence[_Outcome],
    attempt_id: uuid.UUID | None,
    now: dt.datetime,
    *,
    locked: bool = False,
) -> set:
    """Write outcomes with their history; returns the ids written.

    ``locked``: rows this transaction holds (not yet handed off); otherwise only rows
    still under ``attempt_id`` (a reclaimed row is not overwritten by a late worker).
    """
    if not outcomes:
        return set()
    rows = [
        {
            "id": o.message_id,
            "status": str(o.status),
            "reason": o.reason,
            "entry": o.entry,
            "provider": o.provider,
            "provider_message_id": o.provider_message_id,
            "sent_at": o.sent_at,
            "last_error": o.last_error,
            "send_after": o.send_after,
            "keep_handed_off": o.keep_handed_off,
            "code": o.code,
            "channel": o.channel,
            "address": o.address,
        }
        for o in outcomes
    ]
    sql = _RECORD_LOCKED_SQL if locked else _RECORD_SENT_SQL
    cursor.execute(sql, {"rows": _as_json(rows), "attempt_id": attempt_id, "now": now})
    return {row[0] for row in cursor.fetchall()}


def backoff(attempts: int) -> dt.timedelta:
    """Delay before the next try after ``attempts`` tries: exponential, capped, jittered.

    The jitter (50-100% of the delay) spreads a burst of failures over time so a
    recovering provider is not hit by the whole batch again at once.
    """
    exponent = max(attempts - 1, 0)
    delay = min(BACKOFF_BASE * (2**exponent), BACKOFF_MAX)
    return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security


def _result_outcome(
    result: SendResult,
    *,
    provider: str,
    attempts: int,
    now: dt.datetime,
    fallback: tuple[str, str] | None = None,
) -> _Outcome:
    """What a provider's answer means for the message. ``fallback``: (channel, address)."""
    mid = result.message_id
    if result.accepted:
        reason = f"accepted by {provider}"
        return _Outcome(
            mid,
            MessageStatus.SENT,
            reason,
            explain(
                "send",
                MessageStatus.SENT,
                reason,
                provider=provider,
                provider_message_id=result.provider_message_id,
                attempt=attempts,
                **({"provider_detail": result.detail} if result.detail else {}),
            ),
            provider=provider,
            provider_message_id=result.provider_message_id,
            sent_at=now,
        )
    error = result.error or "refused without a reason"
    code = result.error_code
    if result.unknown:
        reason = f"outcome unknown ({error}); awaiting provider status, not resent"
        return _Outcome(
            mid,
            MessageStatus.SENDING,
            reason,
            explain("send", "unknown", reason, provider=provider, code=result.error_code),
            provider=provider,
            last_error=error,
        )
    if result.permanent and fallback is not None:
        channel, address = fallback
        reason = f"{provider} refused it permanently ({error}); trying the fallback, {channel}"
        return _Outcome(
            mid,
            MessageStatus.QUEUED,
            reason,
            explain("send", "fallback", reason, provider=provider, code=code, fallback=channel),
            provider=provider,
            last_error=error,
            send_after=now,
            keep_handed_off=False,
            code="fallback",
            channel=channel,
            address=address,
        )
    if result.permanent:
        reason = f"{provider} refused it permanently: {error}"
        if result.suppress:
            reason += f"; the address is suppressed from now on ({result.suppress})"
        return _Outcome(
            mid,
            MessageStatus.FAILED,
            reason,
            explain("send", MessageStatus.FAILED, reason, provider=provider, code=code),
            provider=provider,
            last_error=error,
            keep_handed_off=False,
        )
    if attempts >= MAX_ATTEMPTS:
        reason = f"gave up after {attempts} attempts; last error from {provider}: {error}"
        return _Outcome(
            mid,
            MessageStatus.FAILED,
            reason,
            explain("send", MessageStatus.FAILED, reason, provider=provider, code=code),
            provider=provider,
            last_error=error,
            keep_handed_off=False,
        )
    retry_at = now + backoff(attempts)
    reason = (
        f"{provider} failed transiently ({error}); retry {attempts + 1} of {MAX_ATTEMPTS} "
        f"at {retry_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    return _Outcome(
        mid,
        MessageStatus.QUEUED,
        reason,
        explain(
            "send",
            "retry",
            reason,
            provider=provider,
            code=result.error_code,
            attempt=attempts,
            retry_at=retry_at.isoformat(),
        ),
        provider=provider,
        last_error=error,
        send_after=retry_at,
        # The provider said no: it definitely does not have it, so a resend is safe.
        keep_handed_off=False,
    )


def _call_adapters(
    sendable: Sequence[OutboundMessage],
) -> list[tuple[SendResult, str]]:
    """Send grouped by channel; returns (result, provider) for every message."""
    by_channel: dict[str, list[OutboundMessage]] = defaultdict(list)
    for outbound in sendable:
        by_channel[outbound.channel].append(outbound)
    results: list[tuple[SendResult, str]] = []
    for channel, batch in by_channel.items():
        adapter = get_adapter(channel)
        provider = adapter.provider
        started = time.monotonic()
        try:
            channel_results = adapter.send(batch)
        except Exception as exc:
            # We cannot tell whether the request reached the provider, so these are
            # "maybe sent": left for reconciliation rather than retried into a duplicate.
            logger.exception("adapter %s failed for %d %s messages", provider, len(batch), channel)
            channel_results = [
                SendResult(
                    message_id=m.message_id,
                    accepted=False,
                    unknown=True,
                    error=f"{type(exc).__name__}: {exc}",
                    error_code="adapter_error",
                )
                for m in batch
            ]
        elapsed = time.monotonic() - started
        provider_call_observe(provider=provider, seconds=elapsed, **outcome_counts(channel_results))
        by_id = {r.message_id: r for r in channel_results}
        for outbound in batch:
            result = by_id.get(outbound.message_id) or SendResult(
                message_id=outbound.message_id,
                accepted=False,
                unknown=True,
                error="the adapter returned no result for this message",
                error_code="missing_result",
            )
            results.append((result, provider))
    return results


# --- entry points ----------------------------------------------------------------


def dispatch_batch(*, batch_size: int | None = None) -> DispatchStats:
    """Claim, decide, render, send and record one batch of due messages."""
    limit = batch_size or settings.DISPATCH_BATCH_SIZE
    stats = DispatchStats(batches=1)
    now = timezone.now()
    attempt_id = uuid.uuid4()
    with transaction.atomic(), connection.cursor() as cursor:
        claimed, expired = _lock_due(cursor, limit=limit, now=now)
        stats.claimed = len(claimed) + len(expired)
        if not stats.claimed:
            return stats
        handed = _decide_and_hand_off(
            cursor, claimed, expired, attempt_id=attempt_id, now=now, stats=stats
        )
    if handed is not None:
        _send_and_record(handed, attempt_id=attempt_id, stats=stats)
    return stats


def _fallbacks(claimed: Sequence[_Claimed], loaded: _Loaded) -> dict[int, tuple[str, str]]:
    """(channel, address) to fall back to per message, where one is usable."""
    out: dict[int, tuple[str, str]] = {}
    for m in claimed:
        channel = m.fallback_channel
        if not channel or channel == m.channel:
            continue
        address = loaded.customers[m.customer_id].address_for(channel)
        if address and (m.template_id, channel) in loaded.variants:
            out[m.id] = (channel, address)
    return out


@dataclass
class _HandedOff:
    to_send: list[OutboundMessage]
    attempts: dict[int, int]
    fallbacks: dict[int, tuple[str, str]]


def _decide_and_hand_off(
    cursor,
    claimed: Sequence[_Claimed],
    expired: Sequence[_Outcome],
    *,
    attempt_id: uuid.UUID,
    now: dt.datetime,
    stats: DispatchStats,
) -> _HandedOff | None:
    """Consent, fatigue policy, render and hand-off, in the transaction holding the rows.

    The customers' decision locks are held until the messages let through are marked
    ``decided_at`` (so a concurrent dispatcher counts them), and each message is
    written once before the provider call.
    """
    loaded = _load(claimed) if claimed else None
    held: list[_Outcome] = []
    policy_entries: dict[int, dict[str, Any]] = {}
    prepared = _Prepared()
    if loaded is not None:
        claimed, held, policy_entries = _apply_policy(cursor, claimed, loaded, now=now, stats=stats)
        prepared = _prepare(claimed, loaded, now)
    handed_off: set[int] = set()
    if prepared.sendable:
        rows = [
            {
                "id": o.message_id,
                "rendered": snapshot,
                "address": o.to,
                "channel": o.channel,
                "entries": [policy_entries[o.message_id]],
            }
            for o, snapshot in prepared.sendable
        ]
        cursor.execute(_HANDOFF_SQL, {"rows": _as_json(rows), "attempt_id": attempt_id, "now": now})
        handed_off = {row[0] for row in cursor.fetchall()}
    outcomes_now = [*expired, *held, *prepared.outcomes]
    written = _record(cursor, outcomes_now, attempt_id, now, locked=True)
    _tally(stats, outcomes_now, written)
    to_send = [o for o, _s in prepared.sendable if o.message_id in handed_off]
    stats.lost += len(prepared.sendable) - len(to_send)
    if not to_send or loaded is None:
        return None
    return _HandedOff(
        to_send,
        {m.id: m.attempts + 1 for m in claimed},
        _fallbacks(claimed, loaded),
    )


def _send_and_record(handed: _HandedOff, *, attempt_id: uuid.UUID, stats: DispatchStats) -> None:
    """The provider calls, outside any transaction (no lock held while we wait), then record."""
    results = _call_adapters(handed.to_send)
    done = timezone.now()
    outcomes = [
        _result_outcome(
            result,
            provider=provider,
            attempts=handed.attempts[result.message_id],
            now=done,
            fallback=handed.fallbacks.get(result.message_id),
        )
        for result, provider in results
    ]
    sent = {o.message_id: o for o in handed.to_send}
    with transaction.atomic(), connection.cursor() as cursor:
        written = _record(cursor, outcomes, attempt_id, done)
        # The address itself is unusable (an opt-out at the carrier, a dead number):
        # suppress it with the outcome, so no later send of any kind tries it again.
        # Only the provider's code goes in the detail: its text may quote the address.
        suppressions_add(
            (
                sent[r.message_id].channel,
                sent[r.message_id].to,
                r.suppress,
                f"{provider} {r.error_code}".strip(),
            )
            for r, provider in results
            if r.suppress and not r.accepted and r.message_id in written
        )
    _tally(stats, outcomes, written)


#: The counter each recorded outcome adds to; any other status counts as failed.
_COUNTER_FOR_STATUS = {
    MessageStatus.SENT: "sent",
    MessageStatus.QUEUED: "retrying",  # a transient failure, tried again later
    MessageStatus.SENDING: "unknown",  # the provider may have it: awaiting its status
    MessageStatus.DEFERRED: "deferred",
    MessageStatus.EXPIRED: "expired",
    MessageStatus.SUPPRESSED: "suppressed",
}


def _tally(stats: DispatchStats, outcomes: Sequence[_Outcome], written: set) -> None:
    for outcome in outcomes:
        counter = (
            _COUNTER_FOR_STATUS.get(outcome.status, "failed")
            if outcome.message_id in written
            else "lost"
        )
        setattr(stats, counter, getattr(stats, counter) + 1)


def _apply_policy(
    cursor,
    claimed: Sequence[_Claimed],
    loaded: _Loaded,
    *,
    now: dt.datetime,
    stats: DispatchStats,
) -> tuple[list[_Claimed], list[_Outcome], dict[int, dict[str, Any]]]:
    """Decide the fatigue policy for what consent allows, inside the caller's transaction.

    Returns the messages that may go now, the outcomes of the held ones (deferred,
    dropped, expired), and the policy's explanation entry per message let through.
    Consent-blocked messages pass through untouched (``_prepare`` suppresses them).
    """
    items = [
        fatigue.PolicyInput(
            m.id,
            m.customer_id,
            m.channel,
            m.topic_id,
            m.priority,
            m.journey,
            m.expires_at,
            loaded.alternatives.get(m.id, ()),
        )
        for m in claimed
        if loaded.consent[m.id].allowed
    ]
    if not items:
        return list(claimed), [], {}
    started = time.perf_counter()
    batch = fatigue.decide_batch(
        cursor, items, topics=loaded.topics, customers=loaded.customers, now=now
    )
    rule_keys = batch.rule_keys
    # Another dispatcher is deciding for these customers: leave their messages
    # untouched for a later batch, when that decision counts in their history.
    later = {i.message_id for i in items if i.customer_id in batch.busy}
    stats.busy += len(later)
    by_id = {m.id: m for m in claimed}
    held: list[_Outcome] = []
    entries: dict[int, dict[str, Any]] = {}
    for message_id, decision in batch.decisions.items():
        status = fatigue.status_for(decision)
        details: dict[str, Any] = {"rules": decision.trail}
        if decision.action == policy.DEFER:
            details["send_after"] = decision.send_after.isoformat()
        entry = explain("policy", status, decision.reason, **details)
        if decision.action == policy.SEND:
            message = by_id[message_id]
            if decision.channel and decision.channel != message.channel:
                message.channel = decision.channel
                customer = loaded.customers[message.customer_id]
                loaded.addresses[message_id] = customer.address_for(decision.channel)
            entries[message_id] = entry
            continue
        held.append(
            _Outcome(
                message_id,
                status,
                decision.reason,
                entry,
                send_after=decision.send_after if decision.action == policy.DEFER else None,
                keep_handed_off=False,
                code=fatigue.hold_code(decision, rule_keys),
            )
        )
    stats.policy_seconds += time.perf_counter() - started
    held_ids = {o.message_id for o in held} | later
    return [m for m in claimed if m.id not in held_ids], held, entries


def dispatch_due(
    *, time_budget: float = 20.0, batch_size: int | None = None
) -> tuple[DispatchStats, bool]:
    """Dispatch batches until nothing is due or ``time_budget`` seconds have passed.

    Returns the totals and whether the budget ran out with work possibly left.
    """
    limit = batch_size or settings.DISPATCH_BATCH_SIZE
    deadline = time.monotonic() + time_budget
    total = DispatchStats()
    while True:
        stats = dispatch_batch(batch_size=limit)
        total.add(stats)
        out_of_time = time.monotonic() >= deadline
        if stats.busy and not out_of_time:
            # Messages left for customers another dispatcher was deciding: they are due
            # again the moment its transaction ends. Give it that moment if this batch
            # made no progress of its own.
            if stats.busy == stats.claimed:
                time.sleep(0.02)
            continue
        # A short batch means the due set is drained (or the rest is locked by
        # another dispatcher, which will finish it).
        if stats.claimed < limit and not stats.busy:
            return total, False
        if out_of_time:
            return total, True


@dataclass
class RecoveryStats:
    requeued: int = 0
    awaiting_status: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requeued": self.requeued, "awaiting_status": self.awaiting_status}


def recover_stalled(*, stalled_after: dt.timedelta = STALLED_AFTER) -> RecoveryStats:
    """Requeue sends whose worker died before the provider call; flag the others once.

    A stalled row without ``handed_off_at`` never reached an adapter, so sending
    it again cannot duplicate. A row with ``handed_off_at`` may have reached the
    provider: it stays ``sending`` until a status webhook settles it.
    """
    now = timezone.now()
    cutoff = now - stalled_after
    requeue_entry = explain(
        "recovery",
        MessageStatus.QUEUED,
        "the worker stopped before calling the provider; requeued (it was not sent)",
    )
    unknown_entry = explain(
        "reconcile",
        "unknown",
        "outcome unknown: the provider may have it; awaiting provider status, not resent",
    )
    stats = RecoveryStats()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE delivery_message SET
                status = 'queued', send_after = %s, attempt_id = NULL, claimed_at = NULL,
                updated_at = %s, explanation = explanation || jsonb_build_array(%s::jsonb)
            WHERE status = 'sending' AND handed_off_at IS NULL AND claimed_at < %s
            RETURNING id
            """,
            [now, now, json.dumps(requeue_entry), cutoff],
        )
        requeued = [row[0] for row in cursor.fetchall()]
        _insert_events(
            cursor,
            [(mid, MessageStatus.QUEUED, requeue_entry["reason"]) for mid in requeued],
            now,
        )
        cursor.execute(
            """
            UPDATE delivery_message SET
                updated_at = %s, explanation = explanation || jsonb_build_array(%s::jsonb)
            WHERE status = 'sending' AND handed_off_at IS NOT NULL AND claimed_at < %s
              AND NOT explanation @> '[{"step": "reconcile"}]'
            """,
            [now, json.dumps(unknown_entry), cutoff],
        )
        stats.awaiting_status = cursor.rowcount
    stats.requeued = len(requeued)
    if requeued:
        from orchestrator.delivery.services import kick_dispatcher

        kick_dispatcher()
    return stats
