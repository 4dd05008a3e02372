"""Webhooks that stop a number or an id stop it for every customer record holding it."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from channels.webhooks.processing import process_pending
from orchestrator.consent.models import ChannelOptOut, ConsentRecord, Suppression
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.delivery.factories import queue as message_queue
from tests.webhooks.conftest import line_post, twilio_post

pytestmark = pytest.mark.django_db

FROM = "+15005550006"
NUMBER = "+14155550166"


def test_a_21610_report_stops_the_number_for_every_record_holding_it(
    client, secrets_configured, settings
):
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"from_number": FROM})
    first, second = make_customer(phone=NUMBER), make_customer(phone=NUMBER)
    receipts = make_topic("receipts", kind="transactional")
    message = message_queue(first, make_template(topic=receipts), channel="sms")
    sid = "SM" + "6" * 32
    Message.objects.filter(id=message.id).update(
        status=MessageStatus.SENT,
        provider="twilio",
        provider_message_id=sid,
        to_address=NUMBER,
        handed_off_at=timezone.now() - dt.timedelta(minutes=5),
        sent_at=timezone.now() - dt.timedelta(minutes=5),
    )
    params = {
        "MessageSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "MessageStatus": "undelivered",
        "To": NUMBER,
        "From": FROM,
        "ErrorCode": "21610",
    }
    assert (
        twilio_post(client, f"/webhooks/twilio/status/?m={message.id}", params).status_code == 204
    )

    process_pending()

    stop = Suppression.objects.get()
    assert (stop.reason, stop.sender) == ("stop", FROM)
    records = ConsentRecord.objects.filter(action="opt_out", source="provider")
    assert sorted(r.customer_id for r in records) == [first.id, second.id]
    assert all(r.evidence["provider_code"] == "twilio:21610" for r in records)
    [decision] = consent_decisions([ConsentRequest(second.id, receipts.id, "sms", NUMBER)])
    assert not decision.allowed and decision.details["sender"] == FROM


def _line(kind, user_id, **extra):
    return {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": f"01H{kind}{user_id[-8:]}{time.time_ns()}",
        "deliveryContext": {"isRedelivery": False},
        **extra,
    }


def test_a_line_stop_opts_out_every_record_holding_the_id_and_start_undoes_it(
    client, secrets_configured
):
    user_id = "U" + "5" * 32
    holders = [make_customer(line_user_id=user_id) for _ in range(2)]

    for n, text in enumerate(["STOP", "START"]):
        message = {"id": f"600{n}", "type": "text", "text": text, "quoteToken": "q"}
        line_post(client, [_line("message", user_id, replyToken="r", message=message)])
        process_pending()
        if text == "STOP":
            opted_out = ChannelOptOut.objects.filter(channel="line")
            assert sorted(o.customer_id for o in opted_out) == [c.id for c in holders]

    assert not ChannelOptOut.objects.exists()
    for customer in holders:
        actions = ConsentRecord.objects.filter(customer=customer).order_by("id")
        assert [r.action for r in actions] == ["opt_out", "opt_in"]
