"""A broadcast expansion worker SIGKILLed mid-slice: the slice it was writing is left
as it was (its transaction never commits: the recipients stay pending, no message is
written), the slices before it stand, and a restarted worker expands the rest. Every
customer of the frozen audience gets exactly one copy, and each reaches Twilio once.

The worker is a real process (``tests.faults.broadcast_worker``) stalled inside its
third slice's transaction, after the slice's one statement deleted its recipient rows
and wrote their messages and history rows, then killed with SIGKILL.
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

from orchestrator.broadcasts import services
from orchestrator.broadcasts.models import Recipient
from orchestrator.broadcasts.services import broadcast_save, broadcast_schedule, broadcasts_sweep
from orchestrator.delivery.models import Message, MessageEvent
from tests.delivery.factories import make_template, make_topic
from tests.faults.conftest import PROVIDERS, accounting, customers, drain
from tests.faults.workers import reaped

pytestmark = pytest.mark.django_db(transaction=True)

CHECKOUT = Path(__file__).resolve().parents[2]
AUDIENCE = 45
SLICE = 10


def _worker(stall_on_slice: int | None) -> subprocess.Popen:
    config = {
        "database": connection.settings_dict["NAME"],
        "slice": SLICE,
        "stall_on_slice": stall_on_slice,
        "now": timezone.now().isoformat(),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.broadcast_worker", json.dumps(config)],
        cwd=CHECKOUT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_until(worker: subprocess.Popen, word: str) -> None:
    """Read the worker's lines until it says ``word``; then kill it (``expanding``) or
    let it exit (``done``)."""
    with reaped(worker):
        lines: list[str] = []
        while word not in lines:
            line = worker.stdout.readline()
            assert line, worker.stderr.read()
            lines.append(line.strip())
        if word == "expanding":
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait()


def test_a_worker_killed_mid_expansion_loses_and_doubles_nothing(wired, clock, monkeypatch):
    provider = PROVIDERS["twilio"]
    topic = make_topic("newsletter", channels=["sms"])
    template = make_template(
        topic=topic, variants={("sms", "en"): {"body": "Spring is here, {{ customer.first_name }}"}}
    )
    audience = customers(provider, AUDIENCE)
    broadcast, _ = broadcast_save(
        key="spring",
        fields={"name": "Spring", "template": template, "topic": topic, "channel": "sms"},
    )
    broadcast_schedule(broadcast=broadcast)
    # This process freezes the audience; the worker processes expand it.
    monkeypatch.setattr(services, "OUTBOX_HIGH_WATER", 0)
    assert broadcasts_sweep()["recipients"] == AUDIENCE
    copies = Message.objects.filter(broadcast_id=broadcast.id)
    pending = Recipient.objects.filter(broadcast_id=broadcast.id)
    assert (copies.count(), pending.count()) == (0, AUDIENCE)

    _run_until(_worker(stall_on_slice=3), "expanding")
    # Two slices stand; the third rolled back whole: its recipients are pending again.
    assert copies.count() == 2 * SLICE
    assert pending.count() == AUDIENCE - 2 * SLICE
    assert MessageEvent.objects.filter(message__broadcast_id=broadcast.id).count() == 2 * SLICE

    # A worker started again expands the rest.
    _run_until(_worker(stall_on_slice=None), "done")
    ids = list(copies.values_list("id", flat=True))
    per_customer = Counter(copies.values_list("customer_id", flat=True))
    assert set(per_customer) == {c.id for c in audience}
    assert pending.count() == 0
    history = Counter(
        MessageEvent.objects.filter(message_id__in=ids, status="queued").values_list(
            "message_id", flat=True
        )
    )
    assert history == Counter(dict.fromkeys(ids, 1))  # one first history row each

    drain(clock, ids)
    result = accounting(
        wired,
        provider,
        ids,
        audience=AUDIENCE,
        expanded=len(per_customer),
        rerun=AUDIENCE - 2 * SLICE,
    )
    result.lost += AUDIENCE - len(per_customer)  # frozen but never expanded
    result.duplicated += sum(1 for n in per_customer.values() if n > 1)
    assert result.provider_calls == AUDIENCE
    result.assert_kept()
