"""Every admin page renders for a superuser; the admin refuses what the ledgers forbid."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from orchestrator.api.auth import hash_key
from orchestrator.api.models import ApiKey, IdempotencyRecord
from orchestrator.consent.models import ConsentRecord, Suppression, address_hash
from orchestrator.delivery.models import Message, MessageEvent, MessageTemplate
from orchestrator.delivery.trail import explain

pytestmark = pytest.mark.django_db

OUR_APPS = {"audience", "consent", "delivery", "api", "devinbox"}


def our_models():
    return [m for m in admin.site._registry if m._meta.app_label in OUR_APPS]


def url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def records(demo, api_key_factory):
    """Rows for the models the demo does not fill: a key, an idempotency record, an inbox row."""
    from channels.devinbox.models import InboxMessage

    api_key_factory()
    key = ApiKey.objects.first()
    IdempotencyRecord.objects.create(
        api_key=key,
        key="order-1",
        method="POST",
        path="/api/v1/messages",
        request_hash="0" * 64,
        state="done",
        response_status=202,
        response_body={"id": 1, "status": "queued"},
    )
    Suppression.objects.create(
        channel="email", address_hash=address_hash("email", "gone@example.com"), reason="bounce"
    )
    # A STOP by text: the raw webhook, the inbound message and the channel opt-out.
    from django.utils import timezone

    from channels.webhooks.models import WebhookEvent
    from channels.webhooks.processing import Inbound, handle_inbound
    from orchestrator.audience.models import Customer

    WebhookEvent.objects.create(
        provider="twilio", kind="inbound", event_id="SM1", payload={"params": {"Body": "STOP"}}
    )
    alex = Customer.objects.get(external_id="alex")
    handle_inbound(
        Inbound("twilio", "sms", "SM1", alex.phone, "+15005550006", "STOP", timezone.now())
    )
    InboxMessage.objects.create(
        channel="email",
        to_address="alex@example.com",
        subject="Your order",
        body="Thanks",
        provider_message_id="devinbox-1",
    )


def test_every_model_of_ours_is_registered():
    names = {m.__name__ for m in our_models()}
    assert names >= {
        "Customer",
        "Event",
        "Topic",
        "Subscription",
        "ConsentRecord",
        "ChannelPreference",
        "Suppression",
        "MessageTemplate",
        "Message",
        "MessageEvent",
        "FrequencyRule",
        "ApiKey",
        "IdempotencyRecord",
        "InboxMessage",
    }


def test_changelists_and_change_pages_render(admin_client, records):
    for model in our_models():
        response = admin_client.get(url(model, "changelist"))
        assert response.status_code == 200, model
        obj = model.objects.order_by("pk").first()
        assert obj is not None, f"no {model.__name__} to open"
        response = admin_client.get(url(model, "change", obj.pk))
        assert response.status_code == 200, model
        # Search and a date drill-down must not break either.
        assert admin_client.get(url(model, "changelist"), {"q": "alex"}).status_code == 200


def test_message_page_shows_the_decision_trail_and_status_history(admin_client, demo):
    message = Message.objects.get(customer__external_id="alex", template__key="order-confirmation")
    Message.objects.filter(pk=message.pk).update(
        status="suppressed",
        explanation=[
            *message.explanation,
            explain(
                "consent",
                "suppressed",
                "No opt-in on email for promotions.",
                rule_id=7,
                window_count=3,
            ),
        ],
    )
    MessageEvent.objects.create(
        message=message, status="suppressed", occurred_at=message.created_at, reason="no consent"
    )
    page = admin_client.get(url(Message, "change", message.pk)).content.decode()
    assert "orchestrator-table" in page
    assert "No opt-in on email for promotions." in page
    assert "rule_id: 7; window_count: 3" in page
    assert "Queued by demo for topic" in page
    assert "Status history" in page and "no consent" in page
    assert '"explanation"' not in page  # a table, not raw JSON


def test_ledgers_cannot_be_changed_or_deleted_in_admin(admin_client, demo):
    record = ConsentRecord.objects.first()
    assert admin_client.get(url(ConsentRecord, "delete", record.pk)).status_code == 403
    assert admin_client.get(url(ConsentRecord, "add")).status_code == 403
    response = admin_client.post(url(ConsentRecord, "change", record.pk), {"source": "admin"})
    assert response.status_code == 403
    message = Message.objects.first()
    assert admin_client.get(url(Message, "delete", message.pk)).status_code == 403


def test_template_with_broken_liquid_is_refused_naming_the_line(admin_client, demo):
    template = MessageTemplate.objects.get(key="order-confirmation")
    variants = list(template.variants.order_by("pk"))
    data = {
        "key": template.key,
        "name": template.name,
        "topic": template.topic_id,
        "description": "",
        "variants-TOTAL_FORMS": str(len(variants)),
        "variants-INITIAL_FORMS": str(len(variants)),
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
    }
    for i, v in enumerate(variants):
        prefix = f"variants-{i}-"
        data |= {
            prefix + "id": str(v.pk),
            prefix + "template": str(template.pk),
            prefix + "channel": v.channel,
            prefix + "locale": v.locale,
            prefix + "subject": v.subject,
            prefix + "body": v.body,
            prefix + "html": v.html,
        }
    data["variants-0-body"] = "Hello {{ customer.first_name }}\n{% for %}\nno loop"
    response = admin_client.post(url(MessageTemplate, "change", template.pk), data)
    assert response.status_code == 200  # the form again, with errors
    page = response.content.decode()
    assert "Line 2: missing expression" in page
    assert "{% for %}" not in template.variants.get(pk=variants[0].pk).body

    data["variants-0-body"] = "Hello {{ customer.first_name }}"
    response = admin_client.post(url(MessageTemplate, "change", template.pk), data)
    assert response.status_code == 302
    assert template.variants.get(pk=variants[0].pk).body == "Hello {{ customer.first_name }}"


def test_api_key_created_in_admin_is_shown_once_and_stored_hashed(admin_client):
    response = admin_client.post(
        url(ApiKey, "add"), {"name": "shop", "scopes": ["send", "track"]}, follow=True
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(name="shop")
    assert key.scopes == ["send", "track"]
    shown = [str(m) for m in response.context["messages"]]
    raw = next(word for m in shown for word in m.split() if word.startswith("ok_"))
    assert hash_key(raw) == key.key_hash
    assert raw not in admin_client.get(url(ApiKey, "change", key.pk)).content.decode()


def test_suppression_added_by_address_stores_only_its_hash(admin_client):
    response = admin_client.post(
        url(Suppression, "add"),
        {"channel": "email", "address": "Former@Example.com", "reason": "manual", "detail": ""},
    )
    assert response.status_code == 302
    row = Suppression.objects.get()
    assert row.address_hash == address_hash("email", "former@example.com")
    found = admin_client.get(url(Suppression, "changelist"), {"q": "former@example.com"})
    assert row.address_hash[:12] in found.content.decode()


def test_a_malformed_frequency_rule_is_refused_in_the_form(admin_client, demo):
    from orchestrator.delivery.models import FrequencyRule

    before = FrequencyRule.objects.count()
    response = admin_client.post(
        url(FrequencyRule, "add"),
        {
            "name": "Per channel without a channel",
            "key": "broken",
            "active": "on",
            "kind": "cap",
            "limit": "2",
            "window": "1 00:00:00",
            "calendar": "",
            "applies_to": "marketing",
            "action": "defer",
            "scope": "channel",
            "channel": "",
        },
    )
    assert response.status_code == 200
    assert "A channel rule needs one of" in str(
        response.context["adminform"].form.errors["channel"]
    )
    assert FrequencyRule.objects.count() == before
