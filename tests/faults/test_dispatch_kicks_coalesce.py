"""Kicks coalesce: thousands of commits wake the dispatcher without flooding the broker.

Every commit that queues a message wants a ``delivery.dispatch`` kick; a "kick
pending" marker in the Redis/Valkey store lets only the first publish until a worker
starts the task, so the broker holds at most a kick or two whatever the backlog, and
beat's own periodic dispatch never queues behind thousands of stale kicks.
"""

from __future__ import annotations

import time

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import task_revoked
from django.db import transaction

from orchestrator.celery import app
from orchestrator.core import tasking
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.emulator.server import wait_until
from tests.faults.accounting import Accounting, unsettled

pytestmark = pytest.mark.django_db(transaction=True)

COMMITS = 2000


def queued_dispatch_tasks(store: redis.Redis) -> int:
    """Tasks waiting in the ``dispatch`` queue (kombu keeps a list per priority)."""
    return sum(
        store.llen(key)
        for key in store.scan_iter(match="dispatch*")
        if b"\x06" in key or key == b"dispatch"
    )


@pytest.fixture
def store(broker_url):
    # An earlier test may have left the store "unreachable, retry in 5 s" (every kick
    # published meanwhile): each test starts with the store asked again.
    tasking._store._retry_at = 0.0
    app.control.purge()
    tasking.clear_kick_markers()
    client = redis.Redis.from_url(broker_url)
    yield client
    app.control.purge()
    tasking.clear_kick_markers()


def test_two_thousand_commits_leave_at_most_a_couple_of_kicks_and_all_is_sent(store, outbox):
    customers = [make_customer() for _ in range(10)]
    template = make_template(topic=make_topic("receipts", kind="transactional"))
    ids = []
    for n in range(COMMITS):
        with transaction.atomic():
            ids.append(queue(customers[n % 10], template).id)

    waiting_kicks = queued_dispatch_tasks(store)
    # Beat's periodic dispatch, as beat publishes it: behind at most that many kicks.
    app.send_task("delivery.dispatch", expires=4.0)
    expired: list = []

    def on_revoked(request=None, expired_=False, **kwargs):
        if kwargs.get("expired"):
            expired.append(request)

    task_revoked.connect(on_revoked, weak=False)
    started = time.monotonic()
    try:
        # A real worker on what is queued (the celery_worker fixture would purge it first).
        with start_worker(
            app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"
        ):
            done = wait_until(lambda: unsettled(ids) == 0, timeout=30)
    finally:
        task_revoked.disconnect(on_revoked)
    elapsed = time.monotonic() - started

    assert waiting_kicks <= 2, f"{waiting_kicks} dispatch tasks waiting"
    assert done, f"{unsettled(ids)} messages still waiting"
    assert expired == []  # beat's dispatch ran: it did not expire behind stale kicks
    assert Message.objects.filter(id__in=ids, status=MessageStatus.SENT).count() == COMMITS
    sent = [m.message_id for m in outbox]
    kept = Accounting(
        accepted=COMMITS,
        provider_calls=len(sent),
        lost=unsettled(ids),
        duplicated=len(sent) - len(set(sent)),
        notes={"kicks_waiting": waiting_kicks, "seconds_to_send": round(elapsed)},
    )
    kept.assert_kept()


def test_a_kick_is_published_again_once_the_task_started(store, settings):
    tasking.publish_on_commit("delivery.dispatch")
    tasking.publish_on_commit("delivery.dispatch")  # outside a transaction: at once, coalesced
    assert queued_dispatch_tasks(store) == 1

    # A worker takes it: work committed from now on needs a kick of its own.
    from celery.signals import task_prerun

    task_prerun.send(
        sender=app.tasks["delivery.dispatch"], task=app.tasks["delivery.dispatch"], kwargs={}
    )
    tasking.publish_on_commit("delivery.dispatch")

    assert queued_dispatch_tasks(store) == 2


def test_kicks_are_published_when_the_store_is_unreachable(store, settings):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.RATE_LIMIT_URL = f"redis://127.0.0.1:{port}/0"
    try:
        tasking.publish_on_commit("delivery.dispatch")
        tasking.publish_on_commit("delivery.dispatch")
    finally:
        tasking._store._retry_at = 0.0

    assert queued_dispatch_tasks(store) == 2  # no marker to be had: every kick goes out


def test_an_urgent_send_kicks_the_dispatchers_and_the_lane_each_once(store, settings):
    settings.DISPATCH_LANE_PRIORITY = 5
    topic = make_topic("receipts", kind="transactional")
    template = make_template(topic=topic)
    customer = make_customer()
    for _ in range(3):
        with transaction.atomic():
            queue(customer, template, priority=8)
    with transaction.atomic():
        queue(customer, template, priority=1)  # below the lane: the dispatchers' kick only

    lane_kicks = store.llen("lane")
    assert (queued_dispatch_tasks(store), lane_kicks) == (1, 1)
    assert store.exists(tasking.marker_key("delivery.dispatch"))
    assert store.exists(tasking.marker_key("delivery.dispatch_lane"))
