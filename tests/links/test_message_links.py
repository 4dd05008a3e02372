"""Links in messages: ``{{ preferences_url }}`` and ``{{ unsubscribe_url }}`` render to
working links, and the short ``/p/`` alias SMS and chat use."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from orchestrator.consent.models import ConsentRecord, Subscription
from orchestrator.consent.tokens import preference_customer_id, preference_url
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import Message
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db

BASE = "https://messaging.example.com"


@pytest.fixture(autouse=True)
def _public_base_url(settings):
    settings.PUBLIC_BASE_URL = BASE


def _path(url: str) -> str:
    return urlsplit(url).path


def _token(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


def _send(customer, topic, channel: str, **fields: str):
    template = make_template(topic=topic, variants={(channel, "en"): fields})
    queue(customer, template, channel=channel)
    dispatcher.dispatch_due()
    return Message.objects.get(template=template)


def test_email_links_open_the_preference_center_and_unsubscribe_in_one_click(client, outbox):
    customer = make_customer()
    promos = make_topic("promos")
    _send(
        customer,
        promos,
        "email",
        subject="Sale",
        body="Sale!\nPreferences: {{ preferences_url }}\nUnsubscribe: {{ unsubscribe_url }}",
        html='<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    )
    [sent] = outbox
    preferences = re.search(r"Preferences: (\S+)", sent.body).group(1)
    unsubscribe = re.search(r"Unsubscribe: (\S+)", sent.body).group(1)

    assert preferences.startswith(f"{BASE}/preferences/")
    assert preference_customer_id(_token(preferences)) == customer.id
    assert client.get(_path(preferences)).status_code == 200
    # The link in the text is the List-Unsubscribe one: one token per message.
    assert unsubscribe.startswith(f"{BASE}/unsubscribe/")
    assert sent.headers["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert f'href="{unsubscribe}"' in sent.html

    response = client.post(_path(unsubscribe), {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert Subscription.objects.get(customer=customer, topic=promos).status == "unsubscribed"
    record = ConsentRecord.objects.get(customer=customer)
    assert (record.source, record.topic_id, record.channel) == ("one_click", promos.id, "email")


def test_sms_carries_the_short_preference_link_which_redirects_to_the_center(client, outbox):
    customer = make_customer()
    _send(customer, make_topic("promos"), "sms", body="Sale! Opt out: {{ preferences_url }}")
    [sent] = outbox
    short = re.search(r"Opt out: (\S+)$", sent.body).group(1)

    assert short.startswith(f"{BASE}/p/")
    assert len(short) < len(preference_url(customer.id))
    response = client.get(_path(short))
    assert response.status_code == 302
    assert response["Location"] == f"/preferences/{_token(short)}/"
    assert preference_customer_id(_token(short)) == customer.id
    assert client.get(response["Location"]).status_code == 200


def test_unsubscribe_url_in_an_sms_unsubscribes_from_the_topic_on_sms(client, outbox):
    customer = make_customer()
    promos = make_topic("promos")
    _send(customer, promos, "sms", body="Sale! Stop: {{ unsubscribe_url }}")
    [sent] = outbox
    link = re.search(r"Stop: (\S+)$", sent.body).group(1)
    assert "List-Unsubscribe" not in sent.headers  # an email header only

    assert client.get(_path(link)).status_code == 200  # a page with a button, nothing done
    assert not Subscription.objects.exists()
    client.post(_path(link))

    sub = Subscription.objects.get(customer=customer, topic=promos)
    assert (sub.channel, sub.status) == ("sms", "unsubscribed")


def test_on_a_transactional_topic_unsubscribe_url_is_the_preference_center(outbox):
    customer = make_customer()
    orders = make_topic("orders", kind="transactional")
    _send(
        customer, orders, "email", subject="Receipt", body="Receipt. Manage: {{ unsubscribe_url }}"
    )
    [sent] = outbox
    link = re.search(r"Manage: (\S+)$", sent.body).group(1)

    assert link.startswith(f"{BASE}/preferences/")
    assert preference_customer_id(_token(link)) == customer.id
    assert "List-Unsubscribe" not in sent.headers


def test_a_template_reading_no_link_still_gets_the_one_click_header(outbox):
    _send(make_customer(), make_topic("promos"), "email", subject="Sale", body="Sale!")
    [sent] = outbox
    assert sent.headers["List-Unsubscribe"].startswith(f"<{BASE}/unsubscribe/")


@pytest.mark.parametrize("token", ["..", "evil.example.com", "a%2Fb", "x" * 301])
def test_the_short_alias_redirects_nowhere_but_the_preference_center(client, token):
    assert client.get(f"/p/{token}/").status_code == 404
    response = client.get("/p/abc:def-_1/")
    assert (response.status_code, response["Location"]) == (302, "/preferences/abc:def-_1/")
    assert client.post("/p/abc:def-_1/").status_code == 405
