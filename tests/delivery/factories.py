"""Reference data for delivery tests: topics, templates, customers, messages.

Customers and messages go through the real services; topics and templates are
plain rows (they are configuration, not the behaviour under test).
"""

from __future__ import annotations

import itertools
from typing import Any

from orchestrator.audience.services import customer_upsert
from orchestrator.consent.models import Topic
from orchestrator.delivery.models import MessageTemplate, TemplateVariant
from orchestrator.delivery.services import message_create

_seq = itertools.count(1)

LOCMEM = "channels.adapters.locmem.LocmemAdapter"


def locmem_adapters(**options_by_channel: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        channel: {"BACKEND": LOCMEM, "OPTIONS": options_by_channel.get(channel, {})}
        for channel in ("email", "sms", "whatsapp", "line")
    }


def make_topic(key: str = "", *, kind: str = "marketing", default_opt_in: bool = True, **kw):
    key = key or f"topic-{next(_seq)}"
    return Topic.objects.create(
        key=key, name=key.title(), kind=kind, default_opt_in=default_opt_in, **kw
    )


def make_template(
    key: str = "",
    *,
    topic=None,
    variants: dict[tuple[str, str], dict[str, str]] | None = None,
):
    key = key or f"template-{next(_seq)}"
    template = MessageTemplate.objects.create(key=key, name=key, topic=topic)
    variants = variants or {
        ("email", "en"): {
            "subject": "Hello {{ customer.first_name }}",
            "body": "Hi {{ customer.first_name }}, your {{ data.item }} is ready.",
            "html": "<p>Hi {{ customer.first_name }}, your {{ data.item }} is ready.</p>",
        },
        ("sms", "en"): {"body": "Hi {{ customer.first_name }}: {{ data.item }} ready."},
    }
    for (channel, locale), fields in variants.items():
        TemplateVariant.objects.create(template=template, channel=channel, locale=locale, **fields)
    return template


def make_customer(external_id: str = "", **fields):
    external_id = external_id or f"cust-{next(_seq)}"
    n = next(_seq)
    defaults = {
        "email": f"{external_id}@example.com",
        "phone": f"+1415555{n % 10000:04d}",
        "attributes": {"first_name": external_id.title()},
    }
    customer, _created = customer_upsert(external_id=external_id, **{**defaults, **fields})
    return customer


def queue(customer, template, *, channel: str = "email", data: dict | None = None, **kw):
    return message_create(
        customer=customer,
        template=template,
        channel=channel,
        data={"item": "order #1"} if data is None else data,
        **kw,
    )
