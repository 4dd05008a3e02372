"""Templates the platform itself sends with (keyword confirmations), created on first use."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from orchestrator.consent.models import Topic
from orchestrator.delivery.models import MessageTemplate, TemplateVariant

SERVICE_TOPIC = "service-replies"
KEYWORD_REPLY = "keyword-reply"
CHAT_CHANNELS = ("sms", "whatsapp", "line")


def keyword_reply_template() -> MessageTemplate:
    """A transactional template whose text is the data it is sent with, on every chat channel."""
    template = MessageTemplate.objects.filter(key=KEYWORD_REPLY).first()
    if template is not None:
        return template
    try:
        with transaction.atomic():
            topic, _ = Topic.objects.get_or_create(
                key=SERVICE_TOPIC,
                defaults={
                    "name": "Service replies",
                    "kind": Topic.Kind.TRANSACTIONAL,
                    "description": "Answers to STOP, START and HELP.",
                    "channels": list(CHAT_CHANNELS),
                },
            )
            template = MessageTemplate.objects.create(
                key=KEYWORD_REPLY,
                name="Keyword reply",
                topic=topic,
                description="The confirmation for an inbound STOP, START or HELP.",
            )
            TemplateVariant.objects.bulk_create(
                TemplateVariant(
                    template=template, channel=channel, locale=locale, body="{{ data.text }}"
                )
                for channel in CHAT_CHANNELS
                for locale in ("en", "ja")
            )
    except IntegrityError:  # created concurrently
        template = MessageTemplate.objects.get(key=KEYWORD_REPLY)
    return template
