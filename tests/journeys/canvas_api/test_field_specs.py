"""The field specs: each step kind's own settings in plain words, one home shared by the
canvas's side panel and the admin's form builder; trigger kinds' from their form fields."""

from __future__ import annotations

import pytest

from journeys import canvas_fields
from journeys.admin_forms import STEP_DEFAULTS, STEP_MANAGED, StepForm
from journeys.definition import WAIT_MODES
from journeys.models import StepKind
from journeys.triggers import registry
from orchestrator.api.journeys import _TEXT_SETTINGS, _TEXT_TRIGGER_SETTINGS

TYPES = {
    "template",
    "channel",
    "duration",
    "time",
    "date",
    "number",
    "text",
    "event",
    "attribute",
    "conditions",
    "segment",
    "topic",
    "select",
    "bool",
    "url",
    "json",
}


def test_every_spec_is_complete_and_of_a_known_type():
    for kind in canvas_fields.step_kinds() + canvas_fields.trigger_kinds():
        for spec in kind["fields"]:
            assert spec["type"] in TYPES, spec
            assert spec["label"] and isinstance(spec["required"], bool), spec
            assert isinstance(spec["help"], str)
            if spec["type"] == "select":
                assert spec["choices"] and all(
                    {"value", "label"} == set(c) for c in spec["choices"]
                )
            if "show_when" in spec:
                names = [s["name"] for s in kind["fields"]]
                assert spec["show_when"]["field"] in names


def test_specs_cover_every_setting_the_api_knows_per_step_kind():
    for kind, names in _TEXT_SETTINGS.items():
        assert set(names) <= set(canvas_fields.managed(kind)), kind
    trigger_settings = {s["name"] for k in canvas_fields.trigger_kinds() for s in k["fields"]}
    assert set(_TEXT_TRIGGER_SETTINGS) <= trigger_settings


def test_a_kind_shows_only_its_own_fields():
    kinds = {k["kind"]: k for k in canvas_fields.step_kinds()}

    assert [s["name"] for s in kinds["wait"]["fields"]] == [
        "mode",
        "minutes",
        "time",
        "from",
        "attribute",
        "offset_minutes",
    ]
    assert [s["value"] for s in kinds["wait"]["fields"][0]["choices"]] == list(WAIT_MODES)
    assert kinds["wait"]["fields"][1]["show_when"] == {"field": "mode", "equals": "duration"}
    assert kinds["exit"]["fields"] == []
    assert kinds["branch"]["fields"][0]["condition_types"][0] == "attribute"


@pytest.mark.parametrize(
    ("form_field", "kind", "name"),
    [
        ("send_template", StepKind.SEND, "template"),
        ("send_fallback", StepKind.SEND, "fallback_channel"),
        ("digest_key", StepKind.DIGEST, "key"),
        ("wait_mode", StepKind.WAIT, "mode"),
        ("wfe_timeout", StepKind.WAIT_FOR_EVENT, "timeout_minutes"),
        ("branch_conditions", StepKind.BRANCH, "conditions"),
        ("split_percent", StepKind.SPLIT, "percent"),
        ("attr_from_context", StepKind.UPDATE_ATTRIBUTE, "from_context"),
        ("webhook_timeout", StepKind.WEBHOOK, "timeout_seconds"),
    ],
)
def test_the_form_builder_reads_its_words_from_the_specs(form_field, kind, name):
    field = StepForm.base_fields[form_field]
    spec = canvas_fields.spec(kind, name)

    assert field.label == spec["label"]
    assert field.help_text == spec["help"]
    if "choices" in spec:
        assert list(field.choices) == [(c["value"], c["label"]) for c in spec["choices"]]


def test_the_form_manages_the_settings_the_specs_name_with_their_defaults():
    for kind in StepKind.values:
        assert set(canvas_fields.managed(kind)) <= set(STEP_MANAGED[kind])
    assert STEP_DEFAULTS == {
        "channel": "preferred",
        "mode": "duration",
        "from": "attribute",
        "offset_minutes": 0,
        "match": "all",
        "timeout_seconds": 5,
    }


def test_trigger_specs_come_from_each_kinds_builder_fields():
    kinds = {k["kind"]: k for k in canvas_fields.trigger_kinds()}

    assert set(kinds) == set(registry.KINDS)
    for module in registry.MODULES:
        fields = module.form_fields()
        specs = {s["name"]: s for s in kinds[module.KIND]["fields"]}
        assert set(specs) == set(module.FORM_PLACES)
        for setting, form_name in module.FORM_PLACES.items():
            assert specs[setting]["label"] == str(fields[form_name].label)
    date = {s["name"]: s for s in kinds["date"]["fields"]}
    assert date["offset_minutes"]["type"] == "duration" and date["offset_minutes"]["signed"]
    assert date["source"]["type"] == "select"
    assert kinds["event"]["fields"][1]["type"] == "conditions"
    assert kinds["manual"]["fields"] == []


def test_every_replenishment_setting_has_a_field_and_date_fields_follow_the_source():
    kinds = {k["kind"]: k for k in canvas_fields.trigger_kinds()}
    replenishment = {s["name"]: s for s in kinds["replenishment"]["fields"]}
    assert replenishment["product_cycles"]["type"] == "json"
    assert replenishment["grace_days"]["type"] == "number"
    assert replenishment["grace_days"]["default"] == 3
    # Every setting the trigger reads has a field (its example's, and the optional ones).
    documented = {"product_cycles", "min_purchases", "remind_days_before", "grace_days"}
    assert set(registry.KINDS["replenishment"].EXAMPLE) | documented <= set(replenishment)
    date = {s["name"]: s for s in kinds["date"]["fields"]}
    assert date["attribute"]["show_when"] == {"field": "source", "equals": "attribute"}
    assert date["event"]["show_when"] == {"field": "source", "equals": "event"}
    assert date["property"]["show_when"] == {"field": "source", "equals": "event"}
    assert "show_when" not in date["offset_minutes"]


def test_replenishment_grace_days_is_checked():
    module = registry.KINDS["replenishment"]
    trigger = {**module.EXAMPLE}
    assert module.validate({**trigger, "grace_days": 2.5}) == []
    assert [p.field for p in module.validate({**trigger, "grace_days": -1})] == [
        "trigger.grace_days"
    ]
    assert [p.field for p in module.validate({**trigger, "grace_days": "soon"})] == [
        "trigger.grace_days"
    ]
