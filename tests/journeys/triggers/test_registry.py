"""The trigger kinds: one module each in one registry, read by validation, the sweeps,
the simulation and the admin builder alike."""

from __future__ import annotations

import datetime as dt
from types import ModuleType

import pytest
from django.urls import reverse

from journeys.admin import JourneyAdmin
from journeys.admin_forms import JourneyForm
from journeys.definition import validate
from journeys.forecasting import Window
from journeys.form_fields import merge
from journeys.simulation import simulate
from journeys.triggers import registry
from journeys.triggers import tasks as trigger_tasks
from tests.journeys.conftest import make_journey, send

pytestmark = pytest.mark.django_db

KINDS = list(registry.MODULES)
NOW = dt.datetime(2030, 1, 7, tzinfo=dt.UTC)


def kind_id(module: ModuleType) -> str:
    return module.KIND


@pytest.mark.parametrize("kind", KINDS, ids=kind_id)
def test_every_registered_kind_implements_the_whole_interface(kind):
    missing = [name for name in registry.INTERFACE if not hasattr(kind, name)]
    assert missing == []
    assert registry.KINDS[kind.KIND] is kind
    assert isinstance(kind.LABEL, str) and kind.LABEL
    for name in ("validate", "forecast", "form_fields", "form_initial", "form_values"):
        assert callable(getattr(kind, name)), name
    # A kind is swept by a beat task exactly when it has a sweep, and by a real one.
    assert (kind.sweep is None) == (kind.SWEEP_TASK is None)
    if kind.sweep is not None:
        assert callable(kind.sweep)
        assert kind.SWEEP_TASK in (trigger_tasks.TRIGGERS_TASK, trigger_tasks.REPLENISHMENT_TASK)
    # Its own fields: the builder shows them, and its problems land on them.
    fields = kind.form_fields()
    shown = {
        name
        for _title, layout in kind.FIELDSETS
        for item in layout
        for name in (item if isinstance(item, tuple) else (item,))
    }
    assert shown == set(fields)
    assert set(kind.FORM_PLACES.values()) <= set(fields)


@pytest.mark.parametrize("kind", KINDS, ids=kind_id)
def test_each_kinds_example_is_valid_and_survives_the_builder_form(kind, template):
    assert kind.validate(kind.EXAMPLE) == []
    definition = {
        "key": "k",
        "name": "K",
        "topic": "journey-news",
        "trigger": {"kind": kind.KIND, **kind.EXAMPLE},
        "steps": [send()],
    }
    assert validate(definition) == []
    # Stored settings -> the form's fields -> settings again: nothing lost or invented
    # (defaults the example spells out are left unspelled, as the builder saves them).
    values = kind.form_values(kind.form_initial(kind.EXAMPLE))
    saved = merge({}, values, managed=list(kind.FORM_PLACES), defaults=kind.DEFAULTS)
    assert saved == {k: v for k, v in kind.EXAMPLE.items() if kind.DEFAULTS.get(k) != v}


def test_a_kind_the_registry_does_not_know_is_refused_naming_the_known_ones_in_words(template):
    problems = validate(
        {
            "key": "k",
            "name": "K",
            "topic": "journey-news",
            "trigger": {"kind": "weather"},
            "steps": [send()],
        }
    )
    assert [p.field for p in problems] == ["trigger.kind"]
    # In the builder's words for each kind, not their internal names.
    for _kind, label in registry.choices():
        assert label.lower() in problems[0].message


def test_the_admin_builder_offers_exactly_the_registered_kinds(admin_client, template):
    assert list(JourneyForm().fields["trigger_kind"].choices) == registry.choices()
    for kind in KINDS:
        assert set(kind.form_fields()) <= set(JourneyForm.base_fields)
    # Each kind's fieldsets are marked for it (the builder script shows only those).
    marked = {
        cls.removeprefix("trigger-")
        for _title, options in JourneyAdmin.fieldsets
        for cls in options.get("classes", ())
        if cls.startswith("trigger-") and cls != "trigger-kind"
    }
    assert marked == {k.KIND for k in KINDS if k.FIELDSETS}
    page = admin_client.get(reverse("admin:journeys_journey_add")).content.decode()
    select = page[page.index('id="id_trigger_kind"') :]
    select = select[: select.index("</select>")]
    for value, label in registry.choices():
        assert f'value="{value}"' in select
        assert label in select
    assert select.count("<option") == len(KINDS)


def test_the_sweep_tasks_sweep_exactly_the_kinds_that_have_a_sweep():
    swept = registry.swept_by(trigger_tasks.TRIGGERS_TASK) + registry.swept_by(
        trigger_tasks.REPLENISHMENT_TASK
    )
    assert sorted(swept) == sorted(k.KIND for k in KINDS if k.sweep is not None)


@pytest.mark.parametrize("kind", KINDS, ids=kind_id)
def test_the_simulation_forecasts_each_kind_with_its_own_module(kind, template):
    journey = make_journey(
        [send()], key=f"sim-{kind.KIND}", trigger={"kind": kind.KIND, **kind.EXAMPLE}
    )
    result = simulate(journey, days=3, sample=10, now=NOW)
    own = kind.forecast(journey, {"kind": kind.KIND, **kind.EXAMPLE}, Window(NOW, 3), 10)
    assert own.notes
    assert set(own.notes) <= set(result["assumptions"])
