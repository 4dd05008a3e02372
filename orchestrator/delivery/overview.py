"""Selectors for the fatigue overview: what the policy held, and how many messages people get.

Both are single aggregate queries over indexed columns (history rows carry a
``code`` for what held them; messages a ``decided_at``), bounded to recent days.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from orchestrator.delivery.models import FrequencyRule

#: Buckets of the "messages per customer per week" distribution.
WEEKLY_BUCKETS = ("1", "2", "3", "4", "5", "6-9", "10+")


@dataclass(frozen=True)
class HoldsByDay:
    days: list[str]
    #: hold label -> {"deferred": [per day], "dropped": [...], "expired": [...]}
    by_reason: dict[str, dict[str, list[int]]]
    totals: dict[str, int]


def _label(code: str, rule_names: dict[str, str]) -> str:
    if code.startswith("rule:"):
        return rule_names.get(code[5:], code[5:])
    return {
        "quiet_hours": "Quiet hours",
        "paused": "Paused by the customer",
        "personal_cap": "The customer's own limit",
    }.get(code, code)


def holds_by_day(*, days: int = 14, today: dt.date | None = None) -> HoldsByDay:
    """Messages held (deferred), dropped and expired by the fatigue policy, per reason per day."""
    today = today or timezone.localdate()
    start = today - dt.timedelta(days=days - 1)
    labels = [(start + dt.timedelta(days=i)).isoformat() for i in range(days)]
    index = {label: i for i, label in enumerate(labels)}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, code, status, count(*)
            FROM delivery_messageevent
            WHERE occurred_at >= %s AND status IN ('deferred', 'suppressed', 'expired')
              AND code <> '' AND code NOT LIKE 'consent:%%'
            GROUP BY 1, 2, 3
            """,
            [dt.datetime.combine(start, dt.time(0), tzinfo=dt.UTC)],
        )
        rows = cursor.fetchall()
    rule_names = dict(FrequencyRule.objects.values_list("key", "name"))
    by_reason: dict[str, dict[str, list[int]]] = {}
    totals: dict[str, int] = defaultdict(int)
    kinds = {"deferred": "deferred", "suppressed": "dropped", "expired": "expired"}
    for day, code, status, count in rows:
        if day.isoformat() not in index:
            continue
        label = _label(code, rule_names)
        bucket = by_reason.setdefault(label, {k: [0] * days for k in kinds.values()})
        bucket[kinds[status]][index[day.isoformat()]] += count
        totals[label] += count
    return HoldsByDay(labels, by_reason, dict(totals))


@dataclass(frozen=True)
class WeeklyDistribution:
    buckets: list[str]
    customers: list[int]
    #: Customers who got nothing in the week.
    none: int
    median: float
    p95: int


def messages_per_customer_week(*, now: dt.datetime | None = None) -> WeeklyDistribution:
    """How many messages each customer got in the last 7 days, as a histogram."""
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH per AS (
                SELECT customer_id, count(*) AS n FROM delivery_message
                WHERE sent_at >= %s AND sent_at < %s GROUP BY customer_id
            )
            SELECT
                CASE WHEN n >= 10 THEN '10+' WHEN n >= 6 THEN '6-9' ELSE n::text END,
                count(*),
                (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM per),
                (SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY n) FROM per),
                (SELECT count(*) FROM per)
            FROM per GROUP BY 1
            """,
            [now - dt.timedelta(days=7), now],
        )
        rows = cursor.fetchall()
        cursor.execute("SELECT count(*) FROM audience_customer")
        (customers,) = cursor.fetchone()
    counts = {bucket: count for bucket, count, *_rest in rows}
    median = float(rows[0][2]) if rows else 0.0
    p95 = int(rows[0][3]) if rows else 0
    reached = int(rows[0][4]) if rows else 0
    return WeeklyDistribution(
        list(WEEKLY_BUCKETS),
        [counts.get(b, 0) for b in WEEKLY_BUCKETS],
        max(customers - reached, 0),
        median,
        p95,
    )
