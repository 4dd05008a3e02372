"""Counters the platform keeps for ``/metrics`` without counting large tables.

* **Provider calls and webhook rejects** are events, not rows: they are counted in
  the broker's Redis (``HINCRBY``, atomic across workers) by :func:`provider_call_observe`
  (called by the dispatcher around each adapter call) and :func:`webhook_rejected`
  (called by the webhook views on a 403). A broker outage loses increments but
  never fails a send or a webhook; after a failed write the counters are skipped for
  ``BROKER_RETRY_SECONDS`` so a dead broker costs one timeout, not one per call. With
  a broker that is not Redis-protocol (AMQP) they are not kept at all.
* **Messages per channel and status** is a counter of ``MessageEvent`` rows (the
  message history every status change writes), rolled up into ``core_statuscount``
  incrementally by :func:`rollup_status_counts` (see ``orchestrator.core.rollup`` for
  why the cursor only advances to a horizon). Estimates from ``pg_class`` are not
  counts, and counters in Redis would have to be incremented at every place that
  writes a status - missing one silently undercounts - so the history table is the source.

``orchestrator.ops.metrics`` reads them (and the backlog) into the exposition.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings

from orchestrator.core.rollup import Rollup, rollup_run

logger = logging.getLogger(__name__)

#: Message-history rows folded into the status counters per transaction.
ROLLUP_BATCH = 20_000
#: Seconds a scrape may spend folding new history rows before it answers.
ROLLUP_BUDGET_SECONDS = 2.0
#: After a failed counter write, seconds during which counters are not written at all.
BROKER_RETRY_SECONDS = 10.0
ROLLUP_NAME = "message_events"

#: Upper bounds (seconds) of the provider latency histogram buckets.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_KEY = "orchestrator:metrics:"
_REQUESTS = _KEY + "provider_requests"  # field "provider\toutcome"
_LATENCY = _KEY + "provider_latency"  # fields "provider\t<le>", "provider\tsum", "provider\tcount"
_REJECTED = _KEY + "webhook_rejected"  # field provider
_SEP = "\t"

_REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "valkey": "redis", "valkeys": "rediss"}


# --- counters in the broker ------------------------------------------------------------


@functools.cache
def _redis() -> redis.Redis | None:
    """A client for the broker, or None when the broker does not speak the Redis protocol."""
    url = settings.CELERY_BROKER_URL or ""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _REDIS_SCHEMES:
        return None
    # Short timeouts: a counter must never hold up a send or a webhook answer.
    return redis.Redis.from_url(
        _REDIS_SCHEMES[scheme] + url[len(scheme) :],
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )


#: ``time.monotonic()`` before which counter writes are skipped (the broker just failed).
_skip_writes_until = 0.0


def _writer() -> redis.Redis | None:
    if time.monotonic() < _skip_writes_until:
        return None
    return _redis()


def _write_failed(what: str, exc: Exception) -> None:
    global _skip_writes_until
    _skip_writes_until = time.monotonic() + BROKER_RETRY_SECONDS
    logger.warning(
        "metrics: could not count %s (%s); not counting for %ss", what, exc, BROKER_RETRY_SECONDS
    )


def bucket_label(bound: float) -> str:
    """The ``le`` label of a latency bucket."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def provider_call_observe(
    *, provider: str, seconds: float, accepted: int, rejected: int, unknown: int
) -> None:
    """Count one adapter call: its duration and how each message in it came out."""
    client = _writer()
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for outcome, n in (("accepted", accepted), ("rejected", rejected), ("unknown", unknown)):
            if n:
                pipe.hincrby(_REQUESTS, f"{provider}{_SEP}{outcome}", n)
        for bound in (*LATENCY_BUCKETS, math.inf):
            if seconds <= bound:
                pipe.hincrby(_LATENCY, f"{provider}{_SEP}{bucket_label(bound)}", 1)
        pipe.hincrbyfloat(_LATENCY, f"{provider}{_SEP}sum", seconds)
        pipe.hincrby(_LATENCY, f"{provider}{_SEP}count", 1)
        pipe.execute()
    except redis.RedisError as exc:
        _write_failed(f"a {provider} call", exc)


def outcome_counts(results: Sequence[Any]) -> dict[str, int]:
    """``accepted``/``rejected``/``unknown`` counts of an adapter's ``SendResult`` list."""
    accepted = sum(1 for r in results if r.accepted)
    unknown = sum(1 for r in results if not r.accepted and r.unknown)
    return {"accepted": accepted, "unknown": unknown, "rejected": len(results) - accepted - unknown}


def webhook_rejected(provider: str) -> None:
    """Count a webhook refused for a missing or invalid signature."""
    client = _writer()
    if client is None:
        return
    try:
        client.hincrby(_REJECTED, provider, 1)
    except redis.RedisError as exc:
        _write_failed(f"a rejected {provider} webhook", exc)


@dataclass
class BrokerCounters:
    """The counters as last written to the broker."""

    #: (provider, outcome) -> messages.
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    #: provider -> {bucket label ("0.05" ... "+Inf"), "sum", "count"} -> raw value.
    latency: dict[str, dict[str, str]] = field(default_factory=dict)
    #: provider -> rejected webhook requests.
    rejected: dict[str, int] = field(default_factory=dict)


def broker_counters() -> BrokerCounters | None:
    """The provider and webhook counters, or None when the broker cannot be read
    (not Redis-protocol, or down)."""
    client = _redis()
    if client is None:
        return None
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(_REQUESTS)
        pipe.hgetall(_LATENCY)
        pipe.hgetall(_REJECTED)
        raw_requests, raw_latency, raw_rejected = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("metrics: broker counters unavailable: %s", exc)
        return None
    counters = BrokerCounters()
    for key, value in raw_requests.items():
        provider, outcome = key.decode().split(_SEP, 1)
        counters.requests[(provider, outcome)] = int(value)
    for key, value in raw_latency.items():
        provider, part = key.decode().split(_SEP, 1)
        counters.latency.setdefault(provider, {})[part] = value.decode()
    for key, value in raw_rejected.items():
        counters.rejected[key.decode()] = int(value)
    return counters


# --- the status rollup -----------------------------------------------------------------


_STATUS_ROLLUP = Rollup(
    name=ROLLUP_NAME,
    table="delivery_messageevent",
    fold_sql="""
        WITH batch AS (
            SELECT e.id, e.status, m.channel
            FROM delivery_messageevent e
            JOIN delivery_message m ON m.id = e.message_id
            WHERE e.id > %(last)s AND e.id <= %(horizon)s
            ORDER BY e.id
            LIMIT %(batch)s
        ), counted AS (
            INSERT INTO core_statuscount (channel, status, count)
            SELECT channel, status, count(*) FROM batch GROUP BY channel, status
            ON CONFLICT (channel, status)
            DO UPDATE SET count = core_statuscount.count + EXCLUDED.count
        )
        SELECT count(*), max(id) FROM batch
    """,
)


def rollup_status_counts(
    *, batch: int = ROLLUP_BATCH, budget_seconds: float = ROLLUP_BUDGET_SECONDS
) -> int:
    """Fold new message-history rows into ``core_statuscount``; returns how many were read.

    Safe to call from several processes at once (see orchestrator.core.rollup).
    """
    return rollup_run(_STATUS_ROLLUP, batch=batch, budget_seconds=budget_seconds)
