"""Erasure while that person's messages are being dispatched: once the erase request
answers, no provider call for them follows, ever; it never answers 5xx; and their
addresses stay suppressed for a customer created again with them, on every channel.

Two dispatchers (threads with their own connections, as two workers) send the
person's 400+ messages through the real SDKs to a slowed emulator (SMS and LINE),
Twilio's status reports are processed as they come, and the erasure goes through the
real API endpoint on the running server meanwhile.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from django.db import OperationalError, connection

from channels.adapters import locmem
from channels.webhooks.models import WebhookEvent
from channels.webhooks.processing import process_pending
from orchestrator.audience.models import Customer
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message
from tests.emulator import ProviderEmulator
from tests.emulator import line as line_emulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.server import wait_until
from tests.faults.accounting import Accounting, duplicated, message_ids_on_the_wire, unsettled

pytestmark = pytest.mark.django_db(transaction=True)

TWILIO = "/2010-04-01/"
LINE = line_emulator.PUSH_PATH
#: Per channel: 420 messages for the one person.
PER_CHANNEL = 210
LATENCY = 0.15
EMAIL = "erin@example.com"
PHONE = "+14155550177"
LINE_USER = "U" + "e1" * 16


@pytest.fixture
def emulator():
    with ProviderEmulator() as server:
        twilio_emulator.install(server)
        line_emulator.install(server)
        yield server


def _adapters(emulator: ProviderEmulator, callback_url: str) -> dict:
    return locmem_adapters() | {
        "sms": {
            "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
            "OPTIONS": {
                "account_sid": twilio_emulator.ACCOUNT_SID,
                "auth_token": twilio_emulator.AUTH_TOKEN,
                "from_number": "+15005550006",
                "base_url": emulator.url,
                "status_callback": callback_url,
                "timeout": 5,
                "concurrency": 8,
            },
        },
        "line": {
            "BACKEND": "channels.adapters.line.LineAdapter",
            "OPTIONS": {
                "channel_access_token": line_emulator.CHANNEL_ACCESS_TOKEN,
                "base_url": emulator.url,
                "timeout": 5,
                "concurrency": 8,
            },
        },
    }


class _Loop(threading.Thread):
    """Runs ``step`` over and over on its own connection until stopped.

    ``retried``: errors after which the next run starts over, as beat's next run of a
    task does after a failed one (a deadlock between status reports locking their
    messages and a dispatcher or the erasure locking them in another order).
    """

    def __init__(self, step, *, retried: tuple[type[BaseException], ...] = ()) -> None:
        super().__init__(daemon=True)
        self.step = step
        self.retried = retried
        self.stop = False
        self.errors: list[BaseException] = []
        self.failed_runs = 0
        self.done = False

    def run(self) -> None:
        try:
            while not self.stop:
                try:
                    self.step()
                except self.retried:
                    self.failed_runs += 1
                time.sleep(0.01)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            connection.close()
            self.done = True


def _erase(url: str, key: str) -> tuple[int, float, float]:
    """POST the erasure; (status, when it answered as time.time(), seconds it took)."""
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"Authorization": f"Bearer {key}"}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.time(), time.monotonic() - started


def test_no_provider_call_for_a_person_follows_their_erasure(
    settings, emulator, live_server, api_key_factory
):
    settings.TWILIO_AUTH_TOKEN = twilio_emulator.AUTH_TOKEN
    settings.WEBHOOK_BASE_URL = None
    settings.CHANNEL_ADAPTERS = _adapters(emulator, f"{live_server.url}/webhooks/twilio/status/")
    locmem.clear()
    for path in (TWILIO, LINE):
        emulator.fail_next(path, timeout=True, delay=LATENCY, times=PER_CHANNEL)
    template = make_template(
        topic=make_topic("receipts", kind="transactional"),
        variants={
            (channel, "en"): {"subject": "Receipt", "body": "Hi {{ customer.first_name }}"}
            for channel in ("email", "sms", "whatsapp", "line")
        },
    )
    addresses = {"email": EMAIL, "phone": PHONE, "whatsapp": PHONE, "line_user_id": LINE_USER}
    erin = make_customer("erin", **addresses)
    ids = [
        queue_message(erin, template, channel=channel).id
        for _ in range(PER_CHANNEL)
        for channel in ("sms", "line")
    ]
    key = api_key_factory(scopes=("admin",))

    workers = [_Loop(lambda: dispatcher.dispatch_due(time_budget=2.0)) for _ in range(2)]
    # Status reports, as they come.
    reports = _Loop(process_pending, retried=(OperationalError,))
    workers.append(reports)
    for worker in workers:
        worker.start()
    try:
        calls = lambda: len(emulator.requests_to(TWILIO)) + len(emulator.requests_to(LINE))  # noqa: E731
        assert wait_until(lambda: calls() >= 40, 30)
        status, answered_at, took = _erase(f"{live_server.url}/api/v1/customers/erin/erase", key)
        # Long enough for any chunk that was under way, or would start, to have called.
        time.sleep(4 * LATENCY)
        dispatcher.recover_stalled()
        dispatcher.dispatch_due()
    finally:
        for worker in workers:
            worker.stop = True
        assert wait_until(lambda: all(w.done for w in workers), 60)
    assert [w.errors for w in workers] == [[], [], []]
    twilio_emulator.wait_idle(emulator, timeout=10)
    while process_pending().statuses:
        pass
    # Every report was processed: the erased person's are recorded as naming no message.
    assert not WebhookEvent.objects.filter(processed_at__isnull=True).exists()

    requests = emulator.requests_to(TWILIO) + emulator.requests_to(LINE)
    after = [r for r in requests if r.received_at > answered_at]
    assert status == 200
    assert not Customer.objects.filter(external_id="erin").exists()
    assert len(requests) < len(ids)  # the erasure stopped the rest

    # Created again with the same addresses: every channel is suppressed at dispatch.
    again = make_customer("erin-again", **addresses)
    resent = [
        queue_message(again, template, channel=channel).id
        for channel in ("email", "sms", "whatsapp", "line")
    ]
    dispatcher.dispatch_due()
    assert set(Message.objects.filter(id__in=resent).values_list("channel", "status")) == {
        (channel, MessageStatus.SUPPRESSED) for channel in ("email", "sms", "whatsapp", "line")
    }
    assert len(emulator.requests_to(TWILIO) + emulator.requests_to(LINE)) == len(requests)
    assert locmem.outbox == []

    Accounting(
        accepted=len(ids),
        provider_calls=len(requests),
        lost=unsettled(resent),  # erin's own rows are gone with her
        duplicated=duplicated(message_ids_on_the_wire(emulator.requests_to(TWILIO)))
        # A LINE push names no id of ours: a message is its attempt's retry key.
        + duplicated(Counter(r.header("x-line-retry-key") for r in emulator.requests_to(LINE))),
        after_erasure=len(after),
        http_5xx=int(status >= 500),
        notes={"erase_ms": round(took * 1000), "report_runs_retried": reports.failed_runs},
    ).assert_kept()
