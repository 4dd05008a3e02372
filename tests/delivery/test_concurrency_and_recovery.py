"""Racing dispatchers and killed workers: at most one provider call per message, none lost.

These use committed transactions and real separate connections (threads) or
processes (fork), as in production.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import threading
import time
import traceback

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.utils import timezone

from channels.devinbox.models import InboxMessage
from orchestrator.delivery import dispatcher
from orchestrator.delivery.dispatcher import claim
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_dispatchers_racing_never_send_a_message_twice(outbox):
    template = make_template(topic=make_topic())
    customers = [make_customer() for _ in range(30)]
    with transaction.atomic():
        ids = [
            queue(customers[i % 30], template, channel="sms" if i % 2 else "email").id
            for i in range(300)
        ]
    start = threading.Barrier(2)
    claimed_by: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            start.wait()
            total = 0
            while True:
                stats = dispatcher.dispatch_batch(batch_size=20)
                total += stats.claimed
                if stats.claimed == 0:
                    break
            claimed_by[name] = total
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    counts = collections.Counter(m.message_id for m in outbox)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}
    assert claimed_by["a"] > 0 and claimed_by["b"] > 0
    assert claimed_by["a"] + claimed_by["b"] == 300
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}


def _in_child(body, *, timeout: float = 60.0) -> int:
    """Run ``body`` in a forked process with its own connection; return its exit status.

    A child that neither finishes nor dies within ``timeout`` is killed and the test
    fails, rather than the whole run hanging on it. A child's exception is printed.
    The child opens its own connection: sharing the parent's socket would interleave
    both sides' queries in one session.
    """
    connections.close_all()  # the child must not share the parent's socket
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        # The child can still see a connection the parent opened (in another context of
        # the parent's thread): set it aside unclosed, since closing it would end the
        # parent's session on the socket they share, and keep it referenced until exit.
        inherited = []
        for wrapper in connections.all(initialized_only=True):
            inherited.append(wrapper.connection)
            wrapper.connection = None
        try:
            body()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child did not finish within {timeout:.0f} s")
        time.sleep(0.01)


def test_worker_killed_before_the_hand_off_leaves_the_message_waiting_and_it_is_sent_once(
    outbox,
):
    message = queue(make_customer(), make_template(topic=make_topic()))

    def claim_then_die():
        with transaction.atomic(), connection.cursor() as cursor:
            claimed, _expired = claim.lock_due(cursor, limit=10, now=timezone.now())
            assert [m.id for m in claimed] == [message.id]
            os._exit(137)  # killed between the claim and the hand-off

    assert _in_child(claim_then_die) == 137
    message.refresh_from_db()
    # The claim was a row lock in a transaction the server rolled back: nothing to recover.
    assert (message.status, message.handed_off_at) == (MessageStatus.QUEUED, None)
    assert dispatcher.recover_stalled().requeued == 0

    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert message.attempts == 1
    assert [m.message_id for m in outbox] == [message.id]
    assert [e["step"] for e in message.explanation] == ["created", "policy", "send"]


def test_worker_killed_after_the_provider_accepted_is_reconciled_not_resent(settings, outbox):
    message = queue(make_customer(), make_template(topic=make_topic()), channel="sms")
    settings.CHANNEL_ADAPTERS = {
        "sms": {"BACKEND": "tests.delivery.adapters.DieAfterAcceptAdapter", "OPTIONS": {}}
    }

    assert _in_child(dispatcher.dispatch_due) == 137
    assert InboxMessage.objects.filter(message_ref=str(message.id)).count() == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING
    assert message.handed_off_at is not None
    assert message.rendered["body"]

    settings.CHANNEL_ADAPTERS = {"sms": {"BACKEND": "channels.adapters.locmem.LocmemAdapter"}}
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=10), tick=False):
        first = dispatcher.recover_stalled()
        second = dispatcher.recover_stalled()
        dispatcher.dispatch_due()

    assert (first.requeued, first.awaiting_status) == (0, 1)
    assert (second.requeued, second.awaiting_status) == (0, 0)
    assert outbox == []
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING
    reconcile = [e for e in message.explanation if e["step"] == "reconcile"]
    assert len(reconcile) == 1
    assert "awaiting provider status" in reconcile[0]["reason"]


@pytest.mark.django_db(transaction=True)
def test_messages_a_stuck_worker_holds_are_skipped_not_sent_twice(outbox):
    message = queue(make_customer(), make_template(topic=make_topic()))
    locked = threading.Event()
    release = threading.Event()

    def stuck_worker():
        with transaction.atomic(), connection.cursor() as cursor:
            claim.lock_due(cursor, limit=10, now=timezone.now())
            locked.set()
            release.wait(10)
            transaction.set_rollback(True)  # it never gets to the hand-off
        connection.close()

    worker = threading.Thread(target=stuck_worker)
    worker.start()
    assert locked.wait(10)
    stats, _more = dispatcher.dispatch_due()
    assert stats.claimed == 0  # skipped, not waited for and not taken
    release.set()
    worker.join()

    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert [m.message_id for m in outbox] == [message.id]
