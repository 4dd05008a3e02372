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
   ``outcomes.record`` writes every provider outcome with its history row - in the
   same statement as the next chunk's hand-off (``claim.record_and_hand_off``; in the
   same transaction when a refused address is suppressed with it), so a chunk costs
   one commit.

The priority lane: before each chunk, one index probe (in the same round trip as the
chunk's send locks, when they are tried) asks whether a message of a
higher priority than the chunk's has come due (a triggered or transactional send
queued while this batch, say of a broadcast, was being worked). If so, a batch of
only those is dispatched first, then the chunks go on: such a message waits for at
most one chunk's provider calls, not for the rest of a thousand-message batch.

A worker killed mid-batch leaves at most one chunk "maybe sent"; the rest were never
handed off and ``claim.recover_stalled`` requeues them. Every write after the hand-off
is guarded by ``attempt_id``: if a row was reclaimed while this worker was stuck, this
worker's late writes match nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import gc
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from channels.adapters import OutboundMessage, SendResult
from orchestrator.delivery.dispatcher.claim import (
    ANY_PRIORITY,
    Claimed,
    RecoveryStats,
    due_above,
    due_above_or_try_lock,
    hand_off,
    lock_due,
    mark_handed_off,
    record_and_hand_off,
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
from orchestrator.delivery.dispatcher.send import (
    call_adapters,
    lock_sending,
    try_lock_sending,
    unlock_sending,
)

__all__ = ["DispatchStats", "RecoveryStats", "dispatch_batch", "dispatch_due", "recover_stalled"]


def send_chunk_size() -> int:
    """Messages handed off together: what a killed worker can leave "maybe sent".

    ``DISPATCH_SEND_CHUNK_SIZE`` (default 50): a few rounds of an adapter's concurrent
    requests, and enough for SendGrid to group copies into one request.
    """
    return max(1, int(getattr(settings, "DISPATCH_SEND_CHUNK_SIZE", 50)))


#: The highest priority a message can have: nothing can overtake it.
TOP_PRIORITY = 9


def dispatch_batch(*, batch_size: int | None = None, above: int = ANY_PRIORITY) -> DispatchStats:
    """Claim, decide, render, send and record one batch of due messages.

    ``above``: only messages of a higher priority than this (the priority lane).
    """
    limit = batch_size or settings.DISPATCH_BATCH_SIZE
    stats = DispatchStats(batches=1)
    now = timezone.now()
    attempt_id = uuid.uuid4()
    with transaction.atomic(), connection.cursor() as cursor:
        claimed, expired = lock_due(cursor, limit=limit, now=now, above=above)
        stats.claimed = len(claimed) + len(expired)
        if not stats.claimed:
            return stats
        handed = _decide_and_hand_off(
            cursor, claimed, expired, attempt_id=attempt_id, now=now, stats=stats
        )
    if handed is not None:
        _send_and_record(handed, attempt_id=attempt_id, stats=stats, limit=limit)
    return stats


@dataclass
class _HandedOff:
    to_send: list[OutboundMessage]
    attempts: dict[int, int]
    fallbacks: dict[int, tuple[str, str]]
    expires: dict[int, dt.datetime | None]
    customers: dict[int, int]
    priorities: dict[int, int]


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
        {m.id: m.priority for m in claimed},
    )


def _with_line_spec(snapshot: dict[str, Any], outbound: OutboundMessage) -> dict[str, Any]:
    """The snapshot, plus a LINE message's kind: a reconciling resend sends the same."""
    spec = outbound.metadata.get("line")
    return {**snapshot, "line": spec} if spec else snapshot


def _send_and_record(
    handed: _HandedOff, *, attempt_id: uuid.UUID, stats: DispatchStats, limit: int
) -> None:
    """Hand off, call and record chunk by chunk, outside any transaction.

    Each chunk's customers' send locks are held from its hand-off to its record. The
    record of one chunk and the hand-off of the next are one transaction (one commit,
    not two), so exactly one chunk at a time is "maybe sent". Before each chunk,
    whatever of a higher priority came due meanwhile is dispatched first.
    """
    size = send_chunk_size()
    called: _Called | None = None
    try:
        for start in range(0, len(handed.to_send), size):
            chunk = handed.to_send[start : start + size]
            priority = max(handed.priorities[o.message_id] for o in chunk)
            customers = [handed.customers[o.message_id] for o in chunk]
            locked = None
            # Without waiting, while the chunk before still holds its locks (see below).
            try_lock = called is not None and not set(customers) & set(called.locked)
            if try_lock and priority < TOP_PRIORITY:
                higher, locked = _higher_due_or_try_lock(priority, customers)
            else:
                higher = _higher_due(priority)
                if try_lock:
                    locked = try_lock_sending(customers)
            if higher:
                if called is not None:
                    pending, called = called, None
                    _record_called(pending, attempt_id, stats)
                _overtake(priority, stats, limit)
            if locked is None and called is not None:
                # A customer of both chunks (a lock this session holds is taken again
                # without queuing, so an erasure waiting for it would wait for ever),
                # or an erasure holds or wants one of this chunk's: record the chunk
                # sent and let go of its locks before waiting for these.
                pending, called = called, None
                _record_called(pending, attempt_id, stats)
            if locked is None:
                locked = lock_sending(customers)
            try:
                keys = _record_and_hand_off(called, chunk, attempt_id, stats)
            except BaseException:
                unlock_sending(locked)
                raise
            if called is not None:
                unlock_sending(called.locked)
                called = None
            # Rows canceled (an erasure) or requeued (recovery) since the claim are not sent.
            live = [
                dataclasses.replace(
                    o, metadata={**o.metadata, "retry_key": str(keys[o.message_id])}
                )
                for o in chunk
                if o.message_id in keys
            ]
            stats.lost += len(chunk) - len(live)
            if not live:
                unlock_sending(locked)
                continue
            called = _call(handed, live, locked)
        if called is not None:
            pending, called = called, None
            _record_called(pending, attempt_id, stats)
    finally:
        if called is not None:
            # Left "maybe sent" (handed off, not recorded): reconciled, never resent.
            unlock_sending(called.locked)


@dataclass
class _Called:
    """A chunk the providers answered for, not yet recorded; its send locks still held."""

    outcomes: list[Outcome]
    results: list[tuple[SendResult, str]]
    sent: dict[int, OutboundMessage]
    done: dt.datetime
    locked: list[int]


def _higher_due(priority: int) -> bool:
    """Whether a message of a higher priority than ``priority`` is due (the lane's probe)."""
    if priority >= TOP_PRIORITY:
        return False
    with connection.cursor() as cursor:
        return due_above(cursor, priority=priority, now=timezone.now())


def _higher_due_or_try_lock(priority: int, customers: list[int]) -> tuple[bool, list[int] | None]:
    """The lane's probe and the chunk's try-lock in one round trip: whether a higher
    priority is due (then no lock is held) and the locks taken (None if not all free)."""
    with connection.cursor() as cursor:
        return due_above_or_try_lock(
            cursor, priority=priority, now=timezone.now(), customer_ids=customers
        )


def _overtake(priority: int, stats: DispatchStats, limit: int) -> None:
    """The priority lane: dispatch one batch of due messages of a higher priority than
    ``priority``.

    Called between two chunks, when nothing of this batch is locked or in flight (its
    rows are ``sending`` under its attempt id, which no claim takes), so the lane's
    batch is an ordinary one. Its own chunks let only still higher priorities overtake
    them, so the nesting ends by priority 9. One lane batch per chunk at most: a flood
    of urgent messages slows this batch down but never parks it until recovery would
    take its rows back.
    """
    lane = dispatch_batch(batch_size=limit, above=priority)
    stats.add(lane)
    stats.overtaken += lane.claimed


def _record_and_hand_off(
    called: _Called | None,
    chunk: list[OutboundMessage],
    attempt_id: uuid.UUID,
    stats: DispatchStats,
) -> dict[int, uuid.UUID]:
    """Record the chunk sent before (if any) and stamp this one handed off, in one
    transaction; returns this chunk's id -> retry key for the rows still ours."""
    ids = [o.message_id for o in chunk]
    if called is None:
        with connection.cursor() as cursor:
            return mark_handed_off(cursor, ids, attempt_id=attempt_id, now=timezone.now())
    if not _refusals(called):
        # One statement, so one round trip and one commit for both.
        with connection.cursor() as cursor:
            written, keys = record_and_hand_off(
                cursor,
                called.outcomes,
                ids,
                attempt_id=attempt_id,
                done=called.done,
                now=timezone.now(),
            )
        tally(stats, called.outcomes, written)
        return keys
    with transaction.atomic(), connection.cursor() as cursor:
        written = _write_called(cursor, called, attempt_id)
        keys = mark_handed_off(cursor, ids, attempt_id=attempt_id, now=timezone.now())
    tally(stats, called.outcomes, written)
    return keys


def _call(handed: _HandedOff, to_send: list[OutboundMessage], locked: list[int]) -> _Called:
    """The provider calls: no transaction, no row lock held while we wait."""
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
    return _Called(outcomes, results, {o.message_id: o for o in to_send}, done, locked)


def _refusals(called: _Called) -> bool:
    """Whether a provider called an address unusable: its suppression is written with
    the outcome, in one transaction (``_write_called``)."""
    return any(result.suppress and not result.accepted for result, _p in called.results)


def _write_called(cursor, called: _Called, attempt_id: uuid.UUID) -> set:
    """The outcomes and their history rows, and the addresses a provider refused for good
    (in the caller's transaction: the refusal and its suppression land together)."""
    written = record(cursor, called.outcomes, attempt_id, called.done)
    suppress_refused_addresses(called.results, called.sent, written)
    return written


def _record_called(called: _Called, attempt_id: uuid.UUID, stats: DispatchStats) -> None:
    """Record a called chunk on its own, then release its customers' send locks."""
    try:
        if _refusals(called):
            with transaction.atomic(), connection.cursor() as cursor:
                written = _write_called(cursor, called, attempt_id)
        else:
            # One statement: it commits on its own, without a transaction's two round trips.
            with connection.cursor() as cursor:
                written = record(cursor, called.outcomes, attempt_id, called.done)
    finally:
        unlock_sending(called.locked)
    tally(stats, called.outcomes, written)


@functools.cache
def _freeze_long_lived_objects() -> None:
    """Once per process, before its first dispatch: what the process holds by then
    (Django, the apps, their modules and caches) lives as long as the process, so it is
    collected once and then left out of the collector's full passes (``gc.freeze``).

    Each full pass walked every one of those objects again, every few batches: in
    ``bench.dispatch`` the collector took 15-20% of a worker's CPU, mostly in full
    passes, and about a third of that once they are frozen. A batch's own objects are
    collected as before.
    """
    gc.collect()
    gc.freeze()


def dispatch_due(
    *, time_budget: float = 20.0, batch_size: int | None = None, above: int = ANY_PRIORITY
) -> tuple[DispatchStats, bool]:
    """Dispatch batches until nothing is due or ``time_budget`` seconds have passed.

    ``above``: only messages of a higher priority than this (the lane worker's share).
    Returns the totals and whether the budget ran out with work possibly left.
    """
    _freeze_long_lived_objects()
    limit = batch_size or settings.DISPATCH_BATCH_SIZE
    deadline = time.monotonic() + time_budget
    total = DispatchStats()
    while True:
        stats = dispatch_batch(batch_size=limit, above=above)
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
