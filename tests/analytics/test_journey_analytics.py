"""Journey analytics end to end: a journey with an A/B split runs on real PostgreSQL,
messages go out through the dispatcher, SendGrid reports deliveries and a complaint
through the signed webhook, customers click through ``/r/`` and convert; the rollups
must then agree with the raw tables, count each thing once, and say so on the page,
over the API and in channel health."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest
from django.urls import reverse
from django.utils import timezone

from channels.webhooks.processing import process_pending as process_webhooks
from journeys import engine
from journeys.enrollment import Candidate, enroll
from journeys.events import process_pending as process_journey_events
from journeys.models import Enrollment, StepRun
from orchestrator.analytics.models import ChannelDay, JourneyDay
from orchestrator.analytics.rollups import analytics_rollup
from orchestrator.analytics.selectors import channel_health, journey_analytics, today
from orchestrator.audience.services import event_record
from orchestrator.consent.channel_consent import channel_opt_out
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from tests.delivery.factories import make_template, make_topic, queue
from tests.journeys.conftest import make_customer, make_journey, send
from tests.webhooks.conftest import sendgrid_post

pytestmark = pytest.mark.django_db

LINK = re.compile(r"https://go\.example\.com(/r/[^\s\"<>]+)")
BODY = {
    ("email", "en"): {
        "subject": "Your cart",
        "body": "Still thinking? https://shop.example/cart",
        "html": '<p><a href="https://shop.example/cart">Back to your cart</a></p>',
    }
}


@pytest.fixture(autouse=True)
def _base_url(settings):
    settings.PUBLIC_BASE_URL = "https://go.example.com"


def _run_engine() -> None:
    for _ in range(20):
        if engine.advance_batch(batch_size=500).claimed == 0:
            return


def _sendgrid(message: Message, kind: str, n: int, **fields) -> dict:
    return {
        "email": message.to_address,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": f"{kind}-{message.id}-{n}",
        "sg_message_id": f"{message.provider_message_id}.filter-1",
        "message_id": str(message.id),
        **fields,
    }


@pytest.fixture
def scenario(outbox, client, secrets_configured, topic):
    """60 customers through a split; returns the journey and what happened to whom."""
    make_template("cart-a", topic=topic, variants=BODY)
    make_template("cart-b", topic=topic, variants=BODY)
    journey = make_journey(
        [
            {"key": "ab", "kind": "split", "next": "a", "alt_next": "b", "config": {"percent": 50}},
            send("a", "cart-a", channel="email"),
            send("b", "cart-b", channel="email"),
        ],
        key="cart",
        trigger={"kind": "event", "event": "cart.abandoned"},
        goal={"event": "order.completed", "within_hours": 72},
    )
    customers = [make_customer() for _ in range(60)]
    # One customer has turned email off: their message is held for consent.
    channel_opt_out(
        customer_id=customers[0].id, channel="email", source="preference_center", evidence={}
    )
    enroll(journey, [Candidate(c.id, "t", {}) for c in customers])
    _run_engine()
    dispatch_due()

    sent = list(Message.objects.filter(journey="cart", status=MessageStatus.SENT).order_by("id"))
    assert len(sent) == 59
    reports = [_sendgrid(m, "delivered", 0) for m in sent]
    reports.append(_sendgrid(sent[0], "delivered", 1))  # a duplicate report
    reports.append(_sendgrid(sent[1], "spamreport", 0))
    reports.append(_sendgrid(sent[2], "open", 0))
    reports.append(_sendgrid(sent[2], "open", 1))  # opened twice: one open
    assert sendgrid_post(client, reports, secrets_configured).status_code == 200
    process_webhooks()

    # Every third sent message is clicked, the first one twice.
    clicked = sent[::3]
    for message in clicked:
        body = next(o.body for o in outbox if o.message_id == message.id)
        path = LINK.search(body)[1]
        assert client.get(path).status_code == 302
    client.get(LINK.search(next(o.body for o in outbox if o.message_id == sent[0].id))[1])

    # Every fourth enrolled customer orders.
    buyers = customers[::4]
    for customer in buyers:
        event_record(customer=customer.external_id, name="order.completed", properties={})
    process_journey_events()
    return journey, sent, clicked, buyers


def _truth_step_entries(journey, key):
    return (
        StepRun.objects.filter(journey=journey, step=key)
        .exclude(outcome__in=["event", "timeout", "converted", "exited"])
        .count()
    )


def test_the_rollups_agree_with_the_raw_tables(scenario):
    journey, _sent, clicked, buyers = scenario
    analytics_rollup()
    figures = journey_analytics(journey, today(), today())

    assert figures.enrolled == Enrollment.objects.filter(journey=journey).count() == 60
    steps = {s.key: s for s in figures.steps}
    assert [s.key for s in figures.steps] == ["ab", "a", "b"]
    for key in ("ab", "a", "b"):
        assert steps[key].entered == _truth_step_entries(journey, key)
    assert steps["a"].entered + steps["b"].entered == 60
    for key in ("a", "b"):
        went_out = Message.objects.filter(journey_step=key).exclude(
            status__in=["suppressed", "queued", "failed"]
        )
        assert steps[key].sent == went_out.count()
        assert steps[key].delivered == went_out.count()  # duplicate report counted once
        assert steps[key].clicked == sum(1 for m in clicked if m.journey_step == key)
    assert figures.sent == 59 and figures.delivered == 59
    assert figures.clicked == len(clicked)  # the double click counts once
    assert figures.opened == 1

    converted = Enrollment.objects.filter(journey=journey, converted_at__isnull=False)
    assert figures.converted == converted.count() == len(buyers)
    # Converted per step: every step the converting enrollment had passed.
    assert steps["ab"].converted == len(buyers)
    assert steps["a"].converted == converted.filter(arm="A").count()
    assert steps["b"].converted == converted.filter(arm="B").count()

    [split] = figures.splits
    arms = {a.arm: a for a in split.arms}
    assert set(arms) == {"A", "B"}
    for arm in ("A", "B"):
        enrolled = Enrollment.objects.filter(journey=journey, arm=arm)
        assert arms[arm].entered == enrolled.count()
        assert arms[arm].converted == enrolled.filter(converted_at__isnull=False).count()
        assert arms[arm].clicked == sum(1 for m in clicked if m.journey_step == arm.lower())
    assert len(split.comparisons) == 1

    # The consent hold, by reason.
    assert [(h.kind, h.group) for h in figures.holds] == [("suppressed", "consent")]
    assert figures.holds_by_group == {"consent": 1}
    assert sum(s.held for s in figures.steps) == 1

    # The time series puts today's figures on today.
    [day] = figures.days
    assert (day.enrolled, day.sent, day.clicked, day.converted) == (
        60,
        59,
        len(clicked),
        len(buyers),
    )


def test_a_second_rollup_adds_nothing_and_new_rows_are_added_once(scenario):
    journey, _sent, _clicked, _buyers = scenario
    first = analytics_rollup()
    assert first["analytics_message_events"] > 0
    before = list(JourneyDay.objects.order_by("id").values_list("id", "count"))
    channel_before = list(ChannelDay.objects.order_by("id").values_list("id", "count"))
    assert analytics_rollup() == {
        "analytics_enrollments": 0,
        "analytics_stepruns": 0,
        "analytics_message_events": 0,
    }
    assert list(JourneyDay.objects.order_by("id").values_list("id", "count")) == before
    assert list(ChannelDay.objects.order_by("id").values_list("id", "count")) == channel_before

    # One more enrollment later: only it is added.
    enroll(journey, [Candidate(make_customer().id, "late", {})])
    _run_engine()
    analytics_rollup()
    assert journey_analytics(journey, today(), today()).enrolled == 61


def test_channel_health_counts_rates_failures_and_latency(scenario):
    analytics_rollup()
    report = channel_health(today(), today())
    [row] = report.rows
    assert (row.channel, row.provider) == ("email", "locmem")
    assert row.sent == 59 and row.delivered == 59
    assert row.delivery_rate == 1.0 and row.delivery_level == "ok"
    assert row.complained == 1
    assert row.complaint_rate == pytest.approx(1 / 59)
    assert row.complaint_level == "bad"  # 1.7% is far above 0.3%
    assert row.bounce_level == "ok"
    assert row.latency_count == 59
    assert row.latency_p50 is not None and row.latency_mean_seconds is not None
    assert report.holds == [("email", "consent:channel_opted_out", 1)]


def test_a_range_outside_the_activity_is_empty(scenario):
    journey = scenario[0]
    analytics_rollup()
    earlier = today() - dt.timedelta(days=10)
    figures = journey_analytics(journey, earlier, earlier + dt.timedelta(days=2))
    assert figures.enrolled == figures.sent == figures.converted == 0
    assert len(figures.days) == 3
    # Who is waiting is "now", whatever the range: nobody here (all finished).
    assert figures.waiting == 0


def test_a_bounce_and_a_provider_failure_are_listed_by_code(outbox, client, secrets_configured):
    template = make_template(topic=make_topic())
    message = queue(make_customer(), template, channel="email")
    dispatch_due()
    message.refresh_from_db()
    report = _sendgrid(message, "bounce", 0, type="bounce", reason="550 5.1.1 no such user")
    assert sendgrid_post(client, [report], secrets_configured).status_code == 200
    process_webhooks()
    analytics_rollup()
    [row] = channel_health(today(), today()).rows
    assert row.bounced == 1
    assert row.bounce_rate == 1.0 and row.bounce_level == "bad"
    # A bounce is a delivery report: the delivery rate is a real 0%.
    assert row.delivery_rate == 0.0 and row.delivery_level == "bad"
    assert row.top_failures == [("sendgrid:bounce", 1)]


def test_history_rows_from_before_the_rollup_existed_are_counted_by_their_own_day(outbox):
    template = make_template(topic=make_topic())
    message = queue(make_customer(), template, channel="email")
    dispatch_due()
    # A delivery three days ago (the day it happened, not the day it was folded in).
    MessageEvent.objects.create(
        message_id=message.id,
        status=MessageStatus.DELIVERED,
        occurred_at=timezone.now() - dt.timedelta(days=3),
        code="test",
    )
    analytics_rollup()
    three_days_ago = today() - dt.timedelta(days=3)
    assert ChannelDay.objects.get(day=three_days_ago, metric="delivered").count == 1


def test_analytics_page_and_api(scenario, admin_client, api):
    journey = scenario[0]
    analytics_rollup()
    url = reverse("admin:journeys_journey_analytics", args=[journey.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "Funnel" in html and "A/B" in html
    bad = admin_client.get(url, {"from": "yesterday"})
    assert bad.status_code == 200 and "expected a date" in bad.content.decode()

    response = api.get(f"/api/v1/journeys/{journey.key}/analytics")
    assert response.status_code == 200
    body = response.json()
    assert body["totals"]["enrolled"] == 60
    assert {s["key"] for s in body["steps"]} == {"ab", "a", "b"}
    assert body["splits"][0]["arms"][0]["arm"] == "A"
    assert api.get(f"/api/v1/journeys/{journey.key}/analytics?from=2026-13-01").status_code == 400
    assert api.get("/api/v1/journeys/nope/analytics").status_code == 404
    health = api.get("/api/v1/channels/health")
    assert health.status_code == 200
    assert health.json()["channels"][0]["complaint"]["level"] == "bad"


@pytest.mark.django_db
def test_an_unknown_query_parameter_is_a_400_not_the_default_range(api):
    response = api.get("/api/v1/channels/health?form=2026-11-01")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_parameter"
    assert "form" in response.json()["error"]["fields"]
    assert api.get("/api/v1/channels/health?from=2026-11-01").status_code == 200
