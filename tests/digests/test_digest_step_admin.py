"""The admin builder shows a send step's digest fields and saves them in the definition."""

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
                "kind": "send",
                "next": "",
                "send_template": "order-digest",
                "send_channel": "email",
                **digest_fields,
            }
        ],
        key="order-updates",
        name="Order updates",
        topic=topic.pk,
    )
    return admin_client.post(add_url(), data)


def test_a_marketer_sets_a_digest_on_a_send_step_with_plain_fields(admin_client):
    topic = make_topic("journey-news")
    make_template("order-digest", topic=topic)
    page = admin_client.get(add_url())
    assert b"As a digest: collect for (minutes)" in page.content
    response = _post(
        admin_client,
        topic,
        send_digest_minutes="30",
        send_digest_count="5",
        send_digest_key="order_id",
    )
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    step = export(Journey.objects.get(key="order-updates"))["steps"][0]
    assert step["config"]["digest"] == {"window_minutes": 30, "count": 5, "key": "order_id"}


def test_a_wrong_digest_key_is_refused_in_a_marketers_words(admin_client):
    topic = make_topic("journey-news")
    make_template("order-digest", topic=topic)
    response = _post(admin_client, topic, send_digest_minutes="30", send_digest_key="order id")
    assert response.status_code == 200
    assert "Collect per the value of a property name" in response.content.decode()
