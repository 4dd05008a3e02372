"""Webhook endpoints: verify, store each event once, answer at once; a worker does the rest.

A request that fails its signature check gets 403 and nothing is stored. A genuine
request whose body is not what the provider sends gets 400. A replayed or retried
genuine request is answered 200 and adds nothing (events are unique per provider).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels.webhooks import signatures
from channels.webhooks.models import WebhookEvent
from channels.webhooks.tasks import kick_processing
from orchestrator.core.metrics import webhook_rejected

logger = logging.getLogger(__name__)

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _forbidden(provider: str) -> JsonResponse:
    logger.warning("Refused a %s webhook: missing or invalid signature", provider)
    webhook_rejected(provider.lower())  # the metric's label: twilio, sendgrid, line
    return JsonResponse({"error": "invalid or missing signature"}, status=403)


def _bad(message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=400)


def _event(provider: str, kind: str, event_id: str, payload: Any) -> dict[str, Any]:
    return {"provider": provider, "kind": kind, "event_id": event_id[:255], "payload": payload}


def _store(records: list[dict[str, Any]]) -> int:
    """Insert the events not seen before and wake a worker; returns how many were new."""
    if not records:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO webhooks_webhookevent"
            " (provider, kind, event_id, payload, received_at, attempts, error)"
            " SELECT provider, kind, event_id, payload, now(), 0, ''"
            " FROM jsonb_to_recordset(%s::jsonb)"
            " AS r(provider text, kind text, event_id text, payload jsonb)"
            " ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
            [json.dumps(records)],
        )
        new = len(cursor.fetchall())
        if new:
            kick_processing()
    return new


def _twilio_params(request: HttpRequest) -> dict[str, str]:
    return {key: request.POST.get(key, "") for key in request.POST}


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    url = signatures.public_url(request, settings.WEBHOOK_BASE_URL)
    if not signatures.twilio_valid(request, auth_token=settings.TWILIO_AUTH_TOKEN, url=url):
        return _forbidden("Twilio")
    params = _twilio_params(request)
    sid = params.get("MessageSid") or params.get("SmsSid", "")
    status = params.get("MessageStatus") or params.get("SmsStatus", "")
    if not sid or not status:
        return _bad("MessageSid and MessageStatus are required")
    payload: dict[str, Any] = {"params": params, "message_ref": request.GET.get("m", "")}
    _store([_event("twilio", WebhookEvent.Kind.STATUS, f"{sid}:{status}", payload)])
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    url = signatures.public_url(request, settings.WEBHOOK_BASE_URL)
    if not signatures.twilio_valid(request, auth_token=settings.TWILIO_AUTH_TOKEN, url=url):
        return _forbidden("Twilio")
    params = _twilio_params(request)
    sid = params.get("MessageSid") or params.get("SmsMessageSid", "")
    if not sid or not params.get("From"):
        return _bad("MessageSid and From are required")
    _store([_event("twilio", WebhookEvent.Kind.INBOUND, sid, {"params": params})])
    # Any confirmation goes out through the outbox, recorded like every other send.
    return HttpResponse(TWIML_EMPTY, content_type="text/xml")


@csrf_exempt
@require_POST
def sendgrid_events(request: HttpRequest) -> HttpResponse:
    if not signatures.sendgrid_valid(
        request,
        public_key=settings.SENDGRID_WEBHOOK_PUBLIC_KEY,
        max_age=settings.SENDGRID_WEBHOOK_MAX_AGE_SECONDS,
    ):
        return _forbidden("SendGrid")
    try:
        events = json.loads(request.body)
    except ValueError:
        return _bad("the body is not JSON")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return _bad("expected a JSON array of event objects")
    rows = []
    for event in events:
        event_id = event.get("sg_event_id")
        if not isinstance(event_id, str) or not event_id or not isinstance(event.get("event"), str):
            return _bad("every event needs a string sg_event_id and event")
        rows.append(_event("sendgrid", WebhookEvent.Kind.STATUS, event_id[:255], event))
    new = _store(rows)
    return JsonResponse({"received": len(rows), "new": new})


@csrf_exempt
@require_POST
def line_events(request: HttpRequest) -> HttpResponse:
    if not signatures.line_valid(request, channel_secret=settings.LINE_CHANNEL_SECRET):
        return _forbidden("LINE")
    try:
        body = json.loads(request.body)
    except ValueError:
        return _bad("the body is not JSON")
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return _bad("expected an object with an events array")
    rows = []
    for event in events:
        kind = _line_kind(event)
        event_id = event.get("webhookEventId")
        if kind is None:
            continue  # postbacks, joins, reads...: nothing we act on yet
        if not isinstance(event_id, str) or not event_id:
            return _bad("every event needs a webhookEventId")
        rows.append(_event("line", kind, event_id[:255], event))
    new = _store(rows)
    return JsonResponse({"received": len(rows), "new": new})


def _line_kind(event: dict[str, Any]) -> str | None:
    if event.get("type") == "message" and isinstance(event.get("message"), dict):
        return WebhookEvent.Kind.INBOUND if event["message"].get("type") == "text" else None
    if event.get("type") in ("follow", "unfollow"):
        return WebhookEvent.Kind.CONTACT
    return None
