"""The digest choice on the preference page in a real headless Chromium: choose "daily
digest" for a topic (in English and in Japanese), save, and the ledger has the row and
the next message of that topic is held for the digest."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from orchestrator.consent.models import ConsentRecord, DigestPreference
from orchestrator.consent.tokens import preference_token
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _link(live_server, customer, lang: str = "") -> str:
    query = f"?lang={lang}" if lang else ""
    return f"{live_server.url}/preferences/{preference_token(customer.id)}/{query}"


@pytest.mark.parametrize(
    ("lang", "topic_label", "daily", "at_label", "save", "held_words"),
    [
        ("", "Order updates", "Daily digest", "At", "Save my choices", "daily digest (19:30)"),
        ("ja", "注文のお知らせ", "毎日のまとめ", "時刻", "設定を保存", "毎日のまとめ"),
    ],
)
def test_choosing_a_daily_digest_on_the_page_holds_the_next_message(
    page, live_server, outbox, lang, topic_label, daily, at_label, save, held_words
):
    customer = make_customer("ren", timezone="Asia/Tokyo", locale=lang or "en")
    topic = make_topic(
        "order-updates", digestible=True, names={"ja": "注文のお知らせ"}, channels=["email"]
    )
    topic.name = "Order updates"
    topic.save()
    template = make_template(topic=topic)

    page.goto(_link(live_server, customer, lang))
    digests = page.locator("section[aria-labelledby=digest-h]")
    expect(digests).to_be_visible()
    group = digests.get_by_role("group", name=topic_label)
    group.get_by_role("combobox").first.select_option(label=daily)
    group.get_by_label(at_label).fill("19:30")
    page.get_by_role("button", name=save).click()
    page.wait_for_url("**done=saved**")

    choice = DigestPreference.objects.get(customer=customer, topic=topic)
    assert (choice.cadence, choice.at.strftime("%H:%M")) == ("daily", "19:30")
    record = ConsentRecord.objects.filter(customer=customer, topic=topic).get()
    assert record.source == ConsentRecord.Source.PREFERENCE_CENTER
    assert record.evidence["changed"]["digest"]["to"]["cadence"] == "daily"

    message = queue(customer, template)
    dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.HELD
    assert outbox == []

    # "Why am I getting this?" tells the customer, in their language, that it is held.
    page.goto(_link(live_server, customer, lang))
    expect(page.locator("#why-h").locator("xpath=..")).to_contain_text(held_words)
