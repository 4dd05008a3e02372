"""A large audience frozen by two connections at once: the same recipients as one
statement, each customer once, a re-run adding nothing, and each expanded into one
message with its first history row; a rate-limited broadcast still numbered over its
whole audience."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from orchestrator.broadcasts import materialise as mat
from orchestrator.broadcasts.models import Recipient
from orchestrator.broadcasts.services import broadcast_save, broadcast_schedule, broadcasts_sweep
from orchestrator.consent.channel_consent import topic_subscription_set
from orchestrator.delivery.models import Message, MessageEvent
from tests.delivery.factories import make_customer, make_template, make_topic

# The ranges are written by other connections, which must see committed customers.
pytestmark = pytest.mark.django_db(transaction=True)

NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def audience():
    topic = make_topic("newsletter", default_opt_in=False)
    template = make_template("weekly", topic=topic)
    customers = [
        make_customer(f"p{i}", timezone=("Asia/Tokyo" if i % 2 else "America/New_York"))
        for i in range(12)
    ]
    for c in customers[:10]:
        topic_subscription_set(
            customer_id=c.id, topic_id=topic.id, channel="email", subscribed=True,
            source="admin", evidence={"test": True},
        )  # fmt: skip
    return topic, template, customers


def _broadcast(topic, template, key, **fields):
    broadcast, _ = broadcast_save(
        key=key, fields={"name": key, "template": template, "topic": topic, **fields}
    )
    return broadcast


def _frozen(broadcast_id):
    return sorted(
        Recipient.objects.filter(broadcast_id=broadcast_id).values_list(
            "customer_id", "send_at", "template_id", "variant"
        )
    )


def _rows(broadcast_id):
    return sorted(
        (m.customer_id, m.channel, m.to_address, m.status, m.send_after, m.priority,
         m.explanation[0]["reason"].replace("'parallel'", "'one'"))
        for m in Message.objects.filter(broadcast_id=broadcast_id)
    )  # fmt: skip


@time_machine.travel(NOW, tick=False)
def test_two_connections_write_what_one_statement_writes(audience, monkeypatch):
    topic, template, customers = audience
    local = {"schedule": "local_time", "local_date": dt.date(2026, 12, 10),
             "local_time": dt.time(9, 0)}  # fmt: skip
    one = _broadcast(topic, template, "one", **local)
    assert mat._id_ranges() == []  # a dozen customers: one statement
    assert mat.freeze(one) == 10

    monkeypatch.setattr(mat, "PARALLEL_FROM", 1)
    ranges = mat._id_ranges()
    assert len(ranges) == 2
    assert ranges[0][0] == customers[0].id and ranges[-1][1] == customers[-1].id
    assert ranges[0][1] + 1 == ranges[1][0]
    parallel = _broadcast(topic, template, "parallel", **local)
    broadcast_schedule(broadcast=parallel)
    with time_machine.travel(parallel.due_at, tick=False):
        assert broadcasts_sweep()["recipients"] == 10
        assert mat.freeze(parallel) == 0  # a re-run: nothing twice
    assert _frozen(parallel.id) == _frozen(one.id)
    # Both due by 09:00 in New York: every copy expanded.
    with time_machine.travel(dt.datetime(2026, 12, 10, 14, 0, tzinfo=dt.UTC), tick=False):
        one.status = "sending"
        one.save()
        while mat.expand(one).more or mat.expand(parallel).more:
            pass
        assert mat.freeze(parallel) == 0  # a re-run after the expansion: nothing again
    assert not Recipient.objects.exists()
    assert _rows(parallel.id) == _rows(one.id)
    # Both ranges wrote: customers on each side of the split got their copy.
    got = set(
        Message.objects.filter(broadcast_id=parallel.id).values_list("customer_id", flat=True)
    )
    assert any(c <= ranges[0][1] for c in got) and any(c >= ranges[1][0] for c in got)
    history = MessageEvent.objects.filter(message__broadcast_id=parallel.id)
    assert sorted(history.values_list("message__customer_id", flat=True)) == sorted(got)
    parallel.refresh_from_db()
    assert parallel.status == "sending"


@time_machine.travel(NOW, tick=False)
def test_a_rate_limit_still_numbers_the_whole_audience(audience, monkeypatch):
    topic, template, _customers = audience
    monkeypatch.setattr(mat, "PARALLEL_FROM", 1)
    broadcast = _broadcast(topic, template, "paced", rate_per_minute=4)
    assert mat.freeze(broadcast) == 10
    times = sorted(Recipient.objects.values_list("send_at", flat=True))
    assert times == [NOW + dt.timedelta(minutes=i // 4) for i in range(10)]
