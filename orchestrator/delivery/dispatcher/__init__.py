"""The dispatcher: runs batches of due messages through claim, compose, decide, send, record.

One batch is a handful of set-based statements whatever its size:

1. ``claim.lock_due`` locks due rows (``FOR UPDATE SKIP LOCKED``) and expires stale ones;
2. ``compose.load_batch`` loads what the batch needs, routes "preferred" messages and
   checks consent; ``decide.apply_policy`` runs the fatigue policy; ``compose.prepare``
   renders;
3. ``claim.hand_off`` marks the rendered rows ``sending`` under a fresh attempt id, and
   ``outcomes.record`` writes the held and failed ones, in the claiming transaction;
4. then chunk by chunk (``DISPATCH_SEND_CHUNK_SIZE``), holding the chunk's customers'
   send locks: ``claim.mark_handed_off`` stamps the chunk handed off (only rows still
   ours), ``send.call_adapters`` calls the providers *outside* any transaction, and
   ``outcomes.record`` writes every provider outcome with its history row.

A worker killed mid-batch leaves at most one chunk "maybe sent"; the rest were never
handed off and ``claim.recover_stalled`` requeues them. Every write after the hand-off
is guarded by ``attempt_id``: if a row was reclaimed while this worker was stuck, this
worker's late writes match nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.adapters import OutboundMessage
from orchestrator.delivery.dispatcher.claim import (
    Claimed,
    RecoveryStats,
    hand_off,
    lock_due,
    mark_handed_off,
    recover_stalled,
)
from orchestrator.delivery.dispatcher.compose import Prepared, fallbacks, load_batch, prepare
from orchestrator.delivery.dispatcher.decide import apply_policy
from orchestrator.delivery.dispatcher.outcomes import (
    DispatchStats,
    Outcome,
    record,
    result_outcome,
    suppress_refused_addresses,
    tally,
)
from orchestrator.delivery.dispatcher.send import call_adapters, customers_sending

__all__ = ["DispatchStats", "RecoveryStats", "dispatch_batch", "dispatch_due", "recover_stalled"]


def send_chunk_size() -> int:
    """Messages handed off together: what a killed worker can leave "maybe sent".

    ``DISPATCH_SEND_CHUNK_SIZE`` (default 50): a few rounds of an adapter's concurrent
    requests, and enough for SendGrid to group copies into one request.
    """
    return max(1, int(getattr(settings, "DISPATCH_SEND_CHUNK_SIZE", 50)))


def dispatch_batch(*, batch_size: int | None = None) -> DispatchStats:
    """Claim, decide, render, send and record one batch of due messages."""
    limit = batch_size or settings.DISPATCH_BATCH_SIZE
    stats = DispatchStats(batches=1)
    now = timezone.now()
    attempt_id = uuid.uuid4()
    with transaction.atomic(), connection.cursor() as cursor:
        claimed, expired = lock_due(cursor, limit=limit, now=now)
        stats.claimed = len(claimed) + len(expired)
        if not stats.claimed:
            return stats
        handed = _decide_and_hand_off(
            cursor, claimed, expired, attempt_id=attempt_id, now=now, stats=stats
        )
    if handed is not None:
        _send_and_record(handed, attempt_id=attempt_id, stats=stats)
    return stats


@dataclass
class _HandedOff:
    to_send: list[OutboundMessage]
    attempts: dict[int, int]
    fallbacks: dict[int, tuple[str, str]]
    expires: dict[int, dt.datetime | None]
    customers: dict[int, int]


def _decide_and_hand_off(
    cursor,
    claimed: Sequence[Claimed],
    expired: Sequence[Outcome],
    *,
    attempt_id: uuid.UUID,
    now: dt.datetime,
    stats: DispatchStats,
) -> _HandedOff | None:
    """Consent, fatigue policy, render and hand-off, in the transaction holding the rows.

    The customers' decision locks are held until the messages let through are marked
    ``decided_at`` (so a concurrent dispatcher counts them), and each message is
    written once before the provider call.
    """
    loaded = load_batch(claimed) if claimed else None
    held: list[Outcome] = []
    policy_entries: dict[int, dict[str, Any]] = {}
    prepared = Prepared()
    if loaded is not None:
        claimed, held, policy_entries = apply_policy(cursor, claimed, loaded, now=now, stats=stats)
        prepared = prepare(claimed, loaded, now)
    handed_off: set[int] = set()
    if prepared.sendable:
        rows = [
            {
                "id": o.message_id,
                "rendered": _with_line_spec(snapshot, o),
                "address": o.to,
                "channel": o.channel,
                "entries": [policy_entries[o.message_id]],
            }
            for o, snapshot in prepared.sendable
        ]
        handed_off = hand_off(cursor, rows, attempt_id=attempt_id, now=now)
    outcomes_now = [*expired, *held, *prepared.outcomes]
    written = record(cursor, outcomes_now, attempt_id, now, locked=True)
    tally(stats, outcomes_now, written)
    to_send = [o for o, _s in prepared.sendable if o.message_id in handed_off]
    stats.lost += len(prepared.sendable) - len(to_send)
    if not to_send or loaded is None:
        return None
    return _HandedOff(
        to_send,
        {m.id: m.attempts + 1 for m in claimed},
        fallbacks(claimed, loaded),
        {m.id: m.expires_at for m in claimed},
        {m.id: m.customer_id for m in claimed},
    )


def _with_line_spec(snapshot: dict[str, Any], outbound: OutboundMessage) -> dict[str, Any]:
    """The snapshot, plus a LINE message's kind: a reconciling resend sends the same."""
    spec = outbound.metadata.get("line")
    return {**snapshot, "line": spec} if spec else snapshot


def _send_and_record(handed: _HandedOff, *, attempt_id: uuid.UUID, stats: DispatchStats) -> None:
    """Hand off, call and record chunk by chunk, outside any transaction."""
    size = send_chunk_size()
    for start in range(0, len(handed.to_send), size):
        _send_chunk(handed, handed.to_send[start : start + size], attempt_id, stats)


def _send_chunk(
    handed: _HandedOff,
    chunk: list[OutboundMessage],
    attempt_id: uuid.UUID,
    stats: DispatchStats,
) -> None:
    """One chunk: its customers' send locks are held from the hand-off to the record."""
    with customers_sending([handed.customers[o.message_id] for o in chunk]):
        with connection.cursor() as cursor:
            keys = mark_handed_off(
                cursor, [o.message_id for o in chunk], attempt_id=attempt_id, now=timezone.now()
            )
        # Rows canceled (an erasure) or requeued (recovery) since the claim are not sent.
        live = [
            dataclasses.replace(o, metadata={**o.metadata, "retry_key": str(keys[o.message_id])})
            for o in chunk
            if o.message_id in keys
        ]
        stats.lost += len(chunk) - len(live)
        if live:
            _call_and_record(handed, live, attempt_id, stats)


def _call_and_record(
    handed: _HandedOff,
    to_send: list[OutboundMessage],
    attempt_id: uuid.UUID,
    stats: DispatchStats,
) -> None:
    """The provider calls (no transaction, no row lock held while we wait), then record."""
    results = call_adapters(to_send)
    done = timezone.now()
    outcomes = [
        result_outcome(
            result,
            provider=provider,
            attempts=handed.attempts[result.message_id],
            now=done,
            fallback=handed.fallbacks.get(result.message_id),
            expires_at=handed.expires.get(result.message_id),
        )
        for result, provider in results
    ]
    sent = {o.message_id: o for o in to_send}
    with transaction.atomic(), connection.cursor() as cursor:
        written = record(cursor, outcomes, attempt_id, done)
        suppress_refused_addresses(results, sent, written)
    tally(stats, outcomes, written)


def dispatch_due(
    *, time_budget: float = 20.0, batch_size: int | None = None
) -> tuple[DispatchStats, bool]:
    """Dispatch batches until nothing is due or ``time_budget`` seconds have passed.

    Returns the totals and whether the budget ran out with work possibly left.
    """
    limit = batch_size or settings.DISPATCH_BATCH_SIZE
    deadline = time.monotonic() + time_budget
    total = DispatchStats()
    while True:
        stats = dispatch_batch(batch_size=limit)
        total.add(stats)
        out_of_time = time.monotonic() >= deadline
        if stats.busy and not out_of_time:
            # Messages left for customers another dispatcher was deciding: they are due
            # again the moment its transaction ends. Give it that moment if this batch
            # made no progress of its own.
            if stats.busy == stats.claimed:
                time.sleep(0.02)
            continue
        # A short batch means the due set is drained (or the rest is locked by
        # another dispatcher, which will finish it).
        if stats.claimed < limit and not stats.busy:
            return total, False
        if out_of_time:
            return total, True
