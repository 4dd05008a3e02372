"""A saved segment's conditions: a JSON tree in a marketer's words, and its validation.

Groups: ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}``; another saved segment:
``{"segment": "key"}``. Conditions (each with a ``type``):

- ``attribute``: ``{"name": "city", "op": "eq", "value": "Tokyo"}`` (the ops of
  ``conditions.VALUE_OPS``, same meaning as in journeys);
- ``event``: did (``op: happened``) or did not (``not_happened``) do ``name`` in the
  last ``within_days`` days, ``at_least`` K times, with ``where`` property conditions;
- ``consent``: ``op: subscribed | not_subscribed`` to ``topic`` on ``channel``;
- ``message``: ``op: received | not_received | opened | not_opened | clicked`` a message
  of ``template`` and/or ``topic`` in the last ``within_days`` days;
- ``replenishment``: predicted to run out (of ``product``) ``within_days`` days from now.

``tree_problems`` returns every problem at once, each with the path of the node it is
about (``conditions.all.1``), so the admin shows it at the row and the API as a field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.segments import conditions

KINDS = ("attribute", "event", "consent", "message", "replenishment", "segment")
CHANNELS = ("email", "sms", "whatsapp", "line")
CONSENT_OPS = ("subscribed", "not_subscribed")
MESSAGE_OPS = ("received", "not_received", "opened", "not_opened", "clicked")
#: Deepest nesting of groups and segments within segments.
MAX_DEPTH = 12
#: Most conditions in one tree (inlined segments included).
MAX_NODES = 200


@dataclass(frozen=True)
class Problem:
    path: str
    message: str


@dataclass
class Lookups:
    """What validation must look up: each returns None when the key is unknown."""

    segment: Callable[[str], Any]
    topic_exists: Callable[[str], bool]
    template_exists: Callable[[str], bool]
    replenishment_available: Callable[[], bool]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def tree_problems(tree: Any, lookups: Lookups, *, key: str | None = None) -> list[Problem]:
    """Every problem of ``tree`` (the conditions of segment ``key``), in plain words."""
    problems: list[Problem] = []
    count = [0]
    _check(tree, "conditions", lookups, problems, (key,) if key else (), 0, count)
    if count[0] > MAX_NODES:
        problems.append(Problem("conditions", f"At most {MAX_NODES} conditions, please."))
    return problems


def _check(node, path, lookups, problems, seen, depth, count) -> None:
    count[0] += 1
    if depth > MAX_DEPTH:
        problems.append(Problem(path, "Groups are nested too deeply."))
        return
    if isinstance(node, list):
        node = {"all": node}
    if not isinstance(node, dict):
        problems.append(Problem(path, "A condition must be an object."))
        return
    groups = [g for g in ("all", "any", "not") if g in node]
    if groups:
        if len(node) != 1:
            problems.append(Problem(path, "A group is only 'all', 'any' or 'not', alone."))
            return
        group = groups[0]
        if group == "not":
            _check(node["not"], f"{path}.not", lookups, problems, seen, depth + 1, count)
            return
        items = node[group]
        if not isinstance(items, list):
            problems.append(Problem(path, f"'{group}' takes a list of conditions."))
            return
        for i, item in enumerate(items):
            _check(item, f"{path}.{group}.{i}", lookups, problems, seen, depth + 1, count)
        return
    kind = node.get("type", "segment" if "segment" in node else None)
    if kind not in KINDS:
        problems.append(
            Problem(path, f"Choose what to check: one of {', '.join(KINDS)} (got {kind!r}).")
        )
        return
    say = [Problem(path, m) for m in _leaf(kind, node, lookups)]
    problems += say
    if kind == "segment" and not say:
        key = node["segment"]
        if key in seen:
            chain = " → ".join([*seen, key])
            problems.append(Problem(path, f"Segments would include each other: {chain}."))
            return
        target = lookups.segment(key)
        if target is None:
            problems.append(Problem(path, f"There is no saved segment {key!r}."))
            return
        inner: list[Problem] = []
        _check(target, path, lookups, inner, (*seen, key), depth + 1, count)
        for p in inner:
            # Problems inside another segment belong to it, said at the row naming it.
            problems.append(Problem(path, f"In segment {key!r}: {p.message}"))


def _leaf(kind: str, node: dict[str, Any], lookups: Lookups) -> list[str]:
    out: list[str] = []
    op = node.get("op")
    if kind == "attribute":
        out += conditions.condition_problems(node, allowed=("attribute",))
    elif kind == "event":
        if not isinstance(node.get("name"), str) or not node["name"].strip():
            out.append("Name the event (e.g. order.completed).")
        if op not in conditions.EVENT_OPS:
            out.append("Choose 'did' or 'did not'.")
        for field in ("within_days", "within_hours"):
            if node.get(field) is not None and not _positive(node[field]):
                out.append("The number of days must be a positive number.")
        at_least = node.get("at_least")
        if at_least is not None and (
            not isinstance(at_least, int) or isinstance(at_least, bool) or at_least < 1
        ):
            out.append("'At least' must be a whole number, 1 or more.")
        where = node.get("where") or []
        if not isinstance(where, list):
            out.append("Event property conditions must be a list.")
        else:
            for c in where:
                out += [
                    f"Event property: {m}"
                    for m in conditions.condition_problems(c, allowed=("property",))
                ]
    elif kind == "consent":
        if op is not None and op not in CONSENT_OPS:
            out.append("Choose 'subscribed' or 'not subscribed'.")
        if node.get("channel") not in CHANNELS:
            out.append(f"Choose a channel: {', '.join(CHANNELS)}.")
        topic = node.get("topic")
        if not isinstance(topic, str) or not topic:
            out.append("Choose a topic.")
        elif not lookups.topic_exists(topic):
            out.append(f"There is no topic {topic!r}.")
    elif kind == "message":
        if op not in MESSAGE_OPS:
            out.append(f"Choose what happened to the message: {', '.join(MESSAGE_OPS)}.")
        if node.get("within_days") is not None and not _positive(node["within_days"]):
            out.append("The number of days must be a positive number.")
        for field, exists in (
            ("template", lookups.template_exists),
            ("topic", lookups.topic_exists),
        ):
            value = node.get(field)
            if value in (None, ""):
                continue
            if not isinstance(value, str) or not exists(value):
                out.append(f"There is no {field} {value!r}.")
    elif kind == "replenishment":
        if not lookups.replenishment_available():
            out.append("Predicted replenishment is not available (no replenishment data).")
        if not _positive(node.get("within_days")):
            out.append("Say within how many days (a positive number).")
        product = node.get("product")
        if product is not None and not isinstance(product, str):
            out.append("The product must be text.")
    elif kind == "segment":
        key = node.get("segment")
        if not isinstance(key, str) or not key.strip():
            out.append("Choose a saved segment.")
        if node.get("op", "in") not in ("in", "not_in"):
            out.append("Choose 'in' or 'not in' the segment.")
    return out


def describe(node: Any) -> str:
    """The tree in one line of plain words, for lists and the API."""
    if isinstance(node, list):
        node = {"all": node}
    if not isinstance(node, dict):
        return "?"
    if "all" in node or "any" in node:
        word = " and " if "all" in node else " or "
        items = node.get("all", node.get("any")) or []
        text = word.join(describe(n) for n in items)
        return f"({text})" if len(items) > 1 else (text or "everyone")
    if "not" in node:
        return f"not {describe(node['not'])}"
    kind = node.get("type", "segment" if "segment" in node else None)
    days = f" in the last {node['within_days']:g} days" if node.get("within_days") else ""
    if kind == "event":
        did = "did not do" if node.get("op") == "not_happened" else "did"
        times = f" at least {node['at_least']} times" if (node.get("at_least") or 1) > 1 else ""
        return f"{did} {node.get('name')}{times}{days}"
    if kind == "consent":
        verb = "not subscribed" if node.get("op") == "not_subscribed" else "subscribed"
        return f"{verb} to {node.get('topic')} on {node.get('channel')}"
    if kind == "message":
        what = " ".join(filter(None, [node.get("template"), node.get("topic")])) or "any message"
        return f"{str(node.get('op', '')).replace('_', ' ')} {what}{days}"
    if kind == "replenishment":
        of = f" of {node['product']}" if node.get("product") else ""
        return f"due to run out{of} within {node.get('within_days')} days"
    if kind == "segment":
        verb = "not in" if node.get("op") == "not_in" else "in"
        return f"{verb} segment {node.get('segment')}"
    return conditions.describe(node)


def referenced(node: Any) -> set[str]:
    """Keys of the saved segments a tree names directly."""
    if isinstance(node, list):
        node = {"all": node}
    if not isinstance(node, dict):
        return set()
    found: set[str] = set()
    for group in ("all", "any"):
        for item in node.get(group) or []:
            found |= referenced(item)
    if "not" in node:
        found |= referenced(node["not"])
    kind = node.get("type", "segment" if "segment" in node else None)
    if kind == "segment" and isinstance(node.get("segment"), str):
        found.add(node["segment"])
    return found
