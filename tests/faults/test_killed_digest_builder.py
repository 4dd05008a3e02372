"""A digest builder SIGKILLed mid-build: the batch it was building is left as it was
(its transaction never commits), the batches before it stand, and the next sweep
builds the rest. Every held message ends in exactly one digest, and each digest
message reaches Twilio once.

The builder is a real process (``tests.faults.digest_worker``) stalled inside its
third batch's transaction, after it queued that batch's digest messages and folded
one digest, then killed with SIGKILL.
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
from django.utils import timezone

from orchestrator.consent.preferences import preferences_changes_from_document, preferences_update
from orchestrator.delivery import dispatcher
from orchestrator.delivery.digests import digests_build_due
from orchestrator.delivery.models import Digest, Message, MessageEvent, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as queue_message
from tests.emulator import ProviderEmulator
from tests.emulator import twilio as twilio_emulator
from tests.faults.accounting import Accounting, duplicated, message_ids_on_the_wire, unsettled
from tests.faults.workers import reaped

pytestmark = pytest.mark.django_db(transaction=True)

CHECKOUT = Path(__file__).resolve().parents[2]
CUSTOMERS = 15
PER_CUSTOMER = 4
BATCH = 5
TWILIO = "/2010-04-01/"


@pytest.fixture
def emulator():
    with ProviderEmulator() as server:
        twilio_emulator.install(server)
        yield server


def _builder() -> subprocess.Popen:
    config = {
        "database": connection.settings_dict["NAME"],
        "batch_size": BATCH,
        "stall_on_batch": 3,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.digest_worker", json.dumps(config)],
        cwd=CHECKOUT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_builder_killed_mid_build_loses_and_doubles_nothing(settings, emulator):
    settings.TWILIO_AUTH_TOKEN = twilio_emulator.AUTH_TOKEN
    settings.WEBHOOK_BASE_URL = None
    settings.CHANNEL_ADAPTERS = locmem_adapters() | {
        "sms": {
            "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
            "OPTIONS": {
                "account_sid": twilio_emulator.ACCOUNT_SID,
                "auth_token": twilio_emulator.AUTH_TOKEN,
                "from_number": "+15005550006",
                "base_url": emulator.url,
                "status_callback": "http://localhost:9/webhooks/twilio/status/",
                "timeout": 2,
            },
        }
    }
    topic = make_topic("order-updates", digestible=True, channels=["sms"])
    template = make_template(topic=topic)
    held: list[int] = []
    for _ in range(CUSTOMERS):
        customer = make_customer()
        preferences_update(
            customer=customer,
            changes=preferences_changes_from_document(
                {"digests": {topic.key: {"cadence": "daily", "time": "20:00", "weekday": None}}}
            ),
            source="api",
        )
        for i in range(PER_CUSTOMER):
            held.append(queue_message(customer, template, channel="sms", data={"item": i}).id)
    assert Message.objects.filter(id__in=held, status=MessageStatus.HELD).count() == len(held)
    Digest.objects.update(due_at=timezone.now())

    builder = _builder()
    with reaped(builder):
        lines = []
        while "building" not in lines:
            line = builder.stdout.readline()
            assert line, builder.stderr.read()
            lines.append(line.strip())
        os.kill(builder.pid, signal.SIGKILL)
        builder.wait()

    # Two batches stand; the third rolled back whole: no digest message, nothing folded.
    assert Digest.objects.filter(status=Digest.Status.SENT).count() == 2 * BATCH
    assert Digest.objects.filter(status=Digest.Status.OPEN).count() == CUSTOMERS - 2 * BATCH
    assert Message.objects.filter(id__in=held, status=MessageStatus.HELD).count() == (
        (CUSTOMERS - 2 * BATCH) * PER_CUSTOMER
    )

    # The next sweep builds the rest; the dispatcher sends every digest.
    assert digests_build_due(batch_size=BATCH).digests == CUSTOMERS - 2 * BATCH
    assert digests_build_due(batch_size=BATCH).digests == 0
    dispatcher.dispatch_due()
    twilio_emulator.wait_idle(emulator, timeout=30)

    # Every held message is in exactly one digest.
    digest_messages = list(Message.objects.filter(idempotency_key__startswith="digest:"))
    assert len(digest_messages) == CUSTOMERS
    folded = Counter(mid for m in digest_messages for mid in m.data["digest"]["folded"])
    assert set(folded) == set(held)
    assert max(folded.values()) == 1
    digested = Counter(
        MessageEvent.objects.filter(message_id__in=held, code="digested").values_list(
            "message_id", flat=True
        )
    )
    assert digested == Counter(dict.fromkeys(held, 1))
    calls = message_ids_on_the_wire(emulator.requests_to(TWILIO))
    # Only digests reach the provider, each once; the held messages never do.
    assert set(calls) == {m.id for m in digest_messages}
    Accounting(
        accepted=len(held),
        provider_calls=sum(calls.values()),
        lost=unsettled(held) + unsettled(m.id for m in digest_messages),
        duplicated=duplicated(calls) + sum(1 for n in folded.values() if n > 1),
        notes={"digests": len(digest_messages), "rebuilt": CUSTOMERS - 2 * BATCH},
    ).assert_kept()
