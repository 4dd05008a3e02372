"""Marketing templates without an opt-out link are refused at save, in the API and the
admin; the demo's marketing templates carry theirs."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from orchestrator.consent.models import Topic
from orchestrator.consent.services import topic_create
from orchestrator.delivery.models import MessageTemplate, TemplateVariant
from orchestrator.delivery.template_services import marketing_link_errors, template_create

pytestmark = pytest.mark.django_db

NO_LINKS = [
    {"channel": "email", "locale": "en", "subject": "Sale", "body": "Sale!", "html": "<p>!</p>"},
    # An SMS needs the short preference link; the one-click link alone does not do.
    {"channel": "sms", "locale": "en", "body": "Sale! {{ unsubscribe_url }}"},
    # Static analysis: a link in a comment is not shown to anyone.
    {
        "channel": "line",
        "locale": "ja",
        "body": "{% comment %}{{ preferences_url }}{% endcomment %}",
    },
]
WITH_LINKS = [
    {
        "channel": "email",
        "locale": "en",
        "subject": "Sale",
        "body": "Sale! Unsubscribe: {{ unsubscribe_url }}",
        "html": '<p>Sale! <a href="{{ preferences_url | escape }}">Preferences</a></p>',
    },
    {"channel": "sms", "locale": "en", "body": "Sale! {{ preferences_url }}"},
    {"channel": "line", "locale": "ja", "body": "セール!配信設定 {{ preferences_url }}"},
]


@pytest.fixture
def api(api_key_factory):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_factory(scopes=['admin'])}")
    return client


@pytest.fixture
def promos(db):
    return topic_create(key="promos", name="Promotions")


def _body(variants, topic="promos"):
    return {"key": "sale", "name": "Sale", "topic": topic, "variants": variants}


def test_api_refuses_a_marketing_template_naming_each_variant_without_a_link(api, promos):
    for response in (
        api.post("/api/v1/templates", _body(NO_LINKS), format="json"),
        api.put("/api/v1/templates/sale", _body(NO_LINKS), format="json"),
    ):
        assert response.status_code == 400, response.content
        fields = response.json()["error"]["fields"]
        assert set(fields) == {
            "variants.0.body",
            "variants.0.html",
            "variants.1.body",
            "variants.2.body",
        }
        assert "email/en variant is marketing" in fields["variants.0.body"][0]
        assert "{{ unsubscribe_url }}" in fields["variants.0.html"][0]
        assert "add {{ preferences_url }}" in fields["variants.1.body"][0]
        assert "line/ja" in fields["variants.2.body"][0]
    assert not MessageTemplate.objects.exists()

    assert api.post("/api/v1/templates", _body(WITH_LINKS), format="json").status_code == 201
    assert api.put("/api/v1/templates/sale", _body(WITH_LINKS), format="json").status_code == 200


def test_api_lets_transactional_and_topicless_templates_go_without_links(api, promos):
    topic_create(key="orders", name="Orders", kind="transactional")
    assert (
        api.post("/api/v1/templates", _body(NO_LINKS, "orders"), format="json").status_code == 201
    )
    response = api.put("/api/v1/templates/sale", _body(NO_LINKS, None), format="json")
    assert response.status_code == 200


def test_a_syntax_error_is_reported_rather_than_the_missing_link(api, promos):
    variants = [{"channel": "sms", "locale": "en", "body": "Sale {{ }}"}]
    response = api.post("/api/v1/templates", _body(variants), format="json")
    [problem] = response.json()["error"]["fields"]["variants.0.body"]
    assert "opt-out" not in problem


# --- admin -----------------------------------------------------------------------------


def _change_form(template: MessageTemplate, **overrides: str) -> dict[str, str]:
    variants = list(template.variants.order_by("pk"))
    data = {
        "key": template.key,
        "name": template.name,
        "topic": str(template.topic_id or ""),
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
    return data | overrides


def test_admin_refuses_a_marketing_variant_without_a_link(admin_client, promos):
    template = template_create(key="sale", name="Sale", topic="promos", variants=WITH_LINKS)
    url = reverse("admin:delivery_messagetemplate_change", args=[template.pk])
    data = _change_form(template, **{"variants-1-body": "Sale! Reply STOP to opt out."})

    response = admin_client.post(url, data)

    assert response.status_code == 200  # the form again, with the error
    assert "The sms/en variant is marketing and its body has no opt-out link" in (
        response.content.decode()
    )
    assert (
        "{{ preferences_url }}"
        in TemplateVariant.objects.get(template=template, channel="sms").body
    )
    data["variants-1-body"] = "Sale! Reply STOP or see {{ preferences_url }}"
    assert admin_client.post(url, data).status_code == 302


def test_admin_refuses_moving_a_template_without_links_to_a_marketing_topic(admin_client, promos):
    orders = topic_create(key="orders", name="Orders", kind="transactional")
    template = template_create(key="receipt", name="Receipt", topic="orders", variants=NO_LINKS)
    url = reverse("admin:delivery_messagetemplate_change", args=[template.pk])

    response = admin_client.post(url, _change_form(template, topic=str(promos.pk)))

    assert response.status_code == 200
    assert "has no opt-out link" in response.content.decode()
    template.refresh_from_db()
    assert template.topic_id == orders.id
    assert admin_client.post(url, _change_form(template)).status_code == 302


def test_the_demos_marketing_templates_carry_their_links():
    from orchestrator.demo.services import load_demo

    load_demo()
    marketing = MessageTemplate.objects.filter(topic__kind=Topic.Kind.MARKETING)
    assert set(marketing.values_list("key", flat=True)) >= {"replenishment-reminder", "spring-sale"}
    for template in marketing:
        variants = list(template.variants.values("channel", "locale", "subject", "body", "html"))
        assert marketing_link_errors(variants) == {}, template.key
