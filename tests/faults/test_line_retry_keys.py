"""LINE retry keys: random per attempt, so two installations on one channel never
collide, and the same stored key reconciles a push a killed worker left in doubt.

LINE executes a retry key once (the emulator does too: a repeat is a 409 naming the
accepted request). Keys derived from our message ids made a staging copy's messages
and production's repeats of each other, dropped by LINE while we recorded them sent.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from channels.adapters import SendResult
from channels.adapters.locmem import LocmemAdapter
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message
from tests.emulator import ProviderEmulator
from tests.emulator import line as line_emulator
from tests.emulator.server import wait_until
from tests.faults.accounting import Accounting, duplicated, unsettled

pytestmark = pytest.mark.django_db(transaction=True)

CHECKOUT = Path(__file__).resolve().parents[2]
PUSH = line_emulator.PUSH_PATH


@pytest.fixture
def emulator():
    with ProviderEmulator() as server:
        line_emulator.install(server)
        yield server


def _adapters(emulator: ProviderEmulator, **options) -> dict:
    return locmem_adapters() | {
        "line": {
            "BACKEND": "channels.adapters.line.LineAdapter",
            "OPTIONS": {
                "channel_access_token": line_emulator.CHANNEL_ACCESS_TOKEN,
                "base_url": emulator.url,
                "timeout": 2,
                **options,
            },
        }
    }


@pytest.fixture
def template():
    return make_template(
        topic=make_topic("receipts", kind="transactional"),
        variants={("line", "en"): {"body": "{{ data.item }} for {{ customer.first_name }}"}},
    )


def _user(installation: str, n: int) -> str:
    return "U" + f"{installation}{n:031x}"


def _queue(installation: str, template, count: int) -> dict[int, tuple[str, str]]:
    """Queue one push per user of the installation; id -> (user, body's item)."""
    out = {}
    for n in range(count):
        user = _user(installation, n)
        customer = make_customer(f"{installation}-{n}", line_user_id=user)
        item = f"{installation}-order-{n}"
        out[queue_message(customer, template, channel="line", data={"item": item}).id] = (
            user,
            item,
        )
    return out


def _delivered(emulator: ProviderEmulator) -> Counter[tuple[str, str]]:
    """(user, text) of every push LINE accepted (a 409 repeat is not a push)."""
    return Counter(
        (push.to, push.messages[0]["text"]) for push in line_emulator.state(emulator).pushes
    )


def test_two_installations_on_one_line_channel_never_drop_each_others_messages(
    settings, emulator, template
):
    settings.CHANNEL_ADAPTERS = _adapters(emulator)
    production = _queue("a", template, 20)
    dispatcher.dispatch_due()
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}

    # The staging copy: its own database, whose message ids are production's again.
    Message.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('delivery_message', 'id'), %s, false)",
            [min(production)],
        )
    staging = _queue("b", template, 20)
    assert set(staging) == set(production)
    dispatcher.dispatch_due()

    # Every user of both installations got their own message, once.
    delivered = _delivered(emulator)
    texts = {user: text for user, text in delivered}
    assert len(texts) == sum(delivered.values()) == len(production) + len(staging)
    for user, item in [*production.values(), *staging.values()]:
        assert item in texts[user]
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    requests = emulator.requests_to(PUSH)
    keys = Counter(r.header("x-line-retry-key") for r in requests)
    Accounting(
        accepted=len(production) + len(staging),
        provider_calls=len(requests),
        lost=unsettled(staging),
        duplicated=duplicated(Counter(u for u, _t in delivered)),
        notes={
            "delivered": sum(delivered.values()),
            "dropped_as_repeats": sum(1 for r in requests if r.status == 409),
            "keys_reused": duplicated(keys),
        },
    ).assert_kept()


class ForeignRepeatAdapter(LocmemAdapter):
    """Answers as LINE does for a retry key another request already used."""

    def send(self, batch):
        return [
            SendResult(
                message_id=m.message_id,
                accepted=True,
                provider_message_id="accepted-elsewhere",
                detail={"duplicate": True, "retry_key": "0" * 8 + "-0000-4000-8000-" + "0" * 12},
            )
            for m in batch
        ]


def test_a_repeat_answer_for_a_key_not_this_attempts_is_not_a_delivery(settings, template):
    settings.CHANNEL_ADAPTERS = locmem_adapters() | {
        "line": {"BACKEND": f"{__name__}.ForeignRepeatAdapter"}
    }
    [message_id] = _queue("c", template, 1)

    dispatcher.dispatch_due()

    message = Message.objects.get(id=message_id)
    assert message.status == MessageStatus.QUEUED  # tried again later, under a new key
    assert "retry key" in message.last_error
    assert message.history.last().status == MessageStatus.QUEUED


def test_a_push_left_in_doubt_by_a_killed_worker_is_resent_with_its_key_and_lands_once(
    settings, emulator, template
):
    chunk, count = 10, 60
    adapters = _adapters(emulator, concurrency=3)
    settings.CHANNEL_ADAPTERS = adapters
    settings.DISPATCH_SEND_CHUNK_SIZE = chunk
    emulator.fail_next(PUSH, timeout=True, delay=0.05, times=count * 2)
    queued = _queue("d", template, count)
    config = {
        "database": connection.settings_dict["NAME"],
        "settings": {"CHANNEL_ADAPTERS": adapters, "DISPATCH_SEND_CHUNK_SIZE": chunk},
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.dispatch_worker", json.dumps(config)],
        cwd=CHECKOUT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: len(emulator.requests_to(PUSH)) >= 2 * chunk + 2, 60)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    assert wait_until(lambda: all(r.status is not None for r in emulator.requests_to(PUSH)), 10)
    rows = Message.objects.filter(id__in=list(queued))
    in_doubt = set(
        rows.filter(status="sending", handed_off_at__isnull=False).values_list("id", flat=True)
    )
    keys = dict(rows.filter(id__in=in_doubt).values_list("id", "retry_key"))
    assert 1 <= len(in_doubt) <= chunk

    # Beat's recovery with the stall time pinned to now: no one acts, nothing waits 15 min.
    recovered = dispatcher.recover_stalled(stalled_after=dt.timedelta(0))
    dispatcher.dispatch_due()

    assert recovered.reconciled == len(in_doubt)
    assert set(rows.values_list("status", flat=True)) == {MessageStatus.SENT}
    for message in rows.filter(id__in=in_doubt):
        assert message.retry_key == keys[message.id]  # the same request, not a new one
        assert message.explanation[-1]["step"] == "reconcile"
    delivered = _delivered(emulator)
    assert sorted(u for u, _t in delivered) == sorted(u for u, _i in queued.values())
    Accounting(
        accepted=count,
        provider_calls=len(emulator.requests_to(PUSH)),
        lost=unsettled(queued),
        duplicated=duplicated(Counter(u for u, _t in delivered)),
        notes={
            "in_doubt": len(in_doubt),
            "confirmed_by_409": sum(1 for r in emulator.requests_to(PUSH) if r.status == 409),
            "requeued": recovered.requeued,
        },
    ).assert_kept()
