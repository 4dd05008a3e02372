"""The customer-readable "why did I get this?" built from a message's decision trail."""

import datetime as dt

import pytest
import time_machine

from orchestrator.consent.models import ChannelPreference, Subscription
from orchestrator.delivery import dispatcher
from orchestrator.delivery.selectors import customer_explanation
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


def test_a_subscribed_marketing_message_names_the_topic_and_channel(outbox):
    topic = make_topic("replenishment", default_opt_in=False)
    customer = make_customer()
    Subscription.objects.create(
        customer=customer, topic=topic, channel="email", status="subscribed"
    )
    message = queue(customer, make_template(topic=topic))
    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert customer_explanation(message) == ["You subscribed to Replenishment by email."]


def test_a_transactional_message_says_opt_outs_do_not_apply(outbox):
    message = queue(
        make_customer(), make_template(topic=make_topic("orders", kind="transactional"))
    )
    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert "sent even if you have opted out of marketing" in customer_explanation(message)[0]


def test_a_quiet_hours_hold_gives_the_local_time(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(21), dt.time(8))
    customer = make_customer(timezone="Asia/Tokyo")
    ChannelPreference.objects.create(customer=customer, channel_order=["email"])
    with time_machine.travel(dt.datetime(2026, 6, 1, 13, 30, tzinfo=dt.UTC), tick=False):
        message = queue(customer, make_template(topic=make_topic()), channel="preferred")
        dispatcher.dispatch_due()
    message.refresh_from_db()
    lines = customer_explanation(message)
    assert "first channel in your preferred order" in lines[1]
    assert lines[2].startswith("We held it until June 2, 2026, 8 a.m. your time")
