"""Reading broadcasts: progress, results, and the preview of each variant as a chosen
customer would see it.

A broadcast's copies are in two places: the outbox (``delivery_message``) and, until
the expansion writes them there, its frozen recipients (``broadcasts_recipient``).
Every count here reads both, so a copy not expanded yet counts as waiting."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import connection

from orchestrator.audience.models import Customer
from orchestrator.broadcasts.models import Broadcast
from orchestrator.delivery.fatigue import hold_codes
from orchestrator.delivery.models import MessageTemplate
from orchestrator.delivery.rendering import TemplateProblem, build_context, render_message

#: Statuses of a message that went out (the provider accepted it), whatever came after.
WENT_OUT = ("sent", "delivered", "opened", "clicked", "replied", "undelivered", "bounced")
FAILED = ("failed", "undelivered", "bounced")
WAITING = ("queued", "scheduled", "deferred")


@dataclass
class Progress:
    total: int = 0
    #: Queued or waiting in the outbox, plus ``pending``.
    waiting: int = 0
    #: Frozen recipients whose copy is not in the outbox yet.
    pending: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    expired: int = 0
    canceled: int = 0
    #: Holds by reason (consent, quiet_hours, rule:<key>...): each message once per cause.
    held: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def broadcast_progress(broadcast: Broadcast) -> Progress:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM delivery_message WHERE broadcast_id = %s GROUP BY 1",
            [broadcast.pk],
        )
        by_status = dict(cursor.fetchall())
        cursor.execute(
            "SELECT count(*) FROM broadcasts_recipient WHERE broadcast_id = %s", [broadcast.pk]
        )
        pending = cursor.fetchone()[0]
        if pending:
            by_status["pending"] = pending
        # Dropped by a cancel before they reached the outbox.
        if broadcast.canceled_pending:
            by_status["canceled"] = by_status.get("canceled", 0) + broadcast.canceled_pending
        cursor.execute(
            """
            SELECT e.code, count(DISTINCT e.message_id)
            FROM delivery_messageevent e JOIN delivery_message m ON m.id = e.message_id
            WHERE m.broadcast_id = %s AND e.code <> '' AND e.code <> 'canceled'
                AND e.status IN ('deferred', 'suppressed', 'expired')
            GROUP BY 1
            """,
            [broadcast.pk],
        )
        held: Counter[str] = Counter()
        for code, n in cursor.fetchall():
            for cause in hold_codes(code):
                held[cause] += n
    return Progress(
        total=sum(by_status.values()),
        waiting=sum(by_status.get(s, 0) for s in WAITING) + pending,
        pending=pending,
        sending=by_status.get("sending", 0),
        sent=sum(by_status.get(s, 0) for s in WENT_OUT),
        failed=sum(by_status.get(s, 0) for s in FAILED),
        suppressed=by_status.get("suppressed", 0),
        expired=by_status.get("expired", 0),
        canceled=by_status.get("canceled", 0),
        held=dict(held.most_common()),
        by_status=by_status,
    )


@dataclass
class VariantResults:
    variant: str
    messages: int
    sent: int
    delivered: int
    clicks: int
    unsubscribes: int
    conversions: int

    @property
    def click_rate(self) -> float | None:
        return self.clicks / self.sent if self.sent else None

    @property
    def conversion_rate(self) -> float | None:
        return self.conversions / self.sent if self.sent else None


@dataclass
class Results:
    total: VariantResults
    #: "a", "b" (the test) and "" (everyone else: the winner, or all without a test).
    variants: list[VariantResults]

    def as_dict(self) -> dict[str, Any]:
        def one(v: VariantResults) -> dict[str, Any]:
            return {
                **asdict(v),
                "click_rate": v.click_rate,
                "conversion_rate": v.conversion_rate,
            }

        return {"total": one(self.total), "variants": [one(v) for v in self.variants]}


def broadcast_results(broadcast: Broadcast) -> Results:
    """Deliveries, clicks, unsubscribes (from the message's own link) and conversions
    (the broadcast's conversion event after the message went out), per variant; the
    copies of a variant count its recipients not expanded yet."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT m.broadcast_variant, count(*),
                count(*) FILTER (WHERE m.sent_at IS NOT NULL),
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM delivery_messageevent e
                    WHERE e.message_id = m.id AND e.status = 'delivered')),
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM delivery_messageevent e
                    WHERE e.message_id = m.id AND e.status = 'clicked')),
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM consent_consentrecord r
                    WHERE r.customer_id = m.customer_id AND r.action = 'opt_out'
                    AND r.evidence ->> 'message_id' = m.id::text)),
                count(*) FILTER (WHERE m.sent_at IS NOT NULL AND %(event)s <> '' AND EXISTS (
                    SELECT 1 FROM audience_event ev WHERE ev.customer_id = m.customer_id
                    AND ev.name = %(event)s AND ev.occurred_at >= m.sent_at))
            FROM delivery_message m WHERE m.broadcast_id = %(id)s
            GROUP BY 1 ORDER BY m.broadcast_variant = '', m.broadcast_variant
            """,
            {"id": broadcast.pk, "event": broadcast.ab_conversion_event or ""},
        )
        rows = {row[0]: list(row) for row in cursor.fetchall()}
        cursor.execute(
            "SELECT variant, count(*) FROM broadcasts_recipient WHERE broadcast_id = %s GROUP BY 1",
            [broadcast.pk],
        )
        for variant, n in cursor.fetchall():
            rows.setdefault(variant, [variant, 0, 0, 0, 0, 0, 0])[1] += n
    order = sorted(rows, key=lambda v: (v == "", v))
    variants = [VariantResults(*rows[v]) for v in order]
    total = VariantResults("", *(sum(getattr(v, f) for v in variants) for f in _COUNTS))
    return Results(total=total, variants=variants)


_COUNTS = ("messages", "sent", "delivered", "clicks", "unsubscribes", "conversions")


@dataclass
class Preview:
    variant: str
    template: str
    channel: str
    locale: str
    subject: str = ""
    body: str = ""
    html: str = ""
    options: Any = None
    problem: str = ""


def broadcast_preview(broadcast: Broadcast, customer: Customer) -> list[Preview]:
    """Every channel and locale variant of each A/B variant's template, rendered for
    ``customer`` with the broadcast's data, as the dispatcher would render it."""
    # Variant B of two subject lines is template A with B's subject on email: rendered
    # from A here, without writing the copy the send uses.
    variants: list[tuple[str, MessageTemplate, str | None]] = [("a", broadcast.template, None)]
    if broadcast.has_test:
        if broadcast.ab_kind == Broadcast.AbKind.TEMPLATE and broadcast.ab_template_id:
            variants.append(("b", broadcast.ab_template, None))
        elif broadcast.ab_kind == Broadcast.AbKind.SUBJECT:
            variants.append(("b", broadcast.template, broadcast.ab_subject))
    context = build_context(customer=customer, message_data=broadcast.data or {})
    out = []
    for letter, template, subject in variants:
        for v in template.variants.all():
            preview = Preview(letter, template.key, v.channel, v.locale)
            try:
                rendered, options = render_message(
                    channel=v.channel,
                    subject=subject if subject is not None and v.channel == "email" else v.subject,
                    body=v.body,
                    html=v.html,
                    options=v.provider_options,
                    context=context,
                )
                preview.subject, preview.body, preview.html = (
                    rendered.subject,
                    rendered.body,
                    rendered.html,
                )
                preview.options = options
            except TemplateProblem as exc:
                preview.problem = str(exc)
            out.append(preview)
    return out
