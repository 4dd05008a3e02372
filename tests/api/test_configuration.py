"""Configuration as code: /api/v1/topics and /api/v1/templates."""

from __future__ import annotations

import pytest

from orchestrator.consent.models import ConsentRecord, Topic
from orchestrator.delivery.models import Message, MessageTemplate, TemplateVariant
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

TEMPLATE = {
    "key": "welcome",
    "name": "Welcome",
    "topic": "orders",
    "description": "First mail",
    "variants": [
        {
            "channel": "email",
            "locale": "en",
            "subject": "Hi {{ customer.external_id }}",
            "body": "Welcome!",
            "html": "<p>Welcome!</p>",
        },
        {"channel": "email", "locale": "ja", "subject": "ようこそ", "body": "ようこそ"},
        {"channel": "sms", "locale": "en", "body": "Welcome!"},
    ],
}


# --- Topics ----------------------------------------------------------------------------


def test_topic_is_created_read_and_listed(api):
    created = api.post(
        "/api/v1/topics",
        {"key": "news", "name": "News", "channels": ["sms", "email", "sms"]},
        format="json",
    )

    assert created.status_code == 201
    body = api.get("/api/v1/topics/news").json()
    assert (body["kind"], body["default_opt_in"], body["channels"]) == (
        "marketing",
        False,
        ["email", "sms"],
    )
    assert [t["key"] for t in api.get("/api/v1/topics").json()["results"]] == ["news"]


def test_topic_with_a_taken_key_is_a_409(api, topic):
    response = api.post("/api/v1/topics", {"key": "orders", "name": "Again"}, format="json")
    assert_error(response, 409, "already_exists")


def test_put_replaces_a_topic_whole_and_creates_a_missing_one(api, topic):
    replaced = api.put(
        "/api/v1/topics/orders",
        {"name": "Order updates", "channels": ["email"], "quiet_hours": "respect"},
        format="json",
    )
    created = api.put("/api/v1/topics/promos", {"name": "Promos"}, format="json")

    assert replaced.status_code == 200
    topic.refresh_from_db()
    assert (topic.name, topic.kind, topic.channels, topic.quiet_hours) == (
        "Order updates",
        "marketing",
        ["email"],
        "respect",
    )
    assert created.status_code == 201
    assert Topic.objects.get(key="promos").channels == ["email", "sms", "whatsapp", "line"]


def test_put_whose_body_key_contradicts_the_url_is_a_400(api, topic):
    response = api.put("/api/v1/topics/orders", {"key": "other", "name": "X"}, format="json")
    assert_error(response, 400, "key_mismatch", ("key",))


def test_topic_with_unknown_channel_or_kind_is_a_400(api):
    response = api.post(
        "/api/v1/topics",
        {"key": "x", "name": "X", "kind": "spam", "channels": ["fax"], "quiet_hours": "never"},
        format="json",
    )
    assert_error(response, 400, "invalid", ("kind", "channels.0", "quiet_hours"))


def test_unreferenced_topic_is_deleted(api):
    api.post("/api/v1/topics", {"key": "tmp", "name": "Tmp"}, format="json")
    assert api.delete("/api/v1/topics/tmp").status_code == 204
    assert_error(api.get("/api/v1/topics/tmp"), 404, "not_found")
    assert_error(api.delete("/api/v1/topics/tmp"), 404, "not_found")


def test_topic_a_template_uses_is_not_deleted(api, template):
    error = assert_error(api.delete("/api/v1/topics/orders"), 409, "in_use")
    assert "template" in error["message"]
    assert Topic.objects.filter(key="orders").exists()


def test_topic_with_consent_records_is_not_deleted(api, customer):
    api.post("/api/v1/topics", {"key": "news", "name": "News"}, format="json")
    ConsentRecord.objects.create(
        customer=customer, topic=Topic.objects.get(key="news"), action="opt_in", source="api"
    )
    error = assert_error(api.delete("/api/v1/topics/news"), 409, "in_use")
    assert "consent records" in error["message"]


def test_topic_messages_refer_to_is_not_deleted(api, send_body, template):
    api.post("/api/v1/topics", {"key": "news", "name": "News"}, format="json")
    assert (
        api.post("/api/v1/messages", {**send_body, "topic": "news"}, format="json").status_code
        == 202
    )

    error = assert_error(api.delete("/api/v1/topics/news"), 409, "in_use")
    assert "1 messages" in error["message"]


# --- Templates -------------------------------------------------------------------------


def test_template_is_created_with_its_variants_and_read_back(api, topic):
    response = api.post("/api/v1/templates", TEMPLATE, format="json")

    assert response.status_code == 201
    body = api.get("/api/v1/templates/welcome").json()
    assert (body["key"], body["topic"], body["description"]) == ("welcome", "orders", "First mail")
    assert {(v["channel"], v["locale"]) for v in body["variants"]} == {
        ("email", "en"),
        ("email", "ja"),
        ("sms", "en"),
    }
    assert [t["key"] for t in api.get("/api/v1/templates").json()["results"]] == ["welcome"]


def test_liquid_syntax_error_is_a_400_naming_the_field_and_line(api, topic):
    variants = [{"channel": "sms", "locale": "en", "body": "Hello\n{% for %}\n"}]
    response = api.post("/api/v1/templates", {**TEMPLATE, "variants": variants}, format="json")

    error = assert_error(response, 400, "invalid")
    assert error["fields"] == {"variants.0.body": ["line 2: missing expression"]}
    assert not MessageTemplate.objects.exists()


def test_every_template_problem_is_reported_at_once(api, topic):
    variants = [
        {"channel": "email", "locale": "en", "subject": "", "body": "ok"},
        {"channel": "email", "locale": "en", "subject": "s", "body": "x", "html": "a\n{% endif %}"},
        {"channel": "sms", "locale": "en", "body": ""},
    ]
    body = {**TEMPLATE, "topic": "nope", "variants": variants}
    fields = assert_error(api.post("/api/v1/templates", body, format="json"), 400)["fields"]

    assert set(fields) == {
        "topic",
        "variants.0.subject",
        "variants.1",
        "variants.1.html",
        "variants.2.body",
    }
    assert fields["variants.1.html"] == ["line 2: unexpected tag 'endif'"]


def test_template_with_a_taken_key_is_a_409(api, template):
    response = api.post("/api/v1/templates", {**TEMPLATE, "key": "order-shipped"}, format="json")
    assert_error(response, 409, "already_exists")


def test_put_replaces_all_variants_keeping_the_ones_that_stay(api, topic):
    api.post("/api/v1/templates", TEMPLATE, format="json")
    kept = TemplateVariant.objects.get(channel="sms")
    replacement = {
        **TEMPLATE,
        "name": "Welcome v2",
        "topic": None,
        "variants": [{"channel": "sms", "locale": "en", "body": "Welcome aboard!"}],
    }

    response = api.put("/api/v1/templates/welcome", replacement, format="json")

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["topic"]) == ("Welcome v2", None)
    assert list(TemplateVariant.objects.values_list("pk", "body")) == [(kept.pk, "Welcome aboard!")]


def test_put_of_an_unknown_template_creates_it(api, topic):
    body = {k: v for k, v in TEMPLATE.items() if k != "key"}
    assert api.put("/api/v1/templates/welcome", body, format="json").status_code == 201
    assert MessageTemplate.objects.get().variants.count() == 3


def test_unreferenced_template_is_deleted_with_its_variants(api, topic):
    api.post("/api/v1/templates", TEMPLATE, format="json")
    assert api.delete("/api/v1/templates/welcome").status_code == 204
    assert not TemplateVariant.objects.exists()
    assert_error(api.get("/api/v1/templates/welcome"), 404, "not_found")


def test_template_messages_refer_to_is_not_deleted(api, send_body, template):
    api.post("/api/v1/messages", send_body, format="json")

    error = assert_error(api.delete("/api/v1/templates/order-shipped"), 409, "in_use")
    assert "1 message" in error["message"]
    assert MessageTemplate.objects.filter(key="order-shipped").exists()
    assert Message.objects.count() == 1
