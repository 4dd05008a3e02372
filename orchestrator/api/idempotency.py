"""Idempotency-Key for POST endpoints (IETF draft / Stripe semantics), held by the database.

Per (API key, Idempotency-Key), under the unique constraint on IdempotencyRecord:

1. **Claim.** ``INSERT ... ON CONFLICT DO NOTHING`` of an ``in_flight`` row, committed
   on its own so every other process sees it at once. Whoever inserts does the work.
   Everybody else reads the existing row:

   - another request hash (method, path and canonical JSON body) -> 422;
   - ``done`` -> the stored status and body, replayed byte for byte;
   - ``in_flight`` for less than ``ABANDONED_AFTER`` -> 409, try again later;
   - ``in_flight`` for longer -> the owner crashed; a conditional UPDATE takes it over.

2. **Work and record commit together.** The view runs in a transaction that, before
   committing, marks the row ``done`` with the response - but only while this request
   still holds the claim (the row's ``created_at`` is the lease and a takeover renews
   it). A crash therefore leaves an ``in_flight`` row and no work; an owner that stalls
   past the takeover finds its lease gone and rolls its work back, so of an owner and
   its successor exactly one commits.

3. **Only 2xx responses are stored.** A 4xx, a 5xx or an exception deletes the row: the
   request had no effect, so the client may correct it and retry under the same key
   (Stripe also stores 4xx; we free the key instead so that fixing a typo does not need
   a new key - nothing was done that a replay would have to protect).

Rows are purged after ``IDEMPOTENCY_KEY_TTL_HOURS`` (at least 24) by a periodic task.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from orchestrator.api.errors import ApiError
from orchestrator.api.models import ApiKey, IdempotencyRecord

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: An in_flight claim older than this belongs to a process that died; it may be taken over.
ABANDONED_AFTER = dt.timedelta(seconds=60)
#: Seconds a client is told to wait (``Retry-After``) before retrying a request in flight:
#: the first request usually finishes within a second.
RETRY_AFTER_SECONDS = 1
#: Claim attempts before answering 409: each retry follows a row vanishing or changing hands.
_CLAIM_ATTEMPTS = 3

#: For the OpenAPI description of every endpoint that honours the header.
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    name=HEADER,
    type={"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": r"\S"},
    location=OpenApiParameter.HEADER,
    required=False,
    description="Up to 255 characters. The same key and body return the first response "
    "again; the same key with another body is refused with 422; while the first request "
    "is still running, 409. Kept for at least 24 hours.",
)

_TABLE = IdempotencyRecord._meta.db_table


@dataclass(frozen=True)
class Claim:
    """This request owns the key; ``lease`` is the row's created_at when claimed."""

    record_id: int
    lease: dt.datetime


@dataclass(frozen=True)
class Replay:
    """The key's first request finished; answer with its response."""

    status: int
    content: str


def request_hash(*, method: str, path: str, body: Any) -> str:
    """SHA-256 of method, path and the body as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()}\n{path}\n{canonical}".encode()).hexdigest()


#: Joined into a claim's INSERT: that transaction's commit does not wait for the WAL to
#: reach the disk. Safe because the claim is only a lease, not the work: the work commits
#: durably later on the same connection, and a durable commit flushes every earlier WAL
#: record with it. A crash that loses a claim loses its request too, which was never
#: answered, so its retry simply claims again. It saves a disk flush per request.
_NO_FLUSH_WAIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS no_flush_wait"


def _claim_statement(sql: str, params: list[Any]) -> list[tuple]:
    """Run a claim's statement as a transaction of its own and return its rows.

    The claim must commit on its own: inside a caller's transaction other processes
    could not see it and the 409 for a concurrent duplicate would be lost. Outside any
    transaction (as a request starts) the statement is its own transaction, one round
    trip; otherwise ``atomic(durable=True)`` refuses to run inside a caller's one.
    """
    if connection.get_autocommit():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _insert(*, api_key: ApiKey, key: str, method: str, path: str, digest: str):
    # clock_timestamp(), not now(): now() is frozen at transaction start, and the lease
    # must be unique per claim and comparable with the wall clock across processes.
    rows = _claim_statement(
        f"""
        INSERT INTO {_TABLE} (api_key_id, key, method, path, request_hash, state, created_at)
        SELECT %s, %s, %s, %s, %s, %s, clock_timestamp() FROM {_NO_FLUSH_WAIT}
        ON CONFLICT (api_key_id, key) DO NOTHING
        RETURNING id, created_at
        """,  # noqa: S608 - the table name is our own constant
        [api_key.pk, key, method, path, digest, IdempotencyRecord.State.IN_FLIGHT],
    )
    return rows[0] if rows else None


def _take_over(*, record_id: int, lease: dt.datetime) -> dt.datetime | None:
    """Renew an abandoned claim; None if it finished, vanished or someone else took it."""
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_TABLE} SET created_at = clock_timestamp()
            WHERE id = %s AND state = %s AND created_at = %s
              AND created_at < clock_timestamp() - %s
            RETURNING created_at
            """,  # noqa: S608 - the table name is our own constant
            [record_id, IdempotencyRecord.State.IN_FLIGHT, lease, ABANDONED_AFTER],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _records(*, api_key: ApiKey, keys: list[str]):
    """The records holding ``keys``, each with its ``age`` by the database's clock."""
    return IdempotencyRecord.objects.filter(api_key=api_key, key__in=keys).annotate(
        age=ExpressionWrapper(Now() - F("created_at"), output_field=DurationField())
    )


def _existing(record: IdempotencyRecord | None, digest: str) -> Claim | Replay | None:
    """How to answer a request whose key ``record`` already holds (raises ApiError 409/422);
    None when the row vanished (its request failed and released it): claim again."""
    if record is None:
        return None
    if record.request_hash != digest:
        raise ApiError(
            code="idempotency_key_reused",
            message=f"This {HEADER} was used for a different request "
            f"({record.method} {record.path} with another body). Use a new key.",
            status_code=422,
        )
    if record.state == IdempotencyRecord.State.DONE:
        return Replay(status=record.response_status, content=record.response_body)
    # The lease is the database's clock (clock_timestamp()), so its age is too: an
    # application server whose clock differs must not misjudge an abandoned claim.
    age = record.age
    if age < ABANDONED_AFTER:
        raise _in_flight()
    lease = _take_over(record_id=record.pk, lease=record.created_at)
    if lease is None:
        return None  # finished, vanished or taken by someone else meanwhile: look again
    logger.warning("idempotency: took over abandoned claim %s (%s old)", record.pk, age)
    return Claim(record_id=record.pk, lease=lease)


def idempotency_claim(
    *, api_key: ApiKey, key: str, method: str, path: str, digest: str
) -> Claim | Replay:
    """Claim ``key`` for this request, or say how to answer instead (raises ApiError 409/422)."""
    for _attempt in range(_CLAIM_ATTEMPTS):
        inserted = _insert(api_key=api_key, key=key, method=method, path=path, digest=digest)
        if inserted:
            return Claim(record_id=inserted[0], lease=inserted[1])
        outcome = _existing(_records(api_key=api_key, keys=[key]).first(), digest)
        if outcome is not None:
            return outcome
    raise _in_flight()


def idempotency_claim_many(
    *, api_key: ApiKey, digests: dict[str, str], method: str, path: str
) -> dict[str, Claim | Replay | ApiError]:
    """``idempotency_claim`` for many keys ({key: request hash}) at once: one INSERT claims
    every free key (committed on its own, as a single claim is) and one SELECT reads the
    others; per key the Claim, the Replay, or the ApiError (409/422) to answer with."""
    if not digests:
        return {}
    keys = list(digests)
    rows = _claim_statement(
        f"""
        INSERT INTO {_TABLE} (api_key_id, key, method, path, request_hash, state, created_at)
        SELECT %s, k, %s, %s, d, %s, clock_timestamp()
        FROM {_NO_FLUSH_WAIT}, unnest(%s::text[], %s::text[]) AS t(k, d)
        ON CONFLICT (api_key_id, key) DO NOTHING
        RETURNING key, id, created_at
        """,  # noqa: S608 - the table name is our own constant
        [
            api_key.pk,
            method,
            path,
            IdempotencyRecord.State.IN_FLIGHT,
            keys,
            [digests[k] for k in keys],
        ],
    )
    outcomes: dict[str, Claim | Replay | ApiError] = {
        key: Claim(record_id=record_id, lease=lease) for key, record_id, lease in rows
    }
    taken = [k for k in keys if k not in outcomes]
    if taken:
        records = {r.key: r for r in _records(api_key=api_key, keys=taken)}
        for key in taken:
            try:
                outcome = _existing(records.get(key), digests[key])
                if outcome is None:  # rare: it changed hands meanwhile; one key at a time
                    outcome = idempotency_claim(
                        api_key=api_key, key=key, method=method, path=path, digest=digests[key]
                    )
            except ApiError as exc:
                outcome = exc
            outcomes[key] = outcome
    return outcomes


def idempotency_complete(claim: Claim, *, status: int, content: str) -> bool:
    """Store the response if the claim is still ours; call inside the work's transaction.

    Written out: compiling the ORM's UPDATE cost more CPU than running it, once per
    request. The body is kept as a JSON string, as ``idempotency_complete_many`` keeps it.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_TABLE}
            SET state = %s, response_status = %s, response_body = to_jsonb(%s::text)
            WHERE id = %s AND state = %s AND created_at = %s
            """,  # noqa: S608 - the table name is our own constant
            [
                IdempotencyRecord.State.DONE,
                status,
                content,
                claim.record_id,
                IdempotencyRecord.State.IN_FLIGHT,
                claim.lease,
            ],
        )
        return cursor.rowcount == 1


def idempotency_complete_many(done: list[tuple[Claim, int, str]]) -> bool:
    """``idempotency_complete`` for many (claim, status, content) in one statement; True
    only if every claim was still ours."""
    if not done:
        return True
    # One JSON document rather than arrays: the client-side quoting of a text array
    # escapes every double quote of the stored bodies in Python, one at a time.
    rows = json.dumps(
        [
            {"id": c.record_id, "lease": c.lease.isoformat(), "status": status, "body": body}
            for c, status, body in done
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {_TABLE} AS r
            SET state = %s, response_status = v.status, response_body = to_jsonb(v.body)
            FROM jsonb_to_recordset(%s::jsonb)
                AS v(id bigint, lease timestamptz, status int, body text)
            WHERE r.id = v.id AND r.state = %s AND r.created_at = v.lease
            """,  # noqa: S608 - the table name is our own constant
            [IdempotencyRecord.State.DONE, rows, IdempotencyRecord.State.IN_FLIGHT],
        )
        return cursor.rowcount == len(done)


def idempotency_release_many(claims: list[Claim]) -> None:
    """``idempotency_release`` for many claims in one statement."""
    if not claims:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                DELETE FROM {_TABLE} AS r
                USING unnest(%s::bigint[], %s::timestamptz[]) AS v(id, lease)
                WHERE r.id = v.id AND r.state = %s AND r.created_at = v.lease
                """,  # noqa: S608 - the table name is our own constant
                [
                    [c.record_id for c in claims],
                    [c.lease for c in claims],
                    IdempotencyRecord.State.IN_FLIGHT,
                ],
            )
    except DatabaseError:
        logger.warning("idempotency: could not release %d claims", len(claims), exc_info=True)


def idempotency_release(claim: Claim) -> None:
    """Free the key after a request that had no effect, unless it changed hands meanwhile."""
    try:
        IdempotencyRecord.objects.filter(
            pk=claim.record_id, state=IdempotencyRecord.State.IN_FLIGHT, created_at=claim.lease
        ).delete()
    except DatabaseError:
        # The database is what failed; the row is abandoned and taken over after a minute.
        logger.warning("idempotency: could not release claim %s", claim.record_id, exc_info=True)


def idempotency_records_purge(*, now: dt.datetime | None = None) -> int:
    """Delete records older than the TTL; returns how many went."""
    cutoff = (now or timezone.now()) - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _by_model = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def _in_flight() -> ApiError:
    return ApiError(
        code="idempotency_key_in_flight",
        message=f"A request with this {HEADER} is still being processed; retry shortly.",
        status_code=409,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _key_from(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise ApiError(
            code="invalid_idempotency_key",
            message=f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters.",
            fields={HEADER: [f"Must be 1 to {MAX_KEY_LENGTH} characters."]},
        )
    return key


def _render(data: Any) -> str:
    # The same renderer DRF answers with, so a replay of the stored text is byte-identical.
    return JSONRenderer().render(data).decode()


class _NotStored(Exception):
    """Carries a non-2xx response out of the work transaction, rolling it back."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _LeaseLost(Exception):
    """Another request took the claim over while this one ran; its work is rolled back."""


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate a DRF view method (e.g. ``post``) to honour the Idempotency-Key header.

    Without the header the request runs as usual. The view method's work runs inside a
    transaction together with storing its response (see the module docstring).
    """

    @functools.wraps(handler)
    def wrapper(view, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = _key_from(request)
        if key is None:
            return handler(view, request, *args, **kwargs)
        digest = request_hash(method=request.method, path=request.path, body=request.data)
        outcome = idempotency_claim(
            api_key=request.auth, key=key, method=request.method, path=request.path, digest=digest
        )
        if isinstance(outcome, Replay):
            return Response(
                json.loads(outcome.content),
                status=outcome.status,
                headers={"Idempotent-Replayed": "true"},
            )
        try:
            with transaction.atomic():
                response = handler(view, request, *args, **kwargs)
                if not 200 <= response.status_code < 300:
                    raise _NotStored(response)
                content = _render(response.data)
                if not idempotency_complete(outcome, status=response.status_code, content=content):
                    raise _LeaseLost
        except _NotStored as exc:
            idempotency_release(outcome)
            return exc.response
        except _LeaseLost:
            raise _in_flight() from None
        except BaseException:
            idempotency_release(outcome)
            raise
        # Answer with the stored text's data so the first response and replays match exactly.
        response.data = json.loads(content)
        return response

    return wrapper
