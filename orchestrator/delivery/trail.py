"""The decision trail each message carries: one entry per step that queued, deferred,
suppressed, sent or failed it. Writers append these; ``selectors`` reads them back."""

from __future__ import annotations

import datetime as dt
from typing import Any


def explain(step: str, decision: str, reason: str, **details: Any) -> dict[str, Any]:
    """One entry: ``step`` (created, consent, render, send, policy...), ``decision``, prose."""
    entry: dict[str, Any] = {
        # timezone.now() with USE_TZ on (always, here), without its settings lookup: a
        # batch writes a few of these per message.
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "step": step,
        "decision": decision,
        "reason": reason,
    }
    if details:
        entry["details"] = details
    return entry


def switch_entry(
    message_id: int, from_channel: str, to_channel: str, why: str, **details: Any
) -> dict[str, Any]:
    """A channel switch at send time: ``why`` is "consent" (the customer's consent to the
    topic refused ``from_channel``, details ``refused``) or "policy" (a channel-specific
    limit held it, details ``held``: the causes). Returns the message id and the entry."""
    if why == "consent":
        refused = "; ".join(r["reason"] for r in details.get("refused", ()))
        reason = f"re-routed from {from_channel} to {to_channel}: {refused or 'not consented'}"
    else:
        held = "; ".join(c["describe"] for c in details.get("held", ()) if c.get("in_force"))
        reason = f"re-routed from {from_channel} to {to_channel}: {from_channel} was held"
        reason += f" ({held})" if held else ""
    entry = explain(
        "route", "rerouted", reason, why=why, **{"from": from_channel, "to": to_channel}, **details
    )
    return {"message_id": message_id, "entry": entry}
