"""Journey analytics and channel health in a real headless Chromium, from the journey page.

Uses Debian's chromium through Playwright (``tests/conftest.py``'s ``page`` fixture),
and skips with the reason when either is missing.
"""

from __future__ import annotations

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from journeys import engine
from journeys.enrollment import Candidate, enroll
from orchestrator.delivery.dispatcher import dispatch_due
from tests.delivery.factories import make_template
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WELCOME = {("email", "en"): {"subject": "Welcome", "body": "Welcome to Stride."}}


def test_marketer_reads_a_journeys_analytics_and_channel_health(page, live_server, outbox, topic):
    make_template("welcome", topic=topic, variants=WELCOME)
    journey = make_journey([send("hello", "welcome", channel="email")], key="welcome")
    enroll(journey, [Candidate(make_customer().id, "t", {}) for _ in range(5)])
    while engine.advance_batch(batch_size=100).claimed:
        pass
    dispatch_due()
    assert len(outbox) == 5

    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/journeys/journey/{journey.pk}/change/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-12345")
    page.click("input[type=submit]")

    page.locator(".object-tools").get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("heading", name="Funnel")).to_be_visible()
    funnel = page.locator("svg.chart").first
    expect(funnel).to_be_visible()
    expect(funnel).to_contain_text("enrolled")
    row = page.locator("table tbody tr", has=page.locator("th", has_text="hello"))
    expect(row.locator("td").nth(1)).to_have_text("5")  # entered
    expect(row.locator("td").nth(3)).to_have_text("5")  # sent

    # A date the page cannot read is said, and the default range is shown.
    page.goto(f"{live_server.url}/admin/journeys/journey/{journey.pk}/analytics/?from=soon")
    expect(page.locator(".errornote")).to_contain_text("expected a date")
    expect(page.get_by_role("heading", name="Funnel")).to_be_visible()

    page.goto(f"{live_server.url}/admin/")
    page.get_by_role("link", name="Channel health").click()
    health = page.locator("table tbody tr", has=page.locator("th", has_text="email"))
    expect(health).to_contain_text("locmem")
    expect(health.locator("td").nth(1)).to_have_text("5")  # sent
    # The test adapter never reports deliveries: no rate, rather than a false 0%.
    expect(health.locator("td").nth(3)).to_have_text("no reports")
    expect(page.get_by_text("No message failed in this range.")).to_be_visible()
