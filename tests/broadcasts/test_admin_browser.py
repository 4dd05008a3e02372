"""The broadcast admin in a real headless Chromium: create a broadcast to a topic, schedule
it for 09:00 local time, and each customer's copy goes out at 09:00 in their own zone."""

from __future__ import annotations

import datetime as dt
import os

import pytest

pytest.importorskip("playwright", reason="playwright is not installed - browser test skipped")

import time_machine
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from orchestrator.broadcasts.models import Broadcast
from orchestrator.broadcasts.services import broadcasts_sweep
from orchestrator.consent.channel_consent import topic_subscription_set
from orchestrator.delivery.models import Message
from tests.delivery.factories import make_customer, make_template, make_topic

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: Wednesday noon UTC; the broadcast goes out on Friday.
NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _chromium_present():
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium) - skipped")


def test_marketer_schedules_nine_local_time_and_each_zone_gets_its_own_nine(page, live_server):
    topic = make_topic("newsletter", default_opt_in=False)
    make_template("weekly", topic=topic)
    for external_id, zone in (("tokyo", "Asia/Tokyo"), ("ny", "America/New_York")):
        customer = make_customer(external_id, timezone=zone)
        topic_subscription_set(
            customer_id=customer.id, topic_id=topic.id, channel="email", subscribed=True,
            source="admin", evidence={},
        )  # fmt: skip
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    with time_machine.travel(NOW):
        page.goto(f"{live_server.url}/admin/login/?next=/admin/broadcasts/broadcast/add/")
        page.fill("#id_username", "boss")
        page.fill("#id_password", "pw-boss-12345")
        page.click("input[type=submit]")

        page.fill("#id_key", "friday")
        page.fill("#id_name", "Friday newsletter")
        page.select_option("#id_template", label="weekly")
        page.select_option("#id_topic", label="Newsletter")
        page.select_option("#id_audience", "topic")
        page.select_option("#id_schedule", "local_time")
        page.fill("#id_local_date", "2026-12-11")
        page.fill("#id_local_time", "09:00")
        page.click("input[name=_continue]")
        expect(page.locator(".messagelist")).to_contain_text("was added successfully")

        page.locator("a.manage-link").first.click()
        expect(page.locator("#broadcast-status")).to_have_text("Draft")
        page.click("#schedule-button")
        expect(page.locator(".messagelist")).to_contain_text("Scheduled; due 2026-12-10 19:00")
        expect(page.locator("#broadcast-status")).to_have_text("Scheduled")

    broadcast = Broadcast.objects.get(key="friday")
    with time_machine.travel(broadcast.due_at, tick=False):
        broadcasts_sweep()  # the audience frozen, each with their own send time
    # Each copy enters the outbox shortly before its 09:00: Tokyo's, then New York's.
    for utc in (dt.datetime(2026, 12, 10, 23, 57), dt.datetime(2026, 12, 11, 13, 58)):
        with time_machine.travel(utc.replace(tzinfo=dt.UTC), tick=False):
            broadcasts_sweep()
    sends = {
        m.customer.external_id: m.send_after
        for m in Message.objects.filter(broadcast_id=broadcast.id).select_related("customer")
    }
    tokyo = sends["tokyo"].astimezone(dt.timezone(dt.timedelta(hours=9)))
    new_york = sends["ny"].astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert (tokyo.date(), tokyo.time()) == (dt.date(2026, 12, 11), dt.time(9, 0))
    assert (new_york.date(), new_york.time()) == (dt.date(2026, 12, 11), dt.time(9, 0))
