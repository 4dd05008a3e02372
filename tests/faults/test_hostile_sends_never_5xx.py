"""Hostile and mistaken sends mixed with good ones: every bad request is a 4xx that queues
nothing, every good one goes out exactly once, and no request is answered with a 5xx.

Through POST /api/v1/messages and the real SendGrid SDK against the emulator: an offset
PostgreSQL cannot store, a NUL in the data, a key given twice, data the template
cannot render with, a retry while the first request is in flight.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.api.idempotency import idempotency_claim, request_hash
from orchestrator.api.models import ApiKey
from orchestrator.delivery.models import Message
from tests.delivery.factories import make_customer, make_template, make_topic
from tests.faults.conftest import PROVIDERS, accounting, drain

pytestmark = pytest.mark.django_db

MESSAGES = "/api/v1/messages"


def test_bad_sends_are_4xx_good_ones_go_out_once_and_nothing_is_a_5xx(api, wired, clock):
    sendgrid = PROVIDERS["sendgrid"]
    make_template(
        "receipt",
        topic=make_topic("receipts", kind="transactional"),
        variants={("email", "en"): {"subject": "Receipt", "body": "Order {{ data.order_id }}"}},
    )
    people = [make_customer(email=sendgrid.address(n)) for n in range(1, 5)]

    def body(n: int, **extra) -> dict:
        return {
            "to": {"external_id": people[n].external_id},
            "template": "receipt",
            "channel": "email",
            "data": {"order_id": f"A-{n}"},
            **extra,
        }

    # A retry of person 3's send while its first request still runs.
    claimed = body(3)
    idempotency_claim(
        api_key=ApiKey.objects.get(),
        key="busy",
        method="POST",
        path=MESSAGES,
        digest=request_hash(method="POST", path=MESSAGES, body=claimed),
    )
    bad = [
        api.post(MESSAGES, body(0, send_at="2026-03-10T13:00:00-17:45"), format="json"),
        api.post(MESSAGES, body(1, data={"order_id": "A\x00-1"}), format="json"),
        api.generic(
            "POST",
            MESSAGES,
            json.dumps(body(2))[:-1] + ', "template": "other"}',
            content_type="application/json",
        ),
        api.post(MESSAGES, body(2, data={}), format="json"),
        api.post(MESSAGES, claimed, format="json", HTTP_IDEMPOTENCY_KEY="busy"),
    ]
    good = [
        api.post(MESSAGES, body(n), format="json", HTTP_IDEMPOTENCY_KEY=f"order-{n}")
        for n in range(3)
    ]
    good.append(api.post(MESSAGES, body(0), format="json", HTTP_IDEMPOTENCY_KEY="order-0"))

    assert [r.status_code for r in bad] == [400, 400, 400, 422, 409]
    assert [r.status_code for r in good] == [202, 202, 202, 202]
    ids = sorted({r.json()["id"] for r in good})
    assert Message.objects.count() == len(ids) == 3
    drain(clock, ids)
    kept = accounting(
        wired,
        sendgrid,
        ids,
        refused=len(bad),
    )
    kept.http_5xx = sum(r.status_code >= 500 for r in [*bad, *good])
    assert kept.notes["taken"] == 3
    kept.assert_kept()
