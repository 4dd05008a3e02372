"""The preference center in a real headless Chromium, and what the next send does after it.

Each test opens the signed link, changes preferences the way a person would (mouse,
or keyboard only), then queues marketing and runs the real dispatcher: the message
comes out suppressed or deferred according to what was just chosen.

``PREFERENCE_SCREENSHOTS=docs/screenshots`` also saves the README's screenshots.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from orchestrator.consent.models import ChannelPreference, ConsentRecord
from orchestrator.consent.tokens import preference_token
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import MessageEvent
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _link(live_server, customer, lang: str = "") -> str:
    query = f"?lang={lang}" if lang else ""
    return f"{live_server.url}/preferences/{preference_token(customer.id)}/{query}"


def _hold_code(message) -> str:
    return MessageEvent.objects.filter(message=message).exclude(code="").latest("id").code


def test_switching_a_topic_off_and_setting_quiet_hours_suppress_and_defer_the_next_sends(
    page, live_server, outbox
):
    customer = make_customer("mika")
    promos = make_topic("promos", default_opt_in=True, channels=["email", "sms"])
    news = make_topic("news", default_opt_in=True, channels=["email"])
    # Quiet hours around the present moment, whatever the time the test runs.
    now = dt.datetime.now(dt.UTC)
    start = (now - dt.timedelta(hours=1)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=2)).strftime("%H:%M")

    console = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(_link(live_server, customer))
    expect(page.get_by_role("heading", name="Your message preferences")).to_be_visible()
    news_email = page.get_by_role("switch", name="News: Email")
    expect(news_email).to_be_checked()
    news_email.click()
    # The page's one script runs under its CSP nonce and flags the unsaved change.
    expect(page.locator("#unsaved")).to_have_text("You have changes that are not saved yet.")
    page.get_by_label("Time zone").select_option("UTC")
    page.get_by_label("Quiet from").fill(start)
    page.get_by_label("Quiet until").fill(end)
    page.get_by_role("button", name="Save my choices").click()

    expect(page.get_by_role("status")).to_have_text("Your choices are saved.")
    assert not [text for text in console if "Content Security Policy" in text]
    expect(page.get_by_role("switch", name="News: Email")).not_to_be_checked()
    expect(page.get_by_role("switch", name="Promos: Email")).to_be_checked()
    pref = ChannelPreference.objects.get(customer=customer)
    assert (f"{pref.quiet_hours_start:%H:%M}", f"{pref.quiet_hours_end:%H:%M}") == (start, end)
    assert set(ConsentRecord.objects.values_list("action", "topic_id", "source")) == {
        ("opt_out", news.id, "preference_center"),
        ("preferences", None, "preference_center"),
    }

    news_message = queue(customer, make_template(topic=news), channel="email")
    promo_message = queue(customer, make_template(topic=promos), channel="email")
    dispatch_due()

    news_message.refresh_from_db()
    promo_message.refresh_from_db()
    assert outbox == []
    assert news_message.status == "suppressed"
    assert _hold_code(news_message) == "consent:unsubscribed"
    assert promo_message.status == "deferred"
    assert _hold_code(promo_message) == "quiet_hours"
    assert promo_message.send_after > now

    # "Why am I getting this?" now explains the held message in plain words.
    page.reload()
    why = page.locator("#why")
    expect(why).to_contain_text("because of quiet hours")
    expect(why).to_contain_text("Our record:")


def test_keyboard_only_a_personal_cap_defers_the_message_over_it(page, live_server, outbox):
    customer = make_customer("ren")
    promos = make_topic("promos", default_opt_in=True, channels=["email"])
    template = make_template(topic=promos)

    page.goto(_link(live_server, customer))
    # From the top of the page, only Tab and typing: the skip link comes first.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    cap = page.get_by_label("At most this many marketing messages a week")
    for _ in range(40):
        page.keyboard.press("Tab")
        if cap.evaluate("el => el === document.activeElement"):
            break
    expect(cap).to_be_focused()
    page.keyboard.type("1")
    save = page.get_by_role("button", name="Save my choices")
    for _ in range(10):
        page.keyboard.press("Tab")
        if save.evaluate("el => el === document.activeElement"):
            break
    expect(save).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.get_by_role("status")).to_have_text("Your choices are saved.")
    assert ChannelPreference.objects.get(customer=customer).max_per_week == 1

    # A switch toggles with the space bar, and the change is saved with Enter on Save.
    switch = page.get_by_role("switch", name="Promos: Email")
    switch.focus()
    page.keyboard.press("Space")
    expect(switch).not_to_be_checked()
    page.keyboard.press("Space")
    expect(switch).to_be_checked()

    first = queue(customer, template, channel="email")
    dispatch_due()
    second = queue(customer, template, channel="email")
    dispatch_due()

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "sent"
    assert len(outbox) == 1
    assert second.status == "deferred"
    assert _hold_code(second) == "personal_cap"


@pytest.mark.parametrize(
    ("lang", "heading", "save"),
    [
        ("en", "Your message preferences", "Save my choices"),
        ("ja", "メッセージの受信設定", "設定を保存"),
    ],
)
def test_the_page_renders_in_english_and_japanese_and_switches(
    browser, live_server, outbox, lang, heading, save
):
    customer = make_customer("yui", locale=lang, timezone="Asia/Tokyo")
    promos = make_topic("promos", default_opt_in=True, channels=["email", "sms"])
    make_topic("running-tips", default_opt_in=False, channels=["email"])
    make_topic("orders", kind="transactional")
    queue(customer, make_template(topic=promos), channel="email", journey="spring-sale")
    dispatch_due()
    # Phone-sized, as most people open the link from a message on their phone.
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale=lang)
    page = context.new_page()
    try:
        page.goto(_link(live_server, customer))

        expect(page.locator("html")).to_have_attribute("lang", lang)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        expect(page.get_by_role("button", name=save)).to_be_visible()
        # No horizontal scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        folder = os.environ.get("PREFERENCE_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=f"{folder}/preference-center-{lang}.png", full_page=True)

        other = "ja" if lang == "en" else "en"
        page.locator(f"nav a[hreflang={other}]").click()
        expect(page.locator("html")).to_have_attribute("lang", other)
    finally:
        context.close()
