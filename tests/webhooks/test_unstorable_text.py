"""Signed provider requests carrying text PostgreSQL cannot store (NUL, lone surrogates)
are stored without it, answered 2xx and processed: a 5xx would make the provider retry
the same request for days."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from channels.webhooks.models import WebhookEvent
from channels.webhooks.processing import process_pending
from orchestrator.consent.models import ConsentRecord
from orchestrator.delivery.models import InboundMessage, Message, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.webhooks.conftest import TWILIO_TOKEN, line_post, sendgrid_post, twilio_post

pytestmark = pytest.mark.django_db


def test_twilio_inbound_with_a_nul_is_stored_without_it_and_opts_out(client, secrets_configured):
    customer = make_customer(phone="+14155550111")
    make_topic("promos")
    params = {
        "MessageSid": "SM" + "e" * 32,
        "AccountSid": "AC" + "1" * 32,
        "From": "+14155550111",
        "To": "+15005550006",
        "Body": "STOP\x00",
        "NumMedia": "0",
    }

    response = twilio_post(client, "/webhooks/twilio/inbound/", params)

    assert response.status_code == 200
    stored = WebhookEvent.objects.get()
    assert stored.payload["params"]["Body"] == "STOP"
    process_pending()
    assert InboundMessage.objects.get().body == "STOP"
    record = ConsentRecord.objects.get(customer=customer)
    assert (record.action, record.channel) == ("opt_out", "sms")


def test_twilio_signature_is_still_checked_on_the_raw_parameters(client, secrets_configured):
    params = {"MessageSid": "SM" + "f" * 32, "From": "+14155550111", "Body": "a\x00b"}
    signed = twilio_post(client, "/webhooks/twilio/inbound/", params)
    assert signed.status_code == 200
    # Signed over "ab" and sent with a NUL: not what was signed, so refused.
    url = "http://testserver/webhooks/twilio/inbound/"
    other = {**params, "MessageSid": "SM" + "0" * 32, "Body": "ab"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, other)
    forged = client.post(
        "/webhooks/twilio/inbound/",
        data=urlencode({**other, "Body": "a\x00b"}),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )
    assert forged.status_code == 403
    assert WebhookEvent.objects.count() == 1


def test_sendgrid_event_with_nul_and_a_lone_surrogate_is_stored_and_applied(
    client, secrets_configured
):
    customer = make_customer(email="sam@example.com")
    message = queue(customer, make_template(topic=make_topic()), channel="email")
    events = [
        {
            "sg_event_id": "ev\x00-1",
            "event": "bounce",
            "type": "bounce",
            "reason": "550 no such user\x00 \ud800",
            "email": "sam@example.com",
            "message_id": str(message.id),
            "timestamp": int(time.time()),
        }
    ]
    raw = json.dumps(events).encode()  # \u0000 and \ud800 as JSON escapes

    response = sendgrid_post(client, events, secrets_configured, body=raw)

    assert response.status_code == 200
    stored = WebhookEvent.objects.get()
    assert stored.event_id == "ev-1"
    assert stored.payload["reason"] == "550 no such user \ufffd"
    process_pending()
    message.refresh_from_db()
    assert message.status == MessageStatus.BOUNCED


def test_line_text_with_a_nul_is_stored_and_processed(client, secrets_configured):
    user_id = "U" + "5" * 32
    make_customer(line_user_id=user_id)
    event = {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": "01HNUL" + str(time.time_ns()),
        "replyToken": "r",
        "message": {"id": "7001", "type": "text", "text": "hello\x00 there"},
    }

    response = line_post(client, [event])

    assert response.status_code == 200
    process_pending()
    assert InboundMessage.objects.get().body == "hello there"
    assert not Message.objects.filter(status=MessageStatus.FAILED).exists()
