"""Composing a claimed batch: load what it needs, route and check consent, render.

Loading is a few set-based queries for the whole batch (customers, topics,
variants, channel orders, consent, WhatsApp windows). Rendering is Liquid in
Python; a render error fails the message, it is never sent blank. The result is
one ``OutboundMessage`` and rendered snapshot per message that may go, and an
outcome for each that may not.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Max
from django.utils import timezone

from channels.adapters import OutboundMessage, get_adapter
from orchestrator.audience.models import Customer
from orchestrator.consent.message_links import preference_link
from orchestrator.consent.models import Topic
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.consent.unsubscribe import one_click_headers, unsubscribe_url
from orchestrator.delivery import routing
from orchestrator.delivery.clicks import links_rewrite
from orchestrator.delivery.dispatcher.claim import Claimed
from orchestrator.delivery.dispatcher.outcomes import Outcome
from orchestrator.delivery.models import (
    MessageEvent,
    MessageStatus,
    MessageTemplate,
    TemplateVariant,
)
from orchestrator.delivery.rendering import (
    TemplateProblem,
    build_context,
    customer_context,
    link_variables_read,
    render_message,
)
from orchestrator.delivery.trail import explain


@dataclass
class Prepared:
    """The rendered batch: (message, snapshot) pairs to hand off, outcomes for the rest."""

    sendable: list[tuple[OutboundMessage, dict[str, Any]]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def _load_variants(template_ids: Iterable[int]) -> dict[tuple[int, str], dict[str, tuple]]:
    variants: dict[tuple[int, str], dict[str, tuple]] = defaultdict(dict)
    rows = TemplateVariant.objects.filter(template_id__in=set(template_ids)).values_list(
        "template_id", "channel", "locale", "subject", "body", "html", "provider_options"
    )
    for template_id, channel, locale, subject, body, html, options in rows:
        variants[(template_id, channel)][locale] = (subject, body, html, options)
    return variants


@dataclass
class Loaded:
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
    #: The channel each message was queued on, before routing at send time.
    queued_channels: dict[int, str] = field(default_factory=dict)
    #: Messages routing moved off their queued channel: why, per message (the channels
    #: consent refused before the one taken). ``decide`` records the switch.
    reroutes: dict[int, dict[str, Any]] = field(default_factory=dict)


def load_batch(claimed: Sequence[Claimed]) -> Loaded:
    """Load the batch's customers, topics and variants; route "preferred"; check consent.

    A "preferred" message was given the customer's first reachable channel when it was
    queued; here, at send time, it takes the first one the customer has consented to,
    and keeps the others as alternatives for the fatigue policy (see ``routing``).
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
    template_channels: dict[int, set[str]] = defaultdict(set)
    for template_id, channel in variants:
        template_channels[template_id].add(channel)
    orders = routing.channel_orders(
        m.customer_id for m in claimed if m.requested_channel == routing.PREFERRED
    )
    requests: list[ConsentRequest] = []
    owners: list[tuple[int, str]] = []
    for m in claimed:
        customer = customers[m.customer_id]
        options = routing.send_options(
            m.requested_channel,
            m.channel,
            order=orders.get(m.customer_id, ()),
            topic_channels=topics[m.topic_id].channels,
            template_channels=template_channels[m.template_id],
            address_for=customer.address_for,
        )
        for channel in options:
            requests.append(
                ConsentRequest(
                    m.customer_id, m.topic_id, channel, customer.address_for(channel), m.id
                )
            )
            owners.append((m.id, channel))
    decisions = consent_decisions(requests, topics=topics)
    per_message: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for (message_id, channel), decision in zip(owners, decisions, strict=True):
        per_message[message_id].append((channel, decision))
    consent: dict[int, Any] = {}
    alternatives: dict[int, tuple[str, ...]] = {}
    addresses: dict[int, str] = {}
    queued: dict[int, str] = {}
    reroutes: dict[int, dict[str, Any]] = {}
    for m in claimed:
        queued[m.id] = m.channel
        channel, consent[m.id], alternatives[m.id] = routing.choose_consented(
            per_message[m.id], current=m.channel
        )
        if channel != m.channel and consent[m.id].allowed:
            reroutes[m.id] = {
                "from": m.channel,
                "to": channel,
                "refused": [
                    {"channel": c, "code": d.code, "reason": d.reason}
                    for c, d in per_message[m.id]
                    if not d.allowed
                ],
            }
        m.channel = channel
        addresses[m.id] = customers[m.customer_id].address_for(channel)
    sessions = _whatsapp_sessions({m.customer_id for m in claimed if m.channel == "whatsapp"})
    return Loaded(
        customers, topics, variants, addresses, consent, alternatives, sessions, queued, reroutes
    )


#: WhatsApp allows free-form messages this long after the customer last wrote, less a
#: margin for the time between deciding and the provider receiving the message.
WHATSAPP_SESSION = dt.timedelta(hours=24) - dt.timedelta(minutes=5)


def _links(
    message: Claimed,
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
    from orchestrator.delivery.models import InboundMessage

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


def _channel_metadata(message: Claimed, rendered: Any, sessions: set[int]) -> dict[str, Any]:
    """What the chat adapters need beyond the text: the WhatsApp window and template, LINE
    kinds (``rendered``: the variant's provider options as ``render_message`` rendered them)."""
    if message.channel == "whatsapp":
        rendered = rendered or {}
        variables = rendered.get("content_variables") or {}
        return {
            "whatsapp": {
                "session_open": message.customer_id in sessions,
                "content_sid": str(rendered.get("content_sid") or ""),
                "content_variables": {str(k): str(v) for k, v in variables.items()},
            }
        }
    if message.channel == "line" and rendered:
        return {"line": rendered}
    return {}


def prepare(claimed: Sequence[Claimed], loaded: Loaded, now: dt.datetime) -> Prepared:
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
    prepared = Prepared()
    for message, address, consent in zip(claimed, addresses, decisions, strict=True):
        topic = topics[message.topic_id]
        if consent.allowed and message.channel in unconfigured:
            reason = f"no adapter configured for {message.channel}; not sent"
            prepared.outcomes.append(
                Outcome(
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
                Outcome(
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
        locale = routing.pick_locale(message.locale or customer.locale, by_locale.keys())
        if locale is None:
            key = template_keys.get(message.template_id)
            reason = f"template {key!r} has no {message.channel} variant"
            prepared.outcomes.append(
                Outcome(
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
            link_variables[variant_key] = link_variables_read(subject, body, html, options)
        links, headers = _links(message, topic, link_variables[variant_key], preference_links)
        try:
            context = build_context(
                customer=customer,
                message_data=message.data,
                customer_vars=customer_vars(customer),
                brand=brand,
                links=links,
            )
            rendered, rendered_options = render_message(
                channel=message.channel,
                subject=subject,
                body=body,
                html=html,
                options=options,
                context=context,
            )
            extras = _channel_metadata(message, rendered_options, loaded.whatsapp_sessions)
        except TemplateProblem as exc:
            reason = f"template did not render ({exc}); nothing was sent"
            prepared.outcomes.append(
                Outcome(
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


def fallbacks(claimed: Sequence[Claimed], loaded: Loaded) -> dict[int, tuple[str, str]]:
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
