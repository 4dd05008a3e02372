"""Chunked hand-off: one chunk's record rides in the next chunk's hand-off transaction.

What is written must not depend on how a batch was cut into chunks, and a customer
in two consecutive chunks must not keep an erasure waiting (see ``test_priority_lane``
for what may overtake a batch between its chunks).
"""

from __future__ import annotations

import pytest
from django.db import connection

from orchestrator.delivery.dispatcher import dispatch_batch
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message

pytestmark = pytest.mark.django_db


def _history_after_dispatch(settings, chunk_size: int, tag: str) -> list[tuple]:
    """Queue the same 9 messages (one refused for good, one refused for now), dispatch
    them in one batch with ``chunk_size``, and return what was written for each."""
    settings.DISPATCH_SEND_CHUNK_SIZE = chunk_size
    settings.CHANNEL_ADAPTERS = locmem_adapters(
        sms={"fail": {"+14155559001": "permanent", "+14155559002": "transient"}}
    )
    template = make_template(topic=make_topic(f"receipts-{tag}", kind="transactional"))
    ids = []
    for n in range(9):
        customer = make_customer(f"{tag}-{n}", phone=f"+1415555900{n}")
        ids.append(queue_message(customer, template, channel="sms").id)
    stats = dispatch_batch(batch_size=20)
    assert stats.claimed == 9
    rows = []
    for index, message_id in enumerate(ids):
        message = Message.objects.get(id=message_id)
        history = list(
            MessageEvent.objects.filter(message_id=message_id)
            .order_by("id")
            .values_list("status", "code")
        )
        steps = [(e["step"], e["decision"]) for e in message.explanation]
        rows.append((index, message.status, message.attempts, history, steps))
    return rows


def test_history_is_the_same_whatever_the_chunk_size(settings, outbox):
    one_by_one = _history_after_dispatch(settings, 1, "a")
    by_four = _history_after_dispatch(settings, 4, "b")
    all_at_once = _history_after_dispatch(settings, 50, "c")

    assert one_by_one == by_four == all_at_once
    statuses = [status for _i, status, *_rest in one_by_one]
    assert statuses.count(MessageStatus.SENT) == 7
    assert statuses[1] == MessageStatus.FAILED  # refused for good
    assert statuses[2] == MessageStatus.QUEUED  # retried later


def test_consecutive_chunks_of_one_customer_release_the_send_lock_between_them(settings, outbox):
    """A session takes a lock it holds again without queuing: were the next chunk of the
    same customer locked before this one let go, an erasure waiting for that customer
    would wait until the whole batch was sent."""
    settings.DISPATCH_SEND_CHUNK_SIZE = 2
    settings.CHANNEL_ADAPTERS = locmem_adapters()
    template = make_template(topic=make_topic("receipts", kind="transactional"))
    customer = make_customer("same")
    for _ in range(6):
        queue_message(customer, template)
    held: list[int] = []
    original = connection.cursor

    def counting_cursor(*args, **kwargs):
        # How many send locks the session holds each time it takes new ones.
        cursor = original(*args, **kwargs)
        execute = cursor.execute

        def tracked(sql, params=None):
            if "pg_advisory_lock_shared" in sql or "pg_try_advisory_lock_shared" in sql:
                with original() as probe:
                    probe.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND pid = pg_backend_pid() AND mode = 'ShareLock'"
                    )
                    held.append(probe.fetchone()[0])
            return execute(sql, params)

        cursor.execute = tracked
        return cursor

    connection.cursor = counting_cursor
    try:
        stats = dispatch_batch(batch_size=10)
    finally:
        del connection.cursor
    assert stats.sent == 6
    assert held == [0, 0, 0]  # each chunk's lock taken with none held
