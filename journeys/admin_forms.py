"""Forms of the journey builder: plain fields in, the definition's JSON out.

A marketer never types JSON: the trigger, exit events, step settings and conditions
are selects and text boxes, serialized here into ``Journey.trigger`` /
``Journey.exit_events`` and ``Step.config``. Checking is left to
``journeys.definition.validate`` (one set of rules and messages for the admin, the
API and imports); this module only places its problems next to the fields they are
about. Settings the form has no field for (e.g. a send step's extra ``data`` from an
import) are kept as they were, so editing never silently drops them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from django import forms
from django.forms.models import BaseInlineFormSet
from django.utils.html import format_html, format_html_join

from journeys import conditions
from journeys.definition import Problem, definition_of, step_dict, validate
from journeys.models import CHANNEL_CHOICES, Journey, Step, StepKind
from orchestrator.consent.models import Channel
from orchestrator.delivery.models import MessageTemplate

UNITS = (("minutes", "minutes"), ("hours", "hours"), ("days", "days"))
UNIT_MINUTES = {"minutes": 1, "hours": 60, "days": 1440}
DIRECTIONS = (("after", "after"), ("before", "before"))
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


# --- small conversions ---------------------------------------------------------------


def split_minutes(minutes: Any) -> tuple[int | None, str]:
    """``2880`` -> ``(2, "days")``: the largest unit that divides evenly, for display."""
    if not isinstance(minutes, int | float) or isinstance(minutes, bool):
        return None, "hours"
    value = abs(int(minutes))
    for unit in ("days", "hours"):
        if value and value % UNIT_MINUTES[unit] == 0:
            return value // UNIT_MINUTES[unit], unit
    return value, "minutes"


def to_minutes(amount: int | None, unit: str) -> int | None:
    return None if amount is None else amount * UNIT_MINUTES.get(unit, 1)


def parse_value(text: str) -> Any:
    """What a marketer types, as JSON would hold it: numbers and true/false are typed."""
    text = text.strip()
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(show_value(v) for v in value)
    return "" if value is None else str(value)


def _number(value: float | None) -> int | float | None:
    """Whole numbers stay ints, so an untouched form saves the same JSON it loaded."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def merge(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    managed: Sequence[str],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The form's values over the settings it does not manage.

    A default the old settings did not spell out stays unspelled, so saving an
    unchanged form publishes no new version.
    """
    old = old or {}
    out = {k: v for k, v in old.items() if k not in managed}
    for key, value in new.items():
        if value is None or value == [] or value == "":
            if key in old and old[key] == value:
                out[key] = value  # an explicit empty list stays as it was
            continue
        if key not in old and key in defaults and defaults[key] == value:
            continue
        out[key] = value
    return out


# --- rows of small fields (conditions, exit events) -----------------------------------


class RowsWidget(forms.Widget):
    """A table of rows, each a few selects and text boxes, plus blank rows to fill in.

    Inputs are named ``<name>_<row>_<column>``. Without JavaScript one blank row is
    offered each time the page is shown; the builder script adds more on demand.
    """

    def __init__(self, columns: Sequence[tuple[str, str, Sequence | None]], extra: int = 1):
        super().__init__()
        self.columns = columns
        self.extra = extra

    def value_from_datadict(self, data, files, name):
        pattern = re.compile(rf"^{re.escape(name)}_(\d+)_")
        indexes = sorted({int(m.group(1)) for key in data if (m := pattern.match(key))})
        return [
            {col: (data.get(f"{name}_{i}_{col}") or "").strip() for col, _l, _c in self.columns}
            for i in indexes
        ]

    def value_omitted_from_data(self, data, files, name) -> bool:
        return not any(key.startswith(f"{name}_") for key in data)

    def _cell(self, name: str, i: int, col: str, label: str, choices, value: str):
        field = f"{name}_{i}_{col}"
        if choices is None:
            return format_html(
                '<td><input type="text" name="{}" value="{}" aria-label="{}" size="14"></td>',
                field,
                value,
                label,
            )
        options = format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            ((v, " selected" if str(v) == value else "", text) for v, text in choices),
        )
        return format_html(
            '<td><select name="{}" aria-label="{}">{}</select></td>', field, label, options
        )

    def render(self, name, value, attrs=None, renderer=None):
        rows = [r for r in (value or []) if isinstance(r, Mapping)]
        rows = rows + [{}] * self.extra
        head = format_html_join("", "<th>{}</th>", ((label,) for _c, label, _ch in self.columns))
        body = format_html_join(
            "",
            '<tr class="journey-row">{}</tr>',
            (
                (
                    format_html_join(
                        "",
                        "{}",
                        (
                            (self._cell(name, i, col, label, choices, str(row.get(col, ""))),)
                            for col, label, choices in self.columns
                        ),
                    ),
                )
                for i, row in enumerate(rows)
            ),
        )
        return format_html(
            '<table class="journey-rows" data-name="{}"><thead><tr>{}</tr></thead>'
            '<tbody>{}</tbody></table><button type="button" class="journey-add-row" '
            'data-name="{}" hidden>Add a row</button>',
            name,
            head,
            body,
            name,
        )


class RowsField(forms.Field):
    """A list of objects edited as rows; subclasses convert rows to objects and back."""

    columns: Sequence[tuple[str, str, Sequence | None]] = ()

    def __init__(self, *, extra: int = 1, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(widget=RowsWidget(self.columns, extra=extra), **kwargs)

    def row_of(self, item: Mapping[str, Any]) -> dict[str, str]:
        raise NotImplementedError  # abstract: each subclass implements it

    def item_of(self, row: Mapping[str, str]) -> dict[str, Any]:
        raise NotImplementedError  # abstract: each subclass implements it

    def prepare_value(self, value):
        if not isinstance(value, list):
            return []
        return [
            self.row_of(item) if isinstance(item, Mapping) and not self._is_row(item) else item
            for item in value
        ]

    def _is_row(self, item: Mapping[str, Any]) -> bool:
        # Bound data comes back as rows of strings keyed by column; stored items do not.
        return set(item) == {c for c, _l, _ch in self.columns}

    def to_python(self, value) -> list[dict[str, Any]]:
        rows = value if isinstance(value, list) else []
        return [self.item_of(r) for r in rows if any(v for v in r.values())]

    def has_changed(self, initial, data) -> bool:
        return (initial or []) != self.to_python(data)


_OP_CHOICES = [("", "—")] + [
    (op, conditions.OP_LABELS[op])
    for op in dict.fromkeys(op for ops in conditions.OPS_BY_TYPE.values() for op in ops)
]
_TYPE_LABELS = {
    "attribute": "customer attribute",
    "property": "event/journey property",
    "event": "customer did event",
    "last_message": "last message status",
    "reply": "customer's reply",
}
_LIST_OPS = ("in", "not_in")


class ConditionsField(RowsField):
    """Conditions (``journeys.conditions``) as rows: type, name, comparison, value."""

    def __init__(self, *, types: Sequence[str] = conditions.CONDITION_TYPES, **kwargs):
        self.types = tuple(types)
        columns: list[tuple[str, str, Sequence | None]] = []
        if len(self.types) > 1:
            columns.append(("type", "type", [("", "—")] + [(t, _TYPE_LABELS[t]) for t in types]))
        columns += [("name", "name", None), ("op", "comparison", _OP_CHOICES)]
        columns.append(("value", "value (a, b for 'is one of')", None))
        if "event" in self.types:
            columns.append(("within_hours", "event within hours", None))
            columns.append(
                ("since_entry", "event since", [("", "any time"), ("yes", "entering the journey")])
            )
        self.columns = columns
        super().__init__(**kwargs)

    def row_of(self, item):
        row = {c: "" for c, _l, _ch in self.columns}
        row.update(
            {
                "type": str(item.get("type", "")),
                "name": str(item.get("name", "")),
                "op": str(item.get("op", "")),
                "value": show_value(item.get("value")),
            }
        )
        if "within_hours" in row:
            row["within_hours"] = show_value(item.get("within_hours"))
            row["since_entry"] = "yes" if item.get("since_entry") else ""
        return {k: v for k, v in row.items() if k in {c for c, _l, _ch in self.columns}}

    def item_of(self, row):
        kind = row.get("type") or (self.types[0] if len(self.types) == 1 else "")
        op = row.get("op", "")
        item: dict[str, Any] = {"type": kind}
        if kind not in ("last_message", "reply"):
            item["name"] = row.get("name", "")
        item["op"] = op
        text = row.get("value", "")
        if kind == "event":
            within = row.get("within_hours", "")
            if within:
                parsed = parse_value(within)
                item["within_hours"] = parsed
            if row.get("since_entry"):
                item["since_entry"] = True
        elif op in _LIST_OPS or kind == "last_message":
            if text:
                item["value"] = [parse_value(v) for v in text.split(",") if v.strip()]
        elif op not in ("exists", "not_exists") and text:
            item["value"] = text.strip() if kind == "reply" else parse_value(text)
        return item


class ExitEventsField(RowsField):
    columns = (
        ("event", "event name", None),
        ("match", "only if this property matches the one they entered with (optional)", None),
    )

    def row_of(self, item):
        return {"event": str(item.get("event", "")), "match": str(item.get("match", "") or "")}

    def item_of(self, row):
        item = {"event": row.get("event", "")}
        if row.get("match"):
            item["match"] = row["match"]
        return item


# --- placing validation problems ------------------------------------------------------

_INDEX = re.compile(r"^(?P<base>[^\[]+)(\[(?P<i>\d+)\])?$")


def _row_message(field: str, message: str) -> str:
    m = re.search(r"\[(\d+)\]$", field)
    return f"Row {int(m.group(1)) + 1}: {message}" if m else message


def place(form: forms.Form, problems: Sequence[Problem], fields: Mapping[str, str]) -> None:
    """Attach each problem to the form field ``fields`` names for it (else the form)."""
    for problem in problems:
        base = _INDEX.match(problem.field).group("base") if problem.field else ""
        target = fields.get(problem.field) or fields.get(base)
        if target not in form.fields:
            target = None
        form.add_error(target, _row_message(problem.field, problem.message))


# --- the journey ----------------------------------------------------------------------

TRIGGER_FIELDS: dict[str, dict[str, str]] = {
    "event": {"event": "event_name", "filter": "event_filter"},
    "date": {
        "source": "date_source",
        "attribute": "date_attribute",
        "event": "date_event",
        "property": "date_property",
        "offset_minutes": "date_offset",
        "grace_minutes": "date_grace_minutes",
    },
    "replenishment": {
        "event": "rep_event",
        "product_property": "rep_product_property",
        "default_cycle_days": "rep_default_cycle_days",
        "min_purchases": "rep_min_purchases",
        "remind_days_before": "rep_remind_days_before",
    },
    "recurring": {"cron": "rec_cron", "timezone": "rec_timezone", "segment": "segment"},
    "segment": {"segment": "segment"},
    "manual": {},
}
TRIGGER_DEFAULTS = {
    "source": "attribute",
    "offset_minutes": 0,
    "grace_minutes": 60,
    "min_purchases": 3,
    "remind_days_before": 0,
    "timezone": "UTC",
}
JOURNEY_FIELDS = {
    "key": "key",
    "name": "name",
    "topic": "topic",
    "priority": "priority",
    "entry.rule": "entry",
    "entry.days": "entry_days",
    "trigger": "trigger_kind",
    "trigger.kind": "trigger_kind",
    "exit_events": "exit_events_rows",
    "goal": "goal_event",
    "goal.within_hours": "goal_within_hours",
    "on_hold": "on_hold",
}
#: Stands in for the steps when checking the journey's own settings (steps are checked
#: with the inline formset, which knows which step a problem is about).
_PLACEHOLDER_STEPS = [{"key": "placeholder", "kind": StepKind.EXIT}]


def _is_step_problem(problem: Problem) -> bool:
    return problem.field == "steps" or problem.field.startswith(("steps.", "steps["))


class JourneyForm(forms.ModelForm):
    # Trigger: an event happens.
    event_name = forms.CharField(required=False, label="Event", help_text="e.g. order.completed")
    event_filter = ConditionsField(
        types=("property",), label="Only when the event's properties match"
    )
    # Trigger: a date.
    date_source = forms.ChoiceField(
        required=False,
        label="The date is",
        choices=(("attribute", "a customer attribute"), ("event", "the time of an event")),
    )
    date_attribute = forms.CharField(
        required=False, label="Date attribute", help_text="e.g. appointment_at"
    )
    date_event = forms.CharField(required=False, label="Event")
    date_property = forms.CharField(
        required=False,
        label="Event property holding the date",
        help_text="Empty to use the time the event happened.",
    )
    date_offset = forms.IntegerField(required=False, min_value=0, label="Offset")
    date_offset_unit = forms.ChoiceField(required=False, choices=UNITS, initial="hours", label="")
    date_offset_direction = forms.ChoiceField(required=False, choices=DIRECTIONS, label="")
    date_grace_minutes = forms.IntegerField(
        required=False,
        min_value=1,
        label="Grace (minutes)",
        help_text="How late a date may still be acted on (default 60).",
    )
    # Trigger: replenishment.
    rep_event = forms.CharField(required=False, label="Purchase event")
    rep_product_property = forms.CharField(
        required=False, label="Product property", help_text="e.g. sku"
    )
    rep_default_cycle_days = forms.FloatField(
        required=False, min_value=0, label="Usual cycle (days)"
    )
    rep_min_purchases = forms.IntegerField(
        required=False,
        min_value=2,
        label="Purchases before using the customer's own cycle",
        help_text="Default 3.",
    )
    rep_remind_days_before = forms.IntegerField(
        required=False, min_value=0, label="Remind this many days before"
    )
    # Trigger: recurring.
    rec_cron = forms.CharField(
        required=False,
        label="Schedule (cron)",
        help_text="Five fields: minute hour day month weekday, e.g. 0 9 * * 1 (Mondays 09:00).",
    )
    rec_timezone = forms.CharField(
        required=False,
        label="Time zone",
        help_text="e.g. Asia/Tokyo, or 'customer' for each customer's own time zone.",
    )
    # Recurring (optional) and segment entry (required).
    segment = ConditionsField(types=("attribute", "event"), label="Segment: customers who")
    exit_events_rows = ExitEventsField(label="Leave the journey when")

    class Meta:
        model = Journey
        fields = (
            "key",
            "name",
            "description",
            "topic",
            "priority",
            "entry",
            "entry_days",
            "trigger_kind",
            "goal_event",
            "goal_within_hours",
            "goal_exits",
            "on_hold",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "trigger_kind" in self.fields:
            self.fields["trigger_kind"].label = "Starts when"
        if "goal_event" in self.fields:
            self.fields["goal_event"].help_text = "The event that counts as a conversion."
        trigger = self.instance.trigger or {}
        initial: dict[str, Any] = {"exit_events_rows": self.instance.exit_events or []}
        for key, name in TRIGGER_FIELDS.get(self.instance.trigger_kind, {}).items():
            if key in trigger:
                initial[name] = trigger[key]
        if self.instance.trigger_kind == "date" and "offset_minutes" in trigger:
            amount, unit = split_minutes(trigger["offset_minutes"])
            initial["date_offset"] = amount
            initial["date_offset_unit"] = unit
            initial["date_offset_direction"] = (
                "before" if trigger["offset_minutes"] < 0 else "after"
            )
        for name, value in initial.items():
            self.initial.setdefault(name, value)

    def _trigger(self, kind: str) -> dict[str, Any]:
        c = self.cleaned_data
        if kind == "event":
            values = {"event": c.get("event_name"), "filter": c.get("event_filter")}
        elif kind == "date":
            offset = to_minutes(c.get("date_offset"), c.get("date_offset_unit") or "hours")
            if offset is not None and c.get("date_offset_direction") == "before":
                offset = -offset
            values = {
                "source": c.get("date_source") or "attribute",
                "offset_minutes": offset,
                "grace_minutes": c.get("date_grace_minutes"),
            }
            if values["source"] == "attribute":
                values["attribute"] = c.get("date_attribute")
            else:
                values["event"] = c.get("date_event")
                values["property"] = c.get("date_property")
        elif kind == "replenishment":
            values = {
                "event": c.get("rep_event"),
                "product_property": c.get("rep_product_property"),
                "default_cycle_days": _number(c.get("rep_default_cycle_days")),
                "min_purchases": c.get("rep_min_purchases"),
                "remind_days_before": c.get("rep_remind_days_before"),
            }
        elif kind == "recurring":
            values = {
                "cron": " ".join((c.get("rec_cron") or "").split()),
                "timezone": c.get("rec_timezone") or "UTC",
                "segment": c.get("segment"),
            }
        elif kind == "segment":
            values = {"segment": c.get("segment")}
        else:
            values = {}
        same_kind = kind == self.instance.trigger_kind or not self.instance.pk
        return merge(
            self.instance.trigger if same_kind and self.instance.pk else {},
            values,
            managed=[*TRIGGER_FIELDS.get(kind, {}), "attribute", "event", "property"],
            defaults=TRIGGER_DEFAULTS,
        )

    def clean(self):
        cleaned = super().clean()
        # The instance still holds the stored trigger here (ModelForm copies the cleaned
        # fields onto it after clean), which _trigger keeps unmanaged settings from.
        kind = cleaned.get("trigger_kind") or self.instance.trigger_kind
        trigger = self._trigger(kind)
        exit_events = cleaned.get("exit_events_rows") or []
        topic = cleaned.get("topic")
        goal = None
        if cleaned.get("goal_event"):
            goal = {
                "event": cleaned["goal_event"],
                "within_hours": cleaned.get("goal_within_hours"),
                "exits": cleaned.get("goal_exits", True),
            }
        definition = {
            "key": cleaned.get("key", self.instance.key),
            "name": cleaned.get("name", ""),
            "topic": topic.key if topic else None,
            "priority": cleaned.get("priority", 5),
            "entry": {"rule": cleaned.get("entry"), "days": cleaned.get("entry_days")},
            "trigger": {"kind": kind, **trigger},
            "exit_events": exit_events,
            "goal": goal,
            "on_hold": cleaned.get("on_hold") or "defer",
            "steps": _PLACEHOLDER_STEPS,
        }
        problems = [p for p in validate(definition, templates={}) if not _is_step_problem(p)]
        # Fields that already failed their own checks need no second message.
        problems = [
            p
            for p in problems
            if not (p.field in JOURNEY_FIELDS and JOURNEY_FIELDS[p.field] in self.errors)
        ]
        place(self, problems, {**JOURNEY_FIELDS, **_trigger_places(kind)})
        self.instance.trigger_kind = kind
        self.instance.trigger = trigger
        self.instance.exit_events = exit_events
        return cleaned


def _trigger_places(kind: str) -> dict[str, str]:
    return {f"trigger.{k}": v for k, v in TRIGGER_FIELDS.get(kind, {}).items()}


# --- steps ----------------------------------------------------------------------------

STEP_DEFAULTS = {
    "channel": "preferred",
    "mode": "duration",
    "from": "attribute",
    "offset_minutes": 0,
    "match": "all",
    "timeout_seconds": 5,
}
STEP_MANAGED = {
    StepKind.SEND: ("template", "channel", "fallback_channel", "ttl_hours"),
    StepKind.WAIT: ("mode", "minutes", "time", "from", "attribute", "offset_minutes"),
    StepKind.WAIT_FOR_EVENT: ("event", "timeout_minutes", "filter"),
    StepKind.BRANCH: ("conditions", "match"),
    StepKind.SPLIT: ("percent",),
    StepKind.UPDATE_ATTRIBUTE: ("name", "value", "from_context"),
    StepKind.WEBHOOK: ("url", "timeout_seconds"),
    StepKind.EXIT: (),
}
END_CHOICE = ("", "End of journey")


def template_choices() -> list[tuple[str, str]]:
    rows = MessageTemplate.objects.order_by("key").prefetch_related("variants")
    return [("", "— choose a template —")] + [
        (t.key, f"{t.key} ({', '.join(sorted({v.channel for v in t.variants.all()})) or '-'})")
        for t in rows
    ]


class StepForm(forms.ModelForm):
    # Send a message.
    send_template = forms.ChoiceField(required=False, label="Template")
    send_channel = forms.ChoiceField(
        required=False, choices=CHANNEL_CHOICES, initial="preferred", label="Channel"
    )
    send_fallback = forms.ChoiceField(
        required=False,
        choices=[("", "none"), *Channel.choices],
        label="If it fails, try",
    )
    send_ttl_hours = forms.FloatField(
        required=False,
        min_value=0,
        label="Drop if not sent within (hours)",
        help_text="Empty: no limit.",
    )
    # Wait.
    wait_mode = forms.ChoiceField(
        required=False,
        initial="duration",
        label="Wait",
        choices=(
            ("duration", "for a while"),
            ("time_of_day", "until a time of day (customer's time zone)"),
            ("until_date", "until a date (attribute or journey property)"),
        ),
    )
    wait_amount = forms.IntegerField(required=False, min_value=1, label="For")
    wait_unit = forms.ChoiceField(required=False, choices=UNITS, initial="days", label="")
    wait_time = forms.CharField(required=False, label="Until (HH:MM)", max_length=5)
    wait_date_from = forms.ChoiceField(
        required=False,
        initial="attribute",
        label="Date from",
        choices=(("attribute", "customer attribute"), ("context", "journey property")),
    )
    wait_date_attribute = forms.CharField(required=False, label="Date name")
    wait_offset = forms.IntegerField(required=False, min_value=0, label="Offset")
    wait_offset_unit = forms.ChoiceField(required=False, choices=UNITS, initial="hours", label="")
    wait_offset_direction = forms.ChoiceField(
        required=False, choices=DIRECTIONS, initial="after", label=""
    )
    # Wait for an event.
    wfe_event = forms.CharField(required=False, label="Event")
    wfe_timeout = forms.IntegerField(required=False, min_value=1, label="Give up after")
    wfe_timeout_unit = forms.ChoiceField(required=False, choices=UNITS, initial="days", label="")
    wfe_filter = ConditionsField(types=("property",), label="Only when its properties match")
    # Branch.
    branch_conditions = ConditionsField(label="Yes when")
    branch_match = forms.ChoiceField(
        required=False,
        initial="all",
        choices=(("all", "all conditions hold"), ("any", "any condition holds")),
        label="Match",
    )
    # Split.
    split_percent = forms.IntegerField(
        required=False, min_value=1, max_value=99, label="Arm A share (%)"
    )
    # Update attribute.
    attr_name = forms.CharField(required=False, label="Attribute")
    attr_value = forms.CharField(required=False, label="Set to")
    attr_from_context = forms.CharField(
        required=False,
        label="Or copy from journey property",
        help_text="e.g. sku, from the event that started the journey.",
    )
    # Webhook.
    webhook_url = forms.URLField(required=False, label="URL", assume_scheme="https")
    webhook_timeout = forms.FloatField(
        required=False, min_value=0, max_value=30, label="Timeout (seconds)", initial=5
    )

    next = forms.ChoiceField(required=False, label="Then go to")
    alt_next = forms.ChoiceField(
        required=False,
        label="Second exit goes to",
        help_text="On timeout (wait for event), for 'no' (branch), for arm B (split).",
    )
    position = forms.IntegerField(
        required=False,
        min_value=0,
        label="Order",
        help_text="The lowest is the first step, where customers enter. Empty: at the end.",
    )

    class Meta:
        model = Step
        fields = ("key", "position", "kind", "label", "next", "alt_next")

    def __init__(
        self,
        *args,
        step_keys: Sequence[str] = (),
        templates: Sequence[tuple[str, str]] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        keys = list(dict.fromkeys(step_keys))
        for name in ("next", "alt_next"):
            current = self.initial.get(name) or ""
            options = keys + ([current] if current and current not in keys else [])
            self.fields[name].choices = [END_CHOICE] + [(k, k) for k in options]
        choices = list(templates if templates is not None else template_choices())
        current = (self.instance.config or {}).get("template")
        if current and current not in dict(choices):
            choices.append((current, f"{current} (missing)"))
        self.fields["send_template"].choices = choices
        if self.instance.pk or self.instance.config:
            for name, value in self._initial_from_config().items():
                self.initial.setdefault(name, value)

    def _initial_from_config(self) -> dict[str, Any]:
        c = self.instance.config or {}
        kind = self.instance.kind
        if kind == StepKind.SEND:
            return {
                "send_template": c.get("template", ""),
                "send_channel": c.get("channel", "preferred"),
                "send_fallback": c.get("fallback_channel", ""),
                "send_ttl_hours": c.get("ttl_hours"),
            }
        if kind == StepKind.WAIT:
            out = {
                "wait_mode": c.get("mode", "duration"),
                "wait_time": c.get("time", ""),
                "wait_date_from": c.get("from", "attribute"),
                "wait_date_attribute": c.get("attribute", ""),
            }
            if "minutes" in c:
                out["wait_amount"], out["wait_unit"] = split_minutes(c["minutes"])
            if c.get("offset_minutes"):
                out["wait_offset"], out["wait_offset_unit"] = split_minutes(c["offset_minutes"])
                out["wait_offset_direction"] = "before" if c["offset_minutes"] < 0 else "after"
            return out
        if kind == StepKind.WAIT_FOR_EVENT:
            out = {"wfe_event": c.get("event", ""), "wfe_filter": c.get("filter") or []}
            if "timeout_minutes" in c:
                out["wfe_timeout"], out["wfe_timeout_unit"] = split_minutes(c["timeout_minutes"])
            return out
        if kind == StepKind.BRANCH:
            return {
                "branch_conditions": c.get("conditions") or [],
                "branch_match": c.get("match", "all"),
            }
        if kind == StepKind.SPLIT:
            return {"split_percent": c.get("percent")}
        if kind == StepKind.UPDATE_ATTRIBUTE:
            return {
                "attr_name": c.get("name", ""),
                "attr_value": show_value(c.get("value")) if "value" in c else "",
                "attr_from_context": c.get("from_context", ""),
            }
        if kind == StepKind.WEBHOOK:
            return {"webhook_url": c.get("url", ""), "webhook_timeout": c.get("timeout_seconds", 5)}
        return {}

    def _config_values(self, kind: str) -> dict[str, Any]:
        c = self.cleaned_data
        if kind == StepKind.SEND:
            return {
                "template": c.get("send_template"),
                "channel": c.get("send_channel") or "preferred",
                "fallback_channel": c.get("send_fallback"),
                "ttl_hours": _number(c.get("send_ttl_hours")),
            }
        if kind == StepKind.WAIT:
            mode = c.get("wait_mode") or "duration"
            if mode == "duration":
                return {"mode": mode, "minutes": to_minutes(c.get("wait_amount"), c["wait_unit"])}
            if mode == "time_of_day":
                return {"mode": mode, "time": (c.get("wait_time") or "").strip()}
            offset = to_minutes(c.get("wait_offset"), c.get("wait_offset_unit") or "hours")
            if offset and c.get("wait_offset_direction") == "before":
                offset = -offset
            return {
                "mode": mode,
                "from": c.get("wait_date_from") or "attribute",
                "attribute": c.get("wait_date_attribute"),
                "offset_minutes": offset or 0,
            }
        if kind == StepKind.WAIT_FOR_EVENT:
            return {
                "event": c.get("wfe_event"),
                "timeout_minutes": to_minutes(c.get("wfe_timeout"), c["wfe_timeout_unit"]),
                "filter": c.get("wfe_filter"),
            }
        if kind == StepKind.BRANCH:
            return {"conditions": c.get("branch_conditions"), "match": c.get("branch_match")}
        if kind == StepKind.SPLIT:
            return {"percent": c.get("split_percent")}
        if kind == StepKind.UPDATE_ATTRIBUTE:
            values: dict[str, Any] = {"name": c.get("attr_name")}
            if c.get("attr_from_context"):
                values["from_context"] = c["attr_from_context"]
            else:
                values["value"] = parse_value(c.get("attr_value") or "")
            return values
        if kind == StepKind.WEBHOOK:
            return {
                "url": c.get("webhook_url"),
                "timeout_seconds": _number(c.get("webhook_timeout")),
            }
        return {}

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if not kind:
            return cleaned
        # The instance still holds the stored step here (see JourneyForm.clean).
        old = self.instance.config if self.instance.kind == kind else {}
        config = merge(
            old,
            self._config_values(kind),
            managed=STEP_MANAGED.get(kind, ()),
            defaults=STEP_DEFAULTS,
        )
        if kind == StepKind.UPDATE_ATTRIBUTE and "from_context" in config:
            config.pop("value", None)
        self.instance.config = config
        return cleaned


def _step_places(prefix: str) -> dict[str, str]:
    return {
        f"{prefix}.conditions": "branch_conditions",
        f"{prefix}.filter": "wfe_filter",
    }


class StepFormSet(BaseInlineFormSet):
    """The steps, checked together with the journey as one would-be definition."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_keys = self._step_keys()
        self.templates = template_choices()

    def _step_keys(self) -> list[str]:
        keys = []
        if self.instance.pk:
            keys = list(self.instance.steps.values_list("key", flat=True))
        if self.is_bound:
            pattern = re.compile(rf"^{re.escape(self.prefix)}-\d+-key$")
            keys += [v.strip() for k, v in self.data.items() if pattern.match(k) and v.strip()]
        return list(dict.fromkeys(keys))

    def get_form_kwargs(self, index):
        return {
            **super().get_form_kwargs(index),
            "step_keys": self.step_keys,
            "templates": self.templates,
        }

    def ordered_forms(self) -> list[forms.Form]:
        """The kept steps in journey order: by their order number, blanks last as listed."""
        kept = [
            f
            for f in self.forms
            if f not in self.deleted_forms
            and getattr(f, "cleaned_data", None)
            and f.cleaned_data.get("key")
        ]
        # Steps left without an order number go after the others, in the order shown.
        highest = max(
            (
                f.cleaned_data["position"]
                for f in kept
                if f.cleaned_data.get("position") is not None
            ),
            default=-1,
        )
        for i, f in enumerate(f for f in kept if f.cleaned_data.get("position") is None):
            f.instance.position = highest + 1 + i
        indexed = list(enumerate(kept))
        indexed.sort(
            key=lambda pair: (pair[1].instance.position, pair[1].instance.pk or 1 << 62, pair[0])
        )
        return [f for _i, f in indexed]

    def clean(self):
        super().clean()
        if any(self.errors):
            return
        forms_in_order = self.ordered_forms()
        steps = [
            Step(
                key=f.cleaned_data["key"],
                kind=f.cleaned_data["kind"],
                label=f.cleaned_data.get("label") or "",
                next=f.cleaned_data.get("next") or "",
                alt_next=f.cleaned_data.get("alt_next") or "",
                config=f.instance.config,
            )
            for f in forms_in_order
        ]
        definition = definition_of(self.instance, steps) if self.instance.topic_id else None
        if definition is None:
            definition = {
                "key": self.instance.key or "journey",
                "name": "journey",
                "topic": None,
                "trigger": {"kind": "manual"},
                "steps": [step_dict(s) for s in steps],
            }
        problems = [p for p in validate(definition) if _is_step_problem(p)]
        by_key = {f.cleaned_data["key"]: f for f in forms_in_order}
        general: list[str] = []
        for problem in problems:
            m = re.match(r"^steps\.([^.\[]+)(\..*)?$", problem.field)
            form = by_key.get(m.group(1)) if m else None
            if form is None:
                general.append(problem.message)
                continue
            place(form, [problem], _step_places(f"steps.{m.group(1)}"))
        if problems:
            raise forms.ValidationError(
                general or ["The steps have problems; see the messages on each step below."]
            )


def definition_problems_text(problems: Sequence[Problem]) -> list[str]:
    """Problems as sentences for messages and the import page: where, then what."""
    return [f"{where(p.field)}: {p.message}" if p.field else p.message for p in problems]


def where(field: str) -> str:
    """``steps.send-1.conditions[0]`` -> ``Step 'send-1', condition 1``."""
    m = re.match(r"^steps\.([^.\[]+)(?:\.(\w+))?(?:\[(\d+)\])?$", field)
    if m:
        text = f"Step {m.group(1)!r}"
        if m.group(2):
            text += f", {m.group(2)}"
        if m.group(3):
            text += f" row {int(m.group(3)) + 1}"
        return text
    if m := re.match(r"^steps\[(\d+)\]$", field):
        return f"Step {int(m.group(1)) + 1}"
    return {"steps": "Steps", "trigger": "Trigger"}.get(field, field.replace(".", " ").capitalize())


class ImportForm(forms.Form):
    file = forms.FileField(required=False, label="JSON file")
    text = forms.CharField(
        required=False,
        label="Or paste the JSON",
        widget=forms.Textarea(attrs={"rows": 16, "cols": 100, "spellcheck": "false"}),
    )

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        raw = upload.read().decode("utf-8-sig", errors="replace") if upload else cleaned.get("text")
        if not raw or not raw.strip():
            raise forms.ValidationError("Choose a JSON file or paste a definition.")
        try:
            cleaned["definition"] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"This is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}."
            ) from None
        if not isinstance(cleaned["definition"], dict):
            raise forms.ValidationError("A journey definition is a JSON object ({...}).")
        return cleaned


class TestSendForm(forms.Form):
    customer = forms.CharField(
        label="Customer external id", help_text="The customer the messages go to."
    )

    def clean_customer(self):
        from orchestrator.audience.models import Customer

        external_id = self.cleaned_data["customer"].strip()
        customer = Customer.objects.filter(external_id=external_id).first()
        if customer is None:
            raise forms.ValidationError(f"There is no customer with external id {external_id!r}.")
        return customer
