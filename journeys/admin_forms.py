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

from journeys import canvas_fields
from journeys.canvas_fields import choices as spec_choices
from journeys.canvas_fields import help_text as spec_help
from journeys.canvas_fields import label as spec_label
from journeys.definition import definition_of, step_dict, validate
from journeys.form_fields import (
    DIRECTIONS,
    UNITS,
    ConditionsField,
    RowsField,
    merge,
    number,
    parse_value,
    show_value,
    split_minutes,
    to_minutes,
)
from journeys.models import Journey, Step, StepKind
from journeys.problems import Problem
from journeys.triggers import registry
from orchestrator.delivery.models import MessageTemplate


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


#: Every trigger kind's own builder fields (``journeys.triggers.registry``), declared as
#: if they were written in JourneyForm's body.
TriggerFields = type("TriggerFields", (forms.Form,), registry.form_fields())


class JourneyForm(forms.ModelForm, TriggerFields):
    trigger_kind = forms.ChoiceField(
        choices=registry.choices, initial=registry.DEFAULT, label="Starts when"
    )
    exit_events_rows = ExitEventsField(label="Leave the journey when")

    class Meta:
        model = Journey
        fields = (
            "key",
            "name",
            "customer_name",
            "customer_names",
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
        if "goal_event" in self.fields:
            self.fields["goal_event"].help_text = "The event that counts as a conversion."
        initial: dict[str, Any] = {"exit_events_rows": self.instance.exit_events or []}
        kind = registry.get(self.instance.trigger_kind)
        if kind is not None:
            initial.update(kind.form_initial(self.instance.trigger or {}))
        for name, value in initial.items():
            self.initial.setdefault(name, value)

    def _trigger(self, kind: str) -> dict[str, Any]:
        module = registry.get(kind)
        if module is None:
            return {}
        values = module.form_values(self.cleaned_data)
        same_kind = kind == self.instance.trigger_kind or not self.instance.pk
        return merge(
            self.instance.trigger if same_kind and self.instance.pk else {},
            values,
            managed=[*module.FORM_PLACES, "attribute", "event", "property"],
            defaults=module.DEFAULTS,
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
    module = registry.get(kind)
    places = module.FORM_PLACES if module is not None else {}
    return {f"trigger.{k}": v for k, v in places.items()}


# --- steps ----------------------------------------------------------------------------

#: Values a saved form leaves unspelled, and the config keys each kind's form manages:
#: both from the field specs (``journeys.canvas_fields``).
STEP_DEFAULTS = canvas_fields.defaults()
STEP_MANAGED = {kind: canvas_fields.managed(kind) for kind in StepKind.values}
# "digest" here drops the old send-step form of a digest if one is ever saved.
STEP_MANAGED[StepKind.SEND] = (*STEP_MANAGED[StepKind.SEND], "digest")
END_CHOICE = ("", "End of journey")


def template_choices() -> list[tuple[str, str]]:
    rows = MessageTemplate.objects.order_by("key").prefetch_related("variants")
    return [("", "— choose a template —")] + [
        (t.key, f"{t.key} ({', '.join(sorted({v.channel for v in t.variants.all()})) or '-'})")
        for t in rows
    ]


def _words(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    """A step setting's label and help, from its field spec (``journeys.canvas_fields``)."""
    return {"label": spec_label(kind, name), "help_text": spec_help(kind, name), **extra}


class StepForm(forms.ModelForm):
    # Each kind's settings; the words (and choices) come from the kind's field specs.
    # Send a message.
    send_template = forms.ChoiceField(required=False, **_words(StepKind.SEND, "template"))
    send_channel = forms.ChoiceField(
        required=False,
        choices=spec_choices(StepKind.SEND, "channel"),
        initial="preferred",
        **_words(StepKind.SEND, "channel"),
    )
    send_fallback = forms.ChoiceField(
        required=False,
        choices=spec_choices(StepKind.SEND, "fallback_channel"),
        **_words(StepKind.SEND, "fallback_channel"),
    )
    send_ttl_hours = forms.FloatField(
        required=False, min_value=0, **_words(StepKind.SEND, "ttl_hours")
    )
    # Send as a digest.
    digest_template = forms.ChoiceField(required=False, **_words(StepKind.DIGEST, "template"))
    digest_channel = forms.ChoiceField(
        required=False,
        choices=spec_choices(StepKind.DIGEST, "channel"),
        initial="preferred",
        **_words(StepKind.DIGEST, "channel"),
    )
    digest_minutes = forms.FloatField(
        required=False,
        min_value=0,
        **_words(
            StepKind.DIGEST,
            "window_minutes",
            label=f"{spec_label(StepKind.DIGEST, 'window_minutes')} (minutes)",
        ),
    )
    digest_count = forms.IntegerField(
        required=False, min_value=2, **_words(StepKind.DIGEST, "count")
    )
    digest_key = forms.CharField(required=False, **_words(StepKind.DIGEST, "key"))
    # Wait.
    wait_mode = forms.ChoiceField(
        required=False,
        initial="duration",
        choices=spec_choices(StepKind.WAIT, "mode"),
        **_words(StepKind.WAIT, "mode"),
    )
    wait_amount = forms.IntegerField(
        required=False, min_value=1, **_words(StepKind.WAIT, "minutes")
    )
    wait_unit = forms.ChoiceField(required=False, choices=UNITS, initial="days", label="")
    wait_time = forms.CharField(required=False, max_length=5, **_words(StepKind.WAIT, "time"))
    wait_date_from = forms.ChoiceField(
        required=False,
        initial="attribute",
        choices=spec_choices(StepKind.WAIT, "from"),
        **_words(StepKind.WAIT, "from"),
    )
    wait_date_attribute = forms.CharField(required=False, **_words(StepKind.WAIT, "attribute"))
    wait_offset = forms.IntegerField(
        required=False,
        min_value=0,
        **_words(StepKind.WAIT, "offset_minutes", help_text=""),
    )
    wait_offset_unit = forms.ChoiceField(required=False, choices=UNITS, initial="hours", label="")
    wait_offset_direction = forms.ChoiceField(
        required=False, choices=DIRECTIONS, initial="after", label=""
    )
    # Wait for an event.
    wfe_event = forms.CharField(required=False, **_words(StepKind.WAIT_FOR_EVENT, "event"))
    wfe_timeout = forms.IntegerField(
        required=False, min_value=1, **_words(StepKind.WAIT_FOR_EVENT, "timeout_minutes")
    )
    wfe_timeout_unit = forms.ChoiceField(required=False, choices=UNITS, initial="days", label="")
    wfe_filter = ConditionsField(types=("property",), **_words(StepKind.WAIT_FOR_EVENT, "filter"))
    # Branch.
    branch_conditions = ConditionsField(**_words(StepKind.BRANCH, "conditions"))
    branch_match = forms.ChoiceField(
        required=False,
        initial="all",
        choices=spec_choices(StepKind.BRANCH, "match"),
        **_words(StepKind.BRANCH, "match"),
    )
    # Split.
    split_percent = forms.IntegerField(
        required=False, min_value=1, max_value=99, **_words(StepKind.SPLIT, "percent")
    )
    # Update attribute.
    attr_name = forms.CharField(required=False, **_words(StepKind.UPDATE_ATTRIBUTE, "name"))
    attr_value = forms.CharField(required=False, **_words(StepKind.UPDATE_ATTRIBUTE, "value"))
    attr_from_context = forms.CharField(
        required=False, **_words(StepKind.UPDATE_ATTRIBUTE, "from_context")
    )
    # Webhook.
    webhook_url = forms.URLField(
        required=False, assume_scheme="https", **_words(StepKind.WEBHOOK, "url")
    )
    webhook_timeout = forms.FloatField(
        required=False,
        min_value=0,
        max_value=30,
        initial=5,
        **_words(StepKind.WEBHOOK, "timeout_seconds"),
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
        self.fields["digest_template"].choices = choices
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
        if kind == StepKind.DIGEST:
            return {
                "digest_template": c.get("template", ""),
                "digest_channel": c.get("channel", "preferred"),
                "digest_minutes": c.get("window_minutes"),
                "digest_count": c.get("count"),
                "digest_key": c.get("key", ""),
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
                "ttl_hours": number(c.get("send_ttl_hours")),
                "digest": None,
            }
        if kind == StepKind.DIGEST:
            return {
                "template": c.get("digest_template"),
                "channel": c.get("digest_channel") or "preferred",
                "window_minutes": number(c.get("digest_minutes")),
                "count": c.get("digest_count"),
                "key": (c.get("digest_key") or "").strip() or None,
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
                "timeout_seconds": number(c.get("webhook_timeout")),
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
