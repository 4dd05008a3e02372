"""From a sent email to the preference center, as a person would go: open the email in
the dev inbox, follow its "manage your preferences" link, turn the topic off - and the
next message on that topic is suppressed."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from orchestrator.consent.models import ConsentRecord
from orchestrator.delivery.dispatcher import dispatch_due
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEVINBOX = "channels.devinbox.adapter.DevInboxAdapter"


def test_the_link_in_a_sent_email_opens_the_page_and_its_choice_holds_the_next_send(
    page, live_server, settings
):
    settings.DEBUG = True  # the dev inbox without a staff login
    settings.PUBLIC_BASE_URL = live_server.url
    settings.CHANNEL_ADAPTERS = {
        channel: {"BACKEND": DEVINBOX} for channel in ("email", "sms", "whatsapp", "line")
    }
    tips = make_topic("running-tips", default_opt_in=True, channels=["email"])
    template = make_template(
        topic=tips,
        variants={
            ("email", "en"): {
                "subject": "Five drills for your next 10K",
                "body": "Drills inside. Manage your preferences: {{ preferences_url }}",
                "html": '<p>Drills inside.</p><a href="{{ preferences_url }}">Manage your '
                "preferences</a>",
            }
        },
    )
    customer = make_customer("mika", attributes={"first_name": "Mika"})
    queue(customer, template, channel="email", data={})
    assert dispatch_due()[0].sent == 1

    page.goto(f"{live_server.url}/dev/inbox/")
    page.get_by_role("link", name="Five drills for your next 10K").click()
    link = page.frame_locator("iframe[title='HTML part']").get_by_role(
        "link", name="Manage your preferences"
    )
    href = link.get_attribute("href")
    assert href.startswith(f"{live_server.url}/preferences/")
    page.goto(href)

    switch = page.get_by_role("switch", name="Running-Tips: Email")
    expect(switch).to_be_checked()
    switch.click()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_have_text("Your choices are saved.")
    assert ConsentRecord.objects.filter(
        customer=customer, topic=tips, action="opt_out", source="preference_center"
    ).exists()

    following = queue(customer, template, channel="email", data={})
    dispatch_due()
    following.refresh_from_db()
    assert following.status == "suppressed"
