"""The Celery task end to end: a real worker on the real (embedded Valkey) broker."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from orchestrator.celery import app
from orchestrator.core import tasking
from orchestrator.delivery.models import Message, MessageStatus
from orchestrator.delivery.tasks import dispatch
from tests.delivery.factories import make_customer, make_template, make_topic, queue


def _wait_for(predicate, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def test_task_is_registered_under_the_names_beat_and_the_kick_use():
    assert dispatch.name == "delivery.dispatch"
    assert "sweeps.recover_stalled" in app.tasks
    assert app.amqp.router.route({}, "delivery.dispatch")["queue"].name == "dispatch"


@pytest.mark.django_db(transaction=True)
def test_message_queued_in_a_transaction_is_sent_by_a_worker_via_the_commit_kick(
    outbox, celery_worker
):
    template = make_template(topic=make_topic())
    customer = make_customer()
    with transaction.atomic():
        message = queue(customer, template)
        # Nothing is published before the commit: a worker must not see an uncommitted row.
        assert Message.objects.filter(pk=message.pk, status=MessageStatus.QUEUED).exists()

    elapsed = _wait_for(
        lambda: Message.objects.filter(pk=message.pk, status=MessageStatus.SENT).exists(),
        timeout=5.0,
    )

    assert elapsed is not None, "not sent within 5 s of the commit"
    assert [m.message_id for m in outbox] == [message.id]


def test_the_lane_task_has_a_queue_of_its_own():
    assert app.amqp.router.route({}, "delivery.dispatch_lane")["queue"].name == "lane"


@pytest.mark.django_db(transaction=True)
def test_a_worker_on_the_lane_alone_sends_the_urgent_message_and_leaves_the_backlog(
    outbox, broker_url, settings
):
    """With no dispatch worker running at all (as if all were deep in a broadcast), a
    transactional send still goes out through the lane; the broadcast's copies wait."""
    from celery.contrib.testing.worker import start_worker

    settings.DISPATCH_LANE_PRIORITY = 5
    topic = make_topic()
    backlog_template = make_template(topic=topic)
    backlog = [queue(make_customer(f"b{i}"), backlog_template, priority=1) for i in range(20)]
    app.conf.broker_url = broker_url
    app.control.purge()
    try:
        with start_worker(
            app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING",
            queues=["lane"],
        ):  # fmt: skip
            with transaction.atomic():
                urgent = queue(make_customer("u"), make_template(topic=topic), priority=5)
            elapsed = _wait_for(
                lambda: Message.objects.filter(pk=urgent.pk, status=MessageStatus.SENT).exists(),
                timeout=5.0,
            )
    finally:
        # The worker narrowed the app's queue selection to "lane", and purge() empties
        # only the selected queues: select them all again, then drop the unserved kicks.
        app.amqp.queues.select([q.name for q in app.conf.task_queues])
        app.control.purge()
        tasking.clear_kick_markers()

    assert elapsed is not None, "the lane did not send the urgent message within 5 s"
    assert [m.message_id for m in outbox] == [urgent.id]
    waiting = Message.objects.filter(pk__in=[m.pk for m in backlog], status=MessageStatus.QUEUED)
    assert waiting.count() == len(backlog)
