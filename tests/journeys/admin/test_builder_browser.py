"""The journey builder in a real headless Chromium: build, get refused, fix, activate, see it.

Uses Debian's chromium through Playwright (``tests/conftest.py``'s ``page`` fixture),
and skips with the reason when either is missing.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from journeys.models import Journey

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _chromium_present():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium) - skipped")


def test_marketer_builds_fixes_activates_and_simulates(page, live_server, topic, template):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/journeys/journey/add/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-12345")
    page.click("input[type=submit]")

    page.fill("#id_name", "Welcome series")
    page.press("#id_name", "Tab")
    expect(page.locator("#id_key")).to_have_value("welcome-series")  # prepopulated
    page.select_option("#id_topic", label=str(topic))
    page.select_option("#id_trigger_kind", "event")
    # Only the chosen trigger's fields are shown.
    expect(page.locator("#id_rec_cron")).to_be_hidden()
    page.fill("#id_event_name", "order.completed")

    page.fill("#id_steps-0-key", "hello")
    page.select_option("#id_steps-0-kind", "send")
    expect(page.locator("#id_steps-0-wait_amount")).to_be_hidden()
    page.select_option("#id_steps-0-send_template", "journey-hello")
    page.select_option("#id_steps-0-send_channel", "email")

    page.locator(".add-row a").click()
    page.fill("#id_steps-1-key", "nap")
    page.select_option("#id_steps-1-kind", "wait")
    page.fill("#id_steps-1-wait_amount", "2")
    page.select_option("#id_steps-1-wait_unit", "days")
    # Forgot to link hello to nap: the save is refused, on the stray step.
    page.click("input[name=_continue]")
    expect(page.locator(".errornote")).to_be_visible()
    expect(page.get_by_text("No path from the first step leads here.")).to_be_visible()
    assert not Journey.objects.exists()

    page.select_option("#id_steps-0-next", "nap")
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    assert list(Journey.objects.values_list("key", flat=True)) == ["welcome-series"]
    journey = Journey.objects.get(key="welcome-series")
    assert [s.key for s in journey.steps.order_by("position")] == ["hello", "nap"]

    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".messagelist")).to_contain_text("Activated: version 1 is live")
    # The graph with its counts is the canvas's; the form leads there.
    expect(page.get_by_test_id("open-canvas")).to_be_visible()
    expect(page.get_by_text("Version history")).to_be_visible()
    journey.refresh_from_db()
    assert journey.status == Journey.Status.ACTIVE

    # Simulate the draft: a chart and a table, and a wrong day count is a form error.
    page.get_by_role("link", name="Simulate").click()
    expect(page.locator(".draft-note")).to_contain_text("same as published version 1")
    expect(page.locator("svg.chart")).to_be_visible()
    expect(page.locator("table.forecast tbody tr")).to_have_count(14)
    page.fill("#id_days", "0")
    page.click("input[type=submit][value=Simulate]")
    expect(page.locator(".simulate-form .errorlist")).to_be_visible()
    expect(page.locator("svg.chart")).to_have_count(0)

    # Pause, then archive.
    page.get_by_role("link", name="Welcome series").click()
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".messagelist")).to_contain_text("Paused")
    page.get_by_role("button", name="Archive").click()
    expect(page.locator(".messagelist")).to_contain_text("Archived")
    journey.refresh_from_db()
    assert journey.status == Journey.Status.ARCHIVED


def test_a_digest_step_shows_only_its_own_fields_and_saves(page, live_server, topic, template):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/journeys/journey/add/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-12345")
    page.click("input[type=submit]")

    page.fill("#id_name", "Order updates")
    page.select_option("#id_topic", label=str(topic))
    page.select_option("#id_trigger_kind", "event")
    page.fill("#id_event_name", "order.updated")
    page.fill("#id_steps-0-key", "updates")
    page.select_option("#id_steps-0-kind", "digest")
    # The digest's own fields, and none of the send step's.
    expect(page.locator("#id_steps-0-digest_minutes")).to_be_visible()
    expect(page.locator("#id_steps-0-digest_key")).to_be_visible()
    expect(page.locator("#id_steps-0-send_template")).to_be_hidden()
    expect(page.locator("#id_steps-0-send_ttl_hours")).to_be_hidden()
    page.select_option("#id_steps-0-digest_template", "journey-hello")
    page.select_option("#id_steps-0-digest_channel", "email")
    page.fill("#id_steps-0-digest_minutes", "30")
    page.fill("#id_steps-0-digest_key", "order_id")
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    step = Journey.objects.get(key="order-updates").steps.get()
    assert (step.kind, step.config) == (
        "digest",
        {"template": "journey-hello", "channel": "email", "window_minutes": 30, "key": "order_id"},
    )
