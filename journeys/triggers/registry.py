"""The trigger kinds: one module each, listed once here.

A kind module says what starts a journey and offers the same small interface:

- ``KIND`` (the value stored in ``Journey.trigger_kind``) and ``LABEL`` (the builder's
  words for it);
- ``validate(trigger) -> [Problem]`` for its settings (``journeys.definition``);
- ``sweep(journey, now=None) -> enrolled`` with ``SWEEP_TASK``, the beat task that runs
  it (``journeys.triggers.tasks``), or ``None`` for both when something else enrolls:
  events as they arrive, a recurring journey's own beat entry;
- ``forecast(journey, trigger, window, sample) -> Forecast`` (``journeys.simulation``);
- the builder's ``form_fields()``, ``FIELDSETS``, ``form_initial(trigger)``,
  ``form_values(cleaned)``, ``FORM_PLACES`` (setting -> field, where its problems
  show) and ``DEFAULTS`` (values a saved form leaves unspelled)
  (``journeys.admin_forms``); optionally ``SHOW_WHEN`` (setting -> ``{"field",
  "equals"}``: the canvas shows it only then, ``journeys.canvas_fields``);
- ``CONTEXT_FROM_EVENT``: its enrollments carry a trigger event's properties, so a test
  send samples the customer's latest such event; ``EXAMPLE``: valid settings.

Adding a kind is one module plus one line in ``MODULES``.
"""

from __future__ import annotations

from types import ModuleType

from django import forms

from journeys.triggers import date, event, manual, recurring, replenishment, segment_entry

MODULES: tuple[ModuleType, ...] = (event, date, replenishment, recurring, segment_entry, manual)
KINDS: dict[str, ModuleType] = {m.KIND: m for m in MODULES}
#: What every kind module provides.
INTERFACE = (
    "KIND",
    "LABEL",
    "SWEEP_TASK",
    "CONTEXT_FROM_EVENT",
    "EXAMPLE",
    "DEFAULTS",
    "FORM_PLACES",
    "FIELDSETS",
    "validate",
    "sweep",
    "forecast",
    "form_fields",
    "form_initial",
    "form_values",
)
#: The default kind of a new journey.
DEFAULT = event.KIND


def get(kind: str | None) -> ModuleType | None:
    return KINDS.get(kind or "")


def choices() -> list[tuple[str, str]]:
    return [(m.KIND, m.LABEL) for m in MODULES]


def swept_by(task: str) -> list[str]:
    """The kinds whose sweep the beat task ``task`` runs."""
    return [m.KIND for m in MODULES if m.sweep is not None and task == m.SWEEP_TASK]


def form_fields() -> dict[str, forms.Field]:
    """Every kind's builder fields; kinds sharing a field (the segment) declare it alike."""
    fields: dict[str, forms.Field] = {}
    for module in MODULES:
        for name, field in module.form_fields().items():
            fields.setdefault(name, field)
    return fields


def fieldsets() -> list[tuple[str, dict]]:
    """The admin fieldsets of the trigger settings, each marked with the kinds it is for
    (``trigger-<kind>``), so the builder shows only the chosen kind's. A fieldset that
    several kinds declare alike appears once, for all of them."""
    kinds: dict[tuple, list[str]] = {}
    for module in MODULES:
        for title, fields in module.FIELDSETS:
            kinds.setdefault((title, fields), []).append(module.KIND)
    return [
        (title, {"classes": ("trigger-kind", *(f"trigger-{k}" for k in ks)), "fields": fields})
        for (title, fields), ks in kinds.items()
    ]
