"""Claiming due messages and handing them off: the SQL that makes a row ours.

- ``lock_due``: one ``SELECT ... FOR UPDATE SKIP LOCKED`` locks a batch of due rows
  for the caller's transaction (concurrent dispatchers never get the same row) and
  splits off those whose TTL passed;
- ``hand_off``: one ``UPDATE`` marks the rendered rows ``sending`` under a fresh
  attempt id, in that same transaction;
- ``mark_handed_off``: one ``UPDATE`` per small chunk, just before that chunk's
  provider calls, stamps ``handed_off_at`` and a fresh retry key: only these rows
  "may have gone out" if the worker dies;
- ``recover_stalled``: requeues claims of dead workers that never reached a
  provider, reconciles the ones that may have (a resend under the same retry key
  where the provider runs a key once) and, after a bounded wait with no provider
  report, settles them as ``failed`` with the code ``unknown_outcome``.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from channels.adapters import OutboundMessage, get_adapter
from orchestrator.delivery.dispatcher.outcomes import (
    RECORD_SENT_CTES,
    Outcome,
    as_json,
    insert_events,
    record,
    record_params,
    result_outcome,
    suppress_refused_addresses,
)
from orchestrator.delivery.dispatcher.send import (
    TRY_LOCK_SENDING_SQL,
    call_adapters,
    customers_sending,
    lock_params,
    taken_all,
    unlock_sending,
)
from orchestrator.delivery.models import MessageStatus
from orchestrator.delivery.services import kick_dispatcher
from orchestrator.delivery.trail import explain

#: A claim this old that never reached the provider belongs to a dead worker.
STALLED_AFTER = dt.timedelta(minutes=5)
#: LINE runs a retry key once for 24 hours: a resend under the same key is safe only
#: well inside that.
RETRY_KEY_LIFETIME = dt.timedelta(hours=23)
#: Messages "maybe sent" reconciled by a resend in one sweep, at most.
RECONCILE_LIMIT = 500


def unknown_outcome_wait() -> dt.timedelta:
    """How long a "maybe sent" message waits for a provider report before it is settled.

    ``DISPATCH_UNKNOWN_OUTCOME_WAIT_SECONDS`` (default 15 minutes): provider status
    callbacks come within seconds to minutes; past this, none is coming.
    """
    return dt.timedelta(seconds=getattr(settings, "DISPATCH_UNKNOWN_OUTCOME_WAIT_SECONDS", 900))


@dataclass(slots=True)
class Claimed:
    """A due message locked by this transaction: the columns the batch works from."""

    id: int
    customer_id: int
    topic_id: int
    template_id: int
    channel: str
    locale: str
    data: dict[str, Any]
    #: Provider attempts made before this one.
    attempts: int
    priority: int
    expires_at: dt.datetime | None
    journey: str
    requested_channel: str
    fallback_channel: str


#: Every due message: the lowest priority is 0.
ANY_PRIORITY = -1

# Walks message_claim_idx (priority DESC, send_after) from its start; ``above`` only cuts
# the walk short, so the priority lane's claim is the same index scan.
_LOCK_SQL = """
SELECT id, customer_id, topic_id, template_id, channel, locale, data, attempts, priority,
    expires_at, journey, requested_channel, fallback_channel
FROM delivery_message
WHERE status IN ('queued', 'scheduled', 'deferred') AND send_after <= %(now)s
    AND priority > %(above)s
ORDER BY priority DESC, send_after
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# The first row of the claim order: an index probe on message_claim_idx whatever the
# statistics say (an EXISTS with "priority > n" may be planned as a sequential scan,
# which on a table of millions of sent messages would cost a scan per chunk).
_FIRST_DUE_SQL = """
SELECT priority FROM delivery_message
WHERE status IN ('queued', 'scheduled', 'deferred') AND send_after <= %(now)s
ORDER BY priority DESC, send_after
LIMIT 1
"""


def due_above(cursor, *, priority: int, now: dt.datetime) -> bool:
    """Whether a message of a higher priority than ``priority`` is due (one index probe).

    Rows another dispatcher holds count too: the caller's claim then finds nothing
    and moves on.
    """
    cursor.execute(_FIRST_DUE_SQL, {"now": now})
    row = cursor.fetchone()
    return row is not None and row[0] > priority


# The lane's probe and a chunk's try-lock (``send.try_lock_sending``) in one round trip.
_DUE_AND_TRY_LOCK_SQL = f"""
SELECT ({_FIRST_DUE_SQL}), ARRAY({TRY_LOCK_SENDING_SQL})
"""


def due_above_or_try_lock(
    cursor, *, priority: int, now: dt.datetime, customer_ids: list[int]
) -> tuple[bool, list[int] | None]:
    """``due_above`` and ``send.try_lock_sending`` in one statement.

    Returns whether a higher priority is due and, if not, the send locks taken (None,
    and none held, if one was not free at once). When one is due, no lock is left held:
    the caller dispatches the lane first, then locks the chunk.
    """
    ids = sorted(set(customer_ids))
    cursor.execute(_DUE_AND_TRY_LOCK_SQL, {"now": now, **lock_params(ids)})
    first, taken = cursor.fetchone()
    higher = first is not None and first > priority
    if higher:
        unlock_sending(taken)
        return True, None
    return False, taken_all(ids, taken)


def lock_due(
    cursor, *, limit: int, now: dt.datetime, above: int = ANY_PRIORITY
) -> tuple[list[Claimed], list[Outcome]]:
    """Lock up to ``limit`` due messages for this transaction; split off the expired ones.

    Highest priority first, then the longest due. ``above``: only messages of a higher
    priority than this (the priority lane, see ``dispatcher``).

    The claim is a row lock, not a write: the rows stay waiting until the hand-off
    marks them ``sending`` in the same transaction, so a worker that dies before
    the hand-off leaves nothing to recover (its transaction rolls back).
    """
    cursor.execute(_LOCK_SQL, {"now": now, "limit": limit, "above": above})
    claimed: list[Claimed] = []
    expired: list[Outcome] = []
    for row in cursor.fetchall():
        message = Claimed(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            json.loads(row[6]) if isinstance(row[6], str) else (row[6] or {}),
            *row[7:],
        )
        if message.expires_at is not None and message.expires_at <= now:
            reason = "its expiry time passed before it could be sent"
            expired.append(
                Outcome(
                    message.id,
                    MessageStatus.EXPIRED,
                    reason,
                    explain(
                        "expiry",
                        MessageStatus.EXPIRED,
                        reason,
                        expires_at=message.expires_at.isoformat(),
                    ),
                    keep_handed_off=False,
                    code="expired",
                )
            )
        else:
            claimed.append(message)
    return claimed, expired


# Rows locked by this transaction (lock_due) become ``sending`` under this attempt; the
# previous attempt's retry key is dropped (each attempt gets its own at its chunk).
_HANDOFF_SQL = """
UPDATE delivery_message AS m SET
    status = 'sending', attempt_id = %(attempt_id)s, claimed_at = %(now)s,
    rendered = u.rendered, to_address = u.address, channel = u.channel,
    handed_off_at = NULL, retry_key = NULL, decided_at = %(now)s, updated_at = %(now)s,
    attempts = m.attempts + 1, explanation = m.explanation || u.entries
FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(
    id bigint, rendered jsonb, address text, channel text, entries jsonb)
WHERE m.id = u.id AND m.status IN ('queued', 'scheduled', 'deferred')
RETURNING m.id
"""


def hand_off(
    cursor, rows: list[dict[str, Any]], *, attempt_id: uuid.UUID, now: dt.datetime
) -> set[int]:
    """Mark the locked rows ``sending`` with their rendered snapshot; returns the ids marked.

    Not yet handed off: a worker that dies before a row's chunk is marked
    (``mark_handed_off``) leaves it to be requeued by ``recover_stalled``.
    """
    cursor.execute(_HANDOFF_SQL, {"rows": as_json(rows), "attempt_id": attempt_id, "now": now})
    return {row[0] for row in cursor.fetchall()}


# Re-checks each row: only rows still ``sending`` under this attempt and not yet handed
# off are called (an erasure may have removed them, recovery may have requeued them).
_HANDED_OFF_SQL = """
UPDATE delivery_message SET
    handed_off_at = %(now)s, retry_key = gen_random_uuid(), updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND attempt_id = %(attempt_id)s AND status = 'sending'
    AND handed_off_at IS NULL
RETURNING id, retry_key
"""


def mark_handed_off(
    cursor, message_ids: list[int], *, attempt_id: uuid.UUID, now: dt.datetime
) -> dict[int, uuid.UUID]:
    """Stamp one chunk handed off, just before its provider calls; returns id -> retry key.

    From here on a crash means "may have gone out": the row is reconciled, never
    blindly resent. Committed on its own (the caller is outside any transaction), so
    a kill during the calls leaves only this chunk in doubt.
    """
    cursor.execute(
        _HANDED_OFF_SQL, {"ids": list(message_ids), "attempt_id": attempt_id, "now": now}
    )
    return {row[0]: row[1] for row in cursor.fetchall()}


# A chunk's provider outcomes and the next chunk's hand-off in one statement (one
# implicit transaction): the rows are disjoint, and it commits as the two did together.
_AND_HAND_OFF = """
WITH {ctes}, handed AS (
    UPDATE delivery_message SET
        handed_off_at = %(handed_at)s, retry_key = gen_random_uuid(), updated_at = %(handed_at)s
    WHERE id = ANY(%(ids)s) AND attempt_id = %(attempt_id)s AND status = 'sending'
        AND handed_off_at IS NULL
    RETURNING id, retry_key
)
SELECT message_id, NULL::uuid FROM recorded
UNION ALL
SELECT id, retry_key FROM handed
"""
_RECORD_AND_HAND_OFF_SQL = _AND_HAND_OFF.format(ctes=RECORD_SENT_CTES)


def record_and_hand_off(
    cursor,
    outcomes: list[Outcome],
    message_ids: list[int],
    *,
    attempt_id: uuid.UUID,
    done: dt.datetime,
    now: dt.datetime,
) -> tuple[set[int], dict[int, uuid.UUID]]:
    """``outcomes.record`` of a called chunk (at ``done``) and ``mark_handed_off`` of the
    next one (at ``now``), in one statement; returns the ids recorded and id -> retry key
    of the rows handed off. The caller is outside any transaction: it commits on its own.
    """
    cursor.execute(
        _RECORD_AND_HAND_OFF_SQL,
        {
            **record_params(outcomes, attempt_id, done),
            "ids": list(message_ids),
            "handed_at": now,
        },
    )
    written: set[int] = set()
    keys: dict[int, uuid.UUID] = {}
    for message_id, key in cursor.fetchall():
        if key is None:
            written.add(message_id)
        else:
            keys[message_id] = key
    return written, keys


@dataclass
class RecoveryStats:
    requeued: int = 0
    awaiting_status: int = 0
    #: "Maybe sent" messages settled by a resend under the same retry key.
    reconciled: int = 0
    #: "Maybe sent" messages settled ``failed`` (``unknown_outcome``) after the wait.
    settled_unknown: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "requeued": self.requeued,
            "awaiting_status": self.awaiting_status,
            "reconciled": self.reconciled,
            "settled_unknown": self.settled_unknown,
        }


def recover_stalled(
    *, stalled_after: dt.timedelta = STALLED_AFTER, unknown_after: dt.timedelta | None = None
) -> RecoveryStats:
    """Requeue sends whose worker died before the provider call; reconcile the others.

    A stalled row without ``handed_off_at`` never reached an adapter, so sending
    it again cannot duplicate. A row with ``handed_off_at`` may have reached the
    provider: a provider status report settles it (webhooks); where the provider runs
    a retry key once (LINE), it is resent under the same key, which settles it either
    way; otherwise, after ``unknown_after`` (``unknown_outcome_wait()``) without a
    report, it is settled ``failed`` with the code ``unknown_outcome``, not resent.
    """
    now = timezone.now()
    cutoff = now - stalled_after
    stats = RecoveryStats()
    stats.requeued = _requeue_never_handed_off(now, cutoff)
    stats.reconciled = _reconcile_by_resend(now, cutoff)
    wait = unknown_outcome_wait() if unknown_after is None else unknown_after
    stats.settled_unknown = _settle_unknown(now, cutoff, now - wait, wait)
    stats.awaiting_status = _flag_awaiting_status(now, cutoff)
    if stats.requeued:
        kick_dispatcher()
    return stats


def _requeue_never_handed_off(now: dt.datetime, cutoff: dt.datetime) -> int:
    entry = explain(
        "recovery",
        MessageStatus.QUEUED,
        "the worker stopped before calling the provider; requeued (it was not sent)",
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE delivery_message SET
                status = 'queued', send_after = %s, attempt_id = NULL, claimed_at = NULL,
                updated_at = %s, explanation = explanation || jsonb_build_array(%s::jsonb)
            WHERE status = 'sending' AND handed_off_at IS NULL AND claimed_at < %s
            RETURNING id
            """,
            [now, now, json.dumps(entry), cutoff],
        )
        requeued = [row[0] for row in cursor.fetchall()]
        insert_events(
            cursor, [(mid, MessageStatus.QUEUED, entry["reason"]) for mid in requeued], now
        )
    return len(requeued)


def _idempotent_channels() -> list[str]:
    """Channels whose adapter runs a repeated request once (LINE's retry key)."""
    channels = []
    for alias in getattr(settings, "CHANNEL_ADAPTERS", {}) or {}:
        try:
            adapter = get_adapter(alias)
        except ImproperlyConfigured:
            continue
        if getattr(adapter, "idempotent_resend", False):
            channels.append(alias)
    return channels


_RECONCILE_CANDIDATES_SQL = """
SELECT id, customer_id FROM delivery_message
WHERE status = 'sending' AND channel = ANY(%(channels)s) AND retry_key IS NOT NULL
    AND handed_off_at < %(cutoff)s AND handed_off_at > %(key_life)s AND claimed_at < %(cutoff)s
ORDER BY id
LIMIT %(limit)s
"""

# Takes the rows over under a new attempt id (a late write of the stalled worker then
# matches nothing); the retry key, and so the request, stays the attempt's own.
_TAKE_OVER_SQL = """
UPDATE delivery_message SET attempt_id = %(attempt_id)s, claimed_at = %(now)s,
    updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND status = 'sending' AND retry_key IS NOT NULL
    AND handed_off_at < %(cutoff)s AND claimed_at < %(cutoff)s
RETURNING id, channel, to_address, rendered, retry_key, attempts, provider
"""


def _reconcile_by_resend(now: dt.datetime, cutoff: dt.datetime) -> int:
    """Resend "maybe sent" messages under their stored retry key; returns how many settled.

    LINE executes a key once: a 409 with the accepted request id means it had the
    message (sent, the same one), a 200 that it had not (sent now, once). Anything
    else leaves the doubt as it was: the row stays for the next sweep or the wait.
    """
    channels = _idempotent_channels()
    if not channels:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            _RECONCILE_CANDIDATES_SQL,
            {
                "channels": channels,
                "cutoff": cutoff,
                "key_life": now - RETRY_KEY_LIFETIME,
                "limit": RECONCILE_LIMIT,
            },
        )
        candidates = cursor.fetchall()
    if not candidates:
        return 0
    attempt_id = uuid.uuid4()
    # The send lock, as for any provider call: an erasure waits for this resend, and a
    # row it removed first is not resent.
    with customers_sending([customer_id for _id, customer_id in candidates]):
        with connection.cursor() as cursor:
            cursor.execute(
                _TAKE_OVER_SQL,
                {
                    "ids": [mid for mid, _c in candidates],
                    "attempt_id": attempt_id,
                    "now": now,
                    "cutoff": cutoff,
                },
            )
            rows = cursor.fetchall()
        outbound: dict[int, OutboundMessage] = {}
        attempts: dict[int, int] = {}
        for mid, channel, address, rendered, key, tries, _provider in rows:
            snapshot = json.loads(rendered) if isinstance(rendered, str) else (rendered or {})
            metadata: dict[str, Any] = {"retry_key": str(key)}
            if snapshot.get("line"):
                metadata["line"] = snapshot["line"]
            outbound[mid] = OutboundMessage(
                message_id=mid,
                channel=channel,
                to=address,
                body=snapshot.get("body", ""),
                subject=snapshot.get("subject", ""),
                html=snapshot.get("html", ""),
                metadata=metadata,
            )
            attempts[mid] = tries
        results = call_adapters(list(outbound.values())) if outbound else []
        done = timezone.now()
        outcomes = [
            _reconciled(result, provider, attempts[result.message_id], done)
            for result, provider in results
            if result.accepted or (result.permanent and not result.unknown)
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            written = record(cursor, outcomes, attempt_id, done)
            suppress_refused_addresses(results, outbound, written)
    return sum(1 for o in outcomes if o.message_id in written)


def _reconciled(result, provider: str, attempts: int, now: dt.datetime) -> Outcome:
    outcome = result_outcome(result, provider=provider, attempts=attempts, now=now)
    if not result.accepted:
        return outcome
    if result.detail.get("duplicate"):
        reason = (
            f"reconciled: {provider} already had this attempt's request (same retry key), "
            "so it was sent once"
        )
    else:
        reason = (
            f"reconciled: {provider} had not taken the interrupted request; sent now under "
            "the same retry key, once"
        )
    outcome.reason = reason
    outcome.entry = explain(
        "reconcile",
        MessageStatus.SENT,
        reason,
        provider=provider,
        provider_message_id=result.provider_message_id,
        attempt=attempts,
    )
    outcome.code = "reconciled"
    return outcome


#: Why a "maybe sent" message ends ``failed``: what we know, and what we did not do.
UNKNOWN_OUTCOME_REASON = (
    "outcome unknown: the worker stopped during the provider call (or the call's answer "
    "was lost) and no provider report came within {minutes} minutes; not resent, to avoid "
    "a duplicate"
)


def _settle_unknown(
    now: dt.datetime, cutoff: dt.datetime, wait_cutoff: dt.datetime, wait: dt.timedelta
) -> int:
    reason = UNKNOWN_OUTCOME_REASON.format(minutes=round(wait.total_seconds() / 60))
    entry = explain("reconcile", MessageStatus.FAILED, reason, code="unknown_outcome")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            WITH settled AS (
                UPDATE delivery_message SET
                    status = 'failed', last_error = %(reason)s, updated_at = %(now)s,
                    explanation = explanation || jsonb_build_array(%(entry)s::jsonb)
                WHERE status = 'sending' AND handed_off_at IS NOT NULL
                    AND handed_off_at < %(wait_cutoff)s AND claimed_at < %(cutoff)s
                RETURNING id
            )
            INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code)
            SELECT id, 'failed', %(now)s, %(reason)s, 'unknown_outcome' FROM settled
            RETURNING message_id
            """,
            {
                "reason": reason,
                "now": now,
                "entry": json.dumps(entry),
                "wait_cutoff": wait_cutoff,
                "cutoff": cutoff,
            },
        )
        return len(cursor.fetchall())


def _flag_awaiting_status(now: dt.datetime, cutoff: dt.datetime) -> int:
    entry = explain(
        "reconcile",
        "unknown",
        "outcome unknown: the provider may have it; awaiting provider status, not resent",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE delivery_message SET
                updated_at = %s, explanation = explanation || jsonb_build_array(%s::jsonb)
            WHERE status = 'sending' AND handed_off_at < %s AND claimed_at < %s
              AND NOT explanation @> '[{"step": "reconcile"}]'
            """,
            [now, json.dumps(entry), cutoff, cutoff],
        )
        return cursor.rowcount
