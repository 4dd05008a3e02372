"""The priority lane: a triggered or transactional send that comes due while a dispatcher
works through a batch of lower-priority messages (a broadcast) overtakes the rest of it."""

from __future__ import annotations

import pytest
from django.db import transaction

from orchestrator.delivery.dispatcher import dispatch_batch
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db

ARRIVAL = "tests.delivery.adapters.ArrivalDuringSendAdapter"


def _adapters(arrive) -> dict:
    return {
        channel: {"BACKEND": ARRIVAL, "OPTIONS": {"arrive": arrive if channel == "email" else None}}
        for channel in ("email", "sms", "whatsapp", "line")
    }


def test_a_triggered_send_overtakes_the_rest_of_a_broadcast_batch(settings, outbox):
    settings.DISPATCH_SEND_CHUNK_SIZE = 2
    newsletter = make_template(topic=make_topic("newsletter"))
    receipts = make_template(topic=make_topic("receipts", kind="transactional"))
    broadcast = [queue(make_customer(), newsletter, priority=1) for _ in range(6)]
    buyer = make_customer("buyer")
    arrived: list[Message] = []

    def order_placed() -> None:
        with transaction.atomic():
            arrived.append(queue(buyer, receipts, priority=8))

    settings.CHANNEL_ADAPTERS = _adapters(order_placed)

    stats = dispatch_batch(batch_size=10)

    [receipt] = arrived
    sent_order = [m.message_id for m in outbox]
    # The first chunk was with the provider when the receipt came due; it went next,
    # ahead of the four broadcast copies still to go.
    assert sent_order == [
        *(m.id for m in broadcast[:2]),
        receipt.id,
        *(m.id for m in broadcast[2:]),
    ]
    assert (stats.sent, stats.overtaken) == (7, 1)
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}


def test_an_equal_priority_arrival_waits_for_the_batch_under_way(settings, outbox):
    settings.DISPATCH_SEND_CHUNK_SIZE = 2
    template = make_template(topic=make_topic())
    batch = [queue(make_customer(), template, priority=5) for _ in range(4)]
    late = make_customer("late")
    arrived: list[Message] = []

    def another_one() -> None:
        with transaction.atomic():
            arrived.append(queue(late, template, priority=5))

    settings.CHANNEL_ADAPTERS = _adapters(another_one)

    stats = dispatch_batch(batch_size=10)

    # Same priority: claim order (then the oldest first) holds; it waits for a later batch.
    assert [m.message_id for m in outbox] == [m.id for m in batch]
    assert stats.overtaken == 0
    [message] = arrived
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED


def test_a_flood_of_urgent_sends_takes_one_lane_batch_per_chunk(settings, outbox):
    """The batch under way still moves: its rows are not parked until recovery takes
    them back as a dead worker's."""
    settings.DISPATCH_SEND_CHUNK_SIZE = 2
    newsletter = make_template(topic=make_topic("newsletter"))
    receipts = make_template(topic=make_topic("receipts", kind="transactional"))
    broadcast = [queue(make_customer(), newsletter, priority=1) for _ in range(4)]
    buyers = [make_customer() for _ in range(6)]
    arrived: list[Message] = []

    def rush() -> None:
        with transaction.atomic():
            arrived.extend(queue(buyer, receipts, priority=8) for buyer in buyers)

    settings.CHANNEL_ADAPTERS = _adapters(rush)

    stats = dispatch_batch(batch_size=4)

    assert (
        [m.message_id for m in outbox]
        == [
            *(m.id for m in broadcast[:2]),
            *(m.id for m in arrived[:4]),  # one lane batch (the batch size)
            *(m.id for m in broadcast[2:]),
        ]
    )
    assert stats.overtaken == 4
    assert Message.objects.filter(status=MessageStatus.QUEUED).count() == 2
