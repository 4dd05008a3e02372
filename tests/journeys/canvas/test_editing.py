"""Editing on the canvas: delete (key and button) relinks the step before to the step
after, undo/redo (keys and buttons) walk back and forth, a step dropped on an arrow
takes its place, problems show on the step before saving, and it all works from the
keyboard."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from playwright.sync_api import expect

from journeys.definition import definition_of
from journeys.models import Journey
from orchestrator.demo.services import load_demo
from tests.journeys.canvas.helpers import (
    drop_on_edge,
    edge_ids,
    expect_status,
    node,
    saved_state,
    set_field,
    settle,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ORIGINAL = ["__trigger__:next", "remind:next", "week:next"]
RUNNING = [("remind", "week"), ("week", "nudge"), ("nudge", "")]


def links(journey: Journey) -> list[tuple[str, str]]:
    return [(s["key"], s["next"]) for s in definition_of(journey)["steps"]]


def test_delete_undo_redo_insert_on_an_edge_and_the_keyboard(canvas_page):
    load_demo()
    journey = Journey.objects.get(key="shoe-replenishment")
    page = canvas_page.open_canvas(journey)
    assert edge_ids(page) == ORIGINAL
    expect(page.get_by_test_id("undo")).to_be_disabled()

    # Delete with the key: remind now leads straight to nudge.
    node(page, "week").click()
    page.get_by_test_id("side-panel").get_by_role("button", name="Close").click()
    page.keyboard.press("Delete")
    settle(page)
    expect(node(page, "week")).to_have_count(0)
    assert edge_ids(page) == ["__trigger__:next", "remind:next"]

    page.keyboard.press("Control+z")
    settle(page)
    assert edge_ids(page) == ORIGINAL
    page.keyboard.press("Control+Shift+z")
    settle(page)
    assert edge_ids(page) == ["__trigger__:next", "remind:next"]
    page.get_by_test_id("undo").click()
    settle(page)
    assert edge_ids(page) == ORIGINAL
    page.get_by_test_id("redo").click()
    settle(page)
    expect(node(page, "week")).to_have_count(0)
    page.get_by_test_id("undo").click()
    settle(page)
    expect(page.get_by_test_id("redo")).to_be_enabled()

    # Delete with the button of the step's panel.
    node(page, "nudge").click()
    page.get_by_test_id("delete-step").click()
    settle(page)
    assert edge_ids(page) == ["__trigger__:next", "remind:next"]
    expect(page.get_by_test_id("side-panel")).to_have_count(0)
    page.get_by_test_id("undo").click()
    settle(page)
    assert edge_ids(page) == ORIGINAL
    expect(page.get_by_test_id("status")).to_contain_text("All changes saved")

    # Unlink an exit (select the arrow, Delete): the stray step shows its problem; drag
    # from the exit's handle to the step to link it again.
    page.locator('[data-edge-id="week:next"]').click()  # the arrow's label
    page.keyboard.press("Delete")
    settle(page)
    assert edge_ids(page) == ["__trigger__:next", "remind:next"]
    expect(node(page, "nudge").get_by_test_id("node-problems")).to_be_visible()
    start = node(page, "week").locator(".react-flow__handle.source").bounding_box()
    end = node(page, "nudge").bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 10, steps=8)
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 4, steps=2)
    page.mouse.up()
    settle(page)
    assert edge_ids(page) == ORIGINAL
    expect(node(page, "nudge").get_by_test_id("node-problems")).to_have_count(0)

    # A wait dropped on the arrow remind -> week goes between them; until it says how
    # long, the step shows the problem and saving is refused.
    drop_on_edge(page, "wait", "remind:next")
    assert edge_ids(page) == sorted([*ORIGINAL, "wait-1:next"])
    problems = node(page, "wait-1").get_by_test_id("node-problems")
    expect(problems).to_be_visible()
    expect(problems).to_have_attribute(
        "title", "Say how long to wait (a positive number of minutes)."
    )
    # Half-done work saves as a draft, problems and all; publishing waits for the fix.
    page.get_by_test_id("save-draft").click()
    expect_status(page, "Draft saved - not live until published")
    expect(page.get_by_test_id("save-draft")).to_be_disabled()
    publish = page.get_by_test_id("publish")
    expect(publish).to_be_disabled()
    expect(publish).to_have_attribute("title", re.compile(r"Fix the 1 problem first"))
    state = saved_state(page)
    assert [p["step"] for p in state["problems"]] == ["wait-1"]
    assert [s["key"] for s in state["draft"]["steps"]] == ["remind", "wait-1", "week", "nudge"]
    assert links(journey) == RUNNING  # what runs is untouched
    set_field(page, "minutes_unit", "days")
    set_field(page, "minutes", 2)
    expect(problems).to_have_count(0)
    expect(publish).to_be_enabled()
    page.get_by_test_id("save-draft").click()
    expect(page.get_by_test_id("save-draft")).to_be_disabled()
    draft = saved_state(page)["draft"]
    assert [(s["key"], s.get("next") or "") for s in draft["steps"]] == [
        ("remind", "wait-1"),
        ("wait-1", "week"),
        ("week", "nudge"),
        ("nudge", ""),
    ]
    assert draft["steps"][1]["config"] == {"mode": "duration", "minutes": 2880}
    assert links(journey) == RUNNING
    expect(node(page, "wait-1")).to_contain_text("Wait 2 days")

    # The keyboard: steps take focus, arrows follow the links, Enter opens the panel,
    # Escape closes it, and Enter on a palette item adds after the selected step.
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("side-panel")).to_have_count(0)
    node(page, "remind").focus()
    page.keyboard.press("ArrowDown")
    expect(node(page, "wait-1")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(node(page, "week")).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(node(page, "wait-1")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("side-panel")).to_contain_text("wait-1")
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("side-panel")).to_have_count(0)
    node(page, "nudge").focus()
    page.keyboard.press("ArrowUp")
    expect(node(page, "week")).to_be_focused()
    page.get_by_test_id("palette-exit").focus()
    page.keyboard.press("Enter")
    settle(page)
    assert "week:next" in edge_ids(page) and "exit-1:next" not in edge_ids(page)
    expect(node(page, "exit-1")).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_test_id("undo").click()
    settle(page)
    expect(node(page, "exit-1")).to_have_count(0)
    node(page, "wait-1").focus()  # Delete removes the focused step
    page.keyboard.press("Delete")
    settle(page)
    assert edge_ids(page) == ["__trigger__:next", "remind:next", "week:next"]
    expect(node(page, "wait-1")).to_have_count(0)
    page.keyboard.press("Control+z")
    settle(page)
    expect(node(page, "wait-1")).to_have_count(1)
    expect(page.get_by_test_id("status")).to_contain_text("All changes saved")
    assert not canvas_page.page_errors
