"""Prometheus metrics for ``/metrics``, kept cheap enough to scrape with 10 million messages.

Nothing here counts a large table per scrape. Each family reads the cheapest source
that is still exact:

* **Waiting backlog** (``orchestrator_messages_waiting``, ``..._due``,
  ``orchestrator_backlog_oldest_due_seconds``) and ``sending`` rows are read from
  the partial indexes ``message_claim_idx`` and ``message_sending_idx``: the work is
  proportional to the backlog, not the table; so is
  ``orchestrator_messages_awaiting_reconciliation`` (``sending`` rows a stalled send
  left "maybe sent"). The oldest due row is one index probe
  per priority (the claim index leads with priority, so "min over all priorities"
  is ten short seeks).
* **Messages per channel and status** (``orchestrator_messages_total``) reads the
  ``core_statuscount`` rollup of the message history (``orchestrator.core.metrics``).
  The rollup runs inside the scrape (no extra beat entry), for at most
  ``ROLLUP_BUDGET_SECONDS`` per scrape (a first scrape over a long history catches up
  over several scrapes). A row is counted under its message's channel at the time
  it is rolled up (a fallback moves a message to another channel). Counts lag by one
  scrape.
* **Provider calls and webhook rejects** are the broker counters of
  ``orchestrator.core.metrics`` (``orchestrator_metrics_broker_up`` is 0 when they
  cannot be read).
* **Active journey enrollments** is a count over the partial index
  ``enrollment_due_idx`` (active rows only): proportional to the active enrollments,
  not to the finished ones.

``tests/ops/test_query_plans.py`` checks with EXPLAIN that these queries read the
partial indexes on tables with many finished rows.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db import connection
from django.utils import timezone

from orchestrator.core.metrics import (
    LATENCY_BUCKETS,
    broker_counters,
    bucket_label,
    rollup_status_counts,
)
from orchestrator.delivery.dispatcher.claim import STALLED_AFTER

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
# "Maybe sent" rows left by a stalled send (a live provider call takes seconds, never
# ``STALLED_AFTER``): waiting for a provider report, a resend under the same retry key,
# or the bounded wait. Also read from ``message_sending_idx``.
_AWAITING_RECONCILIATION_SQL = """
    SELECT channel, count(*) FROM delivery_message
    WHERE status = 'sending' AND handed_off_at < %(stalled)s
    GROUP BY channel
    ORDER BY channel
"""
_TOTALS_SQL = "SELECT channel, status, count FROM core_statuscount ORDER BY channel, status"
# ``enrollment_due_idx`` is partial on status = 'active'.
_ENROLLMENTS_SQL = "SELECT count(*) FROM journeys_enrollment WHERE status = 'active'"


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
    reconciling = _Family(
        "orchestrator_messages_awaiting_reconciliation",
        "gauge",
        "Messages whose provider outcome is unknown after a stalled send: settled by a "
        "provider report, a resend under the same retry key (LINE), or failed with "
        "unknown_outcome after DISPATCH_UNKNOWN_OUTCOME_WAIT_SECONDS.",
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
        cursor.execute(_AWAITING_RECONCILIATION_SQL, {"stalled": now - STALLED_AFTER})
        rows = cursor.fetchall()
        for channel, n in rows:
            reconciling.add(n, channel=channel)
        if not rows:
            reconciling.add(0)
        cursor.execute(_OLDEST_SQL)
        first = cursor.fetchone()[0]
        oldest.add(max(0.0, (now - first).total_seconds()) if first else 0.0)
        cursor.execute(_TOTALS_SQL)
        for channel, status, n in cursor.fetchall():
            totals.add(n, channel=channel, status=status)
        cursor.execute(_ENROLLMENTS_SQL)
        enrollments.add(cursor.fetchone()[0])
    return [waiting, due, sending, reconciling, oldest, totals, enrollments]


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
    counters = broker_counters()
    if counters is None:
        up.add(0)
        return [up]
    up.add(1)
    for (provider, outcome), n in sorted(counters.requests.items()):
        requests.add(n, provider=provider, outcome=outcome)
    for provider, parts in sorted(counters.latency.items()):
        # Buckets are cumulative already: each observation incremented every bound above it.
        for bound in (*LATENCY_BUCKETS, math.inf):
            label = bucket_label(bound)
            latency.add(int(parts.get(label, 0)), "_bucket", provider=provider, le=label)
        latency.add(float(parts.get("sum", 0)), "_sum", provider=provider)
        latency.add(int(parts.get("count", 0)), "_count", provider=provider)
    for provider, n in sorted(counters.rejected.items()):
        rejected.add(n, provider=provider)
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
