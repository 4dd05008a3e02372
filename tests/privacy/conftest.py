"""A customer with one of every kind of data we hold, built through the services."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
import time_machine
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from channels.webhooks.processing import process_pending
from journeys import engine
from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment
from orchestrator.audience.models import Customer
from orchestrator.audience.services import event_record
from orchestrator.consent.preferences import preferences_changes_from_document, preferences_update
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.journeys.conftest import make_journey, send
from tests.webhooks.conftest import TWILIO_TOKEN, twilio_post

EMAIL = "mika@example.com"
PHONE = "+14155550123"
SHOP_NUMBER = "+15005550006"
#: Noon in Tokyo, Mika's timezone, outside her quiet hours (22:00-08:00): her
#: marketing mail goes out at once whatever the hour the suite runs at.
TOKYO_NOON = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)


@dataclass
class Person:
    customer: Customer
    sent: Message
    waiting: Message
    enrollment: Enrollment


@pytest.fixture
def webhooks_configured(settings):
    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    settings.WEBHOOK_BASE_URL = None
    settings.KEYWORD_CONFIRMATIONS = False


def inbound_sms(client, body: str, *, sender: str = PHONE, sid: str) -> None:
    params = {
        "MessageSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": sender,
        "To": SHOP_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "SmsStatus": "received",
    }
    assert twilio_post(client, "/webhooks/twilio/inbound/", params).status_code == 200
    process_pending()


def run_engine() -> None:
    while engine.advance_batch().claimed:
        pass


@pytest.fixture
def at_tokyo_noon():
    """The test runs from noon in Tokyo on (the clock ticks on from there)."""
    with time_machine.travel(TOKYO_NOON, tick=True):
        yield


@pytest.fixture
def person(db, outbox, client, webhooks_configured, at_tokyo_noon) -> Person:
    """Mika: addresses, an event, consent choices, preferences, a sent message with its
    status history, a waiting one, an active journey enrollment and an inbound SMS."""
    promos = make_topic("promos", default_opt_in=False)
    make_topic("journey-news")
    template = make_template("promo-mail", topic=promos)
    make_template("journey-hello", topic=promos)
    # Before the shop reported Mika, the number texted us: an unknown sender then.
    inbound_sms(client, "who is this?", sid="SM" + "0" * 32)
    customer = make_customer(
        "mika", email=EMAIL, phone=PHONE, line_user_id="U" + "a" * 32, timezone="Asia/Tokyo"
    )
    event_record(customer="mika", name="order.completed", properties={"sku": "tea-42"})
    preferences_update(
        customer=customer,
        changes=preferences_changes_from_document(
            {
                "topics": {"promos": {"email": True, "sms": True}},
                "channels": {"line": False},
                "quiet_hours": {"start": "22:00", "end": "08:00"},
                "max_per_week": 3,
            }
        ),
        source="api",
    )
    sent = queue(customer, template, channel="email")
    dispatch_due()
    sent.refresh_from_db()
    assert sent.status == "sent", sent.explanation
    inbound_sms(client, "Thanks, love the tea", sid="SM" + "1" * 32)
    waiting = queue(customer, template, channel="sms", send_at=_later())
    journey = make_journey(
        [
            send("hello", template="journey-hello", channel="email", next="pause"),
            {
                "key": "pause",
                "kind": "wait",
                "next": "",
                "config": {"mode": "duration", "minutes": 2880},
            },
        ]
    )
    [enrollment_id] = enroll(journey, [Candidate(customer.id, "order-1", {"sku": "tea-42"})])
    run_engine()
    enrollment = Enrollment.objects.get(id=enrollment_id)
    assert enrollment.status == Enrollment.Status.ACTIVE
    customer.refresh_from_db()
    return Person(customer=customer, sent=sent, waiting=waiting, enrollment=enrollment)


def _later():
    from django.utils import timezone

    return timezone.now() + dt.timedelta(days=2)


@pytest.fixture
def client_for(api_key_factory):
    """An APIClient whose key has exactly the given scopes."""

    def make(*scopes: str) -> APIClient:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_factory(scopes=scopes)}")
        return api

    return make


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("dpo", "dpo@example.com", "pw-dpo-12345")
    client.force_login(user)
    return client
