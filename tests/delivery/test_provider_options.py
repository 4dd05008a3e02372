"""Provider options (WhatsApp Content template, LINE kinds) are checked by one service,
whether a template comes through the API or the admin."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from orchestrator.consent.services import topic_create
from orchestrator.delivery.admin import TemplateVariantForm
from orchestrator.delivery.models import TemplateVariant
from orchestrator.delivery.template_services import template_create
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

CONTENT_SID = "HX" + "0123456789abcdef" * 2
OPTIONS = {"content_sid": CONTENT_SID, "content_variables": {"1": "{{ customer.first_name }}"}}


@pytest.fixture
def topic():
    return topic_create(
        key="visits", name="Visits", kind="transactional", channels=["whatsapp", "line", "sms"]
    )


def whatsapp(**extra):
    return {"channel": "whatsapp", "locale": "en", "body": "See you soon", **extra}


def test_the_api_stores_valid_whatsapp_options_and_returns_them(api, topic):
    body = {
        "key": "visit",
        "name": "Visit",
        "topic": "visits",
        "variants": [whatsapp(provider_options=OPTIONS)],
    }

    assert api.post("/api/v1/templates", body, format="json").status_code == 201

    (variant,) = api.get("/api/v1/templates/visit").json()["variants"]
    assert variant["provider_options"] == OPTIONS
    assert TemplateVariant.objects.get().provider_options == OPTIONS


def test_the_api_refuses_options_that_cannot_work_naming_the_variant(api, topic):
    body = {
        "key": "visit",
        "name": "Visit",
        "topic": "visits",
        "variants": [
            {"channel": "sms", "locale": "en", "body": "ok"},
            whatsapp(provider_options={"content_sid": "HX123"}),
        ],
    }

    error = assert_error(api.post("/api/v1/templates", body, format="json"), 400, "invalid")

    assert list(error["fields"]) == ["variants.1.provider_options"]
    assert "content_sid must be" in error["fields"]["variants.1.provider_options"][0]


def test_a_put_without_options_keeps_the_ones_the_variant_has(api, topic):
    template_create(
        key="visit", name="Visit", topic="visits", variants=[whatsapp(provider_options=OPTIONS)]
    )
    body = {"name": "Visit", "topic": "visits", "variants": [whatsapp(body="See you tomorrow")]}

    assert api.put("/api/v1/templates/visit", body, format="json").status_code == 200

    variant = TemplateVariant.objects.get()
    assert (variant.body, variant.provider_options) == ("See you tomorrow", OPTIONS)


def test_the_service_refuses_a_line_variant_without_a_kind(topic):
    variant = {
        "channel": "line",
        "locale": "en",
        "body": "Hi",
        "provider_options": {"alt_text": "x"},
    }

    with pytest.raises(ValidationError) as refused:
        template_create(key="visit", name="Visit", topic="visits", variants=[variant])

    assert '"kind"' in refused.value.message_dict["variants.0.provider_options"][0]


def test_the_admin_form_refuses_what_the_api_refuses(topic):
    form = TemplateVariantForm(
        data={
            "channel": "sms",
            "locale": "en",
            "body": "Hi",
            "provider_options": '{"kind": "flex"}',
        }
    )

    assert not form.is_valid()
    assert form.errors["provider_options"] == ["sms variants take no provider options."]
