"""The admin builder shows a digest step's fields and saves them in the definition."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from journeys.definition import export
from journeys.models import Journey
from tests.delivery.factories import make_template, make_topic
from tests.journeys.admin.helpers import add_url, form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    client.force_login(user)
    return client


def _post(admin_client, topic, **digest_fields):
    data = form_data(
        [
            {
                "key": "updates",
                "kind": "digest",
                "next": "",
                "digest_template": "order-digest",
                "digest_channel": "email",
                **digest_fields,
            }
        ],
        key="order-updates",
        name="Order updates",
        topic=topic.pk,
    )
    return admin_client.post(add_url(), data)


def test_a_marketer_sets_up_a_digest_step_with_plain_fields(admin_client):
    topic = make_topic("journey-news")
    make_template("order-digest", topic=topic)
    page = admin_client.get(add_url())
    assert b"Collect for (minutes)" in page.content
    assert b"kind-digest" in page.content
    response = _post(
        admin_client,
        topic,
        digest_minutes="30",
        digest_count="5",
        digest_key="order_id",
    )
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    step = export(Journey.objects.get(key="order-updates"))["steps"][0]
    assert step["kind"] == "digest"
    assert step["config"] == {
        "template": "order-digest",
        "channel": "email",
        "window_minutes": 30,
        "count": 5,
        "key": "order_id",
    }


def test_the_digest_fieldset_holds_only_the_digest_steps_fields(admin_client):
    topic = make_topic("journey-news")
    make_template("order-digest", topic=topic)
    page = admin_client.get(add_url()).content.decode()
    start = page.index("kind-digest")
    fieldset = page[start : page.index("</fieldset>", start)]
    for field in ("digest_template", "digest_channel", "digest_minutes", "digest_count"):
        assert f"-{field}" in fieldset
    assert "digest_key" in fieldset
    assert "send_fallback" not in fieldset and "send_ttl_hours" not in fieldset


def test_a_wrong_digest_key_is_refused_in_a_marketers_words(admin_client):
    topic = make_topic("journey-news")
    make_template("order-digest", topic=topic)
    response = _post(admin_client, topic, digest_minutes="30", digest_key="order id")
    assert response.status_code == 200
    assert "Collect per the value of a property name" in response.content.decode()
