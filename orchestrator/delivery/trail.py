"""The decision trail each message carries: one entry per step that queued, deferred,
suppressed, sent or failed it. Writers append these; ``selectors`` reads them back."""

from __future__ import annotations

from typing import Any

from django.utils import timezone


def explain(step: str, decision: str, reason: str, **details: Any) -> dict[str, Any]:
    """One entry: ``step`` (created, consent, render, send, policy...), ``decision``, prose."""
    entry: dict[str, Any] = {
        "at": timezone.now().isoformat(),
        "step": step,
        "decision": decision,
        "reason": reason,
    }
    if details:
        entry["details"] = details
    return entry
