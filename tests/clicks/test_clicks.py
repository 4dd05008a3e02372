"""Click tracking end to end: the dispatcher rewrites links, ``/r/<token>`` records and
redirects. Real PostgreSQL, the locmem adapter as provider, the real URL route."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from django.utils import timezone

from orchestrator.audience.models import Event
from orchestrator.delivery.clicks import click_token, click_token_parse, links_rewrite
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db

BASE = "https://go.example.com"
TRACKED = re.compile(re.escape(BASE) + r"/r/[A-Za-z0-9]+\.[A-Za-z0-9]+\.[A-Za-z0-9_-]{12}")

EMAIL = {
    "subject": "Sale",
    "body": "Shop now: https://shop.example/sale?a=1&b=2. Or (https://shop.example/faq).",
    "html": (
        '<p><a href="https://shop.example/sale?a=1&amp;b=2">Shop</a> '
        "<a href='mailto:help@shop.example'>Mail us</a> "
        '<a href="tel:+14155550100">Call</a></p>'
    ),
}
SMS = {"body": "Sale today: https://shop.example/sale?utm_source=sms&utm_campaign=spring"}


@pytest.fixture(autouse=True)
def _base_url(settings):
    settings.PUBLIC_BASE_URL = BASE + "/"


def _send(outbox, variants, *, channel="email", track_clicks=True, customer=None):
    template = make_template(topic=make_topic(), variants=variants)
    if not track_clicks:
        template.track_clicks = False
        template.save(update_fields=["track_clicks"])
    customer = customer or make_customer()
    message = queue(customer, template, channel=channel, data={})
    dispatch_due()
    [sent] = [o for o in outbox if o.message_id == message.id]
    message.refresh_from_db()
    return message, sent


def _path(url: str) -> str:
    return url.removeprefix(BASE)


def test_email_links_are_rewritten_and_the_originals_kept_on_the_message(outbox):
    message, sent = _send(outbox, {("email", "en"): EMAIL})

    assert "shop.example" not in sent.body
    assert "https://shop.example" not in sent.html
    text_links = TRACKED.findall(sent.body)
    html_links = TRACKED.findall(sent.html)
    # The same URL is one link, whether in the text part or the HTML.
    assert len(text_links) == 2
    assert html_links == [text_links[0]]
    # Sentence punctuation stays outside the link.
    assert sent.body.endswith(f"Or ({text_links[1]}).")
    assert f"{text_links[0]}. Or" in sent.body
    # The browser follows the unescaped href, so that is what is kept.
    assert message.rendered["links"] == [
        "https://shop.example/sale?a=1&b=2",
        "https://shop.example/faq",
    ]
    assert message.rendered["body"] == sent.body
    assert message.rendered["html"] == sent.html
    assert "mailto:help@shop.example" in sent.html
    assert 'href="tel:+14155550100"' in sent.html


def test_an_emails_own_links_are_listed_for_the_provider_to_substitute(outbox):
    variants = {
        ("email", "en"): {
            **EMAIL,
            "body": EMAIL["body"] + " Unsubscribe: {{ unsubscribe_url }}",
        }
    }
    _message, sent = _send(outbox, variants)
    personal = sent.metadata["personal"]
    tracked = TRACKED.findall(sent.body)
    assert len(tracked) == 2 and set(tracked) <= set(personal)
    [unsubscribe] = [link for link in personal if "/unsubscribe/" in link]
    assert unsubscribe in sent.body
    # Everything listed is in the copy, so the rest of it is the same for everyone.
    assert all(link in sent.body or link in sent.html for link in personal)


def test_sms_has_no_personal_list(outbox):
    _message, sent = _send(outbox, {("sms", "en"): SMS}, channel="sms")
    assert "personal" not in sent.metadata


def test_sms_link_is_short(outbox):
    _message, sent = _send(outbox, {("sms", "en"): SMS}, channel="sms")

    [link] = TRACKED.findall(sent.body)
    assert sent.body == f"Sale today: {link}"
    token = link.removeprefix(f"{BASE}/r/")
    assert len(token) <= 30
    assert len(sent.body) < len(SMS["body"])


def test_our_own_links_are_not_rewritten(outbox):
    own = [
        f"{BASE}/preferences/abc/",
        f"{BASE}/p/abc/",
        f"{BASE}/unsubscribe/abc/",
        f"{BASE}/u/abc/",
        f"{BASE}/r/abc",
    ]
    body = "Links: " + " ".join(own) + " and {{ preferences_url }}"
    message, sent = _send(outbox, {("sms", "en"): {"body": body}}, channel="sms")

    for link in own:
        assert link in sent.body
    assert f"{BASE}/p/" in sent.body.rsplit(" and ", 1)[1]
    assert "links" not in message.rendered


def test_opted_out_template_goes_out_as_written(outbox):
    message, sent = _send(outbox, {("email", "en"): EMAIL}, track_clicks=False)

    assert "/r/" not in sent.body
    assert "https://shop.example/sale?a=1&b=2." in sent.body
    assert 'href="https://shop.example/sale?a=1&amp;b=2"' in sent.html
    assert "links" not in message.rendered


def test_click_redirects_to_the_original_and_records_it_on_message_and_customer(outbox, client):
    customer = make_customer("cara")
    message, sent = _send(outbox, {("sms", "en"): SMS}, channel="sms", customer=customer)
    Message.objects.filter(id=message.id).update(journey="spring-sale")
    [link] = TRACKED.findall(sent.body)

    response = client.get(_path(link))

    assert response.status_code == 302
    assert response["Location"] == "https://shop.example/sale?utm_source=sms&utm_campaign=spring"
    message.refresh_from_db()
    assert message.status == MessageStatus.CLICKED
    click = message.history.get(status=MessageStatus.CLICKED)
    assert click.code == "click"
    assert click.reason == f"clicked {response['Location']}"
    event = Event.objects.get(customer=customer, name="message.clicked")
    assert event.properties == {
        "message_id": message.id,
        "url": response["Location"],
        "channel": "sms",
        "journey": "spring-sale",
    }


def test_each_link_redirects_to_its_own_url(outbox, client):
    _message, sent = _send(outbox, {("email", "en"): EMAIL})
    first, second = TRACKED.findall(sent.body)

    assert client.get(_path(first))["Location"] == "https://shop.example/sale?a=1&b=2"
    assert client.get(_path(second))["Location"] == "https://shop.example/faq"


def _assert_nothing_recorded(message):
    assert not MessageEvent.objects.filter(message=message, status=MessageStatus.CLICKED).exists()
    assert not Event.objects.filter(name="message.clicked").exists()
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT


def test_tampered_token_is_a_404_with_no_redirect_and_nothing_recorded(outbox, client):
    message, sent = _send(outbox, {("email", "en"): EMAIL})
    [link, _faq] = TRACKED.findall(sent.body)
    token = _path(link).removeprefix("/r/")
    ids, signature = token.rsplit(".", 1)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    # Another message's id under this signature, another link index, a bad signature,
    # garbage, and a token of the right shape for a message that does not exist.
    attempts = [
        f"{click_token(message.id + 1, 0).rsplit('.', 1)[0]}.{signature}",
        f"{ids.split('.')[0]}.1.{signature}",
        f"{ids}.{flipped}",
        f"{ids}.{signature}x",
        "../../evil.example",
        "%00",
        "x" * 400,
        "zzzzzzzzzz.0.AAAAAAAAAAAA",
        click_token(message.id + 1000, 0),
        click_token(message.id, 7),  # signed, but the message has no 8th link
    ]
    for bad in attempts:
        response = client.get(f"/r/{bad}")
        assert response.status_code == 404, bad
        assert "Location" not in response
    _assert_nothing_recorded(message)


def test_token_signed_with_another_key_is_rejected_and_a_rotated_key_still_works(settings):
    old_key = settings.SECRET_KEY
    token = click_token(42, 0)
    assert click_token_parse(token) == (42, 0)

    settings.SECRET_KEY = "another-secret-key-entirely-different-0123456789"
    assert click_token_parse(token) is None

    # Links already in inboxes survive a key rotation.
    settings.SECRET_KEY_FALLBACKS = [old_key]
    assert click_token_parse(token) == (42, 0)


def test_a_full_stop_taken_into_the_link_still_redirects(outbox, client):
    _message, sent = _send(outbox, {("email", "en"): EMAIL})
    [link, _faq] = TRACKED.findall(sent.body)

    response = client.get(_path(link) + ".")

    assert response.status_code == 302
    assert response["Location"] == "https://shop.example/sale?a=1&b=2"


def test_head_redirects_but_records_nothing(outbox, client):
    message, sent = _send(outbox, {("email", "en"): EMAIL})
    [link, _faq] = TRACKED.findall(sent.body)

    response = client.head(_path(link))

    assert response.status_code == 302
    assert response["Location"] == "https://shop.example/sale?a=1&b=2"
    _assert_nothing_recorded(message)


def test_post_is_not_allowed(outbox, client):
    message, sent = _send(outbox, {("email", "en"): EMAIL})
    [link, _faq] = TRACKED.findall(sent.body)

    assert client.post(_path(link)).status_code == 405
    _assert_nothing_recorded(message)


def test_double_click_records_two_history_rows_one_customer_event_and_stays_clicked(outbox, client):
    customer = make_customer()
    message, sent = _send(outbox, {("sms", "en"): SMS}, channel="sms", customer=customer)
    [link] = TRACKED.findall(sent.body)

    with time_machine.travel(timezone.now().replace(second=10), tick=False):
        assert client.get(_path(link)).status_code == 302
        assert client.get(_path(link)).status_code == 302

    message.refresh_from_db()
    assert message.status == MessageStatus.CLICKED
    assert message.history.filter(status=MessageStatus.CLICKED).count() == 2
    # Journeys see one click for a double click...
    assert Event.objects.filter(customer=customer, name="message.clicked").count() == 1

    # ...and a new one when the customer comes back later.
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=5), tick=False):
        assert client.get(_path(link)).status_code == 302
    assert Event.objects.filter(customer=customer, name="message.clicked").count() == 2
    message.refresh_from_db()
    assert message.status == MessageStatus.CLICKED


def test_a_click_does_not_move_a_replied_message_back(outbox, client):
    message, sent = _send(outbox, {("sms", "en"): SMS}, channel="sms")
    Message.objects.filter(id=message.id).update(status=MessageStatus.REPLIED)
    [link] = TRACKED.findall(sent.body)

    assert client.get(_path(link)).status_code == 302

    message.refresh_from_db()
    assert message.status == MessageStatus.REPLIED
    assert message.history.filter(status=MessageStatus.CLICKED).count() == 1


def test_body_without_links_is_returned_as_is():
    rewritten = links_rewrite(message_id=1, body="No links here.", html="<p>None</p>")

    assert (rewritten.body, rewritten.html, rewritten.links) == (
        "No links here.",
        "<p>None</p>",
        [],
    )


def test_track_clicks_is_accepted_and_returned_by_the_api(api):
    make_topic("orders", kind="transactional")
    template = {
        "key": "receipt",
        "name": "Receipt",
        "topic": "orders",
        "variants": [{"channel": "sms", "locale": "en", "body": "https://shop.example/r/1"}],
    }

    created = api.post("/api/v1/templates", {**template, "track_clicks": False}, format="json")
    assert created.status_code == 201, created.content
    assert api.get("/api/v1/templates/receipt").json()["track_clicks"] is False

    assert api.put("/api/v1/templates/receipt", template, format="json").status_code == 200
    assert api.get("/api/v1/templates/receipt").json()["track_clicks"] is True

    bad = api.put("/api/v1/templates/receipt", {**template, "track_clicks": "nope"}, format="json")
    assert bad.status_code == 400
