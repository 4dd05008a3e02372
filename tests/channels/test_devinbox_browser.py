"""The dev inbox in a real headless Chromium, after a real dispatch to the devinbox adapter."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from orchestrator.delivery.dispatcher import dispatch_due
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEVINBOX = "channels.devinbox.adapter.DevInboxAdapter"


def test_staff_sees_the_email_subject_and_an_sms_bubble_with_its_segment_count(
    page, live_server, settings
):
    settings.CHANNEL_ADAPTERS = {
        channel: {"BACKEND": DEVINBOX} for channel in ("email", "sms", "whatsapp", "line")
    }
    template = make_template(
        topic=make_topic("orders", kind="transactional"),
        variants={
            ("email", "en"): {
                "subject": "Your order {{ data.order }} has shipped",
                "body": "Hi {{ customer.first_name }}, it is on its way.",
                "html": "<h1>On its way, {{ customer.first_name }}!</h1>",
            },
            # 72 characters with an emoji: UCS-2, so two segments.
            ("sms", "en"): {
                "body": "Hi {{ customer.first_name }}, order {{ data.order }} shipped 📦 "
                "Track it in the app any time you like."
            },
        },
    )
    customer = make_customer("mika", attributes={"first_name": "Mika"})
    queue(customer, template, channel="email", data={"order": "A-1001"})
    queue(customer, template, channel="sms", data={"order": "A-1001"})
    assert dispatch_due()[0].sent == 2
    get_user_model().objects.create_user("ops", password="pw-ops-12345", is_staff=True)

    page.goto(f"{live_server.url}/dev/inbox/")
    # Outside DEBUG the inbox asks for a staff login first, then comes back.
    page.fill("#id_username", "ops")
    page.fill("#id_password", "pw-ops-12345")
    page.click("input[type=submit]")

    expect(page.get_by_text("Your order A-1001 has shipped")).to_be_visible()
    page.get_by_role("link", name="SMS +1415555").first.click()
    bubble = page.locator(".bubble.sms")
    expect(bubble).to_contain_text("order A-1001 shipped 📦")
    expect(page.locator(".segments")).to_contain_text("2 segments · UCS-2")

    page.get_by_role("link", name="SMS messages").click()
    page.get_by_role("link", name="Email").first.click()
    page.get_by_role("link", name="Your order A-1001 has shipped").click()
    expect(page.locator(".email .subject")).to_have_text("Your order A-1001 has shipped")
    frame = page.frame_locator("iframe[title='HTML part']")
    expect(frame.locator("h1")).to_have_text("On its way, Mika!")
