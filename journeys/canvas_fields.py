"""What each step kind and trigger kind asks for, in plain words: the field specs.

One home for a step's settings as a marketer sees them: the canvas's side panel renders
a step from its kind's specs, and the admin's form builder (``journeys.admin_forms``)
takes its labels, help, choices and the settings it manages from the same specs. The
trigger kinds already declare their builder fields (``journeys.triggers.registry``);
their specs are read from those form fields, so a trigger kind has one home too.

A spec names a key of the step's ``config`` (or of the trigger)::

    {"name": "minutes", "label": "Wait for", "type": "duration", "required": true,
     "help": "...", "choices": [{"value", "label"}], "show_when": {"field", "equals"},
     "default": ...}

``type`` is one of template, channel, duration (stored as minutes; ``signed`` when it
can go before), time, date, number, text, event, attribute, conditions (with
``condition_types``), segment, topic, select, bool, url, json.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from django import forms

from journeys.definition import EXITS
from journeys.form_fields import CONDITION_TYPE_LABELS, ConditionsField
from journeys.models import CHANNEL_CHOICES, StepKind
from journeys.triggers import registry
from orchestrator.consent.models import Channel
from orchestrator.delivery.models import MessageStatus
from orchestrator.segments import conditions

Spec = dict[str, Any]


def _spec(name: str, label: str, type_: str, *, required: bool = False, help: str = "", **extra):
    spec: Spec = {"name": name, "label": label, "type": type_, "required": required, "help": help}
    if "choices" in extra:
        extra["choices"] = [{"value": v, "label": text} for v, text in extra["choices"]]
    spec.update(extra)
    return spec


def _when(field: str, equals: Any) -> dict[str, Any]:
    return {"show_when": {"field": field, "equals": equals}}


CHANNELS = list(CHANNEL_CHOICES)
FALLBACKS = [("", "none"), *Channel.choices]
WAIT_MODE_CHOICES = (
    ("duration", "for a while"),
    ("time_of_day", "until a time of day (customer's time zone)"),
    ("until_date", "until a date (attribute or journey property)"),
)
DATE_FROM_CHOICES = (("attribute", "customer attribute"), ("context", "journey property"))
MATCH_CHOICES = (("all", "all conditions hold"), ("any", "any condition holds"))


def _message_specs() -> list[Spec]:
    return [
        _spec(
            "template",
            "Template",
            "template",
            required=True,
            help="The message to send.",
        ),
        _spec(
            "channel",
            "Channel",
            "channel",
            choices=CHANNELS,
            default="preferred",
            help="Preferred: the customer's own choice among the template's channels.",
        ),
    ]


#: Per step kind, its settings in the order the panel and the form show them.
STEP_FIELDS: dict[str, list[Spec]] = {
    StepKind.SEND: [
        *_message_specs(),
        _spec("fallback_channel", "If it fails, try", "channel", choices=FALLBACKS, default=""),
        _spec(
            "ttl_hours",
            "Drop if not sent within (hours)",
            "number",
            help="Empty: no limit.",
            min=0,
        ),
    ],
    StepKind.DIGEST: [
        *_message_specs(),
        _spec(
            "window_minutes",
            "Collect for",
            "duration",
            help="Messages reaching this step for a customer within this time go as one.",
        ),
        _spec(
            "count",
            "Or send once it holds",
            "number",
            help="Send the digest as soon as it holds this many.",
            min=2,
        ),
        _spec(
            "key",
            "One digest per",
            "text",
            help="A property of the trigger, e.g. order_id: one digest per order. "
            "Empty: one per customer.",
        ),
    ],
    StepKind.WAIT: [
        _spec("mode", "Wait", "select", choices=WAIT_MODE_CHOICES, default="duration"),
        _spec("minutes", "For", "duration", required=True, **_when("mode", "duration")),
        _spec(
            "time",
            "Until (HH:MM)",
            "time",
            required=True,
            help="In the customer's own time zone.",
            **_when("mode", "time_of_day"),
        ),
        _spec(
            "from",
            "Date from",
            "select",
            choices=DATE_FROM_CHOICES,
            default="attribute",
            **_when("mode", "until_date"),
        ),
        _spec(
            "attribute",
            "Date name",
            "attribute",
            required=True,
            help="The customer attribute or journey property holding the date.",
            **_when("mode", "until_date"),
        ),
        _spec(
            "offset_minutes",
            "Offset",
            "duration",
            help="Before (negative) or after the date.",
            default=0,
            signed=True,
            **_when("mode", "until_date"),
        ),
    ],
    StepKind.WAIT_FOR_EVENT: [
        _spec("event", "Event", "event", required=True, help="e.g. order.completed"),
        _spec(
            "timeout_minutes",
            "Give up after",
            "duration",
            required=True,
            help="Then the customer takes the 'on timeout' exit.",
        ),
        _spec(
            "filter",
            "Only when its properties match",
            "conditions",
            condition_types=["property"],
        ),
    ],
    StepKind.BRANCH: [
        _spec(
            "conditions",
            "Yes when",
            "conditions",
            required=True,
            condition_types=list(conditions.CONDITION_TYPES),
        ),
        _spec("match", "Match", "select", choices=MATCH_CHOICES, default="all"),
    ],
    StepKind.SPLIT: [
        _spec(
            "percent",
            "Arm A share (%)",
            "number",
            required=True,
            help="The rest take arm B.",
            min=1,
            max=99,
        ),
    ],
    StepKind.UPDATE_ATTRIBUTE: [
        _spec("name", "Attribute", "attribute", required=True),
        _spec("value", "Set to", "text"),
        _spec(
            "from_context",
            "Or copy from journey property",
            "text",
            help="e.g. sku, from the event that started the journey.",
        ),
    ],
    StepKind.WEBHOOK: [
        _spec("url", "URL", "url", required=True, help="The full http(s) address to POST to."),
        _spec("timeout_seconds", "Timeout (seconds)", "number", default=5, min=0, max=30),
    ],
    StepKind.EXIT: [],
}
#: The palette's words for each kind (the model's choices, as the old form shows them).
KIND_LABELS = dict(StepKind.choices)


def spec(kind: str, name: str) -> Spec:
    """One step kind's spec of a setting (the admin form reads its words from here)."""
    for found in STEP_FIELDS[kind]:
        if found["name"] == name:
            return found
    raise KeyError(f"{kind}.{name}")


def label(kind: str, name: str) -> str:
    return spec(kind, name)["label"]


def help_text(kind: str, name: str) -> str:
    return spec(kind, name)["help"]


def choices(kind: str, name: str) -> list[tuple[Any, str]]:
    return [(c["value"], c["label"]) for c in spec(kind, name)["choices"]]


def managed(kind: str) -> tuple[str, ...]:
    """The config keys a builder edits for ``kind``; others are kept as they were."""
    return tuple(s["name"] for s in STEP_FIELDS.get(kind, ()))


def defaults() -> dict[str, Any]:
    """Values a builder leaves unspelled (every kind agrees on a shared name's default)."""
    out: dict[str, Any] = {}
    for specs in STEP_FIELDS.values():
        for s in specs:
            if "default" in s and s["default"] not in ("", None):
                out.setdefault(s["name"], s["default"])
    return out


def step_kinds() -> list[dict[str, Any]]:
    """The palette: each kind, its exits and their words, and its fields."""
    out = []
    for kind, kind_label in StepKind.choices:
        pair = EXITS.get(kind)
        if kind == StepKind.EXIT:
            exits, words = [], []
        elif pair:
            exits, words = ["next", "alt_next"], list(pair)
        else:
            exits, words = ["next"], ["then"]
        out.append(
            {
                "kind": kind,
                "label": kind_label,
                "exits": exits,
                "exit_labels": words,
                "fields": [dict(s) for s in STEP_FIELDS[kind]],
            }
        )
    return out


def condition_fields() -> list[dict[str, Any]]:
    """What a condition of each type asks for: its name (a kind of name, or none), its
    comparisons (``operators`` in the catalog) and its value."""
    names = {
        "attribute": "attribute",
        "property": "text",
        "event": "event",
        "segment": "segment",
    }
    values = {"attribute": "text", "property": "text", "reply": "text", "last_message": "select"}
    out = []
    for kind in conditions.CONDITION_TYPES:
        row: dict[str, Any] = {
            "type": kind,
            "label": CONDITION_TYPE_LABELS[kind],
            "name": names.get(kind),
            "operators": kind,
            "value": values.get(kind),
        }
        if kind == "last_message":
            row["choices"] = [
                {"value": v, "label": str(t).lower()} for v, t in MessageStatus.choices
            ]
        if kind == "event":
            row["within_hours"] = True
            row["since_entry"] = True
        out.append(row)
    return out


# --- trigger kinds: specs read from their builder form fields ---------------------------


def _trigger_field_type(setting: str, field: forms.Field, fields: Mapping[str, forms.Field]):
    """The spec type of a trigger setting from its form field (and its unit sibling)."""
    name = next(n for n, f in fields.items() if f is field)
    if isinstance(field, ConditionsField):
        return "conditions", {"condition_types": list(field.types)}
    if f"{name}_unit" in fields:
        return "duration", {"signed": f"{name}_direction" in fields}
    if isinstance(field, forms.ChoiceField):
        return "select", {"choices": list(field.choices)}
    if isinstance(field, forms.BooleanField):
        return "bool", {}
    if isinstance(field, forms.JSONField):
        return "json", {}
    if isinstance(field, forms.IntegerField | forms.FloatField):
        extra = {}
        if getattr(field, "min_value", None) is not None:
            extra["min"] = field.min_value
        if getattr(field, "max_value", None) is not None:
            extra["max"] = field.max_value
        return "number", extra
    if setting == "event":
        return "event", {}
    if setting == "attribute":
        return "attribute", {}
    return "text", {}


def trigger_fields(module: ModuleType) -> list[Spec]:
    fields = module.form_fields()
    out = []
    for setting, form_name in module.FORM_PLACES.items():
        field = fields[form_name]
        type_, extra = _trigger_field_type(setting, field, fields)
        text = str(field.label or setting.replace("_", " ").capitalize())
        if setting in module.DEFAULTS:
            extra["default"] = module.DEFAULTS[setting]
        if setting == "segment" and type_ == "conditions":
            extra["or_segment"] = True  # a saved segment's key stands in for conditions
        if when := getattr(module, "SHOW_WHEN", {}).get(setting):
            extra["show_when"] = dict(when)
        out.append(
            _spec(setting, text, type_, required=False, help=str(field.help_text or ""), **extra)
        )
    return out


def trigger_kinds() -> list[dict[str, Any]]:
    return [
        {"kind": m.KIND, "label": m.LABEL, "fields": trigger_fields(m)} for m in registry.MODULES
    ]
