"""SendGrid's Event Webhook: delivery, engagement, bounce, spam and unsubscribe events.

The request is signed with ECDSA (P-256, SHA-256) over the timestamp header plus the
raw body, verified with the public key from the Mail Settings page. The SDK's helper
does not look at the timestamp's age; one outside ``SENDGRID_WEBHOOK_MAX_AGE_SECONDS``
is refused. Each event names our message by the ``message_id`` custom arg the adapter
sets, and the request by ``sg_message_id`` (``X-Message-Id`` plus a per-recipient
suffix).

A provider's webhooks are one module like this one (``verify``, ``receive``,
``parse``) and a line in ``channels.webhooks.providers.PROVIDERS``.
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
import time

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader

from channels.webhooks.events import (
    BadPayload,
    Event,
    RawEvent,
    Received,
    StatusChange,
    StoredEvent,
    int_or_none,
)
from channels.webhooks.models import WebhookEvent
from orchestrator.delivery.models import MessageStatus as S

NAME = "sendgrid"
LABEL = "SendGrid"
CHANNELS = frozenset({"email"})
ENDPOINTS = {"sendgrid-events": ("sendgrid/events/", "events")}

STATUS = {
    "processed": S.SENT,
    "delivered": S.DELIVERED,
    "bounce": S.BOUNCED,
    "dropped": S.FAILED,
    "open": S.OPENED,
    "click": S.CLICKED,
}
#: SendGrid's reasons for dropping a message that mean the address is unusable.
DROP_SUPPRESS = {
    "Bounced Address": "bounce",
    "Invalid": "invalid",
    "Spam Reporting Address": "complaint",
}


def verify(request: HttpRequest) -> bool:
    public_key = settings.SENDGRID_WEBHOOK_PUBLIC_KEY
    signature = request.headers.get(EventWebhookHeader.SIGNATURE, "")
    timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP, "")
    if not public_key or not signature or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > settings.SENDGRID_WEBHOOK_MAX_AGE_SECONDS:
        return False
    try:
        payload = request.body.decode("utf-8")
        return bool(EventWebhook(public_key).verify_signature(payload, signature, timestamp))
    except (UnicodeDecodeError, binascii.Error, ValueError):
        return False


def receive(request: HttpRequest, endpoint: str) -> Received:
    try:
        events = json.loads(request.body)
    except ValueError:
        raise BadPayload("the body is not JSON") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadPayload("expected a JSON array of event objects")
    rows = []
    for event in events:
        event_id = event.get("sg_event_id")
        if not isinstance(event_id, str) or not event_id or not isinstance(event.get("event"), str):
            raise BadPayload("every event needs a string sg_event_id and event")
        rows.append(RawEvent(WebhookEvent.Kind.STATUS, event_id, event))
    return Received(rows, lambda new: JsonResponse({"received": len(rows), "new": new}))


def parse(event: StoredEvent) -> Event:
    payload = event.payload
    kind = str(payload.get("event", ""))
    status = STATUS.get(kind)
    reason = f"SendGrid reports {kind}"
    suppress = ""
    opt_out = False
    if kind == "bounce":
        bounce_type = payload.get("type", "bounce")
        reason = f"SendGrid reports a {bounce_type}: {payload.get('reason', '')}".strip(": ")
        if bounce_type == "bounce":
            suppress = "bounce"
        else:  # "blocked": the receiving server refused for now; the address is fine
            status = S.UNDELIVERED
    elif kind == "dropped":
        drop_reason = str(payload.get("reason", ""))
        reason = f"SendGrid dropped it: {drop_reason}"
        suppress = DROP_SUPPRESS.get(drop_reason, "")
    elif kind == "spamreport":
        reason = "the recipient reported it as spam"
        suppress = "complaint"
    elif kind in ("unsubscribe", "group_unsubscribe"):
        reason = "the recipient unsubscribed at SendGrid"
        opt_out = True
    elif kind == "click" and payload.get("url"):
        reason = f"clicked {str(payload['url'])[:300]}"
    timestamp = int_or_none(payload.get("timestamp"))
    occurred = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC) if timestamp else event.received_at
    return StatusChange(
        message_id=int_or_none(payload.get("message_id")),
        status=status,
        # sg_message_id is the X-Message-Id we stored plus a per-recipient suffix.
        provider_message_id=str(payload.get("sg_message_id") or "").split(".")[0],
        occurred_at=occurred,
        code=f"sendgrid:{kind}",
        reason=reason,
        suppress=suppress,
        opt_out=opt_out,
    )
