"""How a journey's steps read in words: one line per step, durations as people say them.

Pure functions over a step of a definition (the format of ``journeys.definition``), so
the same words describe a draft, a published version or an imported file: the canvas's
changes and version history (``journeys.canvas``) say what a step does with them. The
journey itself is drawn by the canvas in the admin, which lays out the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from journeys.models import StepKind
from orchestrator.segments import conditions

# --- words -----------------------------------------------------------------------------


def duration(minutes: Any) -> str:
    """``90`` -> ``1.5 h``; ``2880`` -> ``2 days``: the largest unit that reads well."""
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        return "?"
    if value and value % 1440 == 0:
        days = value / 1440
        return f"{days:g} day" + ("" if days == 1 else "s")
    if value >= 60 and (value * 10) % 60 == 0:
        return f"{value / 60:g} h"
    return f"{value:g} min"


def _offset(minutes: Any) -> str:
    try:
        value = int(minutes or 0)
    except (TypeError, ValueError):
        return ""
    if value == 0:
        return ""
    return f" {duration(abs(value))} {'before' if value < 0 else 'after'}"


def summarize(step: Mapping[str, Any]) -> str:
    """One line saying what a step does, from its kind and settings."""
    kind = step.get("kind")
    config = step.get("config") or {}
    if kind == StepKind.SEND:
        channel = config.get("channel") or "preferred"
        channel = "preferred channel" if channel == "preferred" else channel
        fallback = config.get("fallback_channel")
        tail = f", else {fallback}" if fallback else ""
        return f"{config.get('template') or '(no template)'} by {channel}{tail}"
    if kind == StepKind.DIGEST:
        channel = config.get("channel") or "preferred"
        channel = "preferred channel" if channel == "preferred" else channel
        goes = []
        if config.get("window_minutes"):
            goes.append(f"after {duration(config['window_minutes'])}")
        if config.get("count"):
            goes.append(f"at {config['count']} messages")
        per = f" per {config['key']}" if config.get("key") else ""
        return (
            f"{config.get('template') or '(no template)'} by {channel}{per}, "
            f"{' or '.join(goes) or '(no window)'}"
        )
    if kind == StepKind.WAIT:
        mode = config.get("mode", "duration")
        if mode == "time_of_day":
            return f"until {config.get('time', '?')} local time"
        if mode == "until_date":
            return f"until {config.get('attribute', '?')}{_offset(config.get('offset_minutes'))}"
        return f"for {duration(config.get('minutes'))}"
    if kind == StepKind.WAIT_FOR_EVENT:
        return f"{config.get('event', '?')}, up to {duration(config.get('timeout_minutes'))}"
    if kind == StepKind.BRANCH:
        found = [c for c in config.get("conditions") or [] if isinstance(c, Mapping)]
        if not found:
            return "(no condition)"
        first = conditions.describe(found[0])
        more = len(found) - 1
        joiner = "or" if config.get("match") == "any" else "and"
        return first + (f" {joiner} {more} more" if more else "")
    if kind == StepKind.SPLIT:
        percent = config.get("percent")
        if isinstance(percent, int):
            return f"A {percent}% / B {100 - percent}%"
        return "(no share set)"
    if kind == StepKind.UPDATE_ATTRIBUTE:
        if config.get("from_context"):
            return f"set {config.get('name', '?')} from {config['from_context']}"
        return f"set {config.get('name', '?')} = {config.get('value', '')}"
    if kind == StepKind.WEBHOOK:
        return f"POST to {urlsplit(str(config.get('url', ''))).netloc or '?'}"
    if kind == StepKind.EXIT:
        return "leave the journey"
    return ""


KIND_NAMES = dict(StepKind.choices)
#: Short enough for the top line of a box.
KIND_SHORT = {
    StepKind.SEND: "send",
    StepKind.DIGEST: "digest",
    StepKind.WAIT: "wait",
    StepKind.WAIT_FOR_EVENT: "wait for event",
    StepKind.BRANCH: "branch",
    StepKind.SPLIT: "A/B split",
    StepKind.UPDATE_ATTRIBUTE: "update attribute",
    StepKind.WEBHOOK: "webhook",
    StepKind.EXIT: "exit",
}
