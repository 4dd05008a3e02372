"""A marketer builds the demo replenishment journey on the canvas, from an empty journey,
by dragging steps from the palette and filling the side panel; the saved definition is
the demo's, and the engine sends its first reminder to a customer who enters."""

from __future__ import annotations

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from playwright.sync_api import expect

from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment, Journey
from journeys.services import journey_activate
from orchestrator.audience.models import Customer
from orchestrator.consent.models import Topic
from orchestrator.delivery.models import Message
from orchestrator.demo.services import demo_journeys, load_demo
from tests.journeys.canvas.helpers import (
    TRIGGER,
    drop_on_node,
    drop_on_pane,
    dump,
    expect_status,
    node,
    node_ids,
    saved_state,
    set_field,
    settle,
    structure,
)
from tests.journeys.test_engine import run_until_idle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_marketer_builds_the_demo_replenishment_journey_from_empty(canvas_page):
    load_demo()
    demo = next(d for d in demo_journeys() if d["key"] == "shoe-replenishment")
    journey = Journey.objects.create(
        key="shoes-from-the-canvas", name="New journey", topic=Topic.objects.get(key="promotions")
    )
    page = canvas_page.open_canvas(journey)
    assert node_ids(page) == [TRIGGER]

    # The journey's settings: the trigger node opens them.
    node(page, TRIGGER).click()
    panel = page.get_by_test_id("side-panel")
    expect(panel).to_be_visible()
    set_field(page, "name", demo["name"])
    set_field(page, "topic", demo["topic"])
    set_field(page, "priority", demo["priority"])
    set_field(page, "trigger_kind", "replenishment")
    for name in ("event", "product_property", "default_cycle_days", "min_purchases"):
        set_field(page, name, demo["trigger"][name])
    set_field(page, "remind_days_before", demo["trigger"]["remind_days_before"])
    panel.get_by_role("button", name="Add an exit event").click()
    set_field(page, "exit_event", demo["exit_events"][0]["event"])
    set_field(page, "exit_match", demo["exit_events"][0]["match"])
    set_field(page, "goal_event", demo["goal"]["event"])
    set_field(page, "goal_within_hours_unit", "hours")
    set_field(page, "goal_within_hours", demo["goal"]["within_hours"])
    set_field(page, "on_hold", demo["on_hold"])

    # The steps, dragged from the palette: the first onto the empty canvas (it becomes
    # the entry step), each next one onto the step it follows.
    remind, week, nudge = demo["steps"]
    drop_on_pane(page, "send")
    expect(node(page, "send-1")).to_be_visible()
    expect(panel).to_be_visible()
    set_field(page, "template", remind["config"]["template"])
    set_field(page, "channel", remind["config"]["channel"])
    set_field(page, "label", remind["label"])

    drop_on_node(page, "wait", "send-1")
    expect(node(page, "wait-1")).to_be_visible()
    set_field(page, "mode", "duration")
    set_field(page, "minutes_unit", "days")
    set_field(page, "minutes", week["config"]["minutes"] // 1440)

    drop_on_node(page, "send", "wait-1")
    expect(node(page, "send-2")).to_be_visible()
    set_field(page, "template", nudge["config"]["template"])
    set_field(page, "channel", nudge["config"]["channel"])
    set_field(page, "label", nudge["label"])
    settle(page)
    expect(page.locator('.react-flow__edge[data-id="send-1:next"]')).to_have_count(1)
    expect(page.locator('.react-flow__edge[data-id="wait-1:next"]')).to_have_count(1)
    expect(page.get_by_test_id("status")).to_contain_text("No problems")

    page.get_by_test_id("save-draft").click()
    expect_status(page, "Draft saved - not live until published")

    # Reloaded, the canvas shows what the server holds, and that is the demo's journey.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="send-2"]')
    assert sorted(node_ids(page)) == sorted([TRIGGER, "send-1", "wait-1", "send-2"])
    draft = saved_state(page)["draft"]
    assert structure(draft) == structure(demo), dump([structure(draft), structure(demo)])
    for name in ("name", "topic", "priority", "goal", "exit_events", "on_hold"):
        assert draft[name] == demo[name], name
    assert draft["entry"]["rule"] == demo["entry"]["rule"]
    trigger = {k: v for k, v in demo["trigger"].items() if k in draft["trigger"]}
    assert {k: draft["trigger"][k] for k in trigger} == trigger
    assert draft["trigger"]["kind"] == "replenishment"

    # What publishing would change, and the forecast, open beside the canvas.
    page.get_by_test_id("diff").click()
    diff = page.get_by_test_id("diff-panel")
    expect(diff).to_contain_text("Nothing is published yet")
    expect(diff.locator("li")).not_to_have_count(0)
    page.get_by_test_id("simulate").click()
    simulate = page.get_by_test_id("simulate-panel")
    expect(simulate.locator("table").first).to_be_visible(timeout=20_000)
    expect(simulate).to_contain_text("entries")
    assert page.locator(".react-flow").bounding_box()["width"] > 500  # the canvas stays beside

    # Publish from the canvas; the versions say who published it.
    page.get_by_test_id("publish").click()
    page.get_by_test_id("publish-confirm").click()
    expect_status(page, "Published version 1.")
    page.get_by_test_id("versions").click()
    versions = page.get_by_test_id("versions-panel")
    expect(versions).to_contain_text("Version 1")
    expect(versions).to_contain_text("marketer")

    # The engine runs the published journey for a customer: the first reminder goes.
    journey.refresh_from_db()
    journey_activate(journey=journey)
    customer = Customer.objects.filter(subscriptions__topic__key="replenishment").first()
    (enrollment_id,) = enroll(journey, [Candidate(customer.id, "t", {"product": "Stride Road 5"})])
    run_until_idle()
    message = Message.objects.get(enrollment_id=enrollment_id)
    assert message.customer_id == customer.id
    assert message.template.key == remind["config"]["template"]
    assert message.journey == journey.key
    enrollment = Enrollment.objects.get(id=enrollment_id)
    assert enrollment.status == Enrollment.Status.ACTIVE  # waiting a week for the nudge

    # The canvas counts them: one entered the first step and one waits on the second.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="send-2"]')
    expect(node(page, "send-1").get_by_test_id("node-counts")).to_contain_text("1 in")
    expect(node(page, "wait-1").get_by_test_id("node-counts")).to_contain_text("1 waiting")
    expect(page.locator('[data-edge-id="send-1:next"]')).to_have_text("1")
    assert not canvas_page.page_errors
