"""Consent and suppression are decided at send time, in bulk, before anything is rendered."""

from __future__ import annotations

import pytest

from orchestrator.audience.services import customer_upsert
from orchestrator.consent.models import Subscription, Suppression, address_hash
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


def _status(message):
    message.refresh_from_db()
    return message.status


def test_unsubscribed_customer_gets_no_marketing_message(outbox):
    topic = make_topic("promos", default_opt_in=True)
    template = make_template(topic=topic)
    customer = make_customer()
    Subscription.objects.create(
        customer=customer, topic=topic, channel="email", status="unsubscribed"
    )
    message = queue(customer, template)

    stats, _ = dispatch_due()

    assert (stats.suppressed, outbox) == (1, [])
    message.refresh_from_db()
    assert message.status == MessageStatus.SUPPRESSED
    assert message.handed_off_at is None
    assert "unsubscribed from 'promos' on email" in message.explanation[-1]["reason"]
    assert message.explanation[-1]["details"]["code"] == "unsubscribed"
    assert message.history.last().status == MessageStatus.SUPPRESSED


def test_opt_in_topic_without_a_subscription_is_not_sent(outbox):
    topic = make_topic("newsletter", default_opt_in=False)
    message = queue(make_customer(), make_template(topic=topic))

    dispatch_due()

    assert outbox == []
    assert _status(message) == MessageStatus.SUPPRESSED
    message.refresh_from_db()
    assert message.explanation[-1]["details"]["code"] == "no_opt_in"


def test_opt_in_topic_with_a_subscription_is_sent_on_that_channel_only(outbox):
    topic = make_topic("newsletter", default_opt_in=False)
    template = make_template(topic=topic)
    customer = make_customer()
    Subscription.objects.create(customer=customer, topic=topic, channel="sms", status="subscribed")
    by_sms = queue(customer, template, channel="sms")
    by_email = queue(customer, template, channel="email")

    dispatch_due()

    assert [m.message_id for m in outbox] == [by_sms.id]
    assert _status(by_email) == MessageStatus.SUPPRESSED


def test_transactional_message_goes_through_a_marketing_opt_out(outbox):
    marketing = make_topic("promos")
    receipts = make_topic("receipts", kind="transactional", default_opt_in=False)
    customer = make_customer()
    for topic in (marketing, receipts):
        Subscription.objects.create(
            customer=customer, topic=topic, channel="email", status="unsubscribed"
        )
    promo = queue(customer, make_template(topic=marketing))
    receipt = queue(customer, make_template(topic=receipts))

    dispatch_due()

    assert [m.message_id for m in outbox] == [receipt.id]
    assert _status(promo) == MessageStatus.SUPPRESSED
    assert _status(receipt) == MessageStatus.SENT


def test_hard_suppression_blocks_even_a_transactional_message(outbox):
    receipts = make_topic("receipts", kind="transactional")
    customer = make_customer(email="Bounced@Example.com")
    Suppression.objects.create(
        channel="email", address_hash=address_hash("email", "bounced@example.com"), reason="bounce"
    )
    receipt = queue(customer, make_template(topic=receipts))
    by_sms = queue(customer, make_template(topic=receipts), channel="sms")

    dispatch_due()

    assert [m.message_id for m in outbox] == [by_sms.id]
    receipt.refresh_from_db()
    assert receipt.status == MessageStatus.SUPPRESSED
    assert "suppressed (Hard bounce)" in receipt.explanation[-1]["reason"]


def test_channel_the_topic_does_not_allow_is_refused(outbox):
    topic = make_topic("email-only", channels=["email"])
    message = queue(make_customer(), make_template(topic=topic), channel="sms")

    dispatch_due()

    assert outbox == []
    message.refresh_from_db()
    assert message.status == MessageStatus.SUPPRESSED
    assert message.explanation[-1]["details"]["code"] == "channel_not_allowed"


def test_customer_who_removed_the_address_after_queueing_is_not_sent(outbox):
    customer = make_customer("pat")
    message = queue(customer, make_template(topic=make_topic()), channel="sms")
    customer_upsert(external_id="pat", phone="")

    dispatch_due()

    assert outbox == []
    message.refresh_from_db()
    assert message.status == MessageStatus.SUPPRESSED
    assert message.explanation[-1]["details"]["code"] == "no_address"
