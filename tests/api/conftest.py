"""Fixtures for the API tests: state is built through the services, as a client would see it."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from orchestrator.audience.services import customer_upsert
from orchestrator.consent.services import topic_create
from orchestrator.delivery.template_services import template_create


@pytest.fixture
def client_for(api_key_factory):
    """An APIClient whose key has exactly the given scopes."""

    def make(*scopes: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_factory(scopes=scopes)}")
        return client

    return make


@pytest.fixture
def topic(db):
    return topic_create(
        key="orders", name="Orders", kind="transactional", channels=["email", "sms"]
    )


@pytest.fixture
def template(topic):
    return template_create(
        key="order-shipped",
        name="Order shipped",
        topic="orders",
        variants=[
            {
                "channel": "email",
                "locale": "en",
                "subject": "Order {{ data.order_id }} shipped",
                "body": "Hi, order {{ data.order_id }} is on its way.",
            },
            {"channel": "sms", "locale": "en", "body": "Order {{ data.order_id }} shipped"},
        ],
    )


@pytest.fixture
def customer(db):
    customer, _created = customer_upsert(
        external_id="alex", email="alex@example.com", phone="+819012345678", timezone="Asia/Tokyo"
    )
    return customer


@pytest.fixture
def send_body(customer, template):
    return {
        "to": {"external_id": customer.external_id},
        "template": template.key,
        "channel": "email",
        "data": {"order_id": "A-1001"},
    }


def assert_error(response, status: int, code: str | None = None, fields: tuple[str, ...] = ()):
    """The response has ``status`` and the one error body, with these field names at least."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    for field in fields:
        assert field in body["error"]["fields"], body
    return body["error"]
