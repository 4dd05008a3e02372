"""Fixtures for the side panel's browser tests: the canvas's signed-in 1280x800 page,
with a way to open one step's panel from the keyboard."""

from __future__ import annotations

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from tests.journeys.canvas import conftest as canvas_fixtures

# The canvas's own browser fixtures: Chromium present, a signed-in staff page.
_chromium_present = canvas_fixtures._chromium_present
canvas_page = canvas_fixtures.canvas_page


@pytest.fixture
def panel_page(canvas_page):
    """``panel_page.open_step(journey, key)`` opens the journey's canvas and the side
    panel of one step (``"__trigger__"``: the journey's settings), and returns the panel."""

    def open_step(journey, key):
        canvas_page.open_canvas(journey)
        node = canvas_page.locator(f'.react-flow__node[data-id="{key}"]')
        # From the keyboard, as a marketer without a mouse would: focus, Enter.
        node.focus()
        canvas_page.keyboard.press("Enter")
        panel = canvas_page.get_by_test_id("side-panel")
        panel.wait_for()
        return panel

    canvas_page.open_step = open_step
    return canvas_page
