"""The provider calls: one adapter call per channel in a chunk, outside any transaction.

An adapter that raises leaves its messages "maybe sent" (unknown), never retried
into a duplicate; a message the adapter returned no result for is unknown too.

A chunk's calls run while its customers' send locks are held (``customers_sending``,
shared): an erasure takes the same lock exclusively (``wait_for_sends``), so it waits
for calls in flight and no call for the person starts after it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connection

from channels.adapters import OutboundMessage, SendResult, get_adapter
from orchestrator.core.metrics import outcome_counts, provider_call_observe

logger = logging.getLogger("orchestrator.delivery.dispatcher")

#: Advisory lock keys of the send lock: a namespace in the high bits, the customer id in
#: the low ones (the fatigue policy's decision lock uses another namespace).
_SEND_LOCK = 0x5E4D << 40


@contextmanager
def customers_sending(customer_ids: Sequence[int]) -> Iterator[None]:
    """Hold the customers' send locks, shared, on this connection's session.

    Session locks, not transaction ones: they span the hand-off, the provider calls
    (outside any transaction) and the recording. A killed worker's session ends and
    the server releases them. Taken in id order; shared locks never wait on each other,
    only on an erasure holding one of them.
    """
    ids = lock_sending(customer_ids)
    try:
        yield
    finally:
        unlock_sending(ids)


def lock_sending(customer_ids: Iterable[int]) -> list[int]:
    """Take the customers' send locks, shared, in id order, waiting for an erasure holding
    one; returns the ids locked (give them to ``unlock_sending``)."""
    ids = sorted(set(customer_ids))
    if ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_lock_shared(%s + k) FROM unnest(%s::bigint[]) AS k ORDER BY k",
                [_SEND_LOCK, ids],
            )
    return ids


#: The send locks of ``%(customers)s`` that are free at once, taken shared (the ids).
TRY_LOCK_SENDING_SQL = (
    "SELECT k FROM unnest(%(customers)s::bigint[]) AS k"
    " WHERE pg_try_advisory_lock_shared(%(send_lock)s + k)"
)


def lock_params(ids: list[int]) -> dict[str, Any]:
    """The parameters of ``TRY_LOCK_SENDING_SQL`` for these customers."""
    return {"customers": ids, "send_lock": _SEND_LOCK}


def try_lock_sending(customer_ids: Iterable[int]) -> list[int] | None:
    """Take all the customers' send locks, shared, without waiting; None (and none held)
    if one is not free at once (an erasure holds or waits for it).

    For a caller already holding other send locks: never waiting, it cannot close a
    cycle with an erasure waiting for one of those.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return ids
    with connection.cursor() as cursor:
        cursor.execute(TRY_LOCK_SENDING_SQL, lock_params(ids))
        taken = [row[0] for row in cursor.fetchall()]
    return taken_all(ids, taken)


def taken_all(ids: list[int], taken: Sequence[int]) -> list[int] | None:
    """All or nothing: ``ids`` if every lock was ``taken``, else None, the taken released."""
    if len(taken) == len(ids):
        return ids
    unlock_sending(taken)
    return None


def unlock_sending(ids: Sequence[int]) -> None:
    """Release send locks taken by ``lock_sending`` or ``try_lock_sending``."""
    if not ids:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock_shared(%s + k) FROM unnest(%s::bigint[]) AS k",
                [_SEND_LOCK, list(ids)],
            )
    except DatabaseError:
        # Ending the session releases its locks.
        connection.close()


def wait_for_sends(cursor, customer_id: int) -> None:
    """Take the customer's send lock exclusively until the transaction ends.

    Waits for every chunk of theirs being handed off, called or recorded; a chunk that
    starts later waits for this transaction, then finds its rows gone or canceled.
    """
    cursor.execute("SELECT pg_advisory_xact_lock(%s + %s)", [_SEND_LOCK, customer_id])


def call_adapters(
    sendable: Sequence[OutboundMessage],
) -> list[tuple[SendResult, str]]:
    """Send grouped by channel; returns (result, provider) for every message."""
    by_channel: dict[str, list[OutboundMessage]] = defaultdict(list)
    for outbound in sendable:
        by_channel[outbound.channel].append(outbound)
    results: list[tuple[SendResult, str]] = []
    for channel, batch in by_channel.items():
        adapter = get_adapter(channel)
        provider = adapter.provider
        started = time.monotonic()
        try:
            channel_results = adapter.send(batch)
        except Exception as exc:
            # We cannot tell whether the request reached the provider, so these are
            # "maybe sent": left for reconciliation rather than retried into a duplicate.
            logger.exception("adapter %s failed for %d %s messages", provider, len(batch), channel)
            channel_results = [
                SendResult(
                    message_id=m.message_id,
                    accepted=False,
                    unknown=True,
                    error=f"{type(exc).__name__}: {exc}",
                    error_code="adapter_error",
                )
                for m in batch
            ]
        elapsed = time.monotonic() - started
        provider_call_observe(provider=provider, seconds=elapsed, **outcome_counts(channel_results))
        by_id = {r.message_id: r for r in channel_results}
        for outbound in batch:
            result = by_id.get(outbound.message_id) or SendResult(
                message_id=outbound.message_id,
                accepted=False,
                unknown=True,
                error="the adapter returned no result for this message",
                error_code="missing_result",
            )
            results.append((_own_duplicate(result, outbound), provider))
    return results


def _own_duplicate(result: SendResult, outbound: OutboundMessage) -> SendResult:
    """A provider's "already accepted" counts as sent only for this attempt's own key.

    LINE answers a repeated retry key with 409 and the first request's id: that is
    this message only if the key is the one stored for this attempt. Any other key's
    duplicate means LINE dropped our message as someone else's: not sent, and safe
    to try again under a fresh key.
    """
    if not (result.accepted and result.detail.get("duplicate")):
        return result
    stored = outbound.metadata.get("retry_key")
    if stored and str(result.detail.get("retry_key", "")).lower() == str(stored).lower():
        return result
    return SendResult(
        message_id=result.message_id,
        accepted=False,
        error="the provider took the request for a repeat of another one (its retry key "
        "is not this attempt's), so it did not send it",
        error_code="retry_key_not_ours",
        detail=result.detail,
    )
