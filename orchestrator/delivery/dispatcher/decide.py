"""The fatigue policy over a composed batch: which messages go now, which are held.

Runs inside the transaction that holds the rows, after consent: the customers'
decision locks are held until the messages let through are handed off, so a
concurrent dispatcher counts them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from orchestrator.delivery import fatigue, policy
from orchestrator.delivery.dispatcher.claim import Claimed
from orchestrator.delivery.dispatcher.compose import Loaded
from orchestrator.delivery.dispatcher.outcomes import DispatchStats, Outcome
from orchestrator.delivery.trail import explain


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
        if decision.action == policy.DEFER:
            details["send_after"] = decision.send_after.isoformat()
        entry = explain("policy", status, decision.reason, **details)
        if decision.action == policy.SEND:
            message = by_id[message_id]
            if decision.channel and decision.channel != message.channel:
                message.channel = decision.channel
                customer = loaded.customers[message.customer_id]
                loaded.addresses[message_id] = customer.address_for(decision.channel)
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
    stats.policy_seconds += time.perf_counter() - started
    held_ids = {o.message_id for o in held} | later
    return [m for m in claimed if m.id not in held_ids], held, entries
