"""Twilio's webhooks (SMS and WhatsApp): status callbacks and inbound messages.

``X-Twilio-Signature`` is HMAC-SHA1 with the auth token over the exact URL Twilio
called plus the sorted POST parameters. For a JSON body the URL carries
``bodySHA256`` and the raw body must be passed as a string, or the body hash is
silently not checked. Twilio signs no timestamp: replays are caught by the unique
event ids instead. A status callback names our message in its ``m`` query parameter
(the adapter's ``callback_url``).

A provider's webhooks are one module like this one (``verify``, ``receive``,
``parse``) and a line in ``channels.webhooks.providers.PROVIDERS``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from twilio.request_validator import RequestValidator

from channels.adapters.twilio_sms import SUPPRESS_REASONS
from channels.webhooks.events import (
    BadPayload,
    Event,
    Inbound,
    RawEvent,
    Received,
    StatusChange,
    StoredEvent,
    int_or_none,
)
from channels.webhooks.models import WebhookEvent
from orchestrator.delivery.models import MessageStatus as S

NAME = "twilio"
LABEL = "Twilio"
#: The channels Twilio sends for us: its reports name messages of these only.
CHANNELS = frozenset({"sms", "whatsapp"})
#: URL name -> (route under /webhooks/, endpoint).
ENDPOINTS = {
    "twilio-status": ("twilio/status/", "status"),
    "twilio-inbound": ("twilio/inbound/", "inbound"),
}

STATUS = {
    "sent": S.SENT,
    "delivered": S.DELIVERED,
    "undelivered": S.UNDELIVERED,
    "failed": S.FAILED,
    "read": S.OPENED,
}
#: WhatsApp refused a free-form message: the customer-care window had closed.
WINDOW_CLOSED = 63016
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def public_url(request: HttpRequest, base_url: str | None) -> str:
    """The URL Twilio called: ``base_url`` (behind a proxy) plus our path and query."""
    if base_url:
        return base_url.rstrip("/") + request.get_full_path()
    return request.build_absolute_uri()


def verify(request: HttpRequest) -> bool:
    auth_token = settings.TWILIO_AUTH_TOKEN
    signature = request.headers.get("X-Twilio-Signature", "")
    if not auth_token or not signature:
        return False
    url = public_url(request, settings.WEBHOOK_BASE_URL)
    validator = RequestValidator(auth_token)
    if "bodySHA256" in parse_qs(urlsplit(url).query):
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return bool(validator.validate(url, body, signature))
    return bool(validator.validate(url, request.POST, signature))


def receive(request: HttpRequest, endpoint: str) -> Received:
    params = {key: request.POST.get(key, "") for key in request.POST}
    if endpoint == "status":
        sid = params.get("MessageSid") or params.get("SmsSid", "")
        status = params.get("MessageStatus") or params.get("SmsStatus", "")
        if not sid or not status:
            raise BadPayload("MessageSid and MessageStatus are required")
        payload: dict[str, Any] = {"params": params, "message_ref": request.GET.get("m", "")}
        event = RawEvent(WebhookEvent.Kind.STATUS, f"{sid}:{status}", payload)
        return Received([event], lambda _new: HttpResponse(status=204))
    sid = params.get("MessageSid") or params.get("SmsMessageSid", "")
    if not sid or not params.get("From"):
        raise BadPayload("MessageSid and From are required")
    event = RawEvent(WebhookEvent.Kind.INBOUND, sid, {"params": params})
    # Any confirmation goes out through the outbox, recorded like every other send.
    return Received([event], lambda _new: HttpResponse(TWIML_EMPTY, content_type="text/xml"))


def parse(event: StoredEvent) -> Event:
    params: dict[str, str] = event.payload["params"]
    if event.kind != WebhookEvent.Kind.STATUS:
        sender = params.get("From", "")
        return Inbound(
            provider=NAME,
            channel="whatsapp" if sender.startswith("whatsapp:") else "sms",
            provider_message_id=params.get("MessageSid") or params.get("SmsMessageSid", ""),
            from_address=sender.removeprefix("whatsapp:"),
            to_address=params.get("To", "").removeprefix("whatsapp:"),
            body=params.get("Body", ""),
            received_at=event.received_at,
        )
    raw_status = params.get("MessageStatus") or params.get("SmsStatus", "")
    status = STATUS.get(raw_status)
    error_code = int_or_none(params.get("ErrorCode"))
    reason = f"Twilio reports {raw_status}"
    code = f"twilio:{raw_status}"
    suppress = ""
    failed = error_code is not None and status in (S.FAILED, S.UNDELIVERED)
    if failed:
        reason += f" (error {error_code})"
        code = f"twilio:{error_code}"
        suppress = SUPPRESS_REASONS.get(error_code, "")
    return StatusChange(
        message_id=int_or_none(event.payload.get("message_ref")),
        status=status,
        provider_message_id=params.get("MessageSid") or params.get("SmsSid", ""),
        occurred_at=event.received_at,
        code=code,
        reason=reason,
        suppress=suppress,
        window_closed=failed and error_code == WINDOW_CLOSED,
    )
