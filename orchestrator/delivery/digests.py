"""Digests: many small messages held for one customer, sent as one message when due.

A topic digest (the customer chose a daily or weekly digest of a digestible topic) is
due at their chosen local time; a journey digest step's after its window or as soon as
it holds its count (``holds`` decides what is held, and opens the digests).
``digests_build_due`` (beat's
sweep) claims due digests with ``FOR UPDATE SKIP LOCKED`` and, in one transaction per
batch, queues one digest message each and folds the held ones into it (``canceled``,
code ``digested``, pointing at it): a worker that dies mid-build leaves the whole
batch as it was, and the digest message's idempotency key (``digest:<id>``) keeps a
digest from ever going twice.

A topic digest is written with the topic's ``digest_template`` if it has one, else the
template ``<topic key>-digest``, else the built-in layout: the first of them with a
variant on the digest's channel, so a template edited since never loses a digest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import override

from orchestrator.delivery.models import (
    Digest,
    Message,
    MessageEvent,
    MessageStatus,
    MessageTemplate,
    TemplateVariant,
)
from orchestrator.delivery.rendering import TemplateProblem, build_context, render_variant
from orchestrator.delivery.services import SendRefused, message_build, messages_queue
from orchestrator.delivery.trail import explain

logger = logging.getLogger(__name__)

#: The built-in digest layout, used for a topic with no "<topic key>-digest" template.
BUILTIN_TEMPLATE = "digest"
#: Most items a digest message carries in its data (the count stays the full number).
MAX_ITEMS = 100


# --- building ---------------------------------------------------------------------------


@dataclass
class BuildStats:
    digests: int = 0
    folded: int = 0
    empty: int = 0

    def add(self, other: BuildStats) -> None:
        self.digests += other.digests
        self.folded += other.folded
        self.empty += other.empty

    def as_dict(self) -> dict[str, int]:
        return {"digests": self.digests, "folded": self.folded, "empty": self.empty}


_LAYOUT = {
    "en": {
        "subject": "{{ brand.name }}: {{ count }} update{% if count != 1 %}s{% endif %}",
        "heading": "Your {{ data.digest.cadence_name }} of {{ data.digest.topic_name }}: "
        "{{ count }} update{% if count != 1 %}s{% endif %}",
        "more": "...and {{ count | minus: items.size }} more",
    },
    "ja": {
        "subject": "{{ brand.name }}: {{ count }}件のお知らせ",
        "heading": "{{ data.digest.topic_name }}の{{ data.digest.cadence_name }}: {{ count }}件",
        "more": "ほか{{ count | minus: items.size }}件",
    },
}


def _layout(locale: str) -> tuple[str, str, str]:
    words = _LAYOUT[locale]
    body = (
        words["heading"] + "\n{% for item in items %}\n- "
        "{% if item.subject %}{{ item.subject }}: {% endif %}{{ item.text }}{% endfor %}"
        "{% if count > items.size %}\n" + words["more"] + "{% endif %}\n\n{{ preferences_url }}"
    )
    html = (
        "<h2>" + words["heading"] + "</h2><ul>{% for item in items %}<li>"
        "{% if item.subject %}<strong>{{ item.subject }}</strong><br>{% endif %}"
        "{{ item.text }}</li>{% endfor %}</ul>"
        "{% if count > items.size %}<p>" + words["more"] + "</p>{% endif %}"
        '<p><a href="{{ preferences_url }}">{{ preferences_url }}</a></p>'
    )
    return words["subject"], body, html


def builtin_template() -> MessageTemplate:
    """The built-in digest layout (every channel, English and Japanese), made on first use."""
    template = MessageTemplate.objects.filter(key=BUILTIN_TEMPLATE).first()
    if template is not None:
        return template
    with transaction.atomic():
        template, created = MessageTemplate.objects.get_or_create(
            key=BUILTIN_TEMPLATE,
            defaults={
                "name": "Digest (built-in layout)",
                "description": "Lists the messages held for a customer's topic digest.",
            },
        )
        if created:
            variants = []
            for locale in ("en", "ja"):
                subject, body, html = _layout(locale)
                for channel in ("email", "sms", "whatsapp", "line"):
                    variants.append(
                        TemplateVariant(
                            template=template,
                            channel=channel,
                            locale=locale,
                            subject=subject if channel == "email" else "",
                            body=body,
                            html=html if channel == "email" else "",
                        )
                    )
            TemplateVariant.objects.bulk_create(variants, ignore_conflicts=True)
    return template


def _claim(limit: int, now: dt.datetime) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT id FROM delivery_digest
            WHERE status = 'open' AND due_at <= %s
            ORDER BY due_at, id
            LIMIT %s
            FOR UPDATE SKIP LOCKED
            """,
            [now, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def _item(held: Message, channel: str, variants: dict) -> dict[str, Any]:
    """One held message as the digest template sees it: its own rendered text and data."""
    item: dict[str, Any] = {
        "id": held.pk,
        "at": held.created_at.isoformat(),
        "template": held.template.key,
        "data": held.data,
        "subject": "",
        "text": "",
    }
    by_locale = variants.get((held.template_id, channel)) or variants.get(
        (held.template_id, held.channel)
    )
    if not by_locale:
        return item
    variant = by_locale.get(held.locale) or next(iter(by_locale.values()))
    context = build_context(customer=held.customer, message_data=held.data)
    try:
        rendered = render_variant(
            subject=variant.subject,
            body=variant.body,
            html="",
            channel="sms",  # no subject required: the item's subject is optional
            context=context,
        )
    except TemplateProblem as problem:
        logger.warning("digest item %s did not render: %s", held.pk, problem)
        return item
    item["subject"] = rendered.subject
    item["text"] = rendered.body
    return item


def digest_template_problem(key: str, channels) -> str | None:
    """What is wrong with template ``key`` as the digest of a topic on ``channels``."""
    template = MessageTemplate.objects.filter(key=key).first()
    if template is None:
        return f"There is no template {key!r}."
    has = set(template.variants.values_list("channel", flat=True))
    missing = [c for c in channels if c not in has]
    if missing:
        return (
            f"Template {key!r} has no {', '.join(missing)} variant; a digest of this topic "
            f"may go on {', '.join(channels)}."
        )
    return None


def _template_on(key: str, channel: str, templates: dict) -> MessageTemplate | None:
    """Template ``key`` if it exists and has a variant on ``channel`` (cached per build)."""
    if key not in templates:
        template = MessageTemplate.objects.filter(key=key).first()
        templates[key] = (
            template,
            set(template.variants.values_list("channel", flat=True)) if template else set(),
        )
    template, channels = templates[key]
    return template if template is not None and channel in channels else None


def _digest_template(digest: Digest, channel: str, templates: dict) -> MessageTemplate | None:
    if digest.kind == Digest.Kind.JOURNEY:
        if digest.template_key not in templates:
            templates[digest.template_key] = (
                MessageTemplate.objects.filter(key=digest.template_key).first(),
                None,
            )
        return templates[digest.template_key][0]
    topic = digest.topic
    for key in (topic.digest_template, f"{topic.key}-digest"):
        if not key:
            continue
        template = _template_on(key, channel, templates)
        if template is not None:
            return template
        if key == topic.digest_template:
            logger.warning(
                "digest %s: template %r of topic %r has no %s variant (or is gone); "
                "the next in line is used",
                digest.pk,
                key,
                topic.key,
                channel,
            )
    return builtin_template()


def _fold(digest: Digest, digest_message: Message | None, held: list[Message], now) -> None:
    """Held messages become ``canceled`` (code ``digested``) pointing at the digest message."""
    if digest_message is None:
        reason = "digest closed: its message could not be built"
        code = "digest_failed"
    else:
        reason = f"folded into digest message #{digest_message.pk}"
        code = "digested"
    entry = explain(
        "digest",
        MessageStatus.CANCELED,
        reason,
        digest=digest.pk,
        digest_message=digest_message.pk if digest_message else None,
    )
    ids = [m.pk for m in held]
    Message.objects.filter(id__in=ids, status=MessageStatus.HELD).update(
        status=MessageStatus.CANCELED,
        updated_at=now,
        explanation=RawSQL("explanation || jsonb_build_array(%s::jsonb)", [json.dumps(entry)]),
    )
    MessageEvent.objects.bulk_create(
        MessageEvent(
            message_id=i, status=MessageStatus.CANCELED, occurred_at=now, reason=reason, code=code
        )
        for i in ids
    )


def digests_build_batch(*, batch_size: int = 50, now: dt.datetime | None = None) -> BuildStats:
    """Claim up to ``batch_size`` due digests and send each as one message, in one
    transaction: the digest messages are queued and the held ones folded together."""
    now = now or timezone.now()
    stats = BuildStats()
    with transaction.atomic():
        ids = _claim(batch_size, now)
        if not ids:
            return stats
        digests = list(
            Digest.objects.filter(id__in=ids).select_related("customer", "topic").order_by("id")
        )
        held_by: dict[int, list[Message]] = defaultdict(list)
        for message in (
            Message.objects.select_for_update(of=("self",))
            .filter(digest_id__in=ids, status=MessageStatus.HELD)
            .select_related("customer", "template")
            .order_by("id")
        ):
            held_by[message.digest_id].append(message)
        template_ids = {m.template_id for ms in held_by.values() for m in ms}
        variants: dict[tuple[int, str], dict[str, TemplateVariant]] = defaultdict(dict)
        for variant in TemplateVariant.objects.filter(template_id__in=template_ids):
            variants[(variant.template_id, variant.channel)][variant.locale] = variant
        templates: dict[str, tuple] = {}
        built: list[tuple[Digest, Message | None, list[Message]]] = []
        for digest in digests:
            held = held_by.get(digest.pk, [])
            if not held:
                built.append((digest, None, held))
                continue
            message = _digest_message(digest, held, variants, templates, now)
            built.append((digest, message, held))
        messages_queue([m for _d, m, _h in built if m is not None])
        for digest, message, held in built:
            if held:
                _fold(digest, message, held, now)
                stats.folded += len(held)
            digest.status = Digest.Status.SENT if message is not None else Digest.Status.EMPTY
            digest.message = message
            digest.built_at = now
            if message is None:
                stats.empty += 1
            else:
                stats.digests += 1
        Digest.objects.bulk_update(digests, ["status", "message", "built_at"])
    return stats


def _digest_message(
    digest: Digest,
    held: list[Message],
    variants: dict,
    templates: dict[str, tuple],
    now: dt.datetime,
) -> Message | None:
    first = held[0]
    channel = first.channel if digest.kind == Digest.Kind.TOPIC else first.requested_channel
    template = _digest_template(digest, first.channel, templates)
    if template is None:
        logger.error("digest %s: template %r is gone", digest.pk, digest.template_key)
        return None
    customer = digest.customer
    language = (customer.locale or first.locale or "en").split("-")[0]
    with override(language if language in ("en", "ja") else "en"):
        cadence_name = {
            "daily": _("daily digest"),
            "weekly": _("weekly digest"),
        }.get(digest.cadence, _("digest"))
        topic_name = digest.topic.name_in(language)
    items = [_item(m, first.channel, variants) for m in held[:MAX_ITEMS]]
    if digest.kind == Digest.Kind.JOURNEY:
        # A step's own template reads what each enrollment brought (its trigger's data).
        for item, message in zip(items, held, strict=False):
            item.update({k: v for k, v in message.data.items() if k not in item})
    data = {
        "digest": {
            "id": digest.pk,
            "key": digest.key,
            "cadence": digest.cadence,
            "cadence_name": cadence_name,
            "topic_name": topic_name,
            "count": len(held),
            "items": items,
            "folded": [m.pk for m in held],
        }
    }
    try:
        message = message_build(
            customer=customer,
            template=template,
            topic=digest.topic,
            channel=channel or "preferred",
            data=data,
            priority=max(m.priority for m in held),
            idempotency_key=f"digest:{digest.pk}",
            source=first.source,
            journey=first.journey,
            journey_step=first.journey_step,
        )
    except SendRefused as refused:
        logger.warning("digest %s cannot be sent: %s", digest.pk, refused)
        return None
    message.digest = digest
    message.explanation = [
        *message.explanation,
        explain(
            "digest",
            message.status,
            f"one message for {len(held)} held for the {digest.cadence} digest"
            if digest.cadence != "immediate"
            else f"one last digest of the {len(held)} held: the customer switched the topic "
            "to as it happens",
            digest=digest.pk,
            folded=len(held),
        ),
    ]
    return message


def digests_build_due(*, batch_size: int = 50, time_budget: float = 20.0) -> BuildStats:
    """Build every due digest, batch by batch, for at most ``time_budget`` seconds."""
    total = BuildStats()
    started = time.monotonic()
    while True:
        stats = digests_build_batch(batch_size=batch_size)
        total.add(stats)
        if stats.digests + stats.empty < batch_size:
            return total
        if time.monotonic() - started > time_budget:
            return total
