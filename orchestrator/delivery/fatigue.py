"""The dispatcher's fatigue stage: load what the policy needs in bulk, decide under a lock.

Decisions for one customer are serialized with a transaction-scoped advisory lock
per customer. Inside the lock we read what already counts against the caps -
messages another dispatcher let through a moment ago included, via
``decided_at`` - decide, and mark the messages we let through before the lock is
released. Two dispatchers can therefore never jointly exceed a cap.

The locks are *tried*, not waited for: a customer another dispatcher is deciding
right now is left for a later batch (the rows stay due and untouched). Waiting
would serialize whole batches - two batches of a thousand messages share a
hundred customers or so - and leave the second dispatcher idle while the first
renders. Trying never waits, so it cannot deadlock either.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from orchestrator.consent.models import Topic
from orchestrator.delivery import policy
from orchestrator.delivery.models import FrequencyRule, MessageStatus

#: Statuses of a message that was let through and so counts against caps.
COUNTED_STATUSES = (
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "bounced",
    "opened",
    "clicked",
    "replied",
)

#: Advisory lock keys: a namespace in the high bits, the customer id in the low ones.
_LOCK_NAMESPACE = 0x46A7 << 40


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """One claimed message, as far as the policy is concerned."""

    message_id: int
    customer_id: int
    channel: str
    topic_id: int
    priority: int
    journey: str
    expires_at: dt.datetime | None
    alternatives: tuple[str, ...] = ()


def default_quiet_hours() -> tuple[dt.time, dt.time] | None:
    return settings.QUIET_HOURS_DEFAULT


def rule_from_row(row: FrequencyRule) -> policy.Rule:
    return policy.Rule(
        id=row.id,
        name=row.name,
        limit=row.limit,
        key=row.key,
        kind=row.kind,
        scope=row.scope,
        channel=row.channel,
        topic_id=row.topic_id,
        journey=row.journey,
        window=row.window,
        calendar=row.calendar,
        applies_to=row.applies_to,
        action=row.action,
    )


def customer_policies(
    customers: dict[int, object], customer_ids: Iterable[int]
) -> dict[int, policy.CustomerPolicy]:
    ids = sorted(set(customer_ids))
    # "= ANY(array)": one parameter, where IN (...) would be a placeholder per customer.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT customer_id, quiet_hours_start, quiet_hours_end, paused_until, max_per_week
            FROM consent_channelpreference WHERE customer_id = ANY(%s)
            """,
            [ids],
        )
        prefs = {row[0]: row[1:] for row in cursor.fetchall()}
    out: dict[int, policy.CustomerPolicy] = {}
    for cid in ids:
        quiet_start, quiet_end, paused_until, max_per_week = prefs.get(cid, (None,) * 4)
        personal: tuple[policy.Rule, ...] = ()
        if max_per_week:
            personal = (
                policy.Rule(
                    id=None,
                    name="your own limit",
                    limit=max_per_week,
                    calendar="week",
                    personal=True,
                ),
            )
        out[cid] = policy.CustomerPolicy(
            timezone=getattr(customers.get(cid), "timezone", "UTC") or "UTC",
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            paused_until=paused_until,
            personal_rules=personal,
        )
    return out


def try_lock_customers(cursor, customer_ids: Iterable[int]) -> set[int]:
    """Take the decision lock of each customer not being decided elsewhere; return those taken.

    Held until the transaction ends.
    """
    ids = sorted(set(customer_ids))
    if not ids:
        return set()
    cursor.execute(
        "SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_xact_lock(%s + k)",
        [ids, _LOCK_NAMESPACE],
    )
    return {row[0] for row in cursor.fetchall()}


def lookback(rules: Iterable[policy.Rule]) -> dt.timedelta:
    """How far back history must reach to judge these rules.

    A calendar window starts at the customer's local midnight (or Monday, or the
    first of the month), at most a day plus the widest offset from UTC before now.
    """
    spans = {"day": dt.timedelta(days=2), "week": dt.timedelta(days=8)}
    needed = dt.timedelta(0)
    for rule in rules:
        if rule.calendar:
            span = spans.get(rule.calendar, policy.MAX_LOOKBACK)
        else:
            span = rule.window or policy.MAX_LOOKBACK
        needed = max(needed, span)
    return min(needed, policy.MAX_LOOKBACK)


def load_history(
    cursor,
    customer_ids: Iterable[int],
    *,
    now: dt.datetime,
    rules: Sequence[policy.Rule] | None = None,
) -> dict[int, list[policy.Sent]]:
    """What counts against these rules for these customers, within the longest window.

    Without ``rules``: everything that counted in the last ``policy.MAX_LOOKBACK``.
    When every rule is for marketing only, transactional sends are not read.
    """
    ids = sorted(set(customer_ids))
    history: dict[int, list[policy.Sent]] = defaultdict(list)
    if not ids:
        return history
    since = now - (lookback(rules) if rules is not None else policy.MAX_LOOKBACK)
    marketing_only = rules is not None and all(r.applies_to == "marketing" for r in rules)
    cursor.execute(
        """
        SELECT m.customer_id, m.decided_at, m.channel, m.topic_id, t.kind = 'marketing', m.journey
        FROM delivery_message m JOIN consent_topic t ON t.id = m.topic_id
        WHERE m.customer_id = ANY(%(ids)s) AND m.decided_at >= %(since)s
            AND m.status = ANY(%(statuses)s) AND (NOT %(marketing_only)s OR t.kind = 'marketing')
        """,
        {
            "ids": ids,
            "since": since,
            "statuses": list(COUNTED_STATUSES),
            "marketing_only": marketing_only,
        },
    )
    for customer_id, at, channel, topic_id, marketing, journey in cursor.fetchall():
        history[customer_id].append(policy.Sent(at, channel, topic_id, marketing, journey))
    return history


def candidate_for(item: PolicyInput, topic: Topic) -> policy.Candidate:
    respect = {"respect": True, "ignore": False}.get(topic.quiet_hours)
    return policy.Candidate(
        message_id=item.message_id,
        channel=item.channel,
        topic_id=item.topic_id,
        marketing=topic.kind == Topic.Kind.MARKETING,
        priority=item.priority,
        journey=item.journey,
        expires_at=item.expires_at,
        respect_quiet_hours=respect,
        alternatives=item.alternatives,
    )


@dataclass
class BatchDecisions:
    decisions: dict[int, policy.Decision]
    #: Rule keys by id, for hold codes.
    rule_keys: dict[int, str]
    #: Customers another dispatcher is deciding right now: their messages were not decided.
    busy: set[int]


def decide_batch(
    cursor,
    items: Sequence[PolicyInput],
    *,
    topics: dict[int, Topic],
    customers: dict[int, object],
    now: dt.datetime,
) -> BatchDecisions:
    """Lock the batch's customers and decide their messages. Call inside a transaction.

    Without any rule or personal limit there is no count to protect, so no lock and
    no history.
    """
    if not items:
        return BatchDecisions({}, {}, set())
    customer_ids = {i.customer_id for i in items}
    rows = list(FrequencyRule.objects.filter(active=True))
    rules = [rule_from_row(r) for r in rows]
    policies = customer_policies(customers, customer_ids)
    history: dict[int, list[policy.Sent]] = {}
    busy: set[int] = set()
    if rules or any(p.personal_rules for p in policies.values()):
        busy = customer_ids - try_lock_customers(cursor, customer_ids)
        every_rule = [*rules, *(r for p in policies.values() for r in p.personal_rules)]
        history = load_history(cursor, customer_ids - busy, now=now, rules=every_rule)
    quiet = default_quiet_hours()
    by_customer: dict[int, list[policy.Candidate]] = defaultdict(list)
    for item in items:
        if item.customer_id not in busy:
            by_customer[item.customer_id].append(candidate_for(item, topics[item.topic_id]))
    decisions: dict[int, policy.Decision] = {}
    for customer_id, candidates in by_customer.items():
        decisions.update(
            policy.decide_for_customer(
                candidates,
                history=history.get(customer_id, []),
                rules=rules,
                customer=policies[customer_id],
                now=now,
                default_quiet_hours=quiet,
            )
        )
    return BatchDecisions(decisions, {r.id: r.key for r in rows}, busy)


def status_for(decision: policy.Decision) -> str:
    return {
        policy.SEND: MessageStatus.SENDING,
        policy.DEFER: MessageStatus.DEFERRED,
        policy.DROP: MessageStatus.SUPPRESSED,
        policy.EXPIRE: MessageStatus.EXPIRED,
    }[decision.action]


#: What a history row's ``code`` holds at most (``MessageEvent.code``).
CODE_LENGTH = 120


def hold_code(decision: policy.Decision, rule_keys: dict[int, str] | None = None) -> str:
    """A short machine code for what held a message, for the history row and analytics.

    Every cause in force when it was decided, comma-separated (``rule:weekly,quiet_hours``):
    the overview and journey analytics count the hold once under each. A cause that only
    pushed the send time further is in the trail, not here: it did not hold the message.
    Whole codes only, as many as fit the column.
    """
    codes = decision.codes
    if not codes and decision.rule_id is not None and rule_keys is not None:
        codes = [f"rule:{rule_keys.get(decision.rule_id, decision.rule_id)}"]
    out = ""
    for code in codes:
        joined = f"{out},{code}" if out else code
        if len(joined) > CODE_LENGTH:
            break
        out = joined
    return out or decision.action


def hold_codes(code: str) -> list[str]:
    """The causes in a history row's ``code`` (see ``hold_code``)."""
    return [c for c in code.split(",") if c]
