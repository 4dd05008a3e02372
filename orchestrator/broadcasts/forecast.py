"""The forecast of a broadcast: how many would get it on each channel, and how many
consent, suppression, caps and quiet hours would hold, on today's data.

Nothing is written. A deterministic sample of the audience is routed, consent-checked
and run through the fatigue policy with the functions the dispatcher runs
(``delivery.routing``, ``consent.selectors.consent_decisions``, ``delivery.fatigue``
and ``delivery.policy``) at each customer's own send time, and scaled to the audience.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.broadcasts.audience import audience_sql
from orchestrator.broadcasts.models import Broadcast
from orchestrator.consent.selectors import SUPPRESSED, ConsentRequest, consent_decisions
from orchestrator.delivery import fatigue, policy, routing
from orchestrator.delivery.models import FrequencyRule

DEFAULT_SAMPLE = 2000
MAX_SAMPLE = 10_000
#: How often one message may be deferred and decided again within the forecast.
MAX_DEFERS = 10


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def send_time(broadcast: Broadcast, customer: Customer, now: dt.datetime) -> dt.datetime:
    """When the customer's copy would be due (the rate limit's spread left out)."""
    if broadcast.schedule == Broadcast.Schedule.LOCAL_TIME:
        wall = dt.datetime.combine(broadcast.local_date, broadcast.local_time)
        return max(wall.replace(tzinfo=_zone(customer.timezone)), now)
    if broadcast.schedule == Broadcast.Schedule.AT and broadcast.send_at:
        return max(broadcast.send_at, now)
    return now


def broadcast_forecast(
    broadcast: Broadcast, *, sample: int = DEFAULT_SAMPLE, now: dt.datetime | None = None
) -> dict[str, Any]:
    now = now or timezone.now()
    members, params = audience_sql(broadcast)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM ({members}) AS a", params)  # noqa: S608
        audience = cursor.fetchone()[0]
        # A stable sample: the same customers every time for the same audience.
        cursor.execute(
            f"SELECT a.id FROM ({members}) AS a(id)"  # noqa: S608
            " ORDER BY hashtext(a.id::text), a.id LIMIT %s",
            [*params, sample],
        )
        ids = [row[0] for row in cursor.fetchall()]
    customers = {c.id: c for c in Customer.objects.select_related("preference").filter(id__in=ids)}
    topic = broadcast.topic
    template_channels = set(broadcast.template.variants.values_list("channel", flat=True))
    if (
        broadcast.has_test
        and broadcast.ab_template_id
        and broadcast.ab_kind == Broadcast.AbKind.TEMPLATE
    ):
        template_channels &= set(broadcast.ab_template.variants.values_list("channel", flat=True))

    # 1. Routing: the channels the dispatcher would consider, in order.
    options: dict[int, list[str]] = {}
    unreachable = 0
    for cid in ids:
        customer = customers[cid]
        order, own = routing.customer_channel_order(customer)
        route = routing.resolve_channel(
            broadcast.channel,
            order=order,
            own_order=own,
            topic_channels=topic.channels,
            template_channels=template_channels,
            address_for=customer.address_for,
        )
        if route is None or route[0] not in template_channels or not customer.address_for(route[0]):
            unreachable += 1
            continue
        options[cid] = routing.send_options(
            broadcast.channel,
            route[0],
            order=order,
            topic_channels=topic.channels,
            template_channels=template_channels,
            address_for=customer.address_for,
        )

    # 2. Consent and suppression, per channel option, as the dispatcher decides them.
    requests, owners = [], []
    for cid, channels in options.items():
        for channel in channels:
            requests.append(
                ConsentRequest(cid, topic.id, channel, customers[cid].address_for(channel))
            )
            owners.append((cid, channel))
    decisions = consent_decisions(requests, topics={topic.id: topic})
    per_customer: dict[int, list] = {}
    for (cid, channel), decision in zip(owners, decisions, strict=True):
        per_customer.setdefault(cid, []).append((channel, decision))
    held: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    deferred: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    expired = 0
    chosen: dict[int, tuple[str, tuple[str, ...]]] = {}
    for cid, opts in per_customer.items():
        channel, decision, alternatives = routing.choose_consented(opts)
        if not decision.allowed:
            code = "suppressed" if decision.code == SUPPRESSED else "consent"
            held[code] += 1
            dropped[code] += 1
            continue
        chosen[cid] = (channel, alternatives)

    # 3. The fatigue policy at each customer's send time, over their real history.
    rows = list(FrequencyRule.objects.filter(active=True))
    rules = [fatigue.rule_from_row(r) for r in rows]
    rule_keys = {r.id: r.key for r in rows}
    policies = fatigue.customer_policies(customers, chosen.keys())
    with connection.cursor() as cursor:
        history = fatigue.load_history(cursor, chosen.keys(), now=now)
    quiet = fatigue.default_quiet_hours()
    for cid, (channel, alternatives) in chosen.items():
        at = send_time(broadcast, customers[cid], now)
        item = fatigue.PolicyInput(
            0, cid, channel, topic.id, broadcast.priority, "", broadcast.expires_at, alternatives
        )
        counted: set[str] = set()
        for _ in range(MAX_DEFERS):
            if broadcast.expires_at is not None and at >= broadcast.expires_at:
                expired += 1
                break
            decision = policy.decide_for_customer(
                [fatigue.candidate_for(item, topic)],
                history=history.get(cid, []),
                rules=rules,
                customer=policies[cid],
                now=at,
                default_quiet_hours=quiet,
            )[0]
            if decision.action == policy.SEND:
                messages[decision.channel or channel] += 1
                break
            code = fatigue.hold_code(decision, rule_keys)
            if code not in counted:
                counted.add(code)
                held[code] += 1
                (deferred if decision.action == policy.DEFER else dropped)[code] += 1
            if decision.action != policy.DEFER or decision.send_after <= at:
                if decision.action == policy.EXPIRE:
                    expired += 1
                break
            at = decision.send_after

    scale = audience / len(ids) if ids else 0.0

    def scaled(counts: Counter[str]) -> dict[str, int]:
        return {k: round(v * scale) for k, v in sorted(counts.items())}

    assumptions = [
        "Consent, caps and quiet hours are read as they are now; they are checked again "
        "when each message is sent.",
    ]
    if broadcast.rate_per_minute:
        assumptions.append("The rate limit's spread is left out of each send time.")
    if broadcast.has_test:
        assumptions.append("The A/B test and the rest are forecast as one send.")
    if len(ids) < audience:
        assumptions.append(f"Counts are scaled up from a sample of {len(ids)} of {audience}.")
    return {
        "audience": audience,
        "sample": len(ids),
        "messages": scaled(messages),
        "held": scaled(held),
        "deferred": scaled(deferred),
        "dropped": scaled(dropped),
        "unreachable": round(unreachable * scale),
        "expired": round(expired * scale),
        "assumptions": assumptions,
    }
