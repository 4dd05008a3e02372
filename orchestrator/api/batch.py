"""``POST /api/v1/messages/batch``: up to ``API_BULK_LIMIT`` sends in one request.

Each item is a send as ``POST /api/v1/messages`` takes it plus its own
``idempotency_key``, and gets its own result, in order (207 Multi-Status): 202 with
the message id, or the 4xx and error body the single endpoint would have answered.

Items share the single endpoint's idempotency records: an item's key and body (without
the key) are compared with what ``POST /api/v1/messages`` stored under the same key,
so a send retried through either endpoint is queued once. A key repeated inside one
batch is one send (its later items answer as replays; with another body, 422).

The work is set-based and in one transaction: the keys are claimed in one statement
(committed on its own, as for a single send, so a concurrent duplicate gets 409), the
references read with a query per kind, the messages and their history written in two
statements, and the responses stored in one, in the same transaction as the messages.
A failure anywhere rolls every message back and frees every claimed key.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from rest_framework import serializers

from orchestrator.api import services
from orchestrator.api.errors import ApiError, flatten_errors
from orchestrator.api.idempotency import (
    Claim,
    Replay,
    _in_flight,
    _render,
    idempotency_claim_many,
    idempotency_complete_many,
    idempotency_release_many,
    request_hash,
)
from orchestrator.api.models import ApiKey
from orchestrator.api.plain import checker, validated
from orchestrator.api.serializers import (
    BoundedListField,
    ErrorDetailSerializer,
    MessageAcceptedSerializer,
    MessageInSerializer,
    StrictCharField,
)
from orchestrator.delivery.models import Message

KEY_FIELD = "idempotency_key"


class MessageBatchItemSerializer(MessageInSerializer):
    idempotency_key = StrictCharField(
        max_length=255,
        trim_whitespace=False,
        help_text="This send's own Idempotency-Key (shared with POST /api/v1/messages).",
    )

    def validate_idempotency_key(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Must not be blank.")
        return value


class _ParsedJsonField(serializers.JSONField):
    """An item of the request body as the JSON parser made it: JSON already, so not
    encoded again to be checked (a thousand encodings per batch); each item is checked
    on its own afterwards."""

    def to_internal_value(self, data: Any) -> Any:
        return data


class MessageBatchInSerializer(serializers.Serializer):
    messages = BoundedListField(
        child=_ParsedJsonField(),
        max_length=settings.API_BULK_LIMIT,
        allow_empty=False,
        help_text="Sends, each an object as POST /api/v1/messages takes it plus its own "
        "idempotency_key (1 to 255 characters). Each item is checked on its own: one that "
        "is not a valid send gets its own 400 in the results, the others go through.",
    )


class MessageBatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    idempotency_key = serializers.CharField(allow_null=True)
    status = serializers.IntegerField(help_text="202 if queued, else the 4xx of the item.")
    id = serializers.IntegerField(required=False, help_text="The message, when 202.")
    message_status = serializers.CharField(required=False)
    channel = serializers.CharField(required=False)
    replayed = serializers.BooleanField(
        required=False, help_text="True when the key had been sent before (nothing new queued)."
    )
    error = ErrorDetailSerializer(required=False)


class MessageBatchOutSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    refused = serializers.IntegerField()
    results = MessageBatchResultSerializer(many=True)


def _error(result: dict[str, Any], error: ApiError) -> dict[str, Any]:
    body = {"code": error.error_code, "message": error.message, "fields": error.fields}
    return {**result, "status": error.status_code, "error": body}


def _accepted(result: dict[str, Any], status: int, body: dict[str, Any], replayed: bool):
    return {
        **result,
        "status": status,
        "id": body["id"],
        "message_status": body["status"],
        "channel": body["channel"],
        "replayed": replayed,
    }


def messages_batch(*, api_key: ApiKey, items: list[Any]) -> dict[str, Any]:
    """Check, claim and queue the items (see the module docstring); the 207 body."""
    path = reverse("messages")
    results: list[dict[str, Any]] = []
    sends: dict[str, dict[str, Any]] = {}  # key -> validated fields, first item per key
    digests: dict[str, str] = {}
    later: list[tuple[int, str, str]] = []  # (index, key, digest) of repeated keys
    item_checker = checker(MessageBatchItemSerializer)
    for index, item in enumerate(items):
        key = item.get(KEY_FIELD) if isinstance(item, dict) else None
        result = {"index": index, "idempotency_key": key if isinstance(key, str) else None}
        results.append(result)
        if not isinstance(item, dict):
            message = "Each item must be a JSON object."
            results[index] = _error(result, ApiError(code="invalid", message=message))
            continue
        try:
            # One serializer for every item: building one per item copies its fields.
            fields = validated(item_checker, item)
        except serializers.ValidationError as exc:
            invalid = flatten_errors(exc.detail)
            error = ApiError(code="invalid", message="The item has invalid fields.", fields=invalid)
            results[index] = _error(result, error)
            continue
        body = {k: v for k, v in item.items() if k != KEY_FIELD}
        digest = request_hash(method="POST", path=path, body=body)
        if key in digests:
            later.append((index, key, digest))
            continue
        digests[key] = digest
        fields = dict(fields)
        fields.pop(KEY_FIELD)
        sends[key] = fields
    outcomes = idempotency_claim_many(api_key=api_key, digests=digests, method="POST", path=path)
    claimed = {k: c for k, c in outcomes.items() if isinstance(c, Claim)}
    stored: dict[str, tuple[int, dict[str, Any]]] = {}
    refused: dict[str, ApiError] = {}
    for key, outcome in outcomes.items():
        if isinstance(outcome, Replay):
            stored[key] = (outcome.status, json.loads(outcome.content))
        elif isinstance(outcome, ApiError):
            refused[key] = outcome
    fresh: set[str] = set()
    if claimed:
        keys = list(claimed)
        try:
            with transaction.atomic():
                done: list[tuple[Claim, int, str]] = []
                failed: list[Claim] = []
                sent = services.messages_send([sends[k] for k in keys])
                for key, outcome in zip(keys, sent, strict=True):
                    if isinstance(outcome, Message):
                        body = MessageAcceptedSerializer.of(outcome)
                        done.append((claimed[key], 202, _render(body)))
                        stored[key] = (202, body)
                        fresh.add(key)
                    else:
                        failed.append(claimed[key])
                        refused[key] = outcome
                if not idempotency_complete_many(done):
                    raise _LeaseLost
                idempotency_release_many(failed)
        except _LeaseLost:
            idempotency_release_many(list(claimed.values()))
            raise _in_flight() from None
        except BaseException:
            idempotency_release_many(list(claimed.values()))
            raise
    for index, result in enumerate(results):
        key = result["idempotency_key"]
        if "status" in result or key not in digests:
            continue
        if key in stored:
            status, body = stored[key]
            results[index] = _accepted(result, status, body, replayed=key not in fresh)
        else:
            results[index] = _error(result, refused[key])
    for index, key, digest in later:
        result = results[index]
        if digest != digests[key]:
            message = f"This {KEY_FIELD} is used by an earlier item with another body."
            error = ApiError(code="idempotency_key_reused", message=message, status_code=422)
            results[index] = _error(result, error)
        elif key in stored:
            status, body = stored[key]
            results[index] = _accepted(result, status, body, replayed=True)
        else:
            results[index] = _error(result, refused[key])
    accepted = sum(1 for r in results if 200 <= r["status"] < 300)
    return {"accepted": accepted, "refused": len(results) - accepted, "results": results}


class _LeaseLost(Exception):
    """A claim changed hands while the batch ran (it ran past ABANDONED_AFTER)."""
