"""The demo's order digest: "order updates" is digestible, and one customer chose a
daily digest of it at 19:00 their time, so their parcel's status updates (as the shop
posts them over the API) wait and go as one message."""

from __future__ import annotations

from django.db import transaction

from orchestrator.audience.models import Customer
from orchestrator.consent.models import ConsentRecord, Topic
from orchestrator.consent.preferences import preferences_changes_from_document, preferences_update
from orchestrator.delivery.models import Message, MessageTemplate, TemplateVariant
from orchestrator.delivery.services import message_create

TOPIC = "order-updates"
#: One template per status, as a shop has them: (template key, status, in Japanese).
UPDATES = (
    ("order-packed", "packed", "梱包済み"),
    ("order-shipped", "shipped", "発送済み"),
    ("order-out-for-delivery", "out for delivery", "配達中"),
)


def _template(topic: Topic, key: str) -> MessageTemplate:
    template, created = MessageTemplate.objects.get_or_create(
        key=key,
        defaults={"name": key.replace("-", " ").capitalize(), "topic": topic},
    )
    if created:
        TemplateVariant.objects.bulk_create(
            [
                TemplateVariant(
                    template=template,
                    channel="email",
                    locale="en",
                    subject="Order {{ data.order_id }}: {{ data.status | default: 'updated' }}",
                    body="Hi {{ customer.first_name | default: 'there' }}, your order "
                    "{{ data.order_id }} is {{ data.status | default: 'updated' }}.",
                ),
                TemplateVariant(
                    template=template,
                    channel="email",
                    locale="ja",
                    subject="ご注文 {{ data.order_id }}: {{ data.status_ja | default: '更新' }}",
                    body="{{ customer.first_name | default: 'お客' }}様、ご注文 "
                    "{{ data.order_id }} は{{ data.status_ja | default: '更新' }}です。",
                ),
            ]
        )
    return template


def load_order_digest(*, skip: set[str]) -> int:
    """Make the topic digestible, put one customer with an email (a Japanese one where
    there is one; none in ``skip``) on its daily digest and queue three updates, which
    are held; returns the messages queued (none when run again)."""
    topic = Topic.objects.filter(key=TOPIC).first()
    people = Customer.objects.exclude(email="").exclude(external_id__in=skip).order_by("id")
    customer = people.filter(locale="ja").first() or people.first()
    if topic is None or customer is None:
        return 0
    with transaction.atomic():
        if not topic.digestible:
            topic.digestible = True
            topic.save(update_fields=["digestible", "updated_at"])
        preferences_update(
            customer=customer,
            changes=preferences_changes_from_document(
                {"digests": {TOPIC: {"cadence": "daily", "time": "19:00", "weekday": None}}}
            ),
            source=ConsentRecord.Source.IMPORT,
            evidence={"demo": True},
        )
        keys = [f"demo:{template}:{customer.external_id}" for template, _s, _j in UPDATES]
        done = set(
            Message.objects.filter(idempotency_key__in=keys).values_list(
                "idempotency_key", flat=True
            )
        )
        queued = 0
        for key, (template, status, status_ja) in zip(keys, UPDATES, strict=True):
            if key in done:
                continue
            message_create(
                customer=customer,
                template=_template(topic, template),
                topic=topic,
                channel="email",
                data={"order_id": "SR-1001", "status": status, "status_ja": status_ja},
                idempotency_key=key,
                # As the shop posts them: the demo's own sends are the ones it shows.
                source=Message.Source.API,
            )
            queued += 1
    return queued
