"""What the customer reads about a message: in their language, in the words written for
them (never a topic's or journey's key), saying when a message was not sent and why, and
never with a blank where a time, a name or a channel should be."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest
import time_machine
from django.utils import timezone, translation

from orchestrator.consent.models import ChannelPreference, Subscription
from orchestrator.consent.tokens import preference_token
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import Message
from orchestrator.delivery.selectors import customer_explanation
from orchestrator.delivery.trail import explain
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.journeys.conftest import make_journey, send

pytestmark = pytest.mark.django_db

#: A slot left empty: "until  your time", "“”", "()", "「」", a stray "%(".
BLANK = re.compile(r"\s{2,}|“\s*”|「\s*」|\(\s*\)|\uff08\s*\uff09|%\(|\s[.,:;]|^\s|\s$")
#: Latin words a Japanese sentence may hold: channel brands and our test names.
LATIN_IN_JAPANESE = {"LINE", "WhatsApp", "SMS"}


def _assert_readable(lines: list[str], language: str) -> None:
    assert lines, "nothing said"
    for line in lines:
        assert line.strip(), lines
        assert not BLANK.search(line), line
        if language == "ja":
            latin = set(re.findall(r"[A-Za-z]{2,}", line)) - LATIN_IN_JAPANESE
            assert not latin, line


def test_an_expired_message_says_it_was_not_sent_and_why_in_both_languages(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(21), dt.time(8))
    topic = make_topic("restock", default_opt_in=True, names={"ja": "再入荷のお知らせ"})
    customer = make_customer(timezone="Asia/Tokyo", whatsapp="+819012345678")
    ChannelPreference.objects.create(customer=customer, channel_order=["whatsapp", "email"])
    # The customer has this topic off on WhatsApp: it must not be chosen.
    Subscription.objects.create(
        customer=customer, topic=topic, channel="whatsapp", status="unsubscribed"
    )
    template = make_template(
        topic=topic,
        variants={
            ("whatsapp", "en"): {"body": "Back in stock"},
            ("email", "en"): {"subject": "Back", "body": "Back in stock"},
        },
    )
    # 22:30 in Tokyo: quiet until 08:00; the message is only worth sending until 10:00.
    night = dt.datetime(2026, 6, 1, 13, 30, tzinfo=dt.UTC)
    with time_machine.travel(night, tick=False):
        message = queue(
            customer,
            template,
            channel="preferred",
            expires_at=dt.datetime(2026, 6, 2, 1, 0, tzinfo=dt.UTC),
        )
        dispatcher.dispatch_due()
    assert message.channel == "email"
    Message.objects.filter(id=message.id).update(send_after=night + dt.timedelta(hours=12))
    with time_machine.travel(night + dt.timedelta(hours=13), tick=False):
        dispatcher.dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.channel) == ("expired", "email")

    with translation.override("en"):
        en = customer_explanation(message)
    with translation.override("ja"):
        ja = customer_explanation(message)

    assert en == [
        "This message is about Restock.",
        "We did not send it: it was only worth sending until June 2, 2026, 10 a.m., and it "
        "could not go before then.",
        "Your quiet hours (21:00-08:00) were in force.",
    ]
    assert ja[0] == "「再入荷のお知らせ」に関するメッセージです。"
    assert "お送りしませんでした" in ja[1]
    assert ja[2] == "配信停止時間帯\uff0821:00-08:00\uff09中でした。"
    _assert_readable(en, "en")
    _assert_readable(ja, "ja")


# --- every status and reason ----------------------------------------------------------

NOW = dt.datetime(2026, 6, 1, 13, 30, tzinfo=dt.UTC)
LATER = (NOW + dt.timedelta(hours=10)).isoformat()


def _cause(code: str, in_force: bool, **figures) -> dict:
    return {"code": code, "describe": code, "in_force": in_force, "until": LATER, **figures}


CAUSES = [
    _cause("quiet_hours", True, window="21:00-08:00"),
    _cause("quiet_hours", False, window="21:00-08:00"),
    _cause("quiet_hours", True),
    _cause("paused", True, paused_until=LATER),
    _cause("paused", False, paused_until=LATER),
    _cause("paused", True),
    _cause("personal_cap", True, count=3, limit=3),
    _cause("personal_cap", True),
    _cause("personal_cap", False, count=3),
    *(_cause("rule:weekly", True, kind="cap", calendar=c, count=2) for c in ("day", "week")),
    _cause("rule:monthly", True, kind="cap", calendar="month", count=0),
    _cause("rule:rolling", True, kind="cap", window_seconds=3600, count=4),
    _cause("rule:rolling", False, kind="cap", window_seconds=3600),
    _cause("rule:gap", True, kind="gap", last_sent=None),
]


def _hold(decision: str, causes: list[dict] | None, send_after: str | None = LATER) -> dict:
    details: dict = {"rules": []}
    if causes is not None:
        details["causes"] = causes
    if send_after:
        details["send_after"] = send_after
    return explain("policy", decision, f"{decision}: quiet hours", **details)


def _route(why: str) -> dict:
    return explain("route", "rerouted", "re-routed", why=why, **{"from": "sms", "to": "email"})


CONSENT_CODES = (
    "unsubscribed",
    "no_opt_in",
    "channel_opted_out",
    "channel_not_allowed",
    "no_address",
    "suppressed",
    "something_new",
)
SENT = explain("send", "sent", "accepted by locmem")

# (status, trail after "created", rendered consent, expires)
CASES: list[tuple[str, list[dict], str, bool]] = [
    *(
        (s, [SENT], c, False)
        for s in ("sent", "delivered", "opened", "clicked", "replied")
        for c in ("subscribed", "default_opt_in", "")
    ),
    ("sent", [_route("consent"), SENT], "subscribed", False),
    ("sent", [_route("policy"), SENT], "subscribed", False),
    ("sent", [explain("send", "fallback", "refused", fallback="email"), SENT], "", False),
    *(("sent", [_hold("deferred", [c]), SENT], "subscribed", False) for c in CAUSES),
    ("sent", [_hold("deferred", CAUSES[:2], send_after=None), SENT], "", False),
    ("bounced", [SENT], "subscribed", False),
    ("undelivered", [SENT], "", False),
    ("sending", [], "", False),
    *(("deferred", [_hold("deferred", [c])], "", False) for c in CAUSES),
    ("deferred", [_hold("deferred", None)], "", False),
    ("deferred", [_hold("deferred", CAUSES, send_after=None)], "", False),
    ("deferred", [], "", False),
    ("queued", [], "", False),
    ("scheduled", [], "", False),
    *(
        ("suppressed", [explain("consent", "suppressed", "no", code=code)], "", False)
        for code in CONSENT_CODES
    ),
    ("suppressed", [_hold("suppressed", [CAUSES[9]], send_after=None)], "", False),
    ("suppressed", [_hold("suppressed", None, send_after=None)], "", False),
    ("expired", [_hold("deferred", CAUSES[:4]), explain("expiry", "expired", "passed")], "", True),
    ("expired", [explain("expiry", "expired", "passed")], "", True),
    ("expired", [explain("expiry", "expired", "passed")], "", False),
    ("expired", [_hold("expired", [CAUSES[6], CAUSES[1]], send_after=None)], "", True),
    ("canceled", [explain("canceled", "canceled", "exited")], "", False),
    ("failed", [explain("render", "failed", "did not render")], "", False),
]


@pytest.fixture
def base_message():
    topic = make_topic("promos", names={"ja": "セール情報"})
    customer = make_customer(timezone="Asia/Tokyo")
    with time_machine.travel(NOW, tick=False):
        return queue(customer, make_template(topic=topic), channel="preferred")


@pytest.mark.parametrize(("status", "trail", "consent", "expires"), CASES)
def test_every_status_and_reason_reads_without_a_blank_in_both_languages(
    base_message, status, trail, consent, expires
):
    message = base_message
    created = message.explanation[0]
    for channel, journey in itertools.product(("email", "sms", "line"), ("", "shoes")):
        Message.objects.filter(id=message.id).update(
            status=status,
            channel=channel,
            journey=journey,
            explanation=[created, *trail],
            rendered={"consent": consent} if consent else None,
            expires_at=NOW + dt.timedelta(hours=4) if expires else None,
        )
        message.refresh_from_db()
        for language, series in itertools.product(("en", "ja"), (None, "シリーズ")):
            with translation.override(language):
                lines = customer_explanation(message, journey_name=series)
            _assert_readable(lines, language)
            went = status in (
                "sending",
                "sent",
                "delivered",
                "opened",
                "clicked",
                "replied",
                "bounced",
                "undelivered",
            )
            if status in ("expired", "suppressed", "canceled", "failed"):
                assert any(
                    ("did not send" in line)
                    or ("お送りしませんでした" in line)
                    or ("お届けしていません" in line)
                    or ("お送りできませんでした" in line)
                    for line in lines
                ), lines
                assert not any("came by" in line or "will come by" in line for line in lines)
            elif not went:
                assert not any("came by" in line for line in lines), lines


# --- the page in Japanese -------------------------------------------------------------


def test_the_japanese_page_names_topics_series_and_channels_in_japanese(client, outbox):
    topic = make_topic(
        "journey-news", default_opt_in=True, channels=["email", "sms"],
        names={"ja": "シューズのお知らせ", "en": "Shoe news"},
    )  # fmt: skip
    make_template("journey-hello", topic=topic)
    journey = make_journey([send("hello", channel="email")], key="shoe-replenishment")
    journey.customer_name = "Time for new shoes"
    journey.customer_names = {"ja": "シューズの買い替え"}
    journey.save()
    customer = make_customer("hana", locale="ja-JP")
    message = queue(customer, make_template(topic=topic), channel="preferred", journey=journey.key)
    Subscription.objects.create(
        customer=customer, topic=topic, channel="sms", status="unsubscribed"
    )
    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert message.status == "sent"

    page = client.get(f"/preferences/{preference_token(customer.id)}/").content.decode()
    en = client.get(f"/preferences/{preference_token(customer.id)}/?lang=en").content.decode()

    assert "シリーズ「シューズの買い替え」の一部です。" in page
    assert "shoe-replenishment" not in page
    assert "journey-news" not in page
    assert "メールで「シューズのお知らせ」" in page
    assert '<th scope="row">シューズのお知らせ' in page
    why = page[page.index('id="why"') :]
    assert not re.search(r"\b(email|text message)\b", why)
    assert "It is part of the series “Time for new shoes”." in en
    assert "Shoe news" in en
    assert timezone.now()  # the page rendered at the real time


# --- where the names are written --------------------------------------------------------


def test_topic_names_per_language_are_written_and_read_through_the_topics_api(api):
    created = api.post(
        "/api/v1/topics",
        {"key": "sale", "name": "Sale", "names": {"ja": "セール情報"}},
        format="json",
    )
    refused = api.post(
        "/api/v1/topics", {"key": "bad", "name": "Bad", "names": {"ja": ""}}, format="json"
    )

    assert created.status_code == 201, created.content
    assert created.json()["names"] == {"ja": "セール情報"}
    assert api.get("/api/v1/topics/sale").json()["names"] == {"ja": "セール情報"}
    assert refused.status_code == 400


def test_the_demo_names_its_topics_and_series_in_japanese():
    from journeys.models import Journey
    from orchestrator.consent.models import Topic
    from orchestrator.demo.services import TOPICS, load_demo

    load_demo(today=dt.date(2026, 6, 1))

    for topic in Topic.objects.filter(key__in=[t["key"] for t in TOPICS]):
        assert topic.name_in("ja") != topic.name, topic.key
    for journey in Journey.objects.all():
        assert journey.customer_name and journey.customer_name_in("ja") != journey.customer_name
