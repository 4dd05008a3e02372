"""Writing broadcasts: save, schedule, cancel, test send, the beat sweep that freezes
the audience of what is due and picks an A/B test's winner, and the expansion that moves
frozen recipients into the outbox at the pace the dispatcher sends."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.broadcasts import materialise as mat
from orchestrator.broadcasts.audience import AudienceMissing, audience_sql
from orchestrator.broadcasts.models import Broadcast, Recipient
from orchestrator.consent.models import CHANNELS
from orchestrator.core.tasking import publish_on_commit
from orchestrator.delivery import routing
from orchestrator.delivery.models import (
    WAITING_STATUSES,
    Message,
    MessageTemplate,
    TemplateVariant,
)
from orchestrator.delivery.services import message_create, messages_cancel

logger = logging.getLogger(__name__)

#: The earliest a local time anywhere comes (UTC+14, Kiribati): a local-time broadcast's
#: audience is frozen then; each copy enters the outbox shortly before its own time.
EARLIEST_OFFSET = dt.timedelta(hours=14)

#: Broadcast copies waiting in the outbox (all broadcasts together) above which the
#: expansion writes no more: the dispatcher drains them, then the expansion tops the
#: outbox up again, so a backlog of millions never sits in front of other sends.
OUTBOX_HIGH_WATER = getattr(settings, "BROADCAST_OUTBOX_HIGH_WATER", 50_000)

#: The task that expands due recipients (beat runs it too; re-kicked while work remains).
EXPAND_TASK = "sweeps.broadcasts_expand"

#: Fields a draft's body may set (API and admin).
EDITABLE = (
    "name",
    "template",
    "topic",
    "audience",
    "segment",
    "channel",
    "data",
    "schedule",
    "send_at",
    "local_date",
    "local_time",
    "rate_per_minute",
    "expires_at",
    "priority",
    "ab_share",
    "ab_kind",
    "ab_template",
    "ab_subject",
    "ab_wait",
    "ab_metric",
    "ab_conversion_event",
)


class BroadcastInvalid(ValueError):
    """The broadcast cannot be saved or scheduled as it is; ``fields`` say why."""

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}


def broadcast_problems(b: Broadcast) -> dict[str, list[str]]:
    """What is wrong with a broadcast's settings, by field; {} when it can be scheduled."""
    out: dict[str, list[str]] = {}

    def add(field: str, text: str) -> None:
        out.setdefault(field, []).append(text)

    if b.channel != routing.PREFERRED and b.channel not in CHANNELS:
        add("channel", f"Must be 'preferred' or one of {', '.join(CHANNELS)}.")
    if b.audience == Broadcast.Audience.SEGMENT and not b.segment:
        add("segment", "A segment audience needs the segment's key.")
    if b.schedule == Broadcast.Schedule.AT and b.send_at is None:
        add("send_at", "Required for a send at a set time.")
    if b.schedule == Broadcast.Schedule.LOCAL_TIME:
        if b.local_date is None:
            add("local_date", "Required for a send at a local time.")
        if b.local_time is None:
            add("local_time", "Required for a send at a local time.")
    if not 0 <= b.priority <= 9:
        add("priority", "Must be between 0 and 9.")
    if not 0 <= b.ab_share <= 100:
        add("ab_share", "Must be a percentage, 0 to 100.")
    if b.rate_per_minute is not None and b.rate_per_minute < 1:
        add("rate_per_minute", "Must be at least 1.")
    if b.has_test:
        if b.ab_kind == Broadcast.AbKind.TEMPLATE and b.ab_template_id is None:
            add("ab_template", "An A/B test of two templates needs variant B's template.")
        if b.ab_kind == Broadcast.AbKind.SUBJECT and not b.ab_subject.strip():
            add("ab_subject", "An A/B test of two subject lines needs variant B's subject.")
        if b.ab_metric == Broadcast.AbMetric.CONVERSIONS and not b.ab_conversion_event:
            add("ab_conversion_event", "Name the event that counts as a conversion.")
        if b.ab_wait <= dt.timedelta(0):
            add("ab_wait", "The test must run for some time.")
    if b.template_id and b.topic_id:
        channels = set(b.template.variants.values_list("channel", flat=True))
        usable = channels & set(b.topic.channels)
        if b.channel == routing.PREFERRED and not usable:
            add("template", "The template has no variant on a channel the topic allows.")
        elif b.channel != routing.PREFERRED and b.channel not in usable:
            add("channel", f"The template has no {b.channel} variant the topic allows.")
    return out


def broadcast_save(*, fields: dict[str, Any], key: str | None = None) -> tuple[Broadcast, bool]:
    """Create or replace a draft (or a scheduled broadcast not yet started) by key.

    ``fields`` hold model values (template and topic as instances). Returns
    (broadcast, created). Raises BroadcastInvalid.
    """
    key = key or fields.get("key")
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().filter(key=key).first()
        created = broadcast is None
        if broadcast is None:
            broadcast = Broadcast(key=key)
        elif broadcast.status not in (Broadcast.Status.DRAFT, Broadcast.Status.SCHEDULED):
            raise BroadcastInvalid(
                f"The broadcast is {broadcast.status}; only a draft or a scheduled broadcast "
                "not yet started can be changed.",
                {"status": [f"Is {broadcast.status}."]},
            )
        for name in EDITABLE:
            if name in fields:
                setattr(broadcast, name, fields[name])
        if broadcast.topic_id is None and broadcast.template_id is not None:
            broadcast.topic = broadcast.template.topic
        missing = {
            n: ["Required."]
            for n in ("name", "template", "topic")
            if getattr(broadcast, f"{n}_id" if n != "name" else n, None) in (None, "")
        }
        if missing:
            raise BroadcastInvalid("Required fields are missing.", missing)
        problems = broadcast_problems(broadcast)
        if problems:
            raise BroadcastInvalid("The broadcast's settings have problems.", problems)
        if broadcast.status == Broadcast.Status.SCHEDULED:
            broadcast.due_at = _due_at(broadcast, timezone.now())
        broadcast.save()
    return broadcast, created


def broadcast_delete(*, broadcast: Broadcast) -> None:
    """Delete a broadcast that never started; one that did is canceled instead (its
    messages are the history)."""
    if broadcast.materialised_at is None:
        broadcast.delete()
        return
    broadcast_cancel(broadcast=broadcast)


def _due_at(b: Broadcast, now: dt.datetime) -> dt.datetime:
    if b.schedule == Broadcast.Schedule.AT:
        return b.send_at
    if b.schedule == Broadcast.Schedule.LOCAL_TIME:
        wall = dt.datetime.combine(b.local_date, b.local_time, tzinfo=dt.UTC)
        return max(wall - EARLIEST_OFFSET, now)
    return now


def broadcast_schedule(*, broadcast: Broadcast, now: dt.datetime | None = None) -> Broadcast:
    """Check the broadcast and hand it to the sweep; one due now is swept on commit."""
    now = now or timezone.now()
    if broadcast.status != Broadcast.Status.DRAFT:
        raise BroadcastInvalid(
            f"Only a draft can be scheduled; this broadcast is {broadcast.status}.",
            {"status": [f"Is {broadcast.status}."]},
        )
    problems = broadcast_problems(broadcast)
    if broadcast.expires_at is not None and broadcast.expires_at <= now:
        problems.setdefault("expires_at", []).append("The deadline has passed.")
    try:
        audience_sql(broadcast)
    except AudienceMissing as exc:
        problems.setdefault("segment", []).append(str(exc))
    if problems:
        raise BroadcastInvalid("The broadcast cannot be scheduled.", problems)
    broadcast.status = Broadcast.Status.SCHEDULED
    broadcast.due_at = _due_at(broadcast, now)
    broadcast.save(update_fields=["status", "due_at", "updated_at"])
    if broadcast.due_at <= now:
        publish_on_commit("sweeps.broadcasts")
    return broadcast


def broadcast_unschedule(*, broadcast: Broadcast) -> Broadcast:
    """Back to a draft, while nothing has been materialised."""
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
        if broadcast.status == Broadcast.Status.SCHEDULED:
            broadcast.status = Broadcast.Status.DRAFT
            broadcast.due_at = None
            broadcast.save(update_fields=["status", "due_at", "updated_at"])
    return broadcast


def broadcast_cancel(*, broadcast: Broadcast, now: dt.datetime | None = None) -> int:
    """Stop the broadcast: recipients whose copy is not in the outbox yet are dropped
    (counted on the broadcast) and every copy still waiting is canceled
    (``delivery.services.messages_cancel``: what is being sent finishes). Waits for an
    expansion step in progress (its row lock), so nothing it writes escapes the cancel.
    Returns how many copies were stopped."""
    now = now or timezone.now()
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().get(pk=broadcast.pk)
        if broadcast.status in (Broadcast.Status.SENT, Broadcast.Status.CANCELED):
            return 0
        broadcast.status = Broadcast.Status.CANCELED
        broadcast.canceled_at = now
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM broadcasts_recipient WHERE broadcast_id = %s", [broadcast.pk]
            )
            dropped = max(cursor.rowcount, 0)
        broadcast.canceled_pending += dropped
        broadcast.save(update_fields=["status", "canceled_at", "canceled_pending", "updated_at"])
        ids = list(
            Message.objects.filter(
                broadcast_id=broadcast.pk, status__in=WAITING_STATUSES
            ).values_list("id", flat=True)
        )
        canceled = messages_cancel(message_ids=ids, reason=f"broadcast {broadcast.key!r} canceled")
    return len(canceled) + dropped


def variant_templates(broadcast: Broadcast) -> dict[str, MessageTemplate]:
    """The template of each variant: "a" the broadcast's; "b" the other template, or for
    two subject lines a copy of the template with B's subject on its email variants
    (kept under a derived key, so the dispatcher renders it like any template)."""
    out = {"a": broadcast.template}
    if not broadcast.has_test:
        return out
    if broadcast.ab_kind == Broadcast.AbKind.TEMPLATE:
        out["b"] = broadcast.ab_template
        return out
    source = broadcast.template
    key = f"{source.key[:60]}--{broadcast.key[:36]}-b"
    copy, _ = MessageTemplate.objects.update_or_create(
        key=key,
        defaults={
            "name": f"{source.name} (subject B of {broadcast.key})"[:200],
            "topic": source.topic,
            "description": f"Variant B of broadcast {broadcast.key!r}: the subject line differs.",
            "track_clicks": source.track_clicks,
        },
    )
    copy.variants.all().delete()
    TemplateVariant.objects.bulk_create(
        TemplateVariant(
            template=copy,
            channel=v.channel,
            locale=v.locale,
            subject=broadcast.ab_subject if v.channel == "email" else v.subject,
            body=v.body,
            html=v.html,
            provider_options=v.provider_options,
        )
        for v in source.variants.all()
    )
    out["b"] = copy
    return out


def _materialise_due(broadcast: Broadcast, now: dt.datetime) -> int:
    """Freeze the audience (the test group first when there is a test); the expansion
    writes the copies. Returns how many recipients were frozen."""
    variants = variant_templates(broadcast)
    phase = mat.TEST if broadcast.has_test and broadcast.ab_share < 100 else mat.ALL
    if broadcast.has_test and broadcast.ab_share >= 100:
        phase = mat.TEST  # everyone is in the test: there is no rest
    written = mat.freeze(broadcast, phase=phase, variants=variants, now=now)
    broadcast.status = Broadcast.Status.SENDING
    broadcast.materialised_at = now
    if phase == mat.ALL or broadcast.ab_share >= 100:
        broadcast.ab_decided_at = now if broadcast.has_test else None
    broadcast.save(update_fields=["status", "materialised_at", "ab_decided_at", "updated_at"])
    return written


def ab_scores(broadcast: Broadcast) -> dict[str, dict[str, int]]:
    """Per test variant: recipients (sent or beyond), clicks, conversions."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT m.broadcast_variant,
                count(*) FILTER (WHERE m.sent_at IS NOT NULL),
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM delivery_messageevent e
                    WHERE e.message_id = m.id AND e.status = 'clicked')),
                count(*) FILTER (WHERE m.sent_at IS NOT NULL AND EXISTS (
                    SELECT 1 FROM audience_event ev WHERE ev.customer_id = m.customer_id
                    AND ev.name = %s AND ev.occurred_at >= m.sent_at))
            FROM delivery_message m
            WHERE m.broadcast_id = %s AND m.broadcast_variant IN ('a', 'b')
            GROUP BY 1
            """,
            [broadcast.ab_conversion_event, broadcast.pk],
        )
        rows = cursor.fetchall()
    scores = {v: {"sent": 0, "clicks": 0, "conversions": 0} for v in ("a", "b")}
    for variant, sent, clicks, conversions in rows:
        scores[variant] = {"sent": sent, "clicks": clicks, "conversions": conversions}
    return scores


def ab_winner(broadcast: Broadcast) -> str:
    """The variant with the higher rate of the metric among those it reached; A on a tie."""
    scores = ab_scores(broadcast)
    metric = "clicks" if broadcast.ab_metric == Broadcast.AbMetric.CLICKS else "conversions"

    def rate(v: str) -> float:
        sent = scores[v]["sent"]
        return scores[v][metric] / sent if sent else 0.0

    return "b" if rate("b") > rate("a") else "a"


def _decide_and_send_rest(broadcast: Broadcast, now: dt.datetime) -> int:
    winner = ab_winner(broadcast)
    variants = variant_templates(broadcast)
    written = mat.freeze(broadcast, phase=mat.REST, variants=variants, rest_variant=winner, now=now)
    broadcast.ab_winner = winner
    broadcast.ab_decided_at = now
    broadcast.save(update_fields=["ab_winner", "ab_decided_at", "updated_at"])
    return written


def broadcasts_sweep(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Beat's sweep: freeze the audience of due broadcasts, freeze the rest of an A/B
    test with its winner, mark finished ones sent (no recipient pending, no copy
    waiting), then expand one slice of each (``broadcasts_expand``). Each broadcast
    under its row lock, skipped if another sweep holds it; every step is idempotent
    (the recipients' primary key, the outbox's unique constraint)."""
    now = now or timezone.now()
    stats = {"materialised": 0, "recipients": 0, "winners": 0, "finished": 0}
    due = list(
        Broadcast.objects.filter(
            status__in=[Broadcast.Status.SCHEDULED, Broadcast.Status.SENDING], due_at__lte=now
        ).values_list("id", flat=True)
    )
    for broadcast_id in due:
        with transaction.atomic():
            broadcast = (
                Broadcast.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("template", "topic", "ab_template")
                .filter(pk=broadcast_id)
                .first()
            )
            if broadcast is None:
                continue
            try:
                if broadcast.status == Broadcast.Status.SCHEDULED:
                    stats["recipients"] += _materialise_due(broadcast, now)
                    stats["materialised"] += 1
                elif broadcast.has_test and broadcast.ab_decided_at is None:
                    if broadcast.ab_decide_at and broadcast.ab_decide_at <= now:
                        stats["recipients"] += _decide_and_send_rest(broadcast, now)
                        stats["winners"] += 1
                elif not (
                    Recipient.objects.filter(broadcast_id=broadcast.pk).exists()
                    or Message.objects.filter(
                        broadcast_id=broadcast.pk, status__in=[*WAITING_STATUSES, "sending"]
                    ).exists()
                ):
                    broadcast.status = Broadcast.Status.SENT
                    broadcast.completed_at = now
                    broadcast.save(update_fields=["status", "completed_at", "updated_at"])
                    stats["finished"] += 1
            except AudienceMissing as exc:
                logger.warning("broadcast %s not materialised: %s", broadcast.key, exc)
    expanded = broadcasts_expand(now=now)
    stats["messages"] = expanded["messages"]
    return stats


def broadcasts_expand(*, now: dt.datetime | None = None) -> dict[str, int]:
    """One slice (``materialise.SLICE``) of each sending broadcast's due recipients into
    the outbox, while the broadcast copies waiting there stay under
    ``OUTBOX_HIGH_WATER``; kicks itself again on commit while due recipients remain and
    there is room (beat runs it too, which picks up after the dispatcher drained a full
    outbox). Each slice in its own transaction under the broadcast's row lock (``FOR NO
    KEY UPDATE``: a cancel waits for it; another expansion skips the broadcast). Past
    the deadline, pending recipients are written as expired whatever the backlog."""
    now = now or timezone.now()
    stats = {"broadcasts": 0, "messages": 0, "held_back": 0}
    again = False
    ids = list(
        Broadcast.objects.filter(status=Broadcast.Status.SENDING)
        .order_by("-priority", "materialised_at", "id")
        .values_list("id", flat=True)
    )
    for broadcast_id in ids:
        with transaction.atomic():
            broadcast = (
                Broadcast.objects.select_for_update(skip_locked=True, no_key=True, of=("self",))
                .select_related("template", "topic", "ab_template")
                .filter(pk=broadcast_id, status=Broadcast.Status.SENDING)
                .first()
            )
            if broadcast is None:
                continue
            past_deadline = broadcast.expires_at is not None and broadcast.expires_at <= now
            room = mat.SLICE
            if not past_deadline:
                room = min(room, OUTBOX_HIGH_WATER - mat.outbox_backlog(OUTBOX_HIGH_WATER))
                if room <= 0:
                    stats["held_back"] += 1
                    continue
            result = mat.expand(broadcast, now=now, limit=room)
            stats["broadcasts"] += 1
            stats["messages"] += result.written
            again = again or result.more
    if again:
        publish_on_commit(EXPAND_TASK)
    return stats


def broadcast_test_send(
    *, broadcast: Broadcast, customers: list[Customer], now: dt.datetime | None = None
) -> list[Message]:
    """Send each variant to each named customer now, through the dispatcher like any
    message, marked as a test (they count in no result). Raises SendRefused."""
    messages = []
    with transaction.atomic():
        for customer in customers:
            for letter, template in variant_templates(broadcast).items():
                messages.append(
                    message_create(
                        customer=customer,
                        template=template,
                        topic=broadcast.topic,
                        channel=broadcast.channel,
                        data={**(broadcast.data or {}), "test": True, "variant": letter},
                        priority=max(broadcast.priority, 5),
                        source=Message.Source.ADMIN,
                        check_render=True,
                    )
                )
    return messages
