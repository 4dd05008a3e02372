"""Claiming due messages and handing them off: the SQL that makes a row ours.

- ``lock_due``: one ``SELECT ... FOR UPDATE SKIP LOCKED`` locks a batch of due rows
  for the caller's transaction (concurrent dispatchers never get the same row) and
  splits off those whose TTL passed;
- ``hand_off``: one ``UPDATE`` marks the rendered rows ``sending`` under a fresh
  attempt id, in that same transaction, just before the provider call;
- ``recover_stalled``: requeues claims of dead workers that never reached a
  provider, and flags the ones that may have.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from orchestrator.delivery.dispatcher.outcomes import Outcome, as_json, insert_events
from orchestrator.delivery.models import MessageStatus
from orchestrator.delivery.services import kick_dispatcher
from orchestrator.delivery.trail import explain

#: A claim this old that never reached the provider belongs to a dead worker.
STALLED_AFTER = dt.timedelta(minutes=5)


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


_LOCK_SQL = """
SELECT id, customer_id, topic_id, template_id, channel, locale, data, attempts, priority,
    expires_at, journey, requested_channel, fallback_channel
FROM delivery_message
WHERE status IN ('queued', 'scheduled', 'deferred') AND send_after <= %(now)s
ORDER BY priority DESC, send_after
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


def lock_due(cursor, *, limit: int, now: dt.datetime) -> tuple[list[Claimed], list[Outcome]]:
    """Lock up to ``limit`` due messages for this transaction; split off the expired ones.

    The claim is a row lock, not a write: the rows stay waiting until the hand-off
    marks them ``sending`` in the same transaction, so a worker that dies before
    the hand-off leaves nothing to recover (its transaction rolls back).
    """
    cursor.execute(_LOCK_SQL, {"now": now, "limit": limit})
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


# Rows locked by this transaction (lock_due) become ``sending`` under this attempt.
_HANDOFF_SQL = """
UPDATE delivery_message AS m SET
    status = 'sending', attempt_id = %(attempt_id)s, claimed_at = %(now)s,
    rendered = u.rendered, to_address = u.address, channel = u.channel,
    handed_off_at = %(now)s, decided_at = %(now)s, updated_at = %(now)s,
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

    From here on a crash means "may have gone out": the row is reconciled from
    provider status, never resent by us.
    """
    cursor.execute(_HANDOFF_SQL, {"rows": as_json(rows), "attempt_id": attempt_id, "now": now})
    return {row[0] for row in cursor.fetchall()}


@dataclass
class RecoveryStats:
    requeued: int = 0
    awaiting_status: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"requeued": self.requeued, "awaiting_status": self.awaiting_status}


def recover_stalled(*, stalled_after: dt.timedelta = STALLED_AFTER) -> RecoveryStats:
    """Requeue sends whose worker died before the provider call; flag the others once.

    A stalled row without ``handed_off_at`` never reached an adapter, so sending
    it again cannot duplicate. A row with ``handed_off_at`` may have reached the
    provider: it stays ``sending`` until a status webhook settles it.
    """
    now = timezone.now()
    cutoff = now - stalled_after
    requeue_entry = explain(
        "recovery",
        MessageStatus.QUEUED,
        "the worker stopped before calling the provider; requeued (it was not sent)",
    )
    unknown_entry = explain(
        "reconcile",
        "unknown",
        "outcome unknown: the provider may have it; awaiting provider status, not resent",
    )
    stats = RecoveryStats()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE delivery_message SET
                status = 'queued', send_after = %s, attempt_id = NULL, claimed_at = NULL,
                updated_at = %s, explanation = explanation || jsonb_build_array(%s::jsonb)
            WHERE status = 'sending' AND handed_off_at IS NULL AND claimed_at < %s
            RETURNING id
            """,
            [now, now, json.dumps(requeue_entry), cutoff],
        )
        requeued = [row[0] for row in cursor.fetchall()]
        insert_events(
            cursor,
            [(mid, MessageStatus.QUEUED, requeue_entry["reason"]) for mid in requeued],
            now,
        )
        cursor.execute(
            """
            UPDATE delivery_message SET
                updated_at = %s, explanation = explanation || jsonb_build_array(%s::jsonb)
            WHERE status = 'sending' AND handed_off_at IS NOT NULL AND claimed_at < %s
              AND NOT explanation @> '[{"step": "reconcile"}]'
            """,
            [now, json.dumps(unknown_entry), cutoff],
        )
        stats.awaiting_status = cursor.rowcount
    stats.requeued = len(requeued)
    if requeued:
        kick_dispatcher()
    return stats
