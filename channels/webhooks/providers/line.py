"""LINE's Messaging API webhook: text messages, follows and unfollows.

``X-Line-Signature`` is the base64 HMAC-SHA256 of the raw body with the channel
secret. Other events (postbacks, joins, reads...) are answered and not stored: we
act on none of them yet. LINE has no delivery receipts for pushes, so no status.

A provider's webhooks are one module like this one (``verify``, ``receive``,
``parse``) and a line in ``channels.webhooks.providers.PROVIDERS``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from linebot.v3.webhook import SignatureValidator

from channels.webhooks.events import (
    BadPayload,
    ContactChange,
    Event,
    Inbound,
    RawEvent,
    Received,
    StoredEvent,
    int_or_none,
)
from channels.webhooks.models import WebhookEvent

NAME = "line"
LABEL = "LINE"
CHANNELS = frozenset({"line"})
ENDPOINTS = {"line": ("line/", "events")}


def verify(request: HttpRequest) -> bool:
    channel_secret = settings.LINE_CHANNEL_SECRET
    signature = request.headers.get("X-Line-Signature", "")
    if not channel_secret or not signature:
        return False
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(SignatureValidator(channel_secret).validate(body, signature))


def _kind(event: dict[str, Any]) -> str | None:
    if event.get("type") == "message" and isinstance(event.get("message"), dict):
        return WebhookEvent.Kind.INBOUND if event["message"].get("type") == "text" else None
    if event.get("type") in ("follow", "unfollow"):
        return WebhookEvent.Kind.CONTACT
    return None


def receive(request: HttpRequest, endpoint: str) -> Received:
    try:
        body = json.loads(request.body)
    except ValueError:
        raise BadPayload("the body is not JSON") from None
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadPayload("expected an object with an events array")
    rows = []
    for event in events:
        kind = _kind(event)
        event_id = event.get("webhookEventId")
        if kind is None:
            continue  # postbacks, joins, reads...: nothing we act on yet
        if not isinstance(event_id, str) or not event_id:
            raise BadPayload("every event needs a webhookEventId")
        rows.append(RawEvent(kind, event_id, event))
    return Received(rows, lambda new: JsonResponse({"received": len(rows), "new": new}))


def parse(event: StoredEvent) -> Event:
    payload = event.payload
    user_id = str(payload.get("source", {}).get("userId", ""))
    if event.kind == WebhookEvent.Kind.CONTACT:
        kind = str(payload.get("type"))
        return ContactChange(
            channel="line",
            address=user_id,
            # Unfollow: the person blocked the account.
            following=kind != "unfollow",
            event=kind,
            event_id=event.event_id,
            evidence={"provider": NAME, "event": payload.get("type"), "id": event.event_id},
        )
    timestamp = int_or_none(payload.get("timestamp"))
    return Inbound(
        provider=NAME,
        channel="line",
        provider_message_id=str(payload["message"].get("id") or event.event_id),
        from_address=user_id,
        to_address="",
        body=str(payload["message"].get("text", "")),
        received_at=(
            dt.datetime.fromtimestamp(timestamp / 1000, tz=dt.UTC)
            if timestamp
            else event.received_at
        ),
    )
