"""Prometheus metrics for ``/metrics``, kept cheap enough to scrape with 10 million messages.

Nothing here counts a large table per scrape. Each family reads the cheapest source
that is still exact:

* **Waiting backlog** (``orchestrator_messages_waiting``, ``..._due``,
  ``orchestrator_backlog_oldest_due_seconds``) and ``sending`` rows are read from
  the partial indexes ``message_claim_idx`` and ``message_sending_idx``: the work is
  proportional to the backlog, not the table. The oldest due row is one index probe
  per priority (the claim index leads with priority, so "min over all priorities"
  is ten short seeks).
* **Messages per channel and status** (``orchestrator_messages_total``) is a counter
  of ``MessageEvent`` rows (the message history every status change writes), rolled
  up into ``core_statuscount`` incrementally. Estimates from ``pg_class``/``pg_stats``
  are not counts, and counters in Redis would have to be incremented at every place
  that writes a status (dispatcher, webhooks, journeys, admin) - missing one silently
  undercounts. The history table is already that single place, so it is the source.
  The rollup runs inside the scrape (no extra beat entry): batches of
  ``ROLLUP_BATCH`` rows read by primary key after a cursor, for at most
  ``ROLLUP_BUDGET_SECONDS`` per scrape (a first scrape over a long history catches up
  over several scrapes). A row is counted under its message's channel at the time
  it is rolled up (a fallback moves a message to another channel).
  Ids are allocated before commit, so a plain "id > cursor" would skip a row whose
  transaction commits late; the cursor therefore only advances to a *horizon* - the
  sequence value seen at an earlier scrape - once every transaction of this database
  that was open then has ended (``pg_stat_activity``). Counts lag by one scrape.
* **Provider calls and webhook rejects** are events, not rows: they are counted in
  the broker's Redis (``HINCRBY``, atomic across workers) by :func:`provider_call_observe`
  (called by the dispatcher around each adapter call) and :func:`webhook_rejected`
  (called by the webhook views on a 403). A broker outage loses increments but
  never fails a send or a webhook; after a failed write the counters are skipped for
  ``BROKER_RETRY_SECONDS`` so a dead broker costs one timeout, not one per call. With
  a broker that is not Redis-protocol (AMQP) they are not kept at all
  (``orchestrator_metrics_broker_up`` is 0).
* **Active journey enrollments** is a count over the partial index
  ``enrollment_due_idx`` (active rows only): proportional to the active enrollments,
  not to the finished ones.

``tests/ops/test_query_plans.py`` checks with EXPLAIN that these queries read the
partial indexes on tables with many finished rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

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

# The queries below spell the ``message_claim_idx`` predicate exactly as the index does,
# "status IN ('queued', 'scheduled', 'deferred')", so the planner can use the index.
# "Due" is judged by the application's clock, as the dispatcher's claim does, not by the
# database's now() (the start of the transaction, and another machine's clock).
_WAITING_SQL = """
    SELECT channel, status, count(*), count(*) FILTER (WHERE send_after <= %(now)s)
    FROM delivery_message
    WHERE status IN ('queued', 'scheduled', 'deferred')
    GROUP BY channel, status
    ORDER BY channel, status
"""
# One index seek per priority (the claim index leads with it) instead of sorting the
# backlog on send_after.
_OLDEST_SQL = """
    SELECT min(f.first) FROM generate_series(0, 9) AS p(priority),
    LATERAL (
        SELECT send_after AS first FROM delivery_message
        WHERE status IN ('queued', 'scheduled', 'deferred') AND priority = p.priority
        ORDER BY send_after
        LIMIT 1
    ) AS f
"""
# ``message_sending_idx`` is partial on status = 'sending'.
_SENDING_SQL = """
    SELECT channel, count(*) FROM delivery_message
    WHERE status = 'sending'
    GROUP BY channel
    ORDER BY channel
"""
_TOTALS_SQL = "SELECT channel, status, count FROM core_statuscount ORDER BY channel, status"
# ``enrollment_due_idx`` is partial on status = 'active'.
_ENROLLMENTS_SQL = "SELECT count(*) FROM journeys_enrollment WHERE status = 'active'"

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


def _bucket_label(bound: float) -> str:
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
                pipe.hincrby(_LATENCY, f"{provider}{_SEP}{_bucket_label(bound)}", 1)
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


# --- the exposition --------------------------------------------------------------------


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((self.name + suffix, labels, value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _lines(families: Iterable[_Family]) -> Iterator[str]:
    for family in families:
        yield f"# HELP {family.name} {family.help}"
        yield f"# TYPE {family.name} {family.kind}"
        for name, labels, value in family.samples:
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            selector = f"{name}{{{rendered}}}" if rendered else name
            yield f"{selector} {_number(value)}"


def _database_families(now: dt.datetime) -> list[_Family]:
    waiting = _Family(
        "orchestrator_messages_waiting", "gauge", "Messages queued, scheduled or deferred."
    )
    due = _Family(
        "orchestrator_messages_due",
        "gauge",
        "Waiting messages whose send_after has passed: the due-but-unsent backlog.",
    )
    sending = _Family(
        "orchestrator_messages_sending",
        "gauge",
        "Messages claimed and not finished, or whose provider outcome is still unknown.",
    )
    oldest = _Family(
        "orchestrator_backlog_oldest_due_seconds",
        "gauge",
        "Age of the oldest due-but-unsent message (0 when nothing is due).",
    )
    totals = _Family(
        "orchestrator_messages_total",
        "counter",
        "Message status changes recorded in the message history, by channel and status.",
    )
    enrollments = _Family(
        "orchestrator_journey_enrollments_active", "gauge", "Journey enrollments still running."
    )
    with connection.cursor() as cursor:
        cursor.execute(_WAITING_SQL, {"now": now})
        for channel, status, n, n_due in cursor.fetchall():
            waiting.add(n, channel=channel, status=status)
            due.add(n_due, channel=channel, status=status)
        cursor.execute(_SENDING_SQL)
        for channel, n in cursor.fetchall():
            sending.add(n, channel=channel)
        cursor.execute(_OLDEST_SQL)
        first = cursor.fetchone()[0]
        oldest.add(max(0.0, (now - first).total_seconds()) if first else 0.0)
        cursor.execute(_TOTALS_SQL)
        for channel, status, n in cursor.fetchall():
            totals.add(n, channel=channel, status=status)
        cursor.execute(_ENROLLMENTS_SQL)
        enrollments.add(cursor.fetchone()[0])
    return [waiting, due, sending, oldest, totals, enrollments]


def _broker_families() -> list[_Family]:
    requests = _Family(
        "orchestrator_provider_requests_total",
        "counter",
        "Messages handed to a provider, by outcome (accepted, rejected, unknown).",
    )
    latency = _Family(
        "orchestrator_provider_latency_seconds",
        "histogram",
        "Duration of one adapter call (one batch, send-rate waits included) to a provider.",
    )
    rejected = _Family(
        "orchestrator_webhook_rejected_total",
        "counter",
        "Webhook requests refused for a missing or invalid signature.",
    )
    up = _Family(
        "orchestrator_metrics_broker_up",
        "gauge",
        "1 when the provider and webhook counters could be read from the broker.",
    )
    client = _redis()
    if client is None:
        up.add(0)
        return [up]
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(_REQUESTS)
        pipe.hgetall(_LATENCY)
        pipe.hgetall(_REJECTED)
        raw_requests, raw_latency, raw_rejected = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("metrics: broker counters unavailable: %s", exc)
        up.add(0)
        return [up]
    up.add(1)
    for key, value in sorted(raw_requests.items()):
        provider, outcome = key.decode().split(_SEP, 1)
        requests.add(int(value), provider=provider, outcome=outcome)
    by_provider: dict[str, dict[str, str]] = {}
    for key, value in raw_latency.items():
        provider, part = key.decode().split(_SEP, 1)
        by_provider.setdefault(provider, {})[part] = value.decode()
    for provider, parts in sorted(by_provider.items()):
        # Buckets are cumulative already: each observation incremented every bound above it.
        for bound in (*LATENCY_BUCKETS, math.inf):
            label = _bucket_label(bound)
            latency.add(int(parts.get(label, 0)), "_bucket", provider=provider, le=label)
        latency.add(float(parts.get("sum", 0)), "_sum", provider=provider)
        latency.add(int(parts.get("count", 0)), "_count", provider=provider)
    for key, value in sorted(raw_rejected.items()):
        rejected.add(int(value), provider=key.decode())
    return [requests, latency, rejected, up]


def render() -> str:
    """Roll up what is new, then the whole exposition (text format 0.0.4)."""
    started = time.monotonic()
    rollup_status_counts()
    families = _database_families(timezone.now()) + _broker_families()
    scrape = _Family(
        "orchestrator_metrics_scrape_seconds", "gauge", "Time taken to compute these metrics."
    )
    scrape.add(round(time.monotonic() - started, 6))
    return "\n".join(_lines([*families, scrape])) + "\n"
