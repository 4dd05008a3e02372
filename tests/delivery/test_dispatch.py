"""The dispatcher end to end against real PostgreSQL, with the locmem adapter as provider."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestrator.delivery.dispatcher import dispatch_batch, dispatch_due
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


def test_dispatch_sends_personalized_message_and_records_status_and_history(outbox):
    topic = make_topic("news")
    template = make_template(topic=topic)
    customer = make_customer("ann", attributes={"first_name": "Ann"})
    message = queue(customer, template, data={"item": "running shoes"})

    stats, more = dispatch_due()

    assert (stats.sent, more) == (1, False)
    [sent] = outbox
    assert sent.message_id == message.id
    assert sent.to == "ann@example.com"
    assert sent.subject == "Hello Ann"
    assert sent.body == "Hi Ann, your running shoes is ready."
    assert sent.html == "<p>Hi Ann, your running shoes is ready.</p>"
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert message.provider == "locmem"
    assert message.provider_message_id == sent_provider_id(message)
    assert message.sent_at is not None
    assert message.handed_off_at is not None
    assert message.attempts == 1
    assert message.rendered["subject"] == "Hello Ann"
    assert list(message.history.values_list("status", flat=True)) == ["queued", "sent"]
    assert message.explanation[-1]["step"] == "send"
    assert message.explanation[-1]["decision"] == "sent"


def sent_provider_id(message: Message) -> str:
    return message.explanation[-1]["details"]["provider_message_id"]


def test_dispatch_renders_the_customers_locale_and_falls_back_to_english(outbox):
    template = make_template(
        topic=make_topic(),
        variants={
            ("sms", "en"): {"body": "Hello {{ customer.first_name }}"},
            ("sms", "ja"): {"body": "{{ customer.first_name }}さん、こんにちは"},
        },
    )
    japanese = make_customer("yuki", locale="ja-JP", attributes={"first_name": "Yuki"})
    french = make_customer("remi", locale="fr", attributes={"first_name": "Remi"})
    queue(japanese, template, channel="sms")
    queue(french, template, channel="sms")

    dispatch_due()

    assert sorted(m.body for m in outbox) == ["Hello Remi", "Yukiさん、こんにちは"]


def test_higher_priority_messages_are_claimed_first(outbox):
    template = make_template(topic=make_topic())
    customer = make_customer()
    low = queue(customer, template, priority=1)
    high = queue(customer, template, priority=9)

    dispatch_batch(batch_size=1)

    assert [m.message_id for m in outbox] == [high.id]
    low.refresh_from_db()
    assert low.status == MessageStatus.QUEUED


def test_scheduled_message_waits_until_its_send_time(outbox):
    template = make_template(topic=make_topic())
    later = timezone.now() + dt.timedelta(hours=1)
    message = queue(make_customer(), template, send_at=later)

    dispatch_due()
    assert outbox == []

    with time_machine.travel(later + dt.timedelta(seconds=1), tick=False):
        dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert [m.message_id for m in outbox] == [message.id]


def test_a_batch_costs_the_same_queries_for_five_or_fifty_messages(outbox):
    template = make_template(topic=make_topic())

    def queries_to_dispatch(count: int) -> int:
        for _ in range(count):
            queue(make_customer(), template, channel="sms")
        with CaptureQueriesContext(connection) as ctx:
            stats = dispatch_batch(batch_size=100)
        assert stats.sent == count
        return len(ctx.captured_queries)

    assert queries_to_dispatch(5) == queries_to_dispatch(50)


def test_message_past_its_expiry_is_expired_not_sent(outbox):
    template = make_template(topic=make_topic())
    now = timezone.now()
    message = queue(
        make_customer(),
        template,
        send_at=now + dt.timedelta(minutes=10),
        expires_at=now + dt.timedelta(minutes=30),
    )

    with time_machine.travel(now + dt.timedelta(hours=1), tick=False):
        stats, _more = dispatch_due()

    assert stats.expired == 1
    assert outbox == []
    message.refresh_from_db()
    assert message.status == MessageStatus.EXPIRED
    assert message.attempts == 0
    entry = message.explanation[-1]
    assert entry["step"] == "expiry"
    assert entry["details"]["expires_at"] is not None
    assert list(message.history.values_list("status", flat=True)) == ["scheduled", "expired"]


def test_an_edited_template_is_rendered_as_edited_by_the_next_batch(outbox):
    """Parsed templates are kept per process, keyed by their text: an edit is a new key."""
    template = make_template(
        topic=make_topic(),
        variants={("sms", "en"): {"body": "Old text for {{ customer.first_name }}"}},
    )
    customer = make_customer("eve", attributes={"first_name": "Eve"})
    queue(customer, template, channel="sms")
    dispatch_due()
    variant = template.variants.get()
    variant.body = "New text for {{ customer.first_name }}"
    variant.save()
    queue(customer, template, channel="sms")

    dispatch_due()

    assert [m.body for m in outbox] == ["Old text for Eve", "New text for Eve"]
