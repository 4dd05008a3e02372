"""Signature checks for provider webhooks. Each returns True only for a genuine request.

* Twilio: ``X-Twilio-Signature`` is HMAC-SHA1 with the auth token over the exact
  URL Twilio called plus the sorted POST parameters. For a JSON body the URL carries
  ``bodySHA256`` and the raw body must be passed as a string, or the body hash is
  silently not checked. Twilio signs no timestamp: replays are caught by the
  unique event ids instead.
* SendGrid: ECDSA (P-256, SHA-256) over the timestamp header plus the raw body,
  verified with the public key from the Mail Settings page. The SDK's helper does
  not look at the timestamp's age; we refuse one outside ``max_age``.
* LINE: ``X-Line-Signature`` is base64 HMAC-SHA256 of the raw body with the
  channel secret.
"""

from __future__ import annotations

import binascii
import time
from urllib.parse import parse_qs, urlsplit

from django.http import HttpRequest
from linebot.v3.webhook import SignatureValidator
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader
from twilio.request_validator import RequestValidator


def public_url(request: HttpRequest, base_url: str | None) -> str:
    """The URL the provider called: ``base_url`` (behind a proxy) plus our path and query."""
    if base_url:
        return base_url.rstrip("/") + request.get_full_path()
    return request.build_absolute_uri()


def twilio_valid(request: HttpRequest, *, auth_token: str, url: str) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not auth_token or not signature:
        return False
    validator = RequestValidator(auth_token)
    if "bodySHA256" in parse_qs(urlsplit(url).query):
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return bool(validator.validate(url, body, signature))
    return bool(validator.validate(url, request.POST, signature))


def sendgrid_valid(request: HttpRequest, *, public_key: str, max_age: float) -> bool:
    signature = request.headers.get(EventWebhookHeader.SIGNATURE, "")
    timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP, "")
    if not public_key or not signature or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > max_age:
        return False
    try:
        payload = request.body.decode("utf-8")
        return bool(EventWebhook(public_key).verify_signature(payload, signature, timestamp))
    except (UnicodeDecodeError, binascii.Error, ValueError):
        return False


def line_valid(request: HttpRequest, *, channel_secret: str) -> bool:
    signature = request.headers.get("X-Line-Signature", "")
    if not channel_secret or not signature:
        return False
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(SignatureValidator(channel_secret).validate(body, signature))
