"""messages_queue: a batch written in one statement reads back as the ORM would have
written it, in the order given, each message with its first history row."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from orchestrator.delivery.services import message_build, messages_queue
from tests.delivery.factories import make_customer, make_template, make_topic

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.UTC)


@time_machine.travel(NOW, tick=False)
def test_a_batch_is_written_in_order_with_every_column_and_its_history():
    topic = make_topic(kind="transactional")
    template = make_template(topic=topic)
    customers = [make_customer(), make_customer(), make_customer()]
    later = NOW + dt.timedelta(hours=2)
    built = [
        message_build(
            customer=customers[0],
            template=template,
            channel="email",
            data={"item": "Shoe", "nested": {"list": [1, 2.5, None, "ü"]}, "quote": 'a"b'},
            idempotency_key="key-0",
        ),
        message_build(
            customer=customers[1],
            template=template,
            channel="sms",
            send_at=later,
            expires_at=later + dt.timedelta(days=1),
            priority=9,
            journey="welcome",
            enrollment_id=77,
            journey_step="step-1",
        ),
        message_build(customer=customers[2], template=template, channel="email", data={}),
    ]
    with CaptureQueriesContext(connection) as queries:
        queued = messages_queue(built)
    writes = [q["sql"] for q in queries if "INSERT" in q["sql"].upper()]
    assert len(writes) == 1  # messages and their history rows together

    assert queued is built
    ids = [m.pk for m in queued]
    assert all(ids) and ids == sorted(ids)
    assert not any(m._state.adding for m in queued)
    stored = {m.pk: m for m in Message.objects.filter(pk__in=ids)}
    for message in queued:
        row = stored[message.pk]
        for field in Message._meta.concrete_fields:
            assert getattr(row, field.attname) == getattr(message, field.attname), field.name
    first, second, third = (stored[i] for i in ids)
    assert first.data["nested"] == {"list": [1, 2.5, None, "ü"]}
    assert first.data["quote"] == 'a"b'
    assert first.idempotency_key == "key-0"
    assert first.rendered is None and first.expires_at is None
    assert first.created_at == first.updated_at == NOW
    assert first.broadcast_variant == ""
    assert (second.status, second.send_after, second.priority) == ("scheduled", later, 9)
    assert (second.journey, second.enrollment_id, second.journey_step) == ("welcome", 77, "step-1")
    assert third.data == {}
    history = list(
        MessageEvent.objects.filter(message_id__in=ids).values_list(
            "message_id", "status", "occurred_at", "reason", "code"
        )
    )
    assert sorted(history) == sorted(
        (m.pk, m.status, NOW, m.explanation[0]["reason"], "") for m in queued
    )


def test_nothing_to_queue_writes_nothing():
    with CaptureQueriesContext(connection) as queries:
        assert messages_queue([]) == []
    assert not queries.captured_queries


@time_machine.travel(NOW, tick=False)
def test_a_failed_batch_writes_neither_messages_nor_history():
    topic = make_topic(kind="transactional")
    template = make_template(topic=topic)
    customer = make_customer()
    built = [
        message_build(customer=customer, template=template, channel="email", idempotency_key=k)
        for k in ("same", "same")  # the unique key refuses the second
    ]
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        messages_queue(built)
    assert not Message.objects.exists()
    assert not MessageEvent.objects.exists()
    assert built[0].status == MessageStatus.QUEUED
