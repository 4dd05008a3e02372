"""Webhook endpoints: genuine requests are stored once; forged, tampered, replayed and
stale ones are refused with 403 and leave nothing behind."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from channels.webhooks.models import WebhookEvent
from tests.emulator.sendgrid import EventSigner
from tests.webhooks.conftest import (
    TWILIO_TOKEN,
    line_post,
    line_signature,
    sendgrid_post,
    twilio_post,
)

pytestmark = pytest.mark.django_db

STATUS = {
    "MessageSid": "SM" + "a" * 32,
    "SmsSid": "SM" + "a" * 32,
    "AccountSid": "AC" + "1" * 32,
    "MessageStatus": "delivered",
    "SmsStatus": "delivered",
    "To": "+14155550100",
    "From": "+15005550006",
    "ApiVersion": "2010-04-01",
}


def test_twilio_status_genuine_is_stored_and_a_replay_adds_nothing(client, secrets_configured):
    first = twilio_post(client, "/webhooks/twilio/status/?m=7", STATUS)
    again = twilio_post(client, "/webhooks/twilio/status/?m=7", STATUS)

    assert (first.status_code, again.status_code) == (204, 204)
    [event] = WebhookEvent.objects.all()
    assert (event.provider, event.kind) == ("twilio", "status")
    assert event.event_id == f"{STATUS['MessageSid']}:delivered"
    assert event.payload["message_ref"] == "7"
    assert event.payload["params"]["To"] == "+14155550100"


@pytest.mark.parametrize(
    "how",
    ["no signature", "wrong token", "tampered param", "other url", "added param"],
)
def test_twilio_forged_or_tampered_is_refused_and_nothing_stored(client, secrets_configured, how):
    path = "/webhooks/twilio/status/?m=7"
    signed = dict(STATUS)
    token = TWILIO_TOKEN if how != "wrong token" else "not-the-token"
    url = "http://testserver" + (path if how != "other url" else "/webhooks/twilio/status/?m=8")
    signature = RequestValidator(token).compute_signature(url, signed)
    sent = dict(signed)
    if how == "tampered param":
        sent["MessageStatus"] = "failed"
    if how == "added param":
        sent["ErrorCode"] = "30003"
    headers = {} if how == "no signature" else {"HTTP_X_TWILIO_SIGNATURE": signature}
    response = client.post(
        path, data=urlencode(sent), content_type="application/x-www-form-urlencoded", **headers
    )

    assert response.status_code == 403
    assert response.json() == {"error": "invalid or missing signature"}
    assert not WebhookEvent.objects.exists()


def test_twilio_json_body_is_checked_against_body_sha256(client, secrets_configured):
    import hashlib

    body = json.dumps({"MessageSid": "SM1", "MessageStatus": "sent"})
    digest = hashlib.sha256(body.encode()).hexdigest()
    path = f"/webhooks/twilio/status/?m=1&bodySHA256={digest}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"http://testserver{path}", {})
    tampered = body.replace("sent", "failed")

    response = client.post(
        path, data=tampered, content_type="application/json", HTTP_X_TWILIO_SIGNATURE=signature
    )

    assert response.status_code == 403
    assert not WebhookEvent.objects.exists()


def test_twilio_behind_a_proxy_is_verified_against_the_public_url(
    client, secrets_configured, settings
):
    settings.WEBHOOK_BASE_URL = "https://messaging.example.com"
    path = "/webhooks/twilio/status/?m=3"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        f"https://messaging.example.com{path}", STATUS
    )
    response = client.post(
        path,
        data=urlencode(STATUS),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )
    assert response.status_code == 204


def test_twilio_without_a_configured_token_refuses_everything(client, settings):
    settings.TWILIO_AUTH_TOKEN = ""
    assert twilio_post(client, "/webhooks/twilio/status/", STATUS, token="").status_code == 403


def test_a_genuine_twilio_request_missing_fields_is_a_400(client, secrets_configured):
    response = twilio_post(client, "/webhooks/twilio/status/", {"AccountSid": "AC1"})
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def test_twilio_inbound_answers_empty_twiml(client, secrets_configured):
    params = {"MessageSid": "SM" + "b" * 32, "From": "+14155550100", "To": "+15005550006"}
    response = twilio_post(client, "/webhooks/twilio/inbound/", params | {"Body": "hi"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml"
    assert response.content.decode().endswith("<Response></Response>")
    assert WebhookEvent.objects.get().kind == "inbound"


def _sendgrid_events(n=2):
    return [
        {
            "email": "alex@example.com",
            "timestamp": int(time.time()),
            "event": "delivered",
            "sg_event_id": f"ev-{i}",
            "sg_message_id": "abc.filter-1",
            "message_id": "5",
        }
        for i in range(n)
    ]


def test_sendgrid_genuine_batch_is_stored_and_a_retry_adds_nothing(client, secrets_configured):
    events = _sendgrid_events()
    first = sendgrid_post(client, events, secrets_configured)
    again = sendgrid_post(client, events, secrets_configured)

    assert first.status_code == 200 and first.json() == {"received": 2, "new": 2}
    assert again.status_code == 200 and again.json() == {"received": 2, "new": 0}
    assert WebhookEvent.objects.filter(provider="sendgrid").count() == 2


def test_sendgrid_stale_or_future_timestamp_is_refused(client, secrets_configured, settings):
    settings.SENDGRID_WEBHOOK_MAX_AGE_SECONDS = 300
    stale = sendgrid_post(
        client, _sendgrid_events(), secrets_configured, timestamp=int(time.time()) - 301
    )
    future = sendgrid_post(
        client, _sendgrid_events(), secrets_configured, timestamp=int(time.time()) + 301
    )
    assert (stale.status_code, future.status_code) == (403, 403)
    assert not WebhookEvent.objects.exists()


def test_sendgrid_tampered_body_or_other_key_is_refused(client, secrets_configured):
    events = _sendgrid_events()
    raw = json.dumps(events).encode()
    headers = secrets_configured.headers(raw)
    tampered = raw.replace(b"delivered", b"spamreport")
    response = client.post(
        "/webhooks/sendgrid/events/",
        data=tampered,
        content_type="application/json",
        headers=headers,
    )
    forged = sendgrid_post(client, events, EventSigner())  # signed with someone else's key

    assert (response.status_code, forged.status_code) == (403, 403)
    assert not WebhookEvent.objects.exists()


def test_sendgrid_garbage_signature_is_a_403_not_a_500(client, secrets_configured):
    response = client.post(
        "/webhooks/sendgrid/events/",
        data=b"[]",
        content_type="application/json",
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": "%%%not-base64",
            "X-Twilio-Email-Event-Webhook-Timestamp": str(int(time.time())),
        },
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"event": "delivered"}', b'[{"event": "open"}]', b"[1, 2]"],
)
def test_sendgrid_signed_but_malformed_body_is_a_400(client, secrets_configured, body):
    response = sendgrid_post(client, None, secrets_configured, body=body)
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def _line_event(event_id="01H0000000000000000000000A", text="hello"):
    return {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": "U" + "1" * 32},
        "webhookEventId": event_id,
        "deliveryContext": {"isRedelivery": False},
        "replyToken": "r" * 32,
        "message": {"id": "468789577898262530", "type": "text", "text": text, "quoteToken": "q"},
    }


def test_line_genuine_is_stored_once_and_the_verify_request_is_answered(client, secrets_configured):
    assert line_post(client, []).status_code == 200  # LINE's "Verify" button sends no events
    first = line_post(client, [_line_event()])
    redelivered = line_post(client, [_line_event()])

    assert first.json() == {"received": 1, "new": 1}
    assert redelivered.json() == {"received": 1, "new": 0}
    assert WebhookEvent.objects.get().kind == "inbound"


def test_line_forged_or_tampered_is_refused(client, secrets_configured):
    forged = line_post(client, [_line_event()], secret="someone-else")
    raw = json.dumps({"events": [_line_event()]}).encode()
    signature = line_signature(raw)
    tampered = client.post(
        "/webhooks/line/",
        data=raw.replace(b"hello", b"STOP"),
        content_type="application/json",
        HTTP_X_LINE_SIGNATURE=signature,
    )
    assert (forged.status_code, tampered.status_code) == (403, 403)
    assert not WebhookEvent.objects.exists()


def test_get_is_not_allowed(client, secrets_configured):
    assert client.get("/webhooks/twilio/status/").status_code == 405


def test_every_provider_module_is_routed_from_the_registry():
    from django.urls import resolve

    from channels.webhooks.providers import PROVIDERS

    for name, module in PROVIDERS.items():
        assert name == module.NAME
        for route, endpoint in module.ENDPOINTS.values():
            match = resolve(f"/webhooks/{route}")
            assert match.kwargs == {"provider": name, "endpoint": endpoint}
