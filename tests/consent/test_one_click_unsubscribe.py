"""RFC 8058 one-click unsubscribe: the header on marketing mail, the POST, and scanners."""

from __future__ import annotations

import re

import pytest

from orchestrator.consent.models import ConsentRecord, Subscription
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.delivery import dispatcher
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


def _sent_headers(outbox, customer, topic):
    queue(customer, make_template(topic=topic), channel="email")
    dispatcher.dispatch_due()
    [sent] = outbox
    return sent.headers


def _path(header: str) -> str:
    url = re.fullmatch(r"<(https?://[^>]+)>", header).group(1)
    return re.sub(r"^https?://[^/]+", "", url)


def test_marketing_email_carries_one_click_headers_and_the_post_unsubscribes(
    client, outbox, settings
):
    settings.PUBLIC_BASE_URL = "https://messaging.example.com"
    customer = make_customer()
    promos = make_topic("promos")
    headers = _sent_headers(outbox, customer, promos)

    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith("<https://messaging.example.com/unsubscribe/")
    assert customer.email not in headers["List-Unsubscribe"]

    # What Gmail or Apple Mail sends: a POST with this body, no cookies, no CSRF token.
    response = client.post(_path(headers["List-Unsubscribe"]), {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert Subscription.objects.get(customer=customer, topic=promos).status == "unsubscribed"
    record = ConsentRecord.objects.get(customer=customer)
    assert (record.source, record.topic_id, record.channel) == ("one_click", promos.id, "email")
    [decision] = consent_decisions(
        [ConsentRequest(customer.id, promos.id, "email", customer.email)]
    )
    assert decision.code == "unsubscribed"
    # Again: nothing new in the ledger.
    client.post(_path(headers["List-Unsubscribe"]), {"List-Unsubscribe": "One-Click"})
    assert ConsentRecord.objects.filter(customer=customer).count() == 1


def test_a_get_from_a_link_scanner_changes_nothing(client, outbox):
    customer = make_customer()
    headers = _sent_headers(outbox, customer, make_topic("promos"))

    page = client.get(_path(headers["List-Unsubscribe"]))

    assert page.status_code == 200
    assert b'<form method="post">' in page.content
    assert not Subscription.objects.exists() and not ConsentRecord.objects.exists()


def test_transactional_email_has_no_unsubscribe_header(outbox):
    headers = _sent_headers(outbox, make_customer(), make_topic("orders", kind="transactional"))
    assert "List-Unsubscribe" not in headers


@pytest.mark.parametrize("token", ["garbage", "eyJjIjoxfQ:1abc:def", "a" * 300])
@pytest.mark.parametrize("prefix", ["/unsubscribe/", "/u/"])
def test_a_tampered_token_gets_a_neutral_400_and_changes_nothing(client, token, prefix):
    for response in (client.get(f"{prefix}{token}/"), client.post(f"{prefix}{token}/")):
        assert response.status_code == 400
        assert b"not valid" in response.content
    assert not ConsentRecord.objects.exists()


def test_a_link_sent_under_the_first_path_u_still_unsubscribes(client):
    from orchestrator.consent.unsubscribe import make_token

    customer = make_customer()
    promos = make_topic("promos")
    token = make_token(customer_id=customer.id, topic_id=promos.id, channel="email", message_id=1)

    response = client.post(f"/u/{token}/", {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert Subscription.objects.get(customer=customer, topic=promos).status == "unsubscribed"
