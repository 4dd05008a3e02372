"""The preference center through its real endpoints: changes, the ledger, tokens, security."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import time_machine
from django.core import signing
from django.test import Client
from django.utils import timezone

from orchestrator.audience.models import Customer
from orchestrator.consent.models import (
    ChannelOptOut,
    ChannelPreference,
    ConsentRecord,
    Subscription,
)
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.consent.tokens import preference_token
from orchestrator.delivery import dispatcher
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db

OLD_KEY = "an-old-secret-key-that-is-long-enough-0123456789"
NEW_KEY = "a-new-secret-key-that-is-long-enough-9876543210"


def url(customer_id: int, suffix: str = "") -> str:
    return f"/preferences/{preference_token(customer_id)}/{suffix}"


def without_nonce(body: bytes) -> bytes:
    """The page minus its per-response CSP nonce, the one part meant to differ."""
    return re.sub(rb'nonce="[^"]+"', b'nonce=""', body)


def form_data(page_context, **changes) -> dict:
    """What a browser submits for the page as rendered, with ``changes`` applied.

    Checked switches are sent as "on", unchecked ones not at all.
    """
    form = page_context["form"]
    data = {"lang": page_context["lang"], "action": "save"}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = value.strftime("%H:%M") if isinstance(value, dt.time) else str(value)
    for name, value in changes.items():
        if value is False or value is None:
            data.pop(name, None)
        else:
            data[name] = "on" if value is True else value
    return data


@pytest.fixture(autouse=True)
def _pinned_clock():
    """Links are signed with a timestamp to the second: a page that issues one and the
    test that computes the expected one must see the same second."""
    with time_machine.travel(dt.datetime(2026, 3, 4, 10, 30, tzinfo=dt.UTC), tick=False):
        yield


@pytest.fixture
def setup():
    customer = make_customer("aki")
    promos = make_topic("promos", default_opt_in=True, channels=["email", "sms"])
    news = make_topic("news", default_opt_in=False, channels=["email"])
    return customer, promos, news


def test_switching_topics_writes_subscriptions_and_one_ledger_row_per_change(client, setup):
    customer, promos, news = setup
    page = client.get(url(customer.id))
    assert page.status_code == 200
    assert page.context["form"].initial == {
        "timezone": "UTC",
        "quiet_start": None,
        "quiet_end": None,
        "max_per_week": None,
        "paused_until": None,
    }

    response = client.post(
        url(customer.id),
        form_data(page.context, **{f"t{promos.id}_sms": False, f"t{news.id}_email": True}),
        HTTP_USER_AGENT="test-browser",
    )

    assert response.status_code == 302
    assert response["Location"] == f"{url(customer.id)}?lang=en&done=saved"
    subs = {(s.topic_id, s.channel): s.status for s in Subscription.objects.all()}
    assert subs == {(promos.id, "sms"): "unsubscribed", (news.id, "email"): "subscribed"}
    records = ConsentRecord.objects.filter(customer=customer).order_by("topic__key")
    assert [(r.topic_id, r.channel, r.action, r.source) for r in records] == [
        (news.id, "email", "opt_in", "preference_center"),
        (promos.id, "sms", "opt_out", "preference_center"),
    ]
    assert records[0].evidence == {"user_agent": "test-browser", "language": "en"}
    decisions = consent_decisions(
        [
            ConsentRequest(customer.id, promos.id, "sms", customer.phone),
            ConsentRequest(customer.id, news.id, "email", customer.email),
        ]
    )
    assert [d.code for d in decisions] == ["unsubscribed", "subscribed"]

    # The same choices again change nothing and write nothing.
    again = client.get(url(customer.id))
    assert client.post(url(customer.id), form_data(again.context)).status_code == 302
    assert ConsentRecord.objects.filter(customer=customer).count() == 2


def test_delivery_preferences_are_saved_and_recorded_with_before_and_after(client, setup):
    customer, _promos, _news = setup
    page = client.get(url(customer.id))
    today = timezone.now().astimezone(dt.UTC).date()
    resume = today + dt.timedelta(days=10)

    response = client.post(
        url(customer.id),
        form_data(
            page.context,
            timezone="Asia/Tokyo",
            quiet_start="22:00",
            quiet_end="07:30",
            max_per_week="2",
            paused_until=resume.isoformat(),
            order_1="sms",
            order_2="email",
        ),
    )

    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.timezone == "Asia/Tokyo"
    pref = ChannelPreference.objects.get(customer=customer)
    assert (pref.quiet_hours_start, pref.quiet_hours_end) == (dt.time(22), dt.time(7, 30))
    assert pref.max_per_week == 2
    assert pref.channel_order == ["sms", "email"]
    # Midnight of that date in the customer's own zone.
    assert pref.paused_until == dt.datetime(
        resume.year, resume.month, resume.day, tzinfo=dt.timezone(dt.timedelta(hours=9))
    )
    [record] = ConsentRecord.objects.filter(customer=customer)
    assert (record.action, record.topic_id, record.channel, record.source) == (
        "preferences",
        None,
        "",
        "preference_center",
    )
    assert record.evidence["changed"] == {
        "timezone": {"from": "UTC", "to": "Asia/Tokyo"},
        "quiet_hours": {"from": None, "to": "22:00-07:30"},
        "max_per_week": {"from": None, "to": 2},
        "paused_until": {"from": None, "to": f"{resume.isoformat()}T00:00:00+09:00"},
        "channel_order": {"from": [], "to": ["sms", "email"]},
    }

    # Shown back as saved; submitting it untouched records nothing more.
    again = client.get(f"{url(customer.id)}?done=saved")
    assert "Your choices are saved." in again.content.decode()
    client.post(url(customer.id), form_data(again.context))
    assert ConsentRecord.objects.filter(customer=customer).count() == 1

    # Clearing the pause and the cap is a change too.
    client.post(url(customer.id), form_data(again.context, paused_until="", max_per_week=""))
    pref.refresh_from_db()
    assert (pref.paused_until, pref.max_per_week) == (None, None)
    latest = ConsentRecord.objects.filter(customer=customer).latest("id")
    assert set(latest.evidence["changed"]) == {"paused_until", "max_per_week"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quiet_start": "22:00"}, "quiet_end"),
        ({"quiet_start": "22:00", "quiet_end": "22:00"}, "quiet_end"),
        ({"max_per_week": "0"}, "max_per_week"),
        ({"paused_until": "2001-01-01"}, "paused_until"),
        ({"order_1": "sms", "order_2": "sms"}, "order_2"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_an_invalid_submit_saves_nothing_and_points_at_the_field(client, setup, changes, field):
    customer, promos, _news = setup
    page = client.get(url(customer.id))

    response = client.post(
        url(customer.id), form_data(page.context, **{f"t{promos.id}_email": False, **changes})
    )

    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert 'role="alert"' in response.content.decode()
    assert not ConsentRecord.objects.exists()
    assert not Subscription.objects.exists()
    assert not ChannelPreference.objects.exists()


def test_a_topic_added_while_the_page_was_open_is_not_switched_off(client, setup):
    customer, _promos, _news = setup
    page = client.get(url(customer.id))
    later = make_topic("later", default_opt_in=True, channels=["email"])

    client.post(url(customer.id), form_data(page.context))

    assert not Subscription.objects.filter(topic=later).exists()
    [decision] = consent_decisions([ConsentRequest(customer.id, later.id, "email", customer.email)])
    assert decision.allowed


def test_unsubscribe_from_all_stops_every_channel_and_topics_added_later(client, setup):
    customer, promos, _news = setup

    response = client.post(url(customer.id), {"action": "unsubscribe_all", "lang": "en"})

    assert response.status_code == 302
    assert set(ChannelOptOut.objects.values_list("channel", flat=True)) == {
        "email",
        "sms",
        "whatsapp",
        "line",
    }
    records = ConsentRecord.objects.filter(customer=customer)
    assert {(r.topic_id, r.action, r.source) for r in records} == {
        (None, "opt_out", "preference_center")
    }
    assert records.count() == 4
    later = make_topic("later", default_opt_in=True)
    decisions = consent_decisions(
        [
            ConsentRequest(customer.id, promos.id, "email", customer.email),
            ConsentRequest(customer.id, later.id, "sms", customer.phone),
        ]
    )
    assert [d.code for d in decisions] == ["channel_opted_out", "channel_opted_out"]

    # Switching email back on lifts only that channel, with its own ledger row.
    page = client.get(url(customer.id))
    assert "You get no marketing from us." in page.content.decode()
    client.post(url(customer.id), form_data(page.context, allow_email=True))
    assert set(ChannelOptOut.objects.values_list("channel", flat=True)) == {
        "sms",
        "whatsapp",
        "line",
    }
    latest = ConsentRecord.objects.latest("id")
    assert (latest.action, latest.channel, latest.topic_id) == ("opt_in", "email", None)


def test_unchanged_switches_next_to_a_channel_opt_out_keep_their_state(client, setup):
    customer, promos, _news = setup
    client.post(url(customer.id), {"action": "unsubscribe_all", "lang": "en"})
    page = client.get(url(customer.id))

    client.post(url(customer.id), form_data(page.context))

    assert ChannelOptOut.objects.count() == 4
    assert not Subscription.objects.exists()
    assert ConsentRecord.objects.count() == 4
    # The topic switch still shows the topic choice, which returns when the channel does.
    assert page.context["form"].fields[f"t{promos.id}_email"].initial is True


# --- tokens: one uniform answer, no change ---------------------------------------------


def _invalid_tokens(customer_id: int) -> dict[str, str]:
    good = preference_token(customer_id)
    value, _, signature = good.rpartition(":")
    other_salt = signing.TimestampSigner(salt="orchestrator.one-click-unsubscribe")
    after_id = good[len(str(customer_id)) :]
    return {
        "tampered signature": f"{value}:{signature[:-2]}xx",
        "another customer's id, same signature": f"{customer_id + 1}{after_id}",
        "signed for another purpose": other_salt.sign(str(customer_id)),
        "not a token": "hello",
    }


def test_tampered_and_foreign_tokens_get_one_uniform_response_and_change_nothing(client, setup):
    customer, promos, _news = setup
    bodies = set()
    for _why, token in _invalid_tokens(customer.id).items():
        get = client.get(f"/preferences/{token}/")
        post = client.post(
            f"/preferences/{token}/",
            {"action": "unsubscribe_all", "lang": "en", f"t{promos.id}_email": ""},
        )
        data = client.post(f"/preferences/{token}/data/")
        erase = client.post(f"/preferences/{token}/erase/", {"confirm": "erase"})
        assert {r.status_code for r in (get, post, data, erase)} == {400}
        bodies |= {without_nonce(r.content) for r in (get, post, data, erase)}
        assert get["Cache-Control"] == "no-store"
    assert len(bodies) == 1
    assert b"This link is not valid" in bodies.pop()
    assert not ConsentRecord.objects.exists()
    assert not ChannelOptOut.objects.exists()
    assert Customer.objects.filter(pk=customer.pk).exists()


def test_an_expired_link_and_an_erased_customer_get_the_same_response(client, setup, settings):
    customer, _promos, _news = setup
    invalid = without_nonce(client.get("/preferences/hello/").content)
    settings.PREFERENCE_LINK_MAX_AGE_DAYS = 30
    with time_machine.travel(timezone.now() - dt.timedelta(days=31)):
        old = preference_token(customer.id)
    fresh = preference_token(customer.id)
    gone = make_customer("gone")
    gone_token = preference_token(gone.id)
    Customer.objects.filter(pk=gone.pk).delete()

    expired = client.post(f"/preferences/{old}/", {"action": "unsubscribe_all"})
    erased = client.get(f"/preferences/{gone_token}/")

    assert (expired.status_code, erased.status_code) == (400, 400)
    assert without_nonce(expired.content) == without_nonce(erased.content) == invalid
    assert not ChannelOptOut.objects.exists()
    assert client.get(f"/preferences/{fresh}/").status_code == 200


def test_links_signed_with_a_rotated_key_keep_working_while_it_is_a_fallback(
    client, setup, settings
):
    customer, _promos, _news = setup
    settings.SECRET_KEY = OLD_KEY
    settings.SECRET_KEY_FALLBACKS = []
    old_link = url(customer.id)

    settings.SECRET_KEY = NEW_KEY
    settings.SECRET_KEY_FALLBACKS = [OLD_KEY]
    assert client.get(old_link).status_code == 200
    assert client.get(url(customer.id)).status_code == 200

    settings.SECRET_KEY_FALLBACKS = []
    assert client.get(old_link).status_code == 400


# --- security ------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(client, setup):
    customer, _promos, _news = setup
    for response in (
        client.get(url(customer.id)),
        client.get("/preferences/not-a-token/"),
        client.get(url(customer.id, "erase/")),
        client.post(url(customer.id), {"action": "unsubscribe_all"}),
    ):
        csp = response["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp
        assert response["X-Frame-Options"] == "DENY"
        assert response["Cache-Control"] == "no-store"
        assert response["Referrer-Policy"] == "same-origin"


def test_the_style_nonce_is_fresh_for_every_response(client, setup):
    customer, _promos, _news = setup
    nonces = {
        client.get(url(customer.id))["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
        for _ in range(3)
    }
    assert len(nonces) == 3


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(setup):
    customer, _promos, _news = setup
    browser = Client(enforce_csrf_checks=True)

    response = browser.post(url(customer.id), {"action": "unsubscribe_all"})

    assert response.status_code == 403
    assert not ChannelOptOut.objects.exists()


def test_requests_beyond_the_rate_limit_get_429_whatever_the_token(client, setup, settings):
    customer, _promos, _news = setup
    settings.PREFERENCE_CENTER_RATE_LIMIT = (3, 60)
    assert [client.get(url(customer.id)).status_code for _ in range(3)] == [200] * 3

    refused = client.post(url(customer.id), {"action": "unsubscribe_all"})
    also_refused = client.get("/preferences/hello/")

    assert (refused.status_code, also_refused.status_code) == (429, 429)
    assert refused["Retry-After"] == "60"
    assert not ChannelOptOut.objects.exists()
    # Another address has its own count.
    assert client.get(url(customer.id), REMOTE_ADDR="192.0.2.7").status_code == 200


def test_saving_redirects_only_to_the_page_itself(client, setup):
    customer, _promos, _news = setup
    page = client.get(url(customer.id))
    data = form_data(page.context, next="https://evil.example/", lang="https://evil.example/")

    response = client.post(url(customer.id), data, HTTP_HOST="localhost")

    assert response["Location"].startswith(f"{url(customer.id)}?lang=")
    assert "evil" not in response["Location"]


# --- languages -----------------------------------------------------------------------


def test_the_page_speaks_the_customers_language_and_can_be_switched(client):
    customer = make_customer("hana", locale="ja-JP")
    make_topic("promos", channels=["email"])

    ja = client.get(url(customer.id)).content.decode()
    en = client.get(f"{url(customer.id)}?lang=en").content.decode()
    invalid_ja = client.get("/preferences/hello/?lang=ja").content.decode()

    assert '<html lang="ja">' in ja
    assert "メッセージの受信設定" in ja
    assert "設定を保存" in ja
    assert "Your message preferences" not in ja
    assert '<html lang="en">' in en
    assert "Your message preferences" in en
    assert "このリンクは無効です" in invalid_ja


# --- why, export, erasure ----------------------------------------------------------------


def test_why_am_i_getting_this_lists_the_last_messages_with_reason_and_consent_record(
    client, setup, outbox
):
    customer, _promos, news = setup
    page = client.get(url(customer.id))
    client.post(url(customer.id), form_data(page.context, **{f"t{news.id}_email": True}))
    queue(customer, make_template(topic=news), channel="email", journey="welcome-series")
    assert dispatcher.dispatch_due()[0].sent == 1

    body = client.get(url(customer.id)).content.decode()

    why = body[body.index('id="why"') :]
    assert "News" in why
    assert "You subscribed to News by email." in why
    # The journey's key is internal: with no journey of that key to name it, the series
    # is told without a name (see test_customer_text for the named series).
    assert "It is part of a series of messages." in why
    assert "welcome-series" not in why
    assert "Our record: you said yes to News by Email on" in why
    assert "on this page." in why


def test_download_my_data_is_a_json_attachment(client, setup):
    customer, _promos, _news = setup

    response = client.post(url(customer.id, "data/"))

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="my-data.json"'
    assert response["Cache-Control"] == "no-store"
    data = json.loads(response.content)
    assert customer.email in json.dumps(data)
    assert client.get(url(customer.id, "data/")).status_code == 405


def test_erasure_asks_first_then_erases_and_the_link_stops_working(client, setup):
    customer, _promos, _news = setup
    link = url(customer.id)

    confirm = client.get(url(customer.id, "erase/"))
    unconfirmed = client.post(url(customer.id, "erase/"), {})
    assert "Yes, erase my data" in confirm.content.decode()
    assert "Yes, erase my data" in unconfirmed.content.decode()
    assert Customer.objects.filter(pk=customer.pk).exists()

    done = client.post(url(customer.id, "erase/"), {"confirm": "erase"})

    assert done.status_code == 200
    assert "Your data has been erased" in done.content.decode()
    assert not Customer.objects.filter(pk=customer.pk).exists()
    assert client.get(link).status_code == 400
