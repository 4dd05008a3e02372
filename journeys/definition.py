"""The journey definition: one JSON format for admin export/import, the API and versions.

::

    {
      "key": "shoe-replenishment", "name": "...", "description": "...",
      "topic": "replenishment", "priority": 5,
      "entry": {"rule": "once" | "once_per" | "every_time", "days": 30},
      "trigger": {"kind": "event", "event": "order.completed", "filter": [<condition>]},
      "exit_events": [{"event": "order.completed", "match": "sku"}],
      "goal": {"event": "order.completed", "within_hours": 168, "exits": true} | null,
      "on_hold": "defer" | "skip",
      "steps": [{"key": "remind", "kind": "send", "label": "", "next": "wait-1",
                 "alt_next": "", "config": {...}}, ...]
    }

A published version holds all of it. Exit events and the goal travel with the
enrollment like the steps do: a customer keeps those of the version they entered on
(``journeys.events``), so editing them only changes the path of new entries.

The first step is the entry. ``validate`` returns every problem at once, each with
where it is (``field``) and a sentence a marketer understands; publishing refuses a
definition with any problem. The trigger's own settings are checked by its kind's
module (``journeys.triggers.registry``). Saving, publishing and switching a journey on
and off are in ``journeys.services``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError

from journeys.models import Journey, Step, StepKind
from journeys.problems import Problem, conditions_problems, is_int, is_name, positive
from journeys.triggers import registry
from orchestrator.consent.models import CHANNELS, Topic, validate_names
from orchestrator.segments import conditions
from orchestrator.segments.models import Segment

KEY_RE = re.compile(r"^[-a-zA-Z0-9_]+$")
TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
#: Steps that take time, so a loop through one of them cannot spin.
WAITING_KINDS = {StepKind.WAIT, StepKind.WAIT_FOR_EVENT}
#: Steps with a second exit (``alt_next``), and what each exit means.
EXITS = {
    StepKind.WAIT_FOR_EVENT: ("when the event happens", "on timeout"),
    StepKind.BRANCH: ("yes", "no"),
    StepKind.SPLIT: ("arm A", "arm B"),
}
WAIT_MODES = ("duration", "time_of_day", "until_date")


# --- reading the draft ---------------------------------------------------------------


def step_dict(step: Step) -> dict[str, Any]:
    return {
        "key": step.key,
        "kind": step.kind,
        "label": step.label,
        "next": step.next,
        "alt_next": step.alt_next,
        "config": step.config or {},
    }


def definition_of(journey: Journey, steps: list[Step] | None = None) -> dict[str, Any]:
    """The journey's draft (its row and Step rows) as a definition."""
    if steps is None:
        steps = list(journey.steps.order_by("position", "id"))
    goal = None
    if journey.goal_event:
        goal = {
            "event": journey.goal_event,
            "within_hours": journey.goal_within_hours,
            "exits": journey.goal_exits,
        }
    return {
        "key": journey.key,
        "name": journey.name,
        "customer_name": journey.customer_name,
        "customer_names": journey.customer_names or {},
        "description": journey.description,
        "topic": journey.topic.key if journey.topic_id else None,
        "priority": journey.priority,
        "entry": {"rule": journey.entry, "days": journey.entry_days},
        "trigger": {"kind": journey.trigger_kind, **(journey.trigger or {})},
        "exit_events": journey.exit_events or [],
        "goal": goal,
        "on_hold": journey.on_hold,
        "steps": [step_dict(s) for s in steps],
    }


def export(journey: Journey) -> dict[str, Any]:
    """The definition plus read-only facts (status, version) for export and the API."""
    data = definition_of(journey)
    data["status"] = journey.status
    data["version"] = journey.current_version.number if journey.current_version_id else None
    return data


# --- validation ----------------------------------------------------------------------


#: The property a digest collects per (a context key such as order_id).
PROPERTY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def _digest_problems(config: Mapping[str, Any], where: str) -> list[Problem]:
    """A digest step: a window, a count or both; optionally per key."""
    p = []
    window, count, key = config.get("window_minutes"), config.get("count"), config.get("key")
    if window is None and count is None:
        p.append(
            Problem(where, "Say how long a digest collects, or after how many messages it goes.")
        )
    if window is not None and not positive(window):
        p.append(Problem(where, "The digest window must be a positive number of minutes."))
    if count is not None and (not is_int(count) or int(count) < 2):
        p.append(Problem(where, "A digest goes after at least 2 messages: give a whole number."))
    if key not in (None, "") and not (isinstance(key, str) and PROPERTY_RE.match(key)):
        p.append(Problem(where, "Collect per the value of a property name, e.g. order_id."))
    return p


def _message_problems(config: Mapping[str, Any], templates: Mapping[str, set[str]], where: str):
    """What a send or digest step sends: its template, channel and fallback."""
    p: list[Problem] = []
    template = config.get("template")
    channel = config.get("channel", "preferred")
    fallback = config.get("fallback_channel") or ""
    if not all(isinstance(v, str) for v in (template or "", channel, fallback)):
        return [Problem(where, "Template, channel and fallback are names (text).")]
    if not template:
        p.append(Problem(where, "Choose the message template to send."))
    elif template not in templates:
        p.append(Problem(where, f"There is no message template {template!r}."))
    if channel != "preferred" and channel not in CHANNELS:
        p.append(Problem(where, f"Unknown channel {channel!r}."))
    elif channel != "preferred" and template in templates and channel not in templates[template]:
        p.append(Problem(where, f"Template {template!r} has no {channel} version to send."))
    if fallback:
        if fallback not in CHANNELS:
            p.append(Problem(where, f"Unknown fallback channel {fallback!r}."))
        elif fallback == channel:
            p.append(Problem(where, "The fallback channel must differ from the channel."))
        elif template in templates and fallback not in templates[template]:
            p.append(Problem(where, f"Template {template!r} has no {fallback} version."))
    ttl = config.get("ttl_hours")
    if ttl is not None and not positive(ttl):
        p.append(Problem(where, "Time to live must be a positive number of hours."))
    if "data" in config and not isinstance(config["data"], Mapping):
        p.append(Problem(where, "Extra template data must be an object."))
    return p


def _step_config_problems(step: Mapping[str, Any], templates: Mapping[str, set[str]]) -> list:
    kind = step.get("kind")
    config = step.get("config") or {}
    where = f"steps.{step.get('key')}"
    p: list[Problem] = []
    if not isinstance(config, Mapping):
        return [Problem(where, "The step's settings are missing or unreadable.")]
    if kind == StepKind.SEND:
        p += _message_problems(config, templates, where)
        if config.get("digest"):
            # Stored journeys were migrated (0005); an old export still says it this way.
            p.append(Problem(where, "A digest is a step of its own: make this a digest step."))
    elif kind == StepKind.DIGEST:
        p += _message_problems(config, templates, where)
        p += _digest_problems(config, where)
    elif kind == StepKind.WAIT:
        mode = config.get("mode", "duration")
        if mode not in WAIT_MODES:
            p.append(
                Problem(where, "Choose how to wait: for a while, until a time of day or a date.")
            )
        elif mode == "duration" and not positive(config.get("minutes")):
            p.append(Problem(where, "Say how long to wait (a positive number of minutes)."))
        elif mode == "time_of_day" and not TIME_RE.match(str(config.get("time", ""))):
            p.append(Problem(where, "Give the time of day as HH:MM, e.g. 09:00."))
        elif mode == "until_date":
            if not is_name(config.get("attribute")):
                p.append(Problem(where, "Name the date to wait for (an attribute or context key)."))
            if config.get("from", "attribute") not in ("attribute", "context"):
                p.append(
                    Problem(where, "Say where the date is: a customer attribute or a property.")
                )
            if not is_int(config.get("offset_minutes", 0)):
                p.append(Problem(where, "The offset must be a whole number of minutes."))
    elif kind == StepKind.WAIT_FOR_EVENT:
        if not is_name(config.get("event")):
            p.append(Problem(where, "Name the event to wait for."))
        if not positive(config.get("timeout_minutes")):
            p.append(Problem(where, "Give a timeout (a positive number of minutes)."))
        p += conditions_problems(
            config.get("filter"), f"{where}.filter", allowed=("property",), required=False
        )
    elif kind == StepKind.BRANCH:
        p += conditions_problems(
            config.get("conditions"),
            f"{where}.conditions",
            allowed=conditions.CONDITION_TYPES,
            required=True,
        )
        p += _segments_missing(config.get("conditions"), f"{where}.conditions")
        if config.get("match", "all") not in ("all", "any"):
            p.append(Problem(where, "Choose whether all conditions or any one must hold."))
    elif kind == StepKind.SPLIT:
        percent = config.get("percent")
        if not is_int(percent) or not 1 <= percent <= 99:
            p.append(Problem(where, "Arm A's share must be a whole percentage from 1 to 99."))
    elif kind == StepKind.UPDATE_ATTRIBUTE:
        if not isinstance(config.get("name"), str) or not config["name"].strip():
            p.append(Problem(where, "Name the attribute to update."))
        if config.get("from_context") and not isinstance(config["from_context"], str):
            p.append(Problem(where, "The context key to copy from is a name (text)."))
        if "value" not in config and not config.get("from_context"):
            p.append(Problem(where, "Give the value (or a context key to copy it from)."))
    elif kind == StepKind.WEBHOOK:
        url = str(config.get("url", ""))
        if not re.match(r"^https?://[^\s/$.?#][^\s]*$", url):
            p.append(Problem(where, "Give the webhook's full http(s) URL."))
        timeout = config.get("timeout_seconds", 5)
        if not positive(timeout) or timeout > 30:
            p.append(Problem(where, "The webhook timeout must be between 0 and 30 seconds."))
    return p


def _graph_problems(steps: list[Mapping[str, Any]]) -> list[Problem]:
    p: list[Problem] = []
    keys = [s.get("key") for s in steps]
    by_key = {s.get("key"): s for s in steps}
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            p.append(Problem(f"steps.{key}", "Two steps have this name; each needs its own."))
        seen.add(key)
    edges: dict[str, list[str]] = {}
    for s in steps:
        key, kind = s.get("key"), s.get("kind")
        where = f"steps.{key}"
        targets = []
        for attr in ("next", "alt_next"):
            target = s.get(attr) or ""
            if target and target not in by_key:
                p.append(Problem(where, f"Goes to {target!r}, which is not a step."))
            elif target:
                targets.append(target)
        if key in (s.get("next"), s.get("alt_next")):
            p.append(Problem(where, "A step cannot lead to itself."))
        if kind == StepKind.EXIT and (s.get("next") or s.get("alt_next")):
            p.append(Problem(where, "An exit step ends the journey; it cannot lead on."))
        if kind in EXITS:
            first, second = EXITS[kind]
            if not s.get("next") and not s.get("alt_next"):
                p.append(Problem(where, f"Say where to go {first} and {second}."))
            if kind == StepKind.SPLIT and not s.get("alt_next"):
                p.append(Problem(where, "Say where arm B goes."))
        elif s.get("alt_next"):
            p.append(Problem(where, "Only wait-for-event, branch and split steps have two exits."))
        edges[key] = targets
    if not steps or p:
        return p
    # Reachability from the entry step.
    reached = {steps[0]["key"]}
    frontier = [steps[0]["key"]]
    while frontier:
        for target in edges[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    for key in keys:
        if key not in reached:
            p.append(Problem(f"steps.{key}", "No path from the first step leads here."))
    # A cycle must pass through a waiting step, or the engine would spin through it.
    quick = {k for k in keys if by_key[k].get("kind") not in WAITING_KINDS}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in edges[node]:
            if target not in quick:
                continue
            if state.get(target) == 1:
                return path[path.index(target) :]
            if state.get(target) is None:
                found = visit(target, path)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for key in keys:
        if key in quick and key not in state:
            cycle = visit(key, [])
            if cycle:
                loop = " → ".join([*cycle, cycle[0]])
                p.append(Problem("steps", f"The loop {loop} has no wait in it; add a wait step."))
                break
    return p


def _trigger_problems(trigger: Any) -> list[Problem]:
    if not isinstance(trigger, Mapping):
        return [Problem("trigger", "The trigger must be an object with a kind.")]
    kind = registry.get(trigger.get("kind"))
    if kind is None:
        kinds = "; ".join(label.lower() for _kind, label in registry.choices())
        return [Problem("trigger.kind", f"Choose what starts the journey: {kinds}.")]
    return kind.validate(trigger)


def validate(definition: Any, *, templates: Mapping[str, set[str]] | None = None) -> list[Problem]:
    """Every problem with a definition. ``templates`` maps template key to its channels."""
    if not isinstance(definition, Mapping):
        return [Problem("", "A journey definition is a JSON object.")]
    p: list[Problem] = []
    key = definition.get("key")
    if not isinstance(key, str) or not KEY_RE.match(key) or len(key) > 100:
        p.append(Problem("key", "Use letters, digits, '-' and '_' (at most 100)."))
    name = definition.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        p.append(Problem("name", "Give the journey a name (at most 200 characters)."))
    customer_name = definition.get("customer_name", "")
    if not isinstance(customer_name, str) or len(customer_name) > 200:
        p.append(Problem("customer_name", "The name customers read: text, at most 200 characters."))
    try:
        validate_names(definition.get("customer_names") or {})
    except ValidationError as exc:
        p.append(Problem("customer_names", " ".join(exc.messages)))
    topic = definition.get("topic")
    if not isinstance(topic, str) or not Topic.objects.filter(key=topic).exists():
        p.append(Problem("topic", f"There is no topic {topic!r}."))
    priority = definition.get("priority", 5)
    if not is_int(priority) or not 0 <= priority <= 9:
        p.append(Problem("priority", "Priority is a whole number from 0 to 9."))
    entry = definition.get("entry") or {}
    rule = entry.get("rule", "every_time") if isinstance(entry, Mapping) else None
    if rule not in Journey.Entry.values:
        p.append(
            Problem(
                "entry.rule",
                "Choose who may enter again: nobody (once), after some days, or every time.",
            )
        )
    elif rule == "once_per" and (not is_int(entry.get("days")) or entry["days"] < 1):
        p.append(Problem("entry.days", "Say after how many days a customer may enter again."))
    p += _trigger_problems(definition.get("trigger"))
    exits = definition.get("exit_events") or []
    if not isinstance(exits, list) or not all(
        isinstance(e, Mapping)
        and is_name(e.get("event"))
        and (not e.get("match") or is_name(e.get("match")))
        for e in exits
    ):
        p.append(
            Problem(
                "exit_events",
                "Each exit event needs an event name (and may name a property to match).",
            )
        )
    goal = definition.get("goal")
    if goal is not None:
        if not isinstance(goal, Mapping) or not is_name(goal.get("event")):
            p.append(Problem("goal", "A goal names the event that counts as a conversion."))
        elif goal.get("within_hours") is not None and not positive(goal["within_hours"]):
            p.append(Problem("goal.within_hours", "The conversion window is a positive number."))
    if definition.get("on_hold", "defer") not in Journey.OnHold.values:
        p.append(
            Problem("on_hold", "Choose what happens to a held message: send it later or skip it.")
        )
    steps = definition.get("steps")
    if not isinstance(steps, list) or not steps:
        p.append(Problem("steps", "A journey needs at least one step."))
        return p
    shaped = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            p.append(Problem(f"steps[{i}]", "Each step is an object."))
            continue
        key = step.get("key")
        if not isinstance(key, str) or not KEY_RE.match(key) or len(key) > 50:
            p.append(Problem(f"steps[{i}]", "Each step needs a short name (letters, digits, -)."))
            continue
        if step.get("kind") not in StepKind.values:
            p.append(Problem(f"steps.{key}", f"There is no step type {step.get('kind')!r}."))
            continue
        for attr in ("next", "alt_next"):
            if not isinstance(step.get(attr) or "", str):
                p.append(Problem(f"steps.{key}", "Where a step leads is another step's name."))
        shaped.append(step)
    if len(shaped) != len(steps):
        return p
    if templates is None:
        templates = template_channels()
    for step in shaped:
        p += _step_config_problems(step, templates)
    p += _graph_problems(shaped)
    return p


def template_channels() -> dict[str, set[str]]:
    from orchestrator.delivery.models import TemplateVariant

    out: dict[str, set[str]] = {}
    for key, channel in TemplateVariant.objects.values_list("template__key", "channel"):
        out.setdefault(key, set()).add(channel)
    from orchestrator.delivery.models import MessageTemplate

    for key in MessageTemplate.objects.values_list("key", flat=True):
        out.setdefault(key, set())
    return out


# --- the stored form ------------------------------------------------------------------


def normalized(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition with defaults filled in, as stored in a version."""
    entry = definition.get("entry") or {}
    trigger = dict(definition["trigger"])
    goal = definition.get("goal")
    return {
        "key": definition["key"],
        "name": definition["name"].strip(),
        "customer_name": (definition.get("customer_name") or "").strip(),
        "customer_names": {
            k.strip(): v.strip() for k, v in (definition.get("customer_names") or {}).items()
        },
        "description": definition.get("description") or "",
        "topic": definition["topic"],
        "priority": definition.get("priority", 5),
        "entry": {
            "rule": entry.get("rule", "every_time"),
            "days": entry.get("days") if entry.get("rule") == "once_per" else None,
        },
        "trigger": trigger,
        "exit_events": [dict(e) for e in definition.get("exit_events") or []],
        "goal": (
            {
                "event": goal["event"],
                "within_hours": goal.get("within_hours"),
                "exits": bool(goal.get("exits", True)),
            }
            if goal
            else None
        ),
        "on_hold": definition.get("on_hold", "defer"),
        "steps": [
            {
                "key": s["key"],
                "kind": s["kind"],
                "label": s.get("label") or "",
                "next": s.get("next") or "",
                "alt_next": s.get("alt_next") or "",
                "config": dict(s.get("config") or {}),
            }
            for s in definition["steps"]
        ],
    }


def _segments_missing(items: Any, field: str) -> list[Problem]:
    """Branch conditions naming a saved segment that does not exist."""
    if not isinstance(items, list):
        return []  # said by conditions_problems
    keys = {
        c["segment"]
        for c in items
        if isinstance(c, dict) and c.get("type") == "segment" and isinstance(c.get("segment"), str)
    }
    found = set(Segment.objects.filter(key__in=keys).values_list("key", flat=True))
    return [Problem(field, f"There is no saved segment {key!r}.") for key in sorted(keys - found)]
