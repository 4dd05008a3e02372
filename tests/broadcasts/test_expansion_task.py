"""The expansion end to end on a real Celery worker and broker: scheduling kicks the
sweep, which freezes the audience and writes one slice; the expansion task kicks itself
again while due recipients remain, and the dispatcher's kicks send every copy."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import time_machine

from orchestrator.broadcasts import materialise as mat
from orchestrator.broadcasts.models import Recipient
from orchestrator.broadcasts.services import broadcast_save, broadcast_schedule
from orchestrator.consent.channel_consent import topic_subscription_set
from orchestrator.delivery.models import Message
from tests.delivery.factories import make_customer, make_template, make_topic

pytestmark = pytest.mark.django_db(transaction=True)

NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)
AUDIENCE = 10


def _wait_for(predicate, timeout: float) -> bool:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_scheduling_now_expands_slice_after_slice_and_sends_everyone(
    outbox, celery_worker, monkeypatch
):
    monkeypatch.setattr(mat, "SLICE", 3)
    with time_machine.travel(NOW, tick=True):
        topic = make_topic("newsletter", default_opt_in=False)
        template = make_template("weekly", topic=topic)
        for i in range(AUDIENCE):
            customer = make_customer(f"k{i}")
            topic_subscription_set(
                customer_id=customer.id, topic_id=topic.id, channel="email", subscribed=True,
                source="admin", evidence={},
            )  # fmt: skip
        broadcast, _ = broadcast_save(
            key="now",
            fields={"name": "Now", "template": template, "topic": topic, "channel": "email",
                    "data": {"item": "news"}},
        )  # fmt: skip
        broadcast_schedule(broadcast=broadcast)  # kicks the sweep on commit

        sent = _wait_for(lambda: len(outbox) == AUDIENCE, timeout=60)
    copies = Message.objects.filter(broadcast_id=broadcast.id)
    assert sent, f"{len(outbox)} sent; {copies.count()} in the outbox"
    assert sorted(m.message_id for m in outbox) == sorted(copies.values_list("id", flat=True))
    assert not Recipient.objects.filter(broadcast_id=broadcast.id).exists()
