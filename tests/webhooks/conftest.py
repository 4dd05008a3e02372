"""Signing the way each provider signs, and settings holding the matching secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from tests.emulator.sendgrid import EventSigner

TWILIO_TOKEN = "twilio-auth-token-for-tests"
LINE_SECRET = "line-channel-secret-for-tests"


@pytest.fixture
def secrets_configured(settings):
    signer = EventSigner()
    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    settings.LINE_CHANNEL_SECRET = LINE_SECRET
    settings.SENDGRID_WEBHOOK_PUBLIC_KEY = signer.public_key
    settings.WEBHOOK_BASE_URL = None
    settings.KEYWORD_CONFIRMATIONS = True
    return signer


def twilio_post(client, path: str, params: dict[str, str], *, token: str = TWILIO_TOKEN):
    url = f"http://testserver{path}"
    signature = RequestValidator(token).compute_signature(url, params)
    return client.post(
        path,
        data=urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


def sendgrid_post(
    client, events, signer: EventSigner, *, timestamp=None, body: bytes | None = None
):
    raw = json.dumps(events).encode() if body is None else body
    headers = signer.headers(raw, timestamp)
    return client.post(
        "/webhooks/sendgrid/events/",
        data=raw,
        content_type="application/json",
        headers=headers,
    )


def line_signature(body: bytes, secret: str = LINE_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def line_post(client, events, *, secret: str = LINE_SECRET, body: bytes | None = None):
    raw = (
        json.dumps({"destination": "U" + "0" * 32, "events": events}).encode()
        if body is None
        else body
    )
    return client.post(
        "/webhooks/line/",
        data=raw,
        content_type="application/json",
        HTTP_X_LINE_SIGNATURE=line_signature(raw, secret),
    )
