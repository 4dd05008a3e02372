"""A live journey's draft on the canvas: saving keeps it apart from what runs (it is
still there after a reload, marked unpublished, the published version unchanged), and
publishing applies it as a new version."""

from __future__ import annotations

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from playwright.sync_api import expect

from journeys.definition import definition_of
from journeys.models import Journey
from orchestrator.demo.services import load_demo
from tests.journeys.canvas.helpers import expect_status, node, saved_state, set_field, settle

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def minutes_of(definition: dict, key: str) -> int:
    return next(s for s in definition["steps"] if s["key"] == key)["config"]["minutes"]


def test_a_live_journey_draft_is_saved_apart_then_published(canvas_page):
    load_demo()
    journey = Journey.objects.get(key="shoe-replenishment")
    assert journey.status == Journey.Status.ACTIVE
    page = canvas_page.open_canvas(journey)
    expect(page.get_by_test_id("unpublished")).to_have_count(0)
    expect(page.get_by_test_id("discard-draft")).to_be_disabled()

    # The wait between the reminders goes from a week to ten days; saved as a draft.
    node(page, "week").click()
    set_field(page, "minutes_unit", "days")
    set_field(page, "minutes", 10)
    settle(page)
    page.get_by_test_id("save-draft").click()
    expect_status(page, "Draft saved - not live until published")

    # Reloaded, the change is still there and marked unpublished; nothing that runs moved.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="week"]')
    expect(node(page, "week")).to_contain_text("10 days")
    expect_status(page, "Unpublished changes")
    expect(page.get_by_test_id("discard-draft")).to_be_enabled()
    assert minutes_of(saved_state(page)["draft"], "week") == 14400
    journey = Journey.objects.select_related("current_version").get(pk=journey.pk)
    assert journey.current_version.number == 1
    assert minutes_of(journey.current_version.definition, "week") == 10080
    assert minutes_of(definition_of(journey), "week") == 10080

    # Published: version 2 carries it, and the versions list shows both.
    page.get_by_test_id("publish").click()
    page.get_by_test_id("publish-confirm").click()
    expect_status(page, "Published version 2.")
    expect(page.get_by_test_id("unpublished")).to_have_count(0)
    page.get_by_test_id("versions").click()
    versions = page.get_by_test_id("versions-panel")
    expect(versions).to_contain_text("Version 2")
    expect(versions).to_contain_text("Version 1")
    expect(versions).to_contain_text("marketer")
    journey = Journey.objects.select_related("current_version").get(pk=journey.pk)
    assert journey.current_version.number == 2
    assert journey.status == Journey.Status.ACTIVE
    assert journey.draft_definition is None
    assert minutes_of(journey.current_version.definition, "week") == 14400
    assert minutes_of(definition_of(journey), "week") == 14400
    assert not canvas_page.page_errors
