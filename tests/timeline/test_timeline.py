"""The customer's timeline: what it merges, in what order, page by page, at a bounded cost."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from journeys import engine
from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment
from orchestrator.analytics.timeline import customer_timeline
from orchestrator.audience.services import event_record
from orchestrator.consent.channel_consent import channel_opt_out
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message, MessageEvent
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.journeys.conftest import make_journey, send

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 10, 14, 0, tzinfo=dt.UTC)  # 23:00 in Tokyo


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-12345")
    client.force_login(user)
    return client


def page(client, customer, **params):
    response = client.get(reverse("admin:audience_customer_change", args=[customer.pk]), params)
    assert response.status_code == 200
    return response.content.decode()


def run_engine() -> None:
    while engine.advance_batch().claimed:
        pass


@pytest.fixture
def story(db, outbox):
    """Hana (in Tokyo): views a product, enters a journey whose email is sent, delivered
    and clicked, then opts out of email - an hour apart each."""
    make_topic("journey-news")
    make_template(
        "journey-hello", variants={("email", "en"): {"subject": "Hello", "body": "Tea time."}}
    )
    customer = make_customer("hana", timezone="Asia/Tokyo")
    with time_machine.travel(T0, tick=False):
        event_record(customer="hana", name="product.viewed", properties={"sku": "tea-42"})
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        journey = make_journey([send("hello", template="journey-hello", channel="email")])
        [enrollment_id] = enroll(journey, [Candidate(customer.id, "order-1", {})])
        run_engine()
        dispatch_due()
    message = Message.objects.get(customer=customer)
    assert message.status == "sent", message.explanation
    for hours, status in ((2, "delivered"), (3, "clicked")):
        MessageEvent.objects.create(
            message=message, status=status, occurred_at=T0 + dt.timedelta(hours=hours)
        )
    with time_machine.travel(T0 + dt.timedelta(hours=4), tick=False):
        assert channel_opt_out(customer_id=customer.id, channel="email", source="api", evidence={})
    return customer, message, Enrollment.objects.get(pk=enrollment_id)


def test_the_change_page_shows_every_kind_newest_first(admin_client, story):
    customer, message, enrollment = story

    html = page(admin_client, customer)

    order = [
        "Opted out: all marketing",
        f"Message #{message.pk} clicked",
        f"Message #{message.pk} delivered",
        f"Message #{message.pk} sent",
        f"Message #{message.pk} created",
        "Entered journey J",
        "product.viewed",
    ]
    positions = [html.find(text, html.find('id="timeline"')) for text in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)
    # Message line: status now, channel, template, journey, the latest reason; linked.
    assert "now sent · email · journey-hello" in html
    assert "journey j" in html
    assert reverse("admin:delivery_message_change", args=[message.pk]) in html
    assert reverse("admin:journeys_enrollment_change", args=[enrollment.pk]) in html
    assert "sku: tea-42" in html
    # Tokyo time shown, UTC on hover; days are headed in local time (23:00 JST, then 00:00).
    assert 'title="2025-03-10 14:00:00 UTC">23:00</time>' in html
    assert "Monday, 2025-03-10" in html and "Tuesday, 2025-03-11" in html
    # The Export / Erase buttons are still there.
    assert reverse("admin:audience_customer_export", args=[customer.pk]) in html


def test_the_message_line_carries_the_latest_reason(story):
    customer, message, _enrollment = story
    reason = message.explanation[-1]["reason"]

    [line] = [e for e in customer_timeline(customer=customer) if e.kind == "message"]

    assert reason and line.detail.endswith(f"- {reason}")


def test_deferred_and_suppressed_changes_show_their_reason(story):
    customer, message, _enrollment = story
    MessageEvent.objects.create(
        message=message,
        status="deferred",
        occurred_at=T0 + dt.timedelta(hours=5),
        reason="quiet hours until 08:00",
        code="quiet_hours",
    )
    MessageEvent.objects.create(message=message, status="queued", occurred_at=T0)

    entries = customer_timeline(customer=customer)

    assert entries[0].title == f"Message #{message.pk} deferred"
    assert entries[0].detail.endswith("- quiet hours until 08:00")
    assert not any(e.title.endswith(" queued") for e in entries)


def test_journey_exit_and_conversion_appear(story):
    customer, _message, enrollment = story
    Enrollment.objects.filter(pk=enrollment.pk).update(
        status="exited",
        finished_at=T0 + dt.timedelta(hours=6),
        exit_reason="goal reached",
        converted_at=T0 + dt.timedelta(hours=5),
    )

    titles = [e.title for e in customer_timeline(customer=customer, limit=3)]

    assert titles == ["Exited journey J", "Converted in journey J", "Opted out: all marketing"]


def test_pages_go_back_in_time_without_gaps_or_repeats(admin_client):
    customer = make_customer("ren")
    for minute in range(60):
        event_record(
            customer="ren",
            name=f"view-{minute:02d}",
            occurred_at=T0 + dt.timedelta(minutes=minute),
        )

    first = customer_timeline(customer=customer, limit=25)
    second = customer_timeline(customer=customer, limit=25, before=first[-1].at)
    third = customer_timeline(customer=customer, limit=25, before=second[-1].at)

    names = [e.title for e in first + second + third]
    assert names == [f"view-{m:02d}" for m in range(59, -1, -1)]

    html = page(admin_client, customer)
    assert "view-59" in html and "view-10" in html and "view-09" not in html
    older = f"?before={(T0 + dt.timedelta(minutes=10)).isoformat().replace('+', '%2B')}"
    assert older.replace(":", "%3A") in html
    html = page(admin_client, customer, before=(T0 + dt.timedelta(minutes=10)).isoformat())
    assert "view-09" in html and "view-00" in html and "view-10" not in html
    assert 'class="tl-older"' not in html


def test_the_page_of_a_customer_with_nothing_renders(admin_client):
    customer = make_customer("empty")

    html = page(admin_client, customer)

    assert 'id="timeline"' in html
    assert "Nothing yet." in html
    assert 'class="tl-older"' not in html
    assert customer_timeline(customer=customer) == []


def test_an_unreadable_before_shows_the_first_page(admin_client):
    customer = make_customer("odd")
    event_record(customer="odd", name="signed.up")

    assert "signed.up" in page(admin_client, customer, before="yesterday")


def _add_messages(customer, template, count: int) -> None:
    for _ in range(count):
        message = queue(customer, template)
        MessageEvent.objects.create(message=message, status="sent", occurred_at=timezone.now())
        MessageEvent.objects.create(message=message, status="clicked", occurred_at=timezone.now())


def test_the_query_count_does_not_grow_with_the_messages(
    admin_client, django_assert_max_num_queries
):
    template = make_template("news", topic=make_topic("news"))
    customer = make_customer("busy")
    _add_messages(customer, template, 3)
    url = reverse("admin:audience_customer_change", args=[customer.pk])
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url).status_code == 200

    _add_messages(customer, template, 60)
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(url).status_code == 200

    assert len(many) == len(few)
    with django_assert_max_num_queries(len(few)):
        customer_timeline(customer=customer, limit=50)
        # Five sources, one query each: events, messages, their history, consent, journeys.
    with django_assert_max_num_queries(5):
        entries = customer_timeline(customer=customer, limit=50)
    assert len(entries) == 50
