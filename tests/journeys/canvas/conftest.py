"""Fixtures for the journey canvas's browser tests: a signed-in staff browser and the demo."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from django.contrib.auth import get_user_model
from django.urls import reverse

PASSWORD = "pw-canvas-12345"


@pytest.fixture(autouse=True)
def _chromium_present():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium) - skipped")


@pytest.fixture
def canvas_page(page, live_server):
    """A 1280x800 page signed in as a superuser; ``canvas_page.open(journey)`` opens its
    canvas and waits for the first layout."""
    get_user_model().objects.create_superuser("marketer", "marketer@example.com", PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def open_canvas(journey):
        page.goto(live_server.url + reverse("admin:journeys_journey_canvas", args=[journey.pk]))
        page.wait_for_selector('.react-flow__node[data-id="__trigger__"]')
        page.wait_for_function(
            "() => [...document.querySelectorAll('.react-flow__node')]"
            ".every(n => n.style.transform && n.style.transform !== 'translate(0px, 0px)'"
            " || n.dataset.id === '__trigger__')"
        )
        return page

    page.open_canvas = open_canvas
    page.page_errors = errors
    return page
