"""Conditions: one small vocabulary for event filters, branches and segments.

A condition is a JSON object with a ``type``:

- ``{"type": "attribute", "name": "city", "op": "eq", "value": "Chicago"}``
  a customer attribute (ops: eq, ne, gt, gte, lt, lte, contains, in, exists, not_exists);
- ``{"type": "property", "name": "sku", "op": "eq", "value": "..."}`` a property of
  the triggering event (event filters) or of the enrollment's context (branches);
- ``{"type": "event", "name": "order.completed", "op": "happened" | "not_happened",
  "within_hours": 720}`` the customer's event history (``since_entry``: only events
  after entering the journey);
- ``{"type": "last_message", "op": "in" | "not_in", "value": ["opened", "clicked"]}``
  the status of the last message this enrollment sent;
- ``{"type": "reply", "op": "contains" | "eq" | "starts_with", "value": "1"}`` the text
  of the customer's latest reply (a ``message.replied`` event) since entering;
- ``{"type": "segment", "segment": "recent-buyers", "op": "in" | "not_in"}`` membership
  of a saved segment (``op`` defaults to ``in``), answered in SQL for a whole batch.

Comparisons are forgiving about types the way marketers expect: numbers compare as
numbers when both sides are numeric, text compares case-insensitively, ISO dates
compare as dates.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CONDITION_TYPES = ("attribute", "property", "event", "last_message", "reply", "segment")
VALUE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "exists", "not_exists")
EVENT_OPS = ("happened", "not_happened")
LIST_OPS = ("in", "not_in")
REPLY_OPS = ("eq", "contains", "starts_with")
OPS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "attribute": VALUE_OPS,
    "property": VALUE_OPS,
    "event": EVENT_OPS,
    "last_message": LIST_OPS,
    "reply": REPLY_OPS,
    "segment": LIST_OPS,
}
OP_LABELS = {
    "eq": "is",
    "ne": "is not",
    "gt": "is greater than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
    "contains": "contains",
    "in": "is one of",
    "not_in": "is not one of",
    "exists": "is set",
    "not_exists": "is not set",
    "happened": "happened",
    "not_happened": "did not happen",
    "starts_with": "starts with",
}

#: What each type of condition checks, in a marketer's words (the builders show these).
TYPE_LABELS = {
    "attribute": "customer attribute",
    "property": "event/journey property",
    "event": "customer did event",
    "last_message": "last message status",
    "reply": "customer's reply",
    "segment": "in saved segment",
}


def _listed(words: Iterable[str]) -> str:
    words = [f"“{w}”" for w in words]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def condition_problems(condition: Any, *, allowed: Iterable[str] = CONDITION_TYPES) -> list[str]:
    """What is wrong with one condition, in words a marketer understands."""
    if not isinstance(condition, Mapping):
        return ["Each condition must say what it checks."]
    kind = condition.get("type")
    allowed = tuple(allowed)
    if kind not in allowed:
        known = _listed(TYPE_LABELS.get(a, a) for a in allowed)
        return [f"Choose what the condition checks: {known}."]
    if kind == "segment":
        return _segment_problems(condition)
    op = condition.get("op")
    ops = OPS_BY_TYPE[kind]
    if op not in ops:
        return [
            f"Choose how to compare the {TYPE_LABELS[kind]}: {_listed(OP_LABELS[o] for o in ops)}."
        ]
    problems = []
    if kind in ("attribute", "property", "event"):
        name = condition.get("name")
        if not isinstance(name, str) or not name.strip():
            what = "event" if kind == "event" else TYPE_LABELS[kind]
            problems.append(f"The {what} condition needs a name.")
    if kind == "event":
        within = condition.get("within_hours")
        if within is not None and (not isinstance(within, int | float) or within <= 0):
            problems.append("“Within” must be a positive number of hours.")
    elif op in ("in", "not_in"):
        if not isinstance(condition.get("value"), list) or not condition["value"]:
            problems.append(f"'{OP_LABELS[op]}' needs a list of values.")
    elif op not in ("exists", "not_exists") and "value" not in condition:
        problems.append(f"'{OP_LABELS[op]}' needs a value to compare with.")
    return problems


def _segment_problems(condition: Mapping[str, Any]) -> list[str]:
    problems = []
    key = condition.get("segment")
    if not isinstance(key, str) or not key.strip():
        problems.append("Name the saved segment (its key).")
    if condition.get("op", "in") not in LIST_OPS:
        problems.append("Choose whether customers are in the segment or not in it.")
    return problems


def describe(condition: Mapping[str, Any]) -> str:
    """One line for the diagram and the admin, e.g. ``city is Chicago``."""
    kind = condition.get("type")
    op = OP_LABELS.get(condition.get("op", ""), condition.get("op", ""))
    value = condition.get("value")
    shown = ", ".join(map(str, value)) if isinstance(value, list) else value
    if kind == "event":
        within = condition.get("within_hours")
        span = f" in the last {within:g} h" if within else ""
        return f"{condition.get('name')} {op}{span}"
    if kind == "last_message":
        return f"last message {op} {shown}"
    if kind == "reply":
        return f"reply {op} {shown!r}"
    if kind == "segment":
        verb = "not in" if condition.get("op") == "not_in" else "in"
        return f"{verb} segment {condition.get('segment')}"
    if condition.get("op") in ("exists", "not_exists"):
        return f"{condition.get('name')} {op}"
    return f"{condition.get('name')} {op} {shown}"


def _fold(text: str) -> str:
    # Full-width digits and letters (typed on a Japanese keyboard) compare as their ASCII.
    return unicodedata.normalize("NFKC", text).strip().casefold()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _ordered(left: Any, right: Any) -> tuple[Any, Any] | None:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return a, b
    a, b = _instant(left), _instant(right)
    if a is not None and b is not None:
        return a, b
    if isinstance(left, str) and isinstance(right, str):
        return _fold(left), _fold(right)
    return None


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return _fold(left) == _fold(right)
    pair = _ordered(left, right)
    if pair is not None:
        return pair[0] == pair[1]
    return left == right


def compare(op: str, left: Any, right: Any, *, present: bool = True) -> bool:
    """Apply a value comparison; a missing left side only satisfies ne and not_exists."""
    if op == "exists":
        return present and left not in (None, "")
    if op == "not_exists":
        return not present or left in (None, "")
    if not present or left is None:
        return op == "ne"
    if op == "eq":
        return _equal(left, right)
    if op == "ne":
        return not _equal(left, right)
    if op == "in":
        return any(_equal(left, r) for r in (right or []))
    if op == "not_in":
        return not any(_equal(left, r) for r in (right or []))
    if op == "contains":
        if isinstance(left, list):
            return any(_equal(item, right) for item in left)
        return isinstance(left, str) and _fold(str(right)) in _fold(left)
    pair = _ordered(left, right)
    if pair is None:
        return False
    a, b = pair
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}.get(op, False)


def lookup(data: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """Find ``name`` in ``data``, following dots into nested objects (``address.city``)."""
    if name in data:
        return True, data[name]
    current: Any = data
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def matches_properties(conditions: Iterable[Mapping[str, Any]], properties: Mapping) -> bool:
    """Event filters: every ``property`` condition holds for these event properties."""
    for condition in conditions:
        present, value = lookup(properties, condition["name"])
        if not compare(condition["op"], value, condition.get("value"), present=present):
            return False
    return True


@dataclass
class Facts:
    """What a branch may look at, for one enrollment; history is fetched lazily."""

    attributes: Mapping[str, Any]
    context: Mapping[str, Any]
    entered_at: dt.datetime
    now: dt.datetime
    #: (event name, since) -> whether the customer had such an event since then.
    had_event: Callable[[str, dt.datetime | None], bool]
    last_message_status: Callable[[], str | None]
    last_reply: Callable[[], str | None]
    #: Segment key -> whether the customer is a member now; None: membership is unknown
    #: (a forecast), and the condition does not hold.
    in_segment: Callable[[str], bool] | None = None


def holds(condition: Mapping[str, Any], facts: Facts) -> bool:
    kind = condition["type"]
    if kind == "segment":
        inside = facts.in_segment is not None and facts.in_segment(condition["segment"])
        return not inside if condition.get("op") == "not_in" else inside
    op = condition["op"]
    if kind in ("attribute", "property"):
        source = facts.attributes if kind == "attribute" else facts.context
        present, value = lookup(source, condition["name"])
        return compare(op, value, condition.get("value"), present=present)
    if kind == "event":
        since = None
        if condition.get("since_entry"):
            since = facts.entered_at
        if condition.get("within_hours"):
            window_start = facts.now - dt.timedelta(hours=float(condition["within_hours"]))
            since = max(since, window_start) if since else window_start
        happened = facts.had_event(condition["name"], since)
        return happened if op == "happened" else not happened
    if kind == "last_message":
        status = facts.last_message_status()
        inside = status is not None and status in condition.get("value", [])
        return inside if op == "in" else not inside
    if kind == "reply":
        text = facts.last_reply()
        if text is None:
            return False
        wanted = _fold(str(condition.get("value", "")))
        got = _fold(text)
        if op == "eq":
            return got == wanted
        if op == "starts_with":
            return got.startswith(wanted)
        return wanted in got
    return False


def all_hold(conditions: Iterable[Mapping[str, Any]], facts: Facts, *, match: str = "all") -> bool:
    results = (holds(c, facts) for c in conditions)
    return any(results) if match == "any" else all(results)
