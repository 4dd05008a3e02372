"""The consent ledger does not depend on the door: the API and the page write the same rows.

Each case applies one kind of change to two identical customers, one through the
real API endpoint with an API key, the other through the real preference page with
its signed link, and compares the ledger row for row.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from orchestrator.consent.models import CHANNELS, ConsentRecord
from orchestrator.consent.preferences import preferences_get
from orchestrator.consent.tokens import preference_token
from tests.delivery.factories import make_customer, make_topic
from tests.preferences.test_preference_center import form_data

pytestmark = pytest.mark.django_db

#: Evidence each door adds about its request; everything else must be equal.
DOOR_EVIDENCE = {"api_key", "user_agent", "language"}

RESUME = (timezone.now() + dt.timedelta(days=10)).date()


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    # The page's per-IP counts live in the cache; every test client is 127.0.0.1.
    cache.clear()
    yield
    cache.clear()


def _cells(promos, news, **on: bool) -> dict[str, bool]:
    topics = {"promos": promos, "news": news}
    return {f"t{topics[name.split('_')[0]].id}_{name.split('_')[1]}": v for name, v in on.items()}


# (API document, page form changes (or "unsubscribe_all")), by kind of change.
CASES = {
    "topics on and off": (
        {"topics": {"promos": {"email": True, "sms": True}, "news": {"email": False}}},
        lambda promos, news: _cells(
            promos, news, promos_email=True, promos_sms=True, news_email=False
        ),
    ),
    "a channel switched off": ({"channels": {"sms": False}}, lambda *_: {"allow_sms": False}),
    "quiet hours": (
        {"quiet_hours": {"start": "22:00", "end": "07:30"}},
        lambda *_: {"quiet_start": "22:00", "quiet_end": "07:30"},
    ),
    "time zone": ({"timezone": "Asia/Tokyo"}, lambda *_: {"timezone": "Asia/Tokyo"}),
    "weekly cap": ({"max_per_week": 3}, lambda *_: {"max_per_week": "3"}),
    "pause": (
        {"paused_until": f"{RESUME.isoformat()}T00:00:00+00:00"},
        lambda *_: {"paused_until": RESUME.isoformat()},
    ),
    "channel order": (
        {"channel_order": ["sms", "email"]},
        lambda *_: {"order_1": "sms", "order_2": "email"},
    ),
    "unsubscribe from all": ({"channels": dict.fromkeys(CHANNELS, False)}, "unsubscribe_all"),
    "everything at once": (
        {
            "topics": {"promos": {"email": True}},
            "channels": {"sms": False},
            "quiet_hours": {"start": "21:00", "end": "08:00"},
            "timezone": "Asia/Tokyo",
            "max_per_week": 5,
            "channel_order": ["sms", "email"],
        },
        lambda promos, news: {
            **_cells(promos, news, promos_email=True),
            "allow_sms": False,
            "quiet_start": "21:00",
            "quiet_end": "08:00",
            "timezone": "Asia/Tokyo",
            "max_per_week": "5",
            "order_1": "sms",
            "order_2": "email",
        },
    ),
}


def _ledger(customer) -> list[tuple]:
    rows = ConsentRecord.objects.filter(customer=customer).order_by("id")
    return [
        (
            r.topic_id,
            r.channel,
            r.action,
            {k: v for k, v in r.evidence.items() if k not in DOOR_EVIDENCE},
        )
        for r in rows
    ]


def _through_the_api(api_key_factory, customer, document) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_factory(scopes=['track'])}")
    url = f"/api/v1/customers/{customer.external_id}/preferences"
    response = client.patch(url, document, format="json")
    assert response.status_code == 200, response.content


def _through_the_page(customer, changes) -> None:
    client = Client()
    url = f"/preferences/{preference_token(customer.id)}/"
    if changes == "unsubscribe_all":
        data = {"action": "unsubscribe_all", "lang": "en"}
    else:
        page = client.get(url)
        assert page.status_code == 200
        data = form_data(page.context, **changes)
    response = client.post(url, data, HTTP_USER_AGENT="test-browser")
    assert response.status_code == 302, response.content.decode()


@pytest.mark.parametrize("kind", list(CASES))
def test_the_same_change_writes_the_same_ledger_rows_through_the_api_and_the_page(
    kind, api_key_factory
):
    promos = make_topic("promos", default_opt_in=False, channels=["email", "sms"])
    news = make_topic("news", default_opt_in=True, channels=["email"])
    by_api = make_customer("by-api", email="a@example.com", phone="+14155550101")
    by_page = make_customer("by-page", email="b@example.com", phone="+14155550102")
    document, page_changes = CASES[kind]

    _through_the_api(api_key_factory, by_api, document)
    _through_the_page(
        by_page, page_changes if isinstance(page_changes, str) else page_changes(promos, news)
    )

    api_rows, page_rows = _ledger(by_api), _ledger(by_page)
    assert api_rows, "the change wrote no ledger row"
    assert api_rows == page_rows
    assert set(ConsentRecord.objects.filter(customer=by_api).values_list("source", flat=True)) == {
        "api"
    }
    assert set(ConsentRecord.objects.filter(customer=by_page).values_list("source", flat=True)) == {
        "preference_center"
    }
    # And the change itself is the same.
    assert preferences_get(customer=by_api) == preferences_get(customer=by_page)


def test_the_same_change_again_writes_nothing_through_either_door(api_key_factory):
    make_topic("promos", default_opt_in=False, channels=["email", "sms"])
    customer = make_customer("again", email="c@example.com", phone="+14155550103")
    document = {"channels": {"sms": False}, "max_per_week": 2}
    _through_the_api(api_key_factory, customer, document)
    written = ConsentRecord.objects.count()

    _through_the_page(customer, {"allow_sms": False, "max_per_week": "2"})
    _through_the_api(api_key_factory, customer, document)

    assert ConsentRecord.objects.count() == written == 2
