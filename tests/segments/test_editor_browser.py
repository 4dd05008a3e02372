"""The segment editor in a real headless Chromium: the live count follows the edit,
a problem is said at its row, and the saved segment comes back on reload."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from orchestrator.segments.models import Segment
from tests.delivery.factories import make_customer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _chromium_present():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium) - skipped")


def test_marketer_builds_a_segment_and_watches_the_count(page, live_server):
    make_customer("ann", attributes={"sport": "running"})
    make_customer("bob", attributes={"sport": "running"})
    make_customer("cat", attributes={"sport": "golf"})
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/segments/segment/add/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-12345")
    page.click("input[type=submit]")

    page.fill("#id_name", "Runners")
    expect(page.locator("#segment-size")).to_have_text("3")  # no condition: everyone

    page.select_option("select.add-condition", "attribute")
    row = page.locator(".condition").first
    expect(row.locator(".problem")).to_contain_text("needs a name")  # said at the row
    expect(page.locator("#segment-size")).to_have_text("?")
    row.get_by_placeholder("attribute name").fill("sport")
    row.get_by_placeholder("value").fill("running")
    expect(page.locator("#segment-size")).to_have_text("2")
    expect(page.locator("#segment-sample a")).to_have_count(2)
    expect(row.locator(".problem")).to_have_text("")

    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    segment = Segment.objects.get(key="runners")
    assert segment.conditions == {
        "all": [{"type": "attribute", "name": "sport", "op": "eq", "value": "running"}]
    }
    page.reload()
    expect(page.get_by_placeholder("attribute name")).to_have_value("sport")
    expect(page.locator("#segment-size")).to_have_text("2")
