"""A preferences update SIGKILLed while it releases held messages ("as it happens"):
the update it was in never commits, so that customer's choice, ledger and held messages
stay as they were; the updates before it stand. Switched again, every held message
reaches the customer exactly once: in one last digest, or on its own when it was the
only one.

The update runs in a real process (``tests.digests.release_worker``), stalled inside the
fourth customer's transaction after the release, then killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from channels.adapters import locmem
from orchestrator.consent.models import ConsentRecord, DigestPreference
from orchestrator.consent.preferences import preferences_changes_from_document, preferences_update
from orchestrator.delivery import dispatcher
from orchestrator.delivery.digests import digests_build_due
from orchestrator.delivery.models import Digest, Message, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message
from tests.faults.accounting import Accounting, unsettled
from tests.faults.workers import reaped

pytestmark = pytest.mark.django_db(transaction=True)

CHECKOUT = Path(__file__).resolve().parents[2]
#: Messages held per customer: one alone goes on its own, several as one digest.
HELD = [3, 1, 3, 3, 1, 3]
STALL_AT = 3


def _worker(customers: list[int], topic: str) -> subprocess.Popen:
    config = {
        "database": connection.settings_dict["NAME"],
        "customers": customers,
        "topic": topic,
        "stall_at": STALL_AT,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.digests.release_worker", json.dumps(config)],
        cwd=CHECKOUT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _switch(customer, topic, cadence):
    return preferences_update(
        customer=customer,
        changes=preferences_changes_from_document(
            {"digests": {topic.key: {"cadence": cadence, "time": "20:00", "weekday": None}}}
        ),
        source="preference_center",
    )


def test_an_update_killed_mid_release_loses_and_doubles_nothing(settings):
    settings.CHANNEL_ADAPTERS = locmem_adapters()
    locmem.clear()
    topic = make_topic("order-updates", digestible=True, channels=["email"])
    template = make_template(topic=topic)
    customers, held = [], {}
    for n in HELD:
        customer = make_customer(timezone="Asia/Tokyo")
        _switch(customer, topic, "daily")
        customers.append(customer)
        held[customer.pk] = [
            queue_message(customer, template, data={"item": f"parcel {i}"}).id for i in range(n)
        ]
    every_held = [i for ids in held.values() for i in ids]
    assert Message.objects.filter(id__in=every_held, status=MessageStatus.HELD).count() == sum(HELD)

    worker = _worker([c.pk for c in customers], topic.key)
    with reaped(worker):
        line = worker.stdout.readline()
        assert line.strip() == "releasing", worker.stderr.read()
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

    # The first three switches stand; the fourth rolled back whole; the rest never ran.
    for index, customer in enumerate(customers):
        choice = DigestPreference.objects.filter(customer=customer, topic=topic).first()
        switched = ConsentRecord.objects.filter(
            customer=customer, evidence__changed__digest__to__cadence="immediate"
        ).exists()
        ids = held[customer.pk]
        if index < STALL_AT:
            assert choice is None and switched
            if len(ids) == 1:
                assert Message.objects.get(id=ids[0]).status == MessageStatus.QUEUED
            else:
                assert Digest.objects.get(customer=customer).cadence == "immediate"
        else:
            assert choice.cadence == "daily" and not switched
            assert Digest.objects.get(customer=customer).cadence == "daily"
            assert Message.objects.filter(id__in=ids, status=MessageStatus.HELD).count() == len(ids)

    # The customers whose switch was lost switch again (the page says it was not saved).
    for customer in customers[STALL_AT:]:
        assert len(_switch(customer, topic, "immediate")) == 1
    assert digests_build_due().digests == sum(1 for n in HELD if n > 1)
    assert digests_build_due().digests == 0
    dispatcher.dispatch_due()

    # Every held message reached its customer once: in a digest, or on its own.
    digest_messages = list(Message.objects.filter(idempotency_key__startswith="digest:"))
    folded = Counter(mid for m in digest_messages for mid in m.data["digest"]["folded"])
    alone = [ids[0] for ids in held.values() if len(ids) == 1]
    assert set(folded) | set(alone) == set(every_held)
    assert not set(folded) & set(alone)
    calls = Counter(m.message_id for m in locmem.outbox)
    assert set(calls) == {m.id for m in digest_messages} | set(alone)
    Accounting(
        accepted=len(every_held),
        provider_calls=sum(calls.values()),
        lost=unsettled(every_held) + unsettled(m.id for m in digest_messages),
        duplicated=sum(1 for n in calls.values() if n > 1)
        + sum(1 for n in folded.values() if n > 1),
        notes={"digests": len(digest_messages), "alone": len(alone), "killed_updates": 1},
    ).assert_kept()
