"""The canvas's side panel in a real headless Chromium: only a step's own fields, a
conditions editor offering only what the server accepts, and a send step's preview."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from journeys import canvas
from journeys.definition import normalized, validate
from journeys.models import Journey
from orchestrator.segments import conditions
from orchestrator.segments.models import Segment
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: Waits on a server round trip (live validation, saving, a preview) on a busy machine.
SERVER = 20_000


def saved_draft(journey: Journey) -> dict:
    """The draft the canvas saved (kept apart from what runs until published)."""
    return normalized(canvas.pending(Journey.objects.get(pk=journey.pk)))


OTHER_KINDS_FIELDS = ("template", "channel", "event", "conditions", "percent", "url", "name")


def test_a_wait_step_shows_only_its_duration(panel_page, template):
    journey = make_journey(
        [
            send("hello", next="nap"),
            {"key": "nap", "kind": "wait", "next": "", "config": {"minutes": 2880}},
        ],
        activate=False,
    )
    panel = panel_page.open_step(journey, "nap")

    expect(panel.locator('[name="minutes"]')).to_have_value("2")
    expect(panel.locator('[name="minutes_unit"]')).to_have_value("days")
    expect(panel.locator('[name="key"]')).to_have_attribute("readonly", "")
    for hidden in ("time", "attribute", "from", "offset_minutes", *OTHER_KINDS_FIELDS):
        expect(panel.get_by_test_id(f"field-{hidden}")).to_have_count(0)
    # Labels are tied to their controls.
    expect(panel.get_by_label("For")).to_have_value("2")

    # Another mode shows that mode's fields instead.
    panel.locator('[name="mode"]').select_option("time_of_day")
    expect(panel.get_by_test_id("field-time")).to_be_visible()
    expect(panel.get_by_test_id("field-minutes")).to_have_count(0)
    panel.locator('[name="time"]').fill("09:30")
    panel.locator('[name="mode"]').select_option("duration")
    expect(panel.locator('[name="minutes"]')).to_have_value("")  # the time went with its mode
    # 36 hours is stored in the step's unit, minutes.
    panel.locator('[name="minutes"]').fill("36")
    panel.locator('[name="minutes_unit"]').select_option("hours")
    panel_page.get_by_test_id("save-draft").click()
    expect(panel_page.get_by_test_id("status")).to_contain_text("Draft saved", timeout=SERVER)
    steps = saved_draft(journey)["steps"]
    assert steps[1]["config"] == {"mode": "duration", "minutes": 2160}

    # Escape closes the panel.
    panel.locator('[name="minutes"]').focus()
    panel_page.keyboard.press("Escape")
    expect(panel_page.get_by_test_id("side-panel")).to_have_count(0)
    assert panel_page.page_errors == []


def test_branch_conditions_offer_only_what_the_server_accepts(panel_page, template):
    make_customer("runner-1", attributes={"first_name": "Ann", "city": "Osaka", "orders": 3})
    Segment.objects.create(key="recent-buyers", name="Recent buyers")
    journey = make_journey(
        [
            {
                "key": "check",
                "kind": "branch",
                "next": "yes",
                "alt_next": "no",
                "config": {
                    "conditions": [
                        {"type": "attribute", "name": "city", "op": "eq", "value": "Osaka"}
                    ]
                },
            },
            send("yes"),
            send("no"),
        ],
        activate=False,
    )
    panel = panel_page.open_step(journey, "check")
    rows = panel.get_by_test_id("condition-row")
    expect(rows).to_have_count(1)
    row = rows.nth(0)
    expect(row.locator('[name="op"]')).to_have_value("eq")

    # Every field a row offers has only comparisons its condition type accepts.
    field = row.locator('[name="condition_field"]')
    offered = field.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert {v.split(":")[0] for v in offered} == set(conditions.CONDITION_TYPES)
    for value in offered:
        field.select_option(value)
        kind = value.split(":")[0]
        ops = row.locator('[name="op"] option').evaluate_all("os => os.map(o => o.value)")
        ops = [op for op in ops if op]
        assert ops, value
        assert set(ops) <= set(conditions.OPS_BY_TYPE[kind]), (value, ops)
        if value == "attribute:orders":  # a number: no "contains"
            assert "contains" not in ops and "gte" in ops
    # Labels in plain words, never the internal names.
    field.select_option("attribute:city")
    labels = row.locator('[name="op"] option').all_inner_texts()
    assert "is one of" in labels and "in" not in labels

    # Build: city is one of Osaka, Kyoto; did order.completed in the last 7 days;
    # in the saved segment; any of them.
    row.locator('[name="op"]').select_option("in")
    for city in ("Osaka", "Kyoto"):
        row.locator('input[name="value"]').fill(city)
        row.locator('input[name="value"]').press("Enter")
    expect(row.locator(".jp-chip")).to_have_count(2)
    panel.get_by_test_id("add-condition").click()
    second = rows.nth(1)
    second.locator('[name="condition_field"]').select_option("event:")
    second.locator('[name="condition_name"]').fill("order.completed")
    second.locator('[name="within"]').fill("7")
    panel.get_by_test_id("add-condition").click()
    third = rows.nth(2)
    third.locator('[name="condition_field"]').select_option("segment:")
    third.locator('[name="segment"]').select_option("recent-buyers")
    panel.get_by_test_id("add-condition").click()
    # A row left unfinished gets the server's problem on that row.
    rows.nth(3).locator('[name="condition_field"]').select_option("attribute:")
    expect(rows.nth(3).locator('[name="condition_name"]')).to_have_value("")
    expect(rows.nth(3).locator(".jp-error").first).to_be_visible(timeout=SERVER)
    rows.nth(3).get_by_role("button", name="Remove condition 4").click()
    expect(rows).to_have_count(3)
    panel.locator('input[name="match"][value="any"]').check()

    panel_page.get_by_test_id("save-draft").click()
    expect(panel_page.get_by_test_id("status")).to_contain_text("Draft saved", timeout=SERVER)
    definition = saved_draft(journey)
    assert definition["steps"][0]["config"] == {
        "conditions": [
            {"type": "attribute", "name": "city", "op": "in", "value": ["Osaka", "Kyoto"]},
            {"type": "event", "name": "order.completed", "op": "happened", "within_hours": 168},
            {"type": "segment", "segment": "recent-buyers", "op": "in"},
        ],
        "match": "any",
    }
    assert validate(definition) == []
    assert panel_page.page_errors == []


def test_a_send_steps_preview_renders_for_a_sample_customer(panel_page, template):
    make_customer("runner-7", attributes={"first_name": "Mika"}, locale="en")
    journey = make_journey([send("hello", channel="email")], activate=False)
    panel = panel_page.open_step(journey, "hello")

    expect(panel.locator('[name="template"]')).to_have_value("journey-hello")
    channels = panel.locator('[name="channel"] option').evaluate_all("os => os.map(o => o.value)")
    assert channels == ["preferred", "email", "sms"]  # the template's channels only
    preview = panel.get_by_test_id("preview")
    expect(preview).to_contain_text("Hello Alex", timeout=SERVER)  # a built-in sample customer
    preview.locator('[name="preview_customer"]').fill("runner-7")
    expect(preview).to_contain_text("Hello Mika", timeout=SERVER)
    frame = panel_page.frame_locator('[data-testid="preview-html"]')
    expect(frame.locator("p")).to_contain_text("Hi Mika", timeout=SERVER)

    preview.locator('[name="preview_customer"]').fill("nobody-here")
    expect(preview.get_by_test_id("preview-error")).to_contain_text(
        "There is no customer", timeout=SERVER
    )
    preview.locator('[name="preview_customer"]').fill("runner-7")
    panel.locator('[name="channel"]').select_option("sms")
    expect(preview).to_contain_text("Hi Mika:", timeout=SERVER)
    assert panel_page.page_errors == []


def test_problems_show_beside_their_field_and_the_settings_save(panel_page, template):
    journey = make_journey([send("hello")], activate=False)
    panel = panel_page.open_step(journey, "hello")
    # No template: the server's words, in the panel, before saving.
    panel.locator('[name="template"]').select_option("")
    expect(panel.get_by_test_id("panel-problems")).to_contain_text(
        "Choose the message template to send.", timeout=SERVER
    )
    panel.locator('[name="template"]').select_option("journey-hello")
    expect(panel.get_by_test_id("panel-problems")).to_have_count(0, timeout=SERVER)

    panel = panel_page.open_step(journey, "__trigger__")
    event = panel.get_by_test_id("field-event")
    event.locator('[name="event"]').fill("")
    expect(event.get_by_test_id("field-problems")).to_contain_text("Name the event", timeout=SERVER)
    event.locator('[name="event"]').fill("cart.abandoned")
    expect(event.get_by_test_id("field-problems")).to_have_count(0, timeout=SERVER)
    panel.locator('[name="entry_rule"]').select_option("once_per")
    panel.locator('[name="entry_days"]').fill("14")
    panel.get_by_role("button", name="Add an exit event").click()
    panel.locator('[name="exit_event"]').fill("order.completed")
    panel.locator('[name="exit_match"]').fill("sku")
    panel.locator('[name="goal_event"]').fill("order.completed")
    panel.locator('[name="goal_within_hours"]').fill("3")
    panel.locator('[name="goal_within_hours_unit"]').select_option("days")
    panel.locator('[name="on_hold"]').select_option("skip")
    panel.locator('[name="priority"]').fill("7")

    panel_page.get_by_test_id("save-draft").click()
    expect(panel_page.get_by_test_id("status")).to_contain_text("Draft saved", timeout=SERVER)
    definition = saved_draft(journey)
    assert definition["trigger"] == {"kind": "event", "event": "cart.abandoned"}
    assert definition["entry"] == {"rule": "once_per", "days": 14}
    assert definition["exit_events"] == [{"event": "order.completed", "match": "sku"}]
    assert definition["goal"] == {"event": "order.completed", "within_hours": 72, "exits": True}
    assert (definition["on_hold"], definition["priority"]) == ("skip", 7)
    assert validate(definition) == []
    assert panel_page.page_errors == []


CONTROLS = "input, select, textarea, button"


def test_the_panel_works_from_the_keyboard_and_fits_its_column(panel_page, template):
    journey = make_journey(
        [
            {
                "key": "bought",
                "kind": "wait_for_event",
                "next": "",
                "alt_next": "nudge",
                "config": {
                    "event": "order.completed",
                    "timeout_minutes": 4320,
                    "filter": [{"type": "property", "name": "sku", "op": "eq", "value": "A1"}],
                },
            },
            send("nudge"),
        ],
        activate=False,
    )
    panel = panel_page.open_step(journey, "bought")
    # An event's filter looks at the event's properties only.
    field = panel.get_by_test_id("condition-row").locator('[name="condition_field"]')
    assert field.locator("option").evaluate_all("os => os.map(o => o.value)") == ["property:"]
    expect(panel.locator('[name="timeout_minutes"]')).to_have_value("3")

    # Every control has a name a screen reader reads (a label tied to it, or aria-label).
    unnamed = panel.evaluate(
        """(root, sel) => [...root.querySelectorAll(sel)].filter(el =>
            !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
            && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map(el => el.outerHTML.slice(0, 80))""",
        CONTROLS,
    )
    assert unnamed == []
    # Tab reaches every control, in order, without leaving the panel on the way.
    controls = panel.locator(CONTROLS).evaluate_all(
        "els => els.filter(el => !el.disabled && el.offsetParent).length"
    )
    panel.locator('[name="label"]').focus()
    reached = set()
    for _ in range(controls + 2):
        reached.add(
            panel_page.evaluate(
                "() => { const el = document.activeElement;"
                " const root = document.querySelector('[data-testid=side-panel]');"
                " return root.contains(el) ? [...root.querySelectorAll("
                f"'{CONTROLS}')].indexOf(el) : -1 }}"
            )
        )
        panel_page.keyboard.press("Tab")
    assert set(range(1, controls)) <= reached  # 0 is Close, before the label
    # A visible focus ring.
    panel.locator('[name="event"]').focus()
    ring = panel.locator('[name="event"]').evaluate("el => getComputedStyle(el).outlineStyle")
    assert ring != "none"
    # Nothing runs off the right edge at 1280x800.
    overflow = panel.evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 0
    box = panel.bounding_box()
    assert box["x"] + box["width"] <= 1280
    assert panel_page.page_errors == []


def test_every_comparison_the_editor_offers_is_one_the_server_accepts(panel_page, template):
    make_customer("runner-2", attributes={"first_name": "Bo", "orders": 3})
    Segment.objects.create(key="recent-buyers", name="Recent buyers")
    journey = make_journey(
        [
            {
                "key": "check",
                "kind": "branch",
                "next": "yes",
                "alt_next": "",
                "config": {
                    "conditions": [{"type": "attribute", "name": "orders", "op": "gt", "value": 1}]
                },
            },
            send("yes"),
        ],
        activate=False,
    )
    panel = panel_page.open_step(journey, "check")
    rows = panel.get_by_test_id("condition-row")
    made = 1
    for field in (
        "attribute:orders",
        "attribute:",
        "property:",
        "event:",
        "last_message:",
        "reply:",
        "segment:",
    ):
        panel.get_by_test_id("add-condition").click()
        row = rows.nth(made)
        row.locator('[name="condition_field"]').select_option(field)
        ops = row.locator('[name="op"] option').evaluate_all("os => os.map(o => o.value)")
        for n, op in enumerate(ops):
            if n:
                panel.get_by_test_id("add-condition").click()
                row = rows.nth(made)
                row.locator('[name="condition_field"]').select_option(field)
            row.locator('[name="op"]').select_option(op)
            if row.locator('[name="condition_name"]').count():
                row.locator('[name="condition_name"]').fill(
                    "order.completed" if field == "event:" else "plan"
                )
            value = row.locator('input[name="value"]:not([type=checkbox])')
            if value.count() and value.get_attribute("placeholder") == "Type a value, then Enter":
                value.fill("gold")
                value.press("Enter")
            elif value.count():
                value.fill("5")
            made += 1
    expect(rows).to_have_count(made)
    panel_page.get_by_test_id("save-draft").click()
    expect(panel_page.get_by_test_id("status")).to_contain_text("Draft saved", timeout=SERVER)
    saved = saved_draft(journey)
    assert len(saved["steps"][0]["config"]["conditions"]) == made
    assert {(c["type"], c["op"]) for c in saved["steps"][0]["config"]["conditions"]} == {
        (kind, op) for kind, ops in conditions.OPS_BY_TYPE.items() for op in ops
    }
    assert validate(saved) == []
    expect(panel.locator(".jp-error")).to_have_count(0)
