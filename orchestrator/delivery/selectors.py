"""Reads of delivery: the fatigue overview and the customer's "why did I get this?".

The overview is two aggregate queries over indexed columns (history rows carry a
``code`` for what held them; messages a ``decided_at``), bounded to recent days. The
customer explanation is read from the message's decision trail (see ``trail``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.db import connection
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

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


# --- why a customer got a message ---------------------------------------------------

_CHANNEL_NAMES = {"email": "email", "sms": "text message", "whatsapp": "WhatsApp", "line": "LINE"}


def customer_explanation(message) -> list[str]:
    """Why a customer got (or did not yet get) a message, in sentences they can read.

    Built from the message's decision trail; for the "why am I getting this?" part of
    the preference center. Marked for translation.
    """
    topic = message.topic
    channel = _CHANNEL_NAMES.get(message.channel, message.channel)
    lines: list[str] = []
    if topic.kind == "transactional":
        lines.append(
            _(
                "This is a service message about %(topic)s. It is sent even if you have opted "
                "out of marketing."
            )
            % {"topic": topic.name}
        )
    else:
        consent = (message.rendered or {}).get("consent", "")
        if consent == "subscribed":
            lines.append(
                _("You subscribed to %(topic)s by %(channel)s.")
                % {"topic": topic.name, "channel": channel}
            )
        elif consent == "default_opt_in":
            lines.append(
                _("You receive %(topic)s by %(channel)s unless you opt out.")
                % {"topic": topic.name, "channel": channel}
            )
        else:
            lines.append(_("This message is about %(topic)s.") % {"topic": topic.name})
    if message.journey:
        lines.append(_("It is part of the series “%(journey)s”.") % {"journey": message.journey})
    if message.requested_channel == "preferred":
        lines.append(
            _(
                "It came by %(channel)s, the first channel in your preferred order that could "
                "reach you."
            )
            % {"channel": channel}
        )
    holds = [
        e
        for e in message.explanation or []
        if e.get("step") == "policy" and e.get("decision") in ("deferred", "suppressed", "expired")
    ]
    for entry in holds[-1:]:
        reason = entry.get("reason", "")
        when = (entry.get("details") or {}).get("send_after")
        local_when = ""
        if when:
            moment = dt.datetime.fromisoformat(when).astimezone(
                ZoneInfo(message.customer.timezone or "UTC")
            )
            local_when = date_format(moment.replace(tzinfo=None), "DATETIME_FORMAT")
        if "quiet hours" in reason:
            lines.append(
                _("We held it until %(when)s your time, because of quiet hours.")
                % {"when": local_when}
            )
        elif "your own limit" in reason:
            lines.append(_("We held it to keep within the limit you set for yourself."))
        elif "paused" in reason:
            lines.append(
                _("We held it because you paused messages until %(when)s.") % {"when": local_when}
            )
        elif entry.get("decision") == "deferred":
            lines.append(
                _(
                    "We held it until %(when)s your time, so that you do not get too many "
                    "messages at once."
                )
                % {"when": local_when}
            )
        elif entry.get("decision") == "suppressed":
            lines.append(_("We did not send it: you had already had enough messages from us."))
        else:
            lines.append(
                _("We did not send it: it was no longer relevant by the time it could go.")
            )
    return lines
