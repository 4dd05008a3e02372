"""A dispatch worker SIGKILLed in the middle of a batch: at most one chunk is left in
doubt, the rest is requeued and sent once, and the doubtful ones are settled without
anyone acting - by Twilio's status report where the request reached it, else after
the bounded wait, as failed with the code ``unknown_outcome``, never resent.

The worker is a real process (``tests.faults.dispatch_worker``) sending through the
Twilio SDK to the emulator, which is slowed a little so the kill lands mid-calls.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from channels.webhooks.processing import process_pending
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message
from tests.emulator import ProviderEmulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.server import wait_until
from tests.faults.accounting import Accounting, duplicated, message_ids_on_the_wire, unsettled
from tests.faults.workers import reaped
from tests.ops.promtext import parse

pytestmark = pytest.mark.django_db(transaction=True)

CHECKOUT = Path(__file__).resolve().parents[2]
MESSAGES = 200
CUSTOMERS = 20
CHUNK = 20
#: Seconds the emulated Twilio takes per request: the batch takes ~2 s at 5 at a time.
LATENCY = 0.05
TWILIO = "/2010-04-01/"


@pytest.fixture
def emulator():
    with ProviderEmulator() as server:
        twilio_emulator.install(server)
        yield server


def _sms_adapter(emulator: ProviderEmulator, callback_url: str) -> dict:
    return {
        "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
        "OPTIONS": {
            "account_sid": twilio_emulator.ACCOUNT_SID,
            "auth_token": twilio_emulator.AUTH_TOKEN,
            "from_number": "+15005550006",
            "base_url": emulator.url,
            "status_callback": callback_url,
            "timeout": 2,
            "concurrency": 5,
        },
    }


def _start_worker(adapters: dict) -> subprocess.Popen:
    config = {
        "database": connection.settings_dict["NAME"],
        "settings": {"CHANNEL_ADAPTERS": adapters, "DISPATCH_SEND_CHUNK_SIZE": CHUNK},
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.dispatch_worker", json.dumps(config)],
        cwd=CHECKOUT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return worker


def _awaiting_reconciliation(client) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200
    exposition = parse(response.content.decode())
    family = exposition["orchestrator_messages_awaiting_reconciliation"]
    return sum(value for _name, _labels, value in family.samples)


def test_a_worker_killed_mid_batch_leaves_one_chunk_in_doubt_and_sends_the_rest_once(
    settings, emulator, live_server, client
):
    settings.TWILIO_AUTH_TOKEN = twilio_emulator.AUTH_TOKEN
    settings.WEBHOOK_BASE_URL = None
    settings.METRICS_TOKEN = ""
    settings.DISPATCH_SEND_CHUNK_SIZE = CHUNK
    adapters = locmem_adapters() | {
        "sms": _sms_adapter(emulator, f"{live_server.url}/webhooks/twilio/status/")
    }
    settings.CHANNEL_ADAPTERS = adapters
    emulator.fail_next(TWILIO, timeout=True, delay=LATENCY, times=MESSAGES * 2)

    template = make_template(topic=make_topic("receipts", kind="transactional"))
    customers = [make_customer() for _ in range(CUSTOMERS)]
    ids = [
        queue_message(customers[i % CUSTOMERS], template, channel="sms").id for i in range(MESSAGES)
    ]

    worker = _start_worker(adapters)
    with reaped(worker):
        # The third chunk's calls are under way: it was handed off, and it cannot finish
        # within the few milliseconds the kill takes to land.
        assert wait_until(lambda: len(emulator.requests_to(TWILIO)) >= 2 * CHUNK + 3, 60), (
            worker.poll(),
            worker.stderr.read() if worker.poll() is not None else "",
        )
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    killed_at = timezone.now()
    # Requests that reached the emulator before the kill are answered all the same.
    assert wait_until(lambda: all(r.status is not None for r in emulator.requests_to(TWILIO)), 10)

    rows = Message.objects.filter(id__in=ids)
    in_doubt = set(
        rows.filter(status="sending", handed_off_at__isnull=False).values_list("id", flat=True)
    )
    never_handed_off = rows.filter(status="sending", handed_off_at__isnull=True).count()
    assert 1 <= len(in_doubt) <= CHUNK
    assert never_handed_off >= MESSAGES - 3 * CHUNK

    # Beat's recovery, with the stall time pinned to now: the never handed off ones go
    # back to the queue and are sent once; the ones in doubt are not touched.
    recovered = dispatcher.recover_stalled(stalled_after=dt.timedelta(0))
    assert recovered.requeued == never_handed_off
    dispatcher.dispatch_due()
    assert set(rows.filter(status="sending").values_list("id", flat=True)) == in_doubt

    # Twilio's status reports (posted to the running server as they come) are processed.
    twilio_emulator.wait_idle(emulator, timeout=30)
    with time_machine.travel(killed_at + dt.timedelta(minutes=6), tick=False):
        assert _awaiting_reconciliation(client) == len(in_doubt)
        for _ in range(4):  # 500 reports a run; two per message (sent, delivered)
            process_pending()
    reported = in_doubt - set(rows.filter(status="sending").values_list("id", flat=True))
    with time_machine.travel(killed_at + dt.timedelta(minutes=16), tick=False):
        settled = dispatcher.recover_stalled()
        dispatcher.dispatch_due()
        assert _awaiting_reconciliation(client) == 0

    calls = message_ids_on_the_wire(emulator.requests_to(TWILIO))
    # What reached Twilio was settled by its report; what never did, after the wait.
    assert {mid for mid in in_doubt if calls[mid]} == reported
    assert settled.settled_unknown == len(in_doubt) - len(reported)
    unknown = set(
        MessageEvent.objects.filter(message_id__in=ids, code="unknown_outcome").values_list(
            "message_id", flat=True
        )
    )
    assert unknown == in_doubt - reported
    assert set(rows.filter(status=MessageStatus.FAILED).values_list("id", flat=True)) == unknown
    for message in rows.filter(id__in=unknown):
        assert "no provider report came" in message.explanation[-1]["reason"]
    # Everything else went out exactly once.
    assert {mid for mid in ids if calls[mid] == 1} == set(ids) - unknown
    Accounting(
        accepted=MESSAGES,
        provider_calls=sum(calls.values()),
        lost=unsettled(ids),
        duplicated=duplicated(calls),
        notes={
            "in_doubt": len(in_doubt),
            "settled_by_report": len(reported),
            "settled_unknown": len(unknown),
            "requeued": recovered.requeued,
        },
    ).assert_kept()
