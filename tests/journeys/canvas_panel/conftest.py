"""Fixtures for the side panel's browser tests: a signed-in staff browser at 1280x800."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from django.contrib.auth import get_user_model
from django.urls import reverse

PASSWORD = "pw-panel-12345"


@pytest.fixture(autouse=True)
def _chromium_present():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium) - skipped")


@pytest.fixture
def panel_page(page, live_server):
    """``panel_page.open_step(journey, key)`` opens the journey's canvas and the side
    panel of one step (``"__trigger__"``: the journey's settings), and returns the panel."""
    get_user_model().objects.create_superuser("marketer", "marketer@example.com", PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def open_step(journey, key):
        page.goto(live_server.url + reverse("admin:journeys_journey_canvas", args=[journey.pk]))
        node = page.locator(f'.react-flow__node[data-id="{key}"]')
        node.wait_for()
        # From the keyboard, as a marketer without a mouse would: focus, Enter.
        node.focus()
        page.keyboard.press("Enter")
        panel = page.get_by_test_id("side-panel")
        panel.wait_for()
        return panel

    page.open_step = open_step
    page.page_errors = errors
    return page
