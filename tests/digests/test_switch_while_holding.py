"""A customer switches a topic to "as it happens" at the very moment one of its messages
is being held: the switch waits for the hold (the digest it locked), then releases that
message with the others. Neither waits on the other in a circle: the preferences update
locks the customer without blocking the new message's foreign key check."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction

from orchestrator.consent.preferences import preferences_changes_from_document, preferences_update
from orchestrator.delivery import holds
from orchestrator.delivery.models import Digest, Message, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message

pytestmark = pytest.mark.django_db(transaction=True)


def _switch(customer, topic, cadence):
    return preferences_update(
        customer=customer,
        changes=preferences_changes_from_document(
            {"digests": {topic.key: {"cadence": cadence, "time": "20:00", "weekday": None}}}
        ),
        source="preference_center",
    )


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row) and row[0] == "Lock"


def _until(predicate, what: str, seconds: float = 30.0) -> None:
    # Polls with short sleeps: a timed wait never times out under libfaketime.
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting: {what}")


def test_a_switch_during_a_hold_waits_for_it_and_releases_that_message_too(monkeypatch):
    topic = make_topic("order-updates", digestible=True, channels=["email"])
    template = make_template(topic=topic)
    customer = make_customer(timezone="Asia/Tokyo")
    _switch(customer, topic, "daily")
    earlier = [queue_message(customer, template, data={"item": f"parcel {i}"}).id for i in (1, 2)]

    held_locked = threading.Event()
    go_on = threading.Event()
    switch_pid: list[int] = []
    outcome: dict[str, object] = {}
    real_hold = holds.messages_hold

    def pausing_hold(messages, **kwargs):
        digests = real_hold(messages, **kwargs)  # the choice and the digest are locked now
        held_locked.set()
        _until(go_on.is_set, "the switch to start")
        return digests

    def hold() -> None:
        try:
            with transaction.atomic():
                outcome["late"] = queue_message(customer, template, data={"item": "parcel 3"}).id
        except Exception as exc:  # reported by the assertions below
            outcome["hold_error"] = exc
        finally:
            connections.close_all()

    def switch() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                switch_pid.append(cursor.fetchone()[0])
            outcome["rows"] = _switch(customer, topic, "immediate")
        except Exception as exc:
            outcome["switch_error"] = exc
        finally:
            connections.close_all()

    monkeypatch.setattr(holds, "messages_hold", pausing_hold)
    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    _until(held_locked.is_set, "the hold to lock the digest")
    switcher = threading.Thread(target=switch, daemon=True)
    switcher.start()
    # The switch has the customer row and now waits for the choice the hold locked.
    _until(lambda: bool(switch_pid) and _waiting_on_a_lock(switch_pid[0]), "the switch to wait")
    go_on.set()  # the hold inserts its message (a foreign key check on the customer)
    _until(
        lambda: not holder.is_alive() and not switcher.is_alive(),
        "the hold and the switch to finish (they waited on each other)",
        seconds=60,
    )
    assert "hold_error" not in outcome and "switch_error" not in outcome, outcome

    # The message held in the middle of the switch went out with the others, now.
    digest = Digest.objects.get()
    assert digest.cadence == "immediate"
    released = Message.objects.filter(id__in=[*earlier, outcome["late"]])
    assert {m.status for m in released} == {MessageStatus.HELD}
    assert all(m.explanation[-1]["details"].get("released") for m in released)
