"""A topic's own digest template: set in the admin or over the topics API, refused unless
the template exists with a variant on each of the topic's channels, used by the digest
builder, and passed over (for '<topic>-digest', then the built-in layout) when it no
longer has the digest's channel."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from channels.adapters import locmem
from orchestrator.consent.models import Topic
from orchestrator.consent.preferences import preferences_changes_from_document, preferences_update
from orchestrator.delivery import dispatcher
from orchestrator.delivery.digests import digests_build_due
from orchestrator.delivery.models import TemplateVariant
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message

pytestmark = pytest.mark.django_db

TOKYO = dt.timezone(dt.timedelta(hours=9))
MONDAY_10 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=TOKYO)
DIGEST_BODY = "Weekly roundup: {% for item in items %}[{{ item.data.item }}]{% endfor %}"


@pytest.fixture(autouse=True)
def _adapters(settings):
    settings.CHANNEL_ADAPTERS = locmem_adapters()
    locmem.clear()


def _roundup(key="order-roundup", channels=("email", "sms")):
    return make_template(
        key,
        variants={
            (channel, "en"): {
                "subject": "Roundup" if channel == "email" else "",
                "body": DIGEST_BODY,
            }
            for channel in channels
        },
    )


def _digest_of_two(topic) -> str:
    """Hold two messages for a daily digest and send it; the body that went out."""
    template = make_template(topic=topic)
    customer = make_customer(timezone="Asia/Tokyo")
    with time_machine.travel(MONDAY_10, tick=False):
        preferences_update(
            customer=customer,
            changes=preferences_changes_from_document(
                {"digests": {topic.key: {"cadence": "daily", "time": "20:00"}}}
            ),
            source="api",
        )
        queue_message(customer, template, data={"item": "parcel A"})
        queue_message(customer, template, data={"item": "parcel B"})
    with time_machine.travel(MONDAY_10.replace(hour=20, minute=1), tick=False):
        assert digests_build_due().digests == 1
        dispatcher.dispatch_due()
    assert len(locmem.outbox) == 1
    return locmem.outbox[0].body


def test_the_digest_is_written_with_the_topics_own_template():
    _roundup()
    make_template("order-updates-digest", variants={("email", "en"): {"body": "by key rule"}})
    topic = make_topic(
        "order-updates", digestible=True, channels=["email"], digest_template="order-roundup"
    )
    assert _digest_of_two(topic) == "Weekly roundup: [parcel A][parcel B]"


def test_a_template_without_the_channel_any_more_gives_way_to_the_key_rule():
    roundup = _roundup()
    make_template(
        "order-updates-digest",
        variants={("email", "en"): {"subject": "By key", "body": "by key rule"}},
    )
    topic = make_topic(
        "order-updates", digestible=True, channels=["email"], digest_template="order-roundup"
    )
    TemplateVariant.objects.filter(template=roundup, channel="email").delete()
    assert _digest_of_two(topic) == "by key rule"


def test_with_neither_the_built_in_layout_writes_it():
    roundup = _roundup()
    topic = make_topic(
        "order-updates", digestible=True, channels=["email"], digest_template="order-roundup"
    )
    roundup.variants.all().delete()
    body = _digest_of_two(topic)
    assert "2 updates" in body
    assert "parcel A" in body


def _topic_body(**fields):
    return {
        "key": "order-updates",
        "name": "Order updates",
        "digestible": True,
        "channels": ["email", "sms"],
        **fields,
    }


def test_the_topics_api_sets_and_shows_the_digest_template(api):
    _roundup()
    response = api.post(
        "/api/v1/topics", _topic_body(digest_template="order-roundup"), format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["digest_template"] == "order-roundup"
    assert Topic.objects.get(key="order-updates").digest_template == "order-roundup"
    shown = api.get("/api/v1/topics/order-updates").json()
    assert shown["digest_template"] == "order-roundup"
    # PUT without it clears it: the topic goes back to the key rule.
    response = api.put("/api/v1/topics/order-updates", _topic_body(), format="json")
    assert response.status_code == 200, response.content
    assert response.json()["digest_template"] == ""


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("no-such-template", "There is no template 'no-such-template'."),
        ("email-only", "Template 'email-only' has no sms variant"),
    ],
)
def test_the_topics_api_refuses_a_missing_or_partial_template(api, template, says):
    _roundup("email-only", channels=("email",))
    for send in (
        lambda body: api.post("/api/v1/topics", body, format="json"),
        lambda body: api.put("/api/v1/topics/order-updates", body, format="json"),
    ):
        response = send(_topic_body(digest_template=template))
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert says in error["fields"]["digest_template"][0]
    assert not Topic.objects.filter(key="order-updates").exists()


def _admin_form(**fields):
    return {
        "key": "order-updates",
        "name": "Order updates",
        "names": "{}",
        "description": "",
        "kind": "marketing",
        "channels": "email,sms",
        "quiet_hours": "default",
        "digestible": "on",
        **fields,
    }


def test_the_admin_refuses_a_partial_template_and_saves_a_whole_one(admin_client):
    _roundup("email-only", channels=("email",))
    _roundup()
    url = "/admin/consent/topic/add/"
    refused = admin_client.post(url, _admin_form(digest_template="email-only"))
    assert refused.status_code == 200
    errors = refused.context["adminform"].form.errors
    assert "has no sms variant" in errors["digest_template"][0]
    assert not Topic.objects.filter(key="order-updates").exists()
    saved = admin_client.post(url, _admin_form(digest_template="order-roundup"))
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    assert Topic.objects.get(key="order-updates").digest_template == "order-roundup"
