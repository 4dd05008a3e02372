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

The first step is the entry. ``validate`` returns every problem at once, each with
where it is (``field``) and a sentence a marketer understands; publishing refuses a
definition with any problem.
"""

from __future__ import annotations

import logging
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery.schedules import crontab
from django.db import transaction

from journeys import conditions
from journeys.models import Journey, JourneyVersion, Step, StepKind
from orchestrator.consent.models import CHANNELS, Topic
from orchestrator.core.tasking import publish_on_commit

logger = logging.getLogger(__name__)

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
TRIGGER_KINDS = tuple(Journey.TriggerKind.values)


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class DefinitionInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems

    def as_fields(self) -> dict[str, list[str]]:
        fields: dict[str, list[str]] = {}
        for p in self.problems:
            fields.setdefault(p.field or "definition", []).append(p.message)
        return fields


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


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _name(value: Any) -> bool:
    """A usable name: non-empty text of a sensible length."""
    return isinstance(value, str) and bool(value.strip()) and len(value) <= 200


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _conditions_problems(
    value: Any, field: str, *, allowed: tuple[str, ...], required: bool
) -> list[Problem]:
    if value in (None, []) and not required:
        return []
    if not isinstance(value, list) or not value:
        return [Problem(field, "Add at least one condition.")]
    out = []
    for i, condition in enumerate(value):
        out += [
            Problem(f"{field}[{i}]", m)
            for m in conditions.condition_problems(condition, allowed=allowed)
        ]
    return out


def _step_config_problems(step: Mapping[str, Any], templates: Mapping[str, set[str]]) -> list:
    kind = step.get("kind")
    config = step.get("config") or {}
    where = f"steps.{step.get('key')}"
    p: list[Problem] = []
    if not isinstance(config, Mapping):
        return [Problem(where, "The step's settings must be an object.")]
    if kind == StepKind.SEND:
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
        elif (
            channel != "preferred" and template in templates and channel not in templates[template]
        ):
            p.append(Problem(where, f"Template {template!r} has no {channel} version to send."))
        if fallback:
            if fallback not in CHANNELS:
                p.append(Problem(where, f"Unknown fallback channel {fallback!r}."))
            elif fallback == channel:
                p.append(Problem(where, "The fallback channel must differ from the channel."))
            elif template in templates and fallback not in templates[template]:
                p.append(Problem(where, f"Template {template!r} has no {fallback} version."))
        ttl = config.get("ttl_hours")
        if ttl is not None and not _positive(ttl):
            p.append(Problem(where, "Time to live must be a positive number of hours."))
        if "data" in config and not isinstance(config["data"], Mapping):
            p.append(Problem(where, "Extra template data must be an object."))
    elif kind == StepKind.WAIT:
        mode = config.get("mode", "duration")
        if mode not in WAIT_MODES:
            p.append(Problem(where, f"Wait mode must be one of {', '.join(WAIT_MODES)}."))
        elif mode == "duration" and not _positive(config.get("minutes")):
            p.append(Problem(where, "Say how long to wait (a positive number of minutes)."))
        elif mode == "time_of_day" and not TIME_RE.match(str(config.get("time", ""))):
            p.append(Problem(where, "Give the time of day as HH:MM, e.g. 09:00."))
        elif mode == "until_date":
            if not _name(config.get("attribute")):
                p.append(Problem(where, "Name the date to wait for (an attribute or context key)."))
            if config.get("from", "attribute") not in ("attribute", "context"):
                p.append(Problem(where, "The date comes from 'attribute' or 'context'."))
            if not _is_int(config.get("offset_minutes", 0)):
                p.append(Problem(where, "The offset must be a whole number of minutes."))
    elif kind == StepKind.WAIT_FOR_EVENT:
        if not _name(config.get("event")):
            p.append(Problem(where, "Name the event to wait for."))
        if not _positive(config.get("timeout_minutes")):
            p.append(Problem(where, "Give a timeout (a positive number of minutes)."))
        p += _conditions_problems(
            config.get("filter"), f"{where}.filter", allowed=("property",), required=False
        )
    elif kind == StepKind.BRANCH:
        p += _conditions_problems(
            config.get("conditions"),
            f"{where}.conditions",
            allowed=conditions.CONDITION_TYPES,
            required=True,
        )
        if config.get("match", "all") not in ("all", "any"):
            p.append(Problem(where, "Match must be 'all' or 'any'."))
    elif kind == StepKind.SPLIT:
        percent = config.get("percent")
        if not _is_int(percent) or not 1 <= percent <= 99:
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
        if not _positive(timeout) or timeout > 30:
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
    kind = trigger.get("kind")
    if kind not in TRIGGER_KINDS:
        return [Problem("trigger.kind", f"The trigger must be one of {', '.join(TRIGGER_KINDS)}.")]
    p: list[Problem] = []
    if kind == "event":
        if not _name(trigger.get("event")):
            p.append(Problem("trigger.event", "Name the event that starts the journey."))
        p += _conditions_problems(
            trigger.get("filter"), "trigger.filter", allowed=("property",), required=False
        )
    elif kind == "date":
        source = trigger.get("source", "attribute")
        if source not in ("attribute", "event"):
            p.append(Problem("trigger.source", "The date comes from an 'attribute' or an 'event'."))
        elif source == "attribute" and not _name(trigger.get("attribute")):
            p.append(Problem("trigger.attribute", "Name the date attribute, e.g. appointment_at."))
        elif source == "event" and not _name(trigger.get("event")):
            p.append(Problem("trigger.event", "Name the event whose time (or property) to use."))
        if trigger.get("property") and not _name(trigger.get("property")):
            p.append(Problem("trigger.property", "The event property is a name (text)."))
        if not _is_int(trigger.get("offset_minutes", 0)):
            p.append(Problem("trigger.offset_minutes", "The offset is a whole number of minutes."))
        grace = trigger.get("grace_minutes", 60)
        if not _positive(grace):
            p.append(Problem("trigger.grace_minutes", "Grace must be a positive number."))
    elif kind == "replenishment":
        if not _name(trigger.get("event")):
            p.append(Problem("trigger.event", "Name the purchase event, e.g. order.completed."))
        if not _name(trigger.get("product_property")):
            p.append(Problem("trigger.product_property", "Name the product property, e.g. sku."))
        if not _positive(trigger.get("default_cycle_days")):
            p.append(Problem("trigger.default_cycle_days", "Give the product's usual cycle."))
        before = trigger.get("remind_days_before", 0)
        if not _is_int(before) or before < 0:
            p.append(Problem("trigger.remind_days_before", "A whole number of days, 0 or more."))
        minimum = trigger.get("min_purchases", 3)
        if not _is_int(minimum) or minimum < 2:
            p.append(
                Problem("trigger.min_purchases", "At least 2 purchases are needed for a median.")
            )
        cycles = trigger.get("product_cycles", {})
        if not isinstance(cycles, Mapping) or not all(_positive(v) for v in cycles.values()):
            p.append(Problem("trigger.product_cycles", "Each product's cycle is a day count."))
    elif kind == "recurring":
        try:
            cron_schedule(trigger.get("cron", ""))
        except ValueError as exc:
            p.append(Problem("trigger.cron", str(exc)))
        zone = trigger.get("timezone", "UTC")
        if zone != "customer":
            try:
                zoneinfo.ZoneInfo(str(zone))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                p.append(Problem("trigger.timezone", f"Unknown time zone {zone!r}."))
        p += _conditions_problems(
            trigger.get("segment"),
            "trigger.segment",
            allowed=("attribute", "event"),
            required=False,
        )
    elif kind == "segment":
        p += _conditions_problems(
            trigger.get("segment"), "trigger.segment", allowed=("attribute", "event"), required=True
        )
    return p


def cron_schedule(expression: str) -> crontab:
    """Parse a five-field cron expression; ValueError with a readable message."""
    fields = str(expression).split()
    if len(fields) != 5:
        raise ValueError("Give the schedule as five cron fields, e.g. '0 9 * * 1' (Mon 09:00).")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        schedule = crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except Exception as exc:  # celery raises ValueError or its own ParseException
        raise ValueError(f"The schedule {expression!r} is not valid cron: {exc}") from None
    return schedule


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
    topic = definition.get("topic")
    if not isinstance(topic, str) or not Topic.objects.filter(key=topic).exists():
        p.append(Problem("topic", f"There is no topic {topic!r}."))
    priority = definition.get("priority", 5)
    if not _is_int(priority) or not 0 <= priority <= 9:
        p.append(Problem("priority", "Priority is a whole number from 0 to 9."))
    entry = definition.get("entry") or {}
    rule = entry.get("rule", "every_time") if isinstance(entry, Mapping) else None
    if rule not in Journey.Entry.values:
        p.append(Problem("entry.rule", "Entry must be once, once_per or every_time."))
    elif rule == "once_per" and (not _is_int(entry.get("days")) or entry["days"] < 1):
        p.append(Problem("entry.days", "Say after how many days a customer may enter again."))
    p += _trigger_problems(definition.get("trigger"))
    exits = definition.get("exit_events") or []
    if not isinstance(exits, list) or not all(
        isinstance(e, Mapping)
        and _name(e.get("event"))
        and (not e.get("match") or _name(e.get("match")))
        for e in exits
    ):
        p.append(Problem("exit_events", 'Each exit event is {"event": name, "match": key?}.'))
    goal = definition.get("goal")
    if goal is not None:
        if not isinstance(goal, Mapping) or not _name(goal.get("event")):
            p.append(Problem("goal", "A goal names the event that counts as a conversion."))
        elif goal.get("within_hours") is not None and not _positive(goal["within_hours"]):
            p.append(Problem("goal.within_hours", "The conversion window is a positive number."))
    if definition.get("on_hold", "defer") not in Journey.OnHold.values:
        p.append(Problem("on_hold", "On hold must be 'defer' or 'skip'."))
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
            p.append(Problem(f"steps.{key}", f"Unknown step type {step.get('kind')!r}."))
            continue
        for attr in ("next", "alt_next"):
            if not isinstance(step.get(attr) or "", str):
                p.append(Problem(f"steps.{key}", f"'{attr}' names a step."))
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


# --- writing -------------------------------------------------------------------------


def _normalized(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition with defaults filled in, as stored in a version."""
    entry = definition.get("entry") or {}
    trigger = dict(definition["trigger"])
    goal = definition.get("goal")
    return {
        "key": definition["key"],
        "name": definition["name"].strip(),
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


@transaction.atomic
def journey_save(definition: Mapping[str, Any], *, key: str | None = None) -> Journey:
    """Create or replace a journey's draft from a definition; publish it if active.

    Raises DefinitionInvalid with every problem. ``key`` (from a URL) wins over the body's.
    """
    if key is not None and isinstance(definition, Mapping):
        definition = {**definition, "key": key}
    problems = validate(definition)
    if problems:
        raise DefinitionInvalid(problems)
    d = _normalized(definition)
    topic = Topic.objects.get(key=d["topic"])
    trigger = dict(d["trigger"])
    kind = trigger.pop("kind")
    journey = Journey.objects.select_for_update().filter(key=d["key"]).first()
    fields = {
        "name": d["name"],
        "description": d["description"],
        "topic": topic,
        "priority": d["priority"],
        "entry": d["entry"]["rule"],
        "entry_days": d["entry"]["days"],
        "trigger_kind": kind,
        "trigger": trigger,
        "exit_events": d["exit_events"],
        "goal_event": d["goal"]["event"] if d["goal"] else "",
        "goal_within_hours": d["goal"]["within_hours"] if d["goal"] else None,
        "goal_exits": d["goal"]["exits"] if d["goal"] else True,
        "on_hold": d["on_hold"],
    }
    if journey is None:
        journey = Journey.objects.create(key=d["key"], **fields)
    else:
        for name, value in fields.items():
            setattr(journey, name, value)
        journey.save()
        journey.steps.all().delete()
    Step.objects.bulk_create(
        Step(
            journey=journey,
            key=s["key"],
            position=i,
            kind=s["kind"],
            label=s["label"],
            next=s["next"],
            alt_next=s["alt_next"],
            config=s["config"],
        )
        for i, s in enumerate(d["steps"])
    )
    if journey.status in (Journey.Status.ACTIVE, Journey.Status.PAUSED):
        journey_publish(journey=journey)
        from journeys.triggers import schedules

        schedules.sync_schedule(journey)  # a changed cron or trigger kind reaches beat
    return journey


def journey_publish(*, journey: Journey) -> JourneyVersion:
    """Publish the draft as a new version unless it equals the current one.

    Running enrollments stay on the version they started; new ones take this one.
    """
    definition = definition_of(journey)
    problems = validate(definition)
    if problems:
        raise DefinitionInvalid(problems)
    definition = _normalized(definition)
    current = journey.current_version
    if current is not None and current.definition == definition:
        return current
    number = (current.number if current else 0) + 1
    latest = journey.versions.order_by("-number").values_list("number", flat=True).first()
    number = max(number, (latest or 0) + 1)
    version = JourneyVersion.objects.create(journey=journey, number=number, definition=definition)
    journey.current_version = version
    journey.save(update_fields=["current_version", "updated_at"])
    return version


@transaction.atomic
def journey_activate(*, journey: Journey) -> JourneyVersion:
    """Validate, publish and start the journey (or resume a paused one)."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    version = journey_publish(journey=journey)
    journey.status = Journey.Status.ACTIVE
    journey.save(update_fields=["status", "updated_at"])
    from journeys.triggers import schedules

    schedules.sync_schedule(journey)
    publish_on_commit("journeys.tick")
    # Sweep at once rather than at the next beat: whoever is already due is reached now.
    kind = journey.trigger_kind
    if kind in (Journey.TriggerKind.DATE, Journey.TriggerKind.SEGMENT):
        publish_on_commit("sweeps.journey_triggers", expires=60)
    elif kind == Journey.TriggerKind.REPLENISHMENT:
        publish_on_commit("sweeps.replenishment", expires=60)
    return version


@transaction.atomic
def journey_pause(*, journey: Journey) -> None:
    """Hold the journey: nobody enters and running enrollments wait where they are."""
    journey = Journey.objects.select_for_update().get(pk=journey.pk)
    if journey.status != Journey.Status.ACTIVE:
        return
    journey.status = Journey.Status.PAUSED
    journey.save(update_fields=["status", "updated_at"])
    from journeys.triggers import schedules

    schedules.sync_schedule(journey)


@transaction.atomic
def journey_archive(*, journey: Journey) -> None:
    """Retire the journey: nobody enters it again and its beat task is switched off.

    An active journey is paused first. Enrollments stay where they are; the engine
    only moves customers on active journeys, so they wait unless it is activated again.
    """
    from django.utils import timezone

    from journeys.triggers import schedules

    current = Journey.objects.select_for_update().get(pk=journey.pk)
    if current.status == Journey.Status.ACTIVE:
        journey_pause(journey=current)
    Journey.objects.filter(pk=journey.pk).update(
        status=Journey.Status.ARCHIVED, updated_at=timezone.now()
    )
    journey.refresh_from_db(fields=["status", "updated_at"])
    schedules.sync_schedule(journey)
