"""A digest step: enrollments that reach it while the customer's digest (per
order) is open join it, and one message lists them after the window or the count."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from channels.adapters import locmem
from journeys import engine
from journeys.definition import validate
from journeys.enrollment import Candidate, enroll
from orchestrator.delivery import dispatcher
from orchestrator.delivery.digests import digests_build_due
from orchestrator.delivery.models import Digest, Message, MessageStatus
from tests.delivery.factories import locmem_adapters, make_customer, make_template, make_topic
from tests.journeys.conftest import digest_step, make_journey, send

pytestmark = pytest.mark.django_db

BODY = (
    "{{ count }} update{% if count != 1 %}s{% endif %} for order {{ items.first.order_id }}:"
    "{% for item in items %} {{ item.status }}{% endfor %}"
)


@pytest.fixture(autouse=True)
def _setup(settings):
    settings.CHANNEL_ADAPTERS = locmem_adapters()
    locmem.clear()
    topic = make_topic("journey-news")
    make_template(
        "order-digest",
        topic=topic,
        variants={("email", "en"): {"subject": "Your order", "body": BODY}},
    )


def _run(now=None):
    while engine.advance_batch(now=now).claimed:
        pass


def _arrive(journey, customer, n, **context):
    enroll(journey, [Candidate(customer.id, f"o{n}", context)])


def test_enrollments_within_the_window_join_one_digest_per_order():
    journey = make_journey(
        [digest_step(template="order-digest", window_minutes=30, key="order_id")]
    )
    customer = make_customer()
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        _arrive(journey, customer, 1, order_id="A1", status="packed")
        _arrive(journey, customer, 2, order_id="A1", status="shipped")
        _arrive(journey, customer, 3, order_id="B2", status="packed")
        _run()
        assert Message.objects.filter(status=MessageStatus.HELD).count() == 3
        assert Digest.objects.filter(status="open").count() == 2
        assert digests_build_due().digests == 0
    with time_machine.travel(start + dt.timedelta(minutes=31), tick=False):
        assert digests_build_due().digests == 2
        dispatcher.dispatch_due()
    bodies = sorted(m.body for m in locmem.outbox)
    assert bodies == ["1 update for order B2: packed", "2 updates for order A1: packed shipped"]


def test_a_digest_goes_as_soon_as_it_holds_its_count():
    journey = make_journey([digest_step(template="order-digest", count=2)])
    customer = make_customer()
    _arrive(journey, customer, 1, order_id="A1", status="packed")
    _run()
    assert digests_build_due().digests == 0
    _arrive(journey, customer, 2, order_id="A1", status="shipped")
    _run()
    assert digests_build_due().digests == 1
    dispatcher.dispatch_due()
    assert [m.body for m in locmem.outbox] == ["2 updates for order A1: packed shipped"]


@pytest.mark.parametrize(
    ("digest", "words"),
    [
        ({}, "Say how long a digest collects"),
        ({"window_minutes": -5}, "positive number of minutes"),
        ({"count": 1}, "at least 2 messages"),
        ({"window_minutes": 10, "key": "not a name!"}, "property name"),
    ],
)
def test_a_wrong_digest_step_is_explained_in_a_marketers_words(digest, words):
    definition = {
        "key": "d",
        "name": "D",
        "topic": "journey-news",
        "trigger": {"kind": "event", "event": "order.updated"},
        "steps": [digest_step(template="order-digest", **digest)],
    }
    problems = validate(definition)
    assert any(words in p.message for p in problems), problems


def test_a_send_step_carrying_digest_settings_is_told_to_become_a_digest_step():
    definition = {
        "key": "d",
        "name": "D",
        "topic": "journey-news",
        "trigger": {"kind": "event", "event": "order.updated"},
        "steps": [send(template="order-digest", digest={"window_minutes": 30})],
    }
    problems = validate(definition)
    assert [p.message for p in problems] == [
        "A digest is a step of its own: make this a digest step."
    ]


def test_a_plain_send_step_in_the_same_journey_sends_at_once():
    journey = make_journey(
        [
            send("now", template="order-digest", next="later"),
            digest_step("later", template="order-digest", window_minutes=30),
        ]
    )
    customer = make_customer()
    _arrive(journey, customer, 1, order_id="A1", status="packed")
    _run()
    assert Message.objects.filter(status=MessageStatus.HELD).count() == 1
    assert Message.objects.exclude(status=MessageStatus.HELD).count() == 1
