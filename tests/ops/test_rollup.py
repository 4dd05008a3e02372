"""The status rollup behind ``orchestrator_messages_total``: every history row counted once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from orchestrator.core import metrics
from orchestrator.core.models import StatusCount
from orchestrator.core.rollup import rollup_pass
from orchestrator.delivery.models import MessageEvent
from tests.delivery.factories import make_customer, make_template, make_topic, queue


def _event(message, status: str) -> MessageEvent:
    return MessageEvent.objects.create(message=message, status=status, occurred_at=timezone.now())


def _counts() -> dict[tuple[str, str], int]:
    return {(c.channel, c.status): c.count for c in StatusCount.objects.all()}


def _messages():
    template = make_template(topic=make_topic())
    return queue(make_customer(), template), queue(make_customer(), template, channel="sms")


@pytest.mark.django_db
def test_every_history_row_is_counted_once_across_batches_and_repeated_runs():
    email, sms = _messages()  # one "queued" history row each
    for _ in range(4):
        _event(email, "sent")
    _event(sms, "delivered")

    assert metrics.rollup_status_counts(batch=2) == 7
    expected = {
        ("email", "queued"): 1,
        ("email", "sent"): 4,
        ("sms", "queued"): 1,
        ("sms", "delivered"): 1,
    }
    assert _counts() == expected

    assert metrics.rollup_status_counts(batch=2) == 0
    assert _counts() == expected

    _event(sms, "failed")
    _event(email, "sent")
    assert metrics.rollup_status_counts(batch=2) == 2
    assert _counts() == {**expected, ("sms", "failed"): 1, ("email", "sent"): 5}


@pytest.mark.django_db
def test_a_pass_reads_at_most_one_batch_and_the_next_goes_on_from_there():
    email, _sms = _messages()
    for _ in range(5):
        _event(email, "sent")

    reads = [rollup_pass(metrics._STATUS_ROLLUP, batch=3).read for _ in range(4)]

    assert reads == [3, 3, 1, 0]
    assert _counts() == {("email", "queued"): 1, ("email", "sent"): 5, ("sms", "queued"): 1}


@pytest.mark.django_db(transaction=True)
def test_a_row_committed_late_below_the_horizon_is_counted_not_skipped():
    email, _sms = _messages()
    metrics.rollup_status_counts()
    assert _counts() == {("email", "queued"): 1, ("sms", "queued"): 1}

    inserted, release = threading.Event(), threading.Event()
    late: list[MessageEvent] = []
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                late.append(_event(email, "sent"))  # takes its id now, commits later
                inserted.set()
                assert release.wait(10)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert inserted.wait(10)
        early = _event(email, "delivered")  # a higher id, committed at once
        assert early.id > late[0].id

        # A cursor that simply moved past the highest committed id would skip the
        # late row for good once it commits.
        metrics.rollup_status_counts()
        assert ("email", "sent") not in _counts()
    finally:
        release.set()
        writer.join(10)
    assert not errors

    metrics.rollup_status_counts()
    assert _counts() == {
        ("email", "queued"): 1,
        ("email", "sent"): 1,
        ("email", "delivered"): 1,
        ("sms", "queued"): 1,
    }
    metrics.rollup_status_counts()
    assert _counts()[("email", "sent")] == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_scrapes_count_each_row_once():
    email, sms = _messages()
    for _ in range(30):
        _event(email, "sent")
        _event(sms, "sent")
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            start.wait(10)
            for _ in range(5):
                metrics.rollup_status_counts(batch=7)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    metrics.rollup_status_counts()  # whatever the racing scrapes left for later

    assert _counts() == {
        ("email", "queued"): 1,
        ("email", "sent"): 30,
        ("sms", "queued"): 1,
        ("sms", "sent"): 30,
    }
