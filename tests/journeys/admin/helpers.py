"""Building admin POST bodies for the journey form and its step inline, as a browser would."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from journeys.models import Journey

JOURNEY_DEFAULTS = {
    "name": "Welcome",
    "key": "welcome",
    "description": "",
    "priority": "5",
    "on_hold": "defer",
    "trigger_kind": "event",
    "entry": "every_time",
    "entry_days": "",
    "event_name": "order.completed",
    "date_source": "attribute",
    "date_offset_unit": "hours",
    "date_offset_direction": "after",
    "goal_event": "",
    "goal_within_hours": "",
    "goal_exits": "on",
}
STEP_DEFAULTS = {
    "position": "",
    "label": "",
    "next": "",
    "alt_next": "",
    "send_channel": "preferred",
    "send_fallback": "",
    "wait_mode": "duration",
    "wait_unit": "days",
    "wait_date_from": "attribute",
    "wait_offset_unit": "hours",
    "wait_offset_direction": "after",
    "wfe_timeout_unit": "days",
    "branch_match": "all",
    "webhook_timeout": "5",
}


def form_data(
    steps: list[dict[str, Any]], *, journey: Journey | None = None, **fields: Any
) -> dict[str, str]:
    """The POST body of the add or change form: journey fields, then one form per step.

    A step dict may carry ``id`` (an existing Step) and ``DELETE``; rows of a rows field
    are given as lists of dicts, e.g. ``event_filter=[{"name": "sku", ...}]``.
    """
    data: dict[str, str] = {}
    values = {**JOURNEY_DEFAULTS, **fields}
    for name, value in values.items():
        _put(data, name, value)
    initial = journey.steps.count() if journey else 0
    data.update(
        {
            "steps-TOTAL_FORMS": str(len(steps)),
            "steps-INITIAL_FORMS": str(initial),
            "steps-MIN_NUM_FORMS": "0",
            "steps-MAX_NUM_FORMS": "1000",
        }
    )
    for i, step in enumerate(steps):
        for name, value in {**STEP_DEFAULTS, **step}.items():
            _put(data, f"steps-{i}-{name}", value)
        if journey is not None:
            data[f"steps-{i}-journey"] = str(journey.pk)
    return {k: v for k, v in data.items() if v is not None}


def _put(data: dict[str, str], name: str, value: Any) -> None:
    if isinstance(value, list):
        for row, cells in enumerate(value):
            for column, cell in cells.items():
                data[f"{name}_{row}_{column}"] = str(cell)
    elif isinstance(value, bool):
        if value:
            data[name] = "on"
    elif value is not None:
        data[name] = str(value)


def add_url() -> str:
    return reverse("admin:journeys_journey_add")


def change_url(journey: Journey) -> str:
    return reverse("admin:journeys_journey_change", args=[journey.pk])


def step_rows(journey: Journey) -> list[dict[str, Any]]:
    """The journey's steps as the change form shows them (with ids), for resubmitting."""
    from journeys.admin_forms import StepForm

    rows = []
    for step in journey.steps.order_by("position", "id"):
        form = StepForm(instance=step)
        row: dict[str, Any] = {"id": step.pk}
        for name, field in form.fields.items():
            value = form.initial.get(name, field.initial)
            if name in ("wfe_filter", "branch_conditions"):
                row[name] = field.prepare_value(value or [])
            elif value is None:
                row[name] = ""
            else:
                row[name] = value
        rows.append(row)
    return rows
