"""Every hold names each rule that held it: the trail, the history row's code, the
fatigue overview, journey analytics and the customer's text, through the dispatcher."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from journeys import engine
from journeys.enrollment import Candidate, enroll
from orchestrator.analytics.rollups import analytics_rollup
from orchestrator.analytics.selectors import journey_analytics
from orchestrator.consent.models import ChannelPreference
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import FrequencyRule, Message, MessageEvent
from orchestrator.delivery.selectors import customer_explanation, holds_by_day
from tests.delivery.factories import make_customer, make_template, make_topic, queue
from tests.journeys.conftest import make_journey, send

pytestmark = pytest.mark.django_db

#: Sunday 7 June 2026, 10:00 UTC: outside quiet hours of 22:00-08:00 UTC.
SUNDAY_MORNING = dt.datetime(2026, 6, 7, 10, 0, tzinfo=dt.UTC)
#: The same Sunday at 23:00: inside them.
SUNDAY_NIGHT = dt.datetime(2026, 6, 7, 23, 0, tzinfo=dt.UTC)


def _hold_row(message) -> MessageEvent:
    return MessageEvent.objects.filter(message=message, status="deferred").get()


def test_a_weekly_cap_outside_quiet_hours_is_held_by_the_cap_not_quiet_hours(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(22), dt.time(8))
    FrequencyRule.objects.create(key="weekly", name="1 a week", limit=1, calendar="week")
    topic = make_topic("journey-news")
    make_template("journey-hello", topic=topic)
    journey = make_journey([send("hello", channel="email")], key="weekly-news")
    customer = make_customer(timezone="UTC")
    with time_machine.travel(SUNDAY_MORNING, tick=False):
        first = queue(customer, make_template(topic=topic))
        dispatcher.dispatch_due()
        enroll(journey, [Candidate(customer.id, "t", {})])
        engine.advance_batch(batch_size=10)
        dispatcher.dispatch_due()
        held = Message.objects.get(journey="weekly-news")
        analytics_rollup()
        figures = journey_analytics(journey, SUNDAY_MORNING.date(), SUNDAY_MORNING.date())
        overview = holds_by_day(days=1, today=SUNDAY_MORNING.date())

    first.refresh_from_db()
    assert (first.status, held.status) == ("sent", "deferred")
    # The cap waits for Monday 00:00, inside quiet hours: the send goes at 08:00.
    assert held.send_after == dt.datetime(2026, 6, 8, 8, 0, tzinfo=dt.UTC)
    assert _hold_row(held).code == "rule:weekly"
    causes = held.explanation[-1]["details"]["causes"]
    assert [(c["code"], c["in_force"]) for c in causes] == [
        ("rule:weekly", True),
        ("quiet_hours", False),
    ]
    assert causes[0]["count"] == 1 and causes[0]["limit"] == 1
    assert causes[1]["window"] == "22:00-08:00"
    assert [(h.kind, h.group, h.code) for h in figures.holds] == [
        ("deferred", "frequency cap", "rule:weekly")
    ]
    assert sum(s.held for s in figures.steps) == 1
    assert overview.totals == {"1 a week": 1}
    lines = customer_explanation(held, journey_name="Weekly news")
    assert "You had already had 1 messages this week, as many as we send." in lines
    assert "After that, it waited for your quiet hours (22:00-08:00) to end." in lines
    assert not any("because of quiet hours" in line for line in lines)


def test_a_hold_by_a_cap_and_quiet_hours_at_once_names_and_counts_both(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(22), dt.time(8))
    customer = make_customer(timezone="UTC")
    ChannelPreference.objects.create(customer=customer, max_per_week=1)
    template = make_template(topic=make_topic())
    with time_machine.travel(SUNDAY_MORNING, tick=False):
        queue(customer, template)
        dispatcher.dispatch_due()
    with time_machine.travel(SUNDAY_NIGHT, tick=False):
        held = queue(customer, template)
        dispatcher.dispatch_due()
        overview = holds_by_day(days=1, today=SUNDAY_NIGHT.date())
    held.refresh_from_db()

    assert held.status == "deferred"
    assert _hold_row(held).code == "quiet_hours,personal_cap"
    assert "quiet hours 22:00-08:00 UTC" in held.explanation[-1]["reason"]
    assert "your own limit" in held.explanation[-1]["reason"]
    assert overview.totals == {"Quiet hours": 1, "The customer's own limit": 1}
    lines = customer_explanation(held)
    assert "Your quiet hours (22:00-08:00) were in force." in lines
    assert "You had already had 1 messages this week, the most you asked for." in lines
