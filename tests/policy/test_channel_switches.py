"""The channel a message goes by respects the customer's consent to its topic, and every
move to another channel is written down: the message's channel, a trail entry, a history
row, and what the API and the customer read."""

from __future__ import annotations

import pytest

from orchestrator.consent.models import ChannelPreference, Subscription
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import FrequencyRule
from orchestrator.delivery.selectors import customer_explanation
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


@pytest.fixture
def sms_first():
    topic = make_topic("promos", default_opt_in=True)
    customer = make_customer()
    ChannelPreference.objects.create(customer=customer, channel_order=["sms", "email"])
    return customer, topic, make_template(topic=topic)


def test_preferred_is_queued_on_a_channel_the_customer_consents_to(outbox, sms_first):
    customer, topic, template = sms_first
    Subscription.objects.create(
        customer=customer, topic=topic, channel="sms", status="unsubscribed"
    )

    message = queue(customer, template, channel="preferred")

    assert (message.channel, message.to_address) == ("email", customer.email)
    assert "consents to for this topic (not sms)" in message.explanation[0]["reason"]
    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.channel) == ("sent", "email")
    assert [m.channel for m in outbox] == ["email"]


def test_a_reroute_at_send_time_is_recorded_and_the_api_shows_where_it_went(outbox, sms_first, api):
    customer, topic, template = sms_first
    message = queue(customer, template, channel="preferred")
    assert message.channel == "sms"
    # The customer opts out of the topic on SMS after the message was queued.
    Subscription.objects.create(
        customer=customer, topic=topic, channel="sms", status="unsubscribed"
    )

    dispatcher.dispatch_due()

    body = api.get(f"/api/v1/messages/{message.id}").json()
    assert (body["status"], body["channel"]) == ("sent", "email")
    assert [m.channel for m in outbox] == ["email"]
    route = [e for e in body["explanation"] if e["step"] == "route"]
    assert [(e["details"]["from"], e["details"]["to"], e["details"]["why"]) for e in route] == [
        ("sms", "email", "consent")
    ]
    rerouted = [h for h in body["history"] if h["code"] == "rerouted"]
    assert len(rerouted) == 1
    assert "re-routed from sms to email" in rerouted[0]["reason"]
    assert "unsubscribed from 'promos' on sms" in rerouted[0]["reason"]
    assert (
        "It came by email instead of text message, because you do not get Promos by "
        "text message." in body["explanation_text"]
    )


def test_a_move_to_another_channel_by_the_policy_is_recorded(outbox):
    FrequencyRule.objects.create(
        key="sms-1", name="1 sms a day", limit=1, calendar="day", scope="channel", channel="sms"
    )
    customer = make_customer()
    ChannelPreference.objects.create(customer=customer, channel_order=["sms", "email"])
    template = make_template(topic=make_topic())
    first = queue(customer, template, channel="preferred")
    second = queue(customer, template, channel="preferred")

    dispatcher.dispatch_due()

    second.refresh_from_db()
    assert (second.status, second.channel, second.to_address) == (
        "sent",
        "email",
        customer.email,
    )
    [route] = [e for e in second.explanation if e["step"] == "route"]
    assert (route["details"]["from"], route["details"]["why"]) == ("sms", "policy")
    assert route["details"]["held"][0]["code"] == "rule:sms-1"
    assert second.history.filter(code="rerouted").count() == 1
    assert first.history.filter(code="rerouted").count() == 0
    assert any("instead of text message" in line for line in customer_explanation(second))
