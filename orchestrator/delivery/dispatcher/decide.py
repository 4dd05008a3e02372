"""The fatigue policy over a composed batch: which messages go now, which are held.

Runs inside the transaction that holds the rows, after consent: the customers'
decision locks are held until the messages let through are handed off, so a
concurrent dispatcher counts them. A message let through on another channel than the
one it was queued on (routing re-picked it against consent, or the policy took an
alternative) has the switch written here: its channel, a trail entry and a history row.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from orchestrator.delivery import fatigue, policy
from orchestrator.delivery.dispatcher.claim import Claimed
from orchestrator.delivery.dispatcher.compose import Loaded
from orchestrator.delivery.dispatcher.outcomes import DispatchStats, Outcome, as_json
from orchestrator.delivery.models import MessageStatus
from orchestrator.delivery.trail import explain, switch_entry


def apply_policy(
    cursor,
    claimed: Sequence[Claimed],
    loaded: Loaded,
    *,
    now: dt.datetime,
    stats: DispatchStats,
) -> tuple[list[Claimed], list[Outcome], dict[int, dict[str, Any]]]:
    """Decide the fatigue policy for what consent allows, inside the caller's transaction.

    Returns the messages that may go now, the outcomes of the held ones (deferred,
    dropped, expired), and the policy's explanation entry per message let through.
    Consent-blocked messages pass through untouched (``compose.prepare`` suppresses them).
    """
    items = [
        fatigue.PolicyInput(
            m.id,
            m.customer_id,
            m.channel,
            m.topic_id,
            m.priority,
            m.journey,
            m.expires_at,
            loaded.alternatives.get(m.id, ()),
        )
        for m in claimed
        if loaded.consent[m.id].allowed
    ]
    if not items:
        return list(claimed), [], {}
    switches: list[dict[str, Any]] = []
    started = time.perf_counter()
    batch = fatigue.decide_batch(
        cursor, items, topics=loaded.topics, customers=loaded.customers, now=now
    )
    rule_keys = batch.rule_keys
    # Another dispatcher is deciding for these customers: leave their messages
    # untouched for a later batch, when that decision counts in their history.
    later = {i.message_id for i in items if i.customer_id in batch.busy}
    stats.busy += len(later)
    by_id = {m.id: m for m in claimed}
    held: list[Outcome] = []
    entries: dict[int, dict[str, Any]] = {}
    for message_id, decision in batch.decisions.items():
        status = fatigue.status_for(decision)
        details: dict[str, Any] = {"rules": decision.trail}
        if decision.causes:
            details["causes"] = decision.causes
        if decision.action == policy.DEFER:
            details["send_after"] = decision.send_after.isoformat()
        entry = explain("policy", status, decision.reason, **details)
        if decision.action == policy.SEND:
            message = by_id[message_id]
            reroute = loaded.reroutes.get(message_id)
            if reroute is not None:
                switches.append(
                    switch_entry(
                        message_id,
                        reroute["from"],
                        reroute["to"],
                        "consent",
                        refused=reroute["refused"],
                    )
                )
            if decision.channel and decision.channel != message.channel:
                switches.append(
                    switch_entry(
                        message_id,
                        message.channel,
                        decision.channel,
                        "policy",
                        held=decision.trail[0].get("causes", []) if decision.trail else [],
                    )
                )
                message.channel = decision.channel
                customer = loaded.customers[message.customer_id]
                loaded.addresses[message_id] = customer.address_for(decision.channel)
            if message.channel != loaded.queued_channels.get(message_id, message.channel):
                switches[-1]["address"] = loaded.addresses[message_id]
            entries[message_id] = entry
            continue
        held.append(
            Outcome(
                message_id,
                status,
                decision.reason,
                entry,
                send_after=decision.send_after if decision.action == policy.DEFER else None,
                keep_handed_off=False,
                code=fatigue.hold_code(decision, rule_keys),
            )
        )
    record_switches(cursor, switches, now)
    stats.policy_seconds += time.perf_counter() - started
    held_ids = {o.message_id for o in held} | later
    return [m for m in claimed if m.id not in held_ids], held, entries


# The switch, in the transaction holding the rows: the message's channel and address,
# its trail entry and a history row (status ``queued``, code ``rerouted``, as a
# fallback's), so the API, admin and customer see where it went and why it moved.
_SWITCH_SQL = """
WITH u AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(
        id bigint, entries jsonb, reason text, channel text, address text)
), updated AS (
    UPDATE delivery_message AS m SET
        channel = u.channel, to_address = u.address,
        explanation = m.explanation || u.entries, updated_at = %(now)s
    FROM u
    WHERE m.id = u.id AND m.status IN ('queued', 'scheduled', 'deferred')
    RETURNING m.id, u.reason
)
INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code)
SELECT id, %(status)s, %(now)s, reason, 'rerouted' FROM updated
"""


def record_switches(cursor, switches: Sequence[dict[str, Any]], now: dt.datetime) -> None:
    """Write each message's channel switches (see ``trail.switch_entry``), one statement."""
    if not switches:
        return
    by_message: dict[int, list[dict[str, Any]]] = {}
    for switch in switches:
        by_message.setdefault(switch["message_id"], []).append(switch)
    rows = []
    for message_id, steps in by_message.items():
        final = next((s for s in reversed(steps) if "address" in s), None)
        if final is None:  # switched and switched back: nothing moved
            continue
        rows.append(
            {
                "id": message_id,
                "entries": [s["entry"] for s in steps],
                "reason": "; ".join(s["entry"]["reason"] for s in steps),
                "channel": final["entry"]["details"]["to"],
                "address": final["address"],
            }
        )
    if rows:
        cursor.execute(
            _SWITCH_SQL, {"rows": as_json(rows), "now": now, "status": MessageStatus.QUEUED}
        )
