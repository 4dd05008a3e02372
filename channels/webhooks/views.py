"""Webhook endpoints: verify, store each event once, answer at once; a worker does the rest.

One view serves every provider of ``channels.webhooks.providers``. A request that
fails its signature check gets 403 and nothing is stored. A genuine request whose
body is not what the provider sends gets 400. A replayed or retried genuine request
is answered as the first was and adds nothing (events are unique per provider).
Text PostgreSQL cannot store (NUL, lone surrogates) is cleaned from what we keep,
after the signature was checked on the raw body: a provider retries a 5xx forever.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels.webhooks.events import BadPayload, RawEvent
from channels.webhooks.providers import PROVIDERS
from channels.webhooks.tasks import kick_processing
from orchestrator.core.metrics import webhook_rejected

logger = logging.getLogger(__name__)


def _forbidden(provider: str, label: str) -> JsonResponse:
    logger.warning("Refused a %s webhook: missing or invalid signature", label)
    webhook_rejected(provider)  # the metric's label: twilio, sendgrid, line
    return JsonResponse({"error": "invalid or missing signature"}, status=403)


_NUL = re.compile("\x00")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(value: Any) -> Any:
    """``value`` with NUL characters dropped and lone surrogates replaced (U+FFFD) in
    every string and key: jsonb refuses both. A NUL carries nothing a person wrote, so
    "STOP\\0" is read as the STOP it is meant to be."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", _NUL.sub("", value))
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _store(provider: str, events: list[RawEvent]) -> int:
    """Insert the events not seen before and wake a worker; returns how many were new."""
    if not events:
        return 0
    records = [
        {
            "provider": provider,
            "kind": e.kind,
            "event_id": _storable(e.event_id)[:255],
            "payload": _storable(e.payload),
        }
        for e in events
    ]
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


@csrf_exempt
@require_POST
def receive(request: HttpRequest, *, provider: str, endpoint: str) -> HttpResponse:
    module = PROVIDERS[provider]
    if not module.verify(request):
        return _forbidden(provider, module.LABEL)
    try:
        received = module.receive(request, endpoint)
    except BadPayload as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return received.answer(_store(provider, received.events))
