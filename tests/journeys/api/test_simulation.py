"""journeys.simulation.simulate and POST /api/v1/journeys/{key}/simulate."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from journeys.models import Enrollment, StepRun
from journeys.services import journey_save
from journeys.simulation import simulate
from orchestrator.audience.models import Event
from orchestrator.consent.models import (
    ChannelPreference,
    Subscription,
    Suppression,
    Topic,
    address_hash,
)
from orchestrator.delivery.models import Message
from orchestrator.delivery.rule_services import frequency_rule_create
from tests.api.conftest import assert_error
from tests.journeys.conftest import make_customer, send

pytestmark = pytest.mark.django_db

#: A Monday, midnight UTC: day 0 of the forecast is whole.
NOW = dt.datetime(2030, 1, 7, tzinfo=dt.UTC)


def journey_of(steps: list[dict[str, Any]], *, trigger: dict[str, Any] | None = None, **fields):
    return journey_save(
        {
            "key": "sim",
            "name": "Sim",
            "topic": "journey-news",
            "trigger": trigger
            or {
                "kind": "date",
                "source": "attribute",
                "attribute": "fitting_at",
                "offset_minutes": -60,
            },
            "steps": steps,
            **fields,
        }
    )


def by_date(result: dict[str, Any], name: str) -> dict[str, Any]:
    return {d["date"]: d[name] for d in result["days"] if d[name]}


def test_date_trigger_gives_the_exact_entries_per_day_and_channels_follow_addresses(template):
    make_customer("email-only", phone="", attributes={"fitting_at": "2030-01-08T10:00:00Z"})
    make_customer("sms-only", email="", attributes={"fitting_at": "2030-01-08T15:00:00+00:00"})
    both = make_customer("likes-sms", attributes={"fitting_at": "2030-01-10"})
    ChannelPreference.objects.create(customer=both, channel_order=["sms", "email"])
    make_customer("later", attributes={"fitting_at": "2030-03-01T10:00:00Z"})
    make_customer("past", attributes={"fitting_at": "2030-01-01T10:00:00Z"})
    make_customer("garbage", attributes={"fitting_at": "next tuesday"})
    make_customer("none")
    journey = journey_of([send(channel="preferred")])

    result = simulate(journey, days=14, now=NOW)

    # 2030-01-10 at midnight minus an hour is the evening of the 9th.
    assert by_date(result, "entries") == {"2030-01-08": 2, "2030-01-09": 1}
    assert by_date(result, "messages") == {
        "2030-01-08": {"email": 1, "sms": 1},
        "2030-01-09": {"sms": 1},
    }
    assert result["totals"]["entries"] == 3
    assert result["totals"]["messages"] == {"email": 1, "sms": 2}
    assert result["sample"] == {"customers": 3, "of": 3}
    assert len(result["days"]) == 14
    assert all(isinstance(a, str) and a for a in result["assumptions"])


def test_date_trigger_entries_are_exact_and_a_missing_address_is_held(template):
    make_customer("a", attributes={"fitting_at": "2030-01-08T10:00:00Z"})
    make_customer("b", email="", attributes={"fitting_at": "2030-01-08T00:30:00+00:00"})
    make_customer("c", attributes={"fitting_at": "2030-01-10"})
    make_customer("later", attributes={"fitting_at": "2030-03-01T10:00:00Z"})
    make_customer("garbage", attributes={"fitting_at": "next tuesday"})
    journey = journey_of([send(channel="email")])

    result = simulate(journey, days=14, now=NOW)

    # Minus an hour: b's 00:30 and c's midnight fall on the day before.
    assert by_date(result, "entries") == {"2030-01-07": 1, "2030-01-08": 1, "2030-01-09": 1}
    assert by_date(result, "messages") == {"2030-01-08": {"email": 1}, "2030-01-09": {"email": 1}}
    assert by_date(result, "held") == {"2030-01-07": {"consent": 1}}


def test_sends_consent_or_suppression_would_stop_are_held_by_reason(template):
    optout = make_customer("optout", attributes={"fitting_at": "2030-01-08T10:00:00Z"})
    bounced = make_customer("bounced", phone="", attributes={"fitting_at": "2030-01-08T10:00:00Z"})
    topic = Topic.objects.get(key="journey-news")
    Subscription.objects.create(
        customer=optout, topic=topic, channel="email", status="unsubscribed"
    )
    Suppression.objects.create(
        channel="email", address_hash=address_hash("email", bounced.email), reason="bounce"
    )
    journey = journey_of([send(channel="email")])

    result = simulate(journey, days=7, now=NOW)

    assert result["totals"]["held"] == {"consent": 1, "suppressed": 1}
    assert result["totals"]["messages"] == {}


def test_a_cap_rule_and_quiet_hours_hold_messages(template, settings):
    frequency_rule_create(
        key="one-a-day", name="One a day", limit=1, calendar="day", action="defer"
    )
    make_customer("day", attributes={"fitting_at": "2030-01-08T11:00:00Z"})
    night = make_customer(
        "night", timezone="Asia/Tokyo", attributes={"fitting_at": "2030-01-08T15:00:00Z"}
    )
    ChannelPreference.objects.create(
        customer=night, quiet_hours_start=dt.time(21), quiet_hours_end=dt.time(8)
    )
    # Two sends an hour apart: the second is over the daily cap.
    steps = [
        send("first", channel="email", next="hour"),
        {
            "key": "hour",
            "kind": "wait",
            "next": "second",
            "config": {"mode": "duration", "minutes": 60},
        },
        send("second", channel="email"),
    ]
    journey = journey_of(steps)

    result = simulate(journey, days=7, now=NOW)

    totals = result["totals"]
    # "day" is held by the cap for its second message. "night" enters at 14:00 UTC =
    # 23:00 in Tokyo: both messages wait for 08:00 there; then the second is over the
    # cap - held by the cap, outside quiet hours - and waits for the cap's next room
    # (Tokyo midnight), then for the end of quiet hours again.
    assert totals["held"] == {"quiet_hours": 2, "rule:one-a-day": 2}
    assert totals["deferred"] == totals["held"]
    # Each customer's second message goes the next day, when the cap allows.
    assert sum(totals["messages"].values()) == 4
    assert by_date(result, "messages")["2030-01-08"] == {"email": 2}


def test_a_dropping_cap_counts_as_dropped(template):
    frequency_rule_create(key="strict", name="Strict", limit=1, calendar="week", action="drop")
    make_customer("a", attributes={"fitting_at": "2030-01-08T11:00:00Z"})
    steps = [
        send("first", channel="email", next="hour"),
        {
            "key": "hour",
            "kind": "wait",
            "next": "second",
            "config": {"mode": "duration", "minutes": 60},
        },
        send("second", channel="email"),
    ]

    result = simulate(journey_of(steps), days=7, now=NOW)

    assert result["totals"]["dropped"] == {"rule:strict": 1}
    assert result["totals"]["messages"] == {"email": 1}


def test_branches_and_splits_divide_the_entrants(template):
    for i in range(40):
        city = "Chicago" if i < 10 else "Boston"
        make_customer(f"c{i}", attributes={"fitting_at": "2030-01-08T11:00:00Z", "city": city})
    steps = [
        {
            "key": "city",
            "kind": "branch",
            "next": "chicago",
            "alt_next": "ab",
            "config": {
                "conditions": [
                    {"type": "attribute", "name": "city", "op": "eq", "value": "chicago"}
                ]
            },
        },
        send("chicago", channel="email"),
        {"key": "ab", "kind": "split", "next": "a", "alt_next": "b", "config": {"percent": 50}},
        send("a", channel="email"),
        send("b", channel="sms"),
    ]

    first = simulate(journey_of(steps), days=3, now=NOW)
    again = simulate(journey_of(steps), days=3, now=NOW)

    messages = first["totals"]["messages"]
    assert messages["email"] + messages["sms"] == 40
    assert 10 < messages["email"] < 40 and 0 < messages["sms"] < 30
    assert again == first


def test_event_trigger_repeats_the_daily_average_of_matching_events(template):
    for i in range(28):
        customer = make_customer(f"e{i}")
        for name, plan in (("signed.up", "pro"), ("signed.up", "free"), ("other", "pro")):
            Event.objects.create(
                customer=customer,
                name=name,
                properties={"plan": plan},
                occurred_at=NOW - dt.timedelta(days=i, hours=3),
            )
    trigger = {
        "kind": "event",
        "event": "signed.up",
        "filter": [{"type": "property", "name": "plan", "op": "eq", "value": "pro"}],
    }
    journey = journey_of([send(channel="email")], trigger=trigger)

    result = simulate(journey, days=5, now=NOW)

    assert [d["entries"] for d in result["days"]] == [1, 1, 1, 1, 1]
    assert result["totals"]["messages"] == {"email": 5}


def test_recurring_trigger_enrolls_the_segment_at_each_run(template):
    for i in range(3):
        make_customer(f"r{i}", attributes={"tier": "gold" if i else "silver"})
    trigger = {
        "kind": "recurring",
        "cron": "0 9 * * 1",
        "timezone": "UTC",
        "segment": [{"type": "attribute", "name": "tier", "op": "eq", "value": "gold"}],
    }

    every = simulate(journey_of([send(channel="email")], trigger=trigger), days=14, now=NOW)
    once = simulate(
        journey_of([send(channel="email")], trigger=trigger, entry={"rule": "once"}),
        days=14,
        now=NOW,
    )

    assert by_date(every, "entries") == {"2030-01-07": 2, "2030-01-14": 2}
    assert by_date(once, "entries") == {"2030-01-07": 2}


def test_simulation_writes_nothing(template):
    make_customer("a", attributes={"fitting_at": "2030-01-08T11:00:00Z"})
    steps = [
        send("hello", channel="email", next="flag"),
        {
            "key": "flag",
            "kind": "update_attribute",
            "next": "hook",
            "config": {"name": "flagged", "value": True},
        },
        {"key": "hook", "kind": "webhook", "config": {"url": "http://127.0.0.1:9/never"}},
    ]
    journey = journey_of(steps)
    counts = (Message.objects.count(), Enrollment.objects.count(), StepRun.objects.count())

    with CaptureQueriesContext(connection) as queries:
        result = simulate(journey, days=3, now=NOW)

    assert result["totals"]["messages"] == {"email": 1}
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == []
    assert (Message.objects.count(), Enrollment.objects.count(), StepRun.objects.count()) == (
        counts
    )
    assert "flagged" not in make_customer("a").attributes


# --- the endpoint ----------------------------------------------------------------------


def test_simulate_endpoint_returns_the_forecast(api, template):
    make_customer("a", attributes={"fitting_at": "2099-01-08T11:00:00Z"})
    journey_of([send(channel="email")])

    response = api.post("/api/v1/journeys/sim/simulate", {"days": 3}, format="json")
    default = api.post("/api/v1/journeys/sim/simulate")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"days", "totals", "sample", "assumptions"}
    assert len(body["days"]) == 3
    assert {"date", "entries", "messages", "held"} <= set(body["days"][0])
    assert default.status_code == 200
    assert len(default.json()["days"]) == 14


@pytest.mark.parametrize(
    "body",
    [
        {"days": 0},
        {"days": 61},
        {"days": "5"},
        {"days": 2.5},
        {"days": True},
        {"sample": 0},
        {"sample": None},
        [1],
    ],
)
def test_bad_simulation_options_are_a_400(api, template, body):
    journey_of([send(channel="email")])
    assert_error(api.post("/api/v1/journeys/sim/simulate", body, format="json"), 400)


def test_replenishment_trigger_enters_days_before_the_predicted_purchase(template):
    runner = make_customer("runner")
    for days_ago in (85, 55, 25):
        Event.objects.create(
            customer=runner,
            name="order.completed",
            properties={"product": "shoe"},
            occurred_at=NOW - dt.timedelta(days=days_ago),
        )
    trigger = {
        "kind": "replenishment",
        "event": "order.completed",
        "product_property": "product",
        "default_cycle_days": 150,
        "min_purchases": 3,
        "remind_days_before": 2,
    }

    result = simulate(journey_of([send(channel="email")], trigger=trigger), days=14, now=NOW)

    # Every 30 days: next purchase due on the 12th, reminded on the 10th.
    assert by_date(result, "entries") == {"2030-01-10": 1}
    assert result["totals"]["messages"] == {"email": 1}


def _segment_branch(op: str) -> list[dict[str, Any]]:
    return [
        {
            "key": "vip",
            "kind": "branch",
            "next": "yes",
            "alt_next": "no",
            "config": {"conditions": [{"type": "segment", "segment": "vips", "op": op}]},
        },
        send("yes", channel="email"),
        send("no", channel="sms"),
    ]


@pytest.mark.parametrize(
    ("op", "expected"), [("in", {"email": 3, "sms": 7}), ("not_in", {"email": 7, "sms": 3})]
)
def test_a_segment_branch_reads_who_is_in_the_segment_with_one_query(template, op, expected):
    from orchestrator.segments.services import segment_save

    for i in range(10):
        tier = "gold" if i < 3 else "silver"
        make_customer(f"s{i}", attributes={"fitting_at": "2030-01-08T11:00:00Z", "tier": tier})
    segment_save(
        key="vips",
        name="VIPs",
        conditions={"all": [{"type": "attribute", "name": "tier", "op": "eq", "value": "gold"}]},
    )
    journey = journey_of(_segment_branch(op))

    with CaptureQueriesContext(connection) as queries:
        result = simulate(journey, days=3, now=NOW)

    assert result["totals"]["messages"] == expected
    membership = [q for q in queries.captured_queries if "c.id = ANY" in q["sql"]]
    assert len(membership) == 1
    assert any("in the segment today" in a for a in result["assumptions"])


def test_a_digest_step_counts_one_message_per_window(template):
    from tests.journeys.conftest import digest_step

    make_customer("d", attributes={"fitting_at": "2030-01-08T11:00:00Z"})
    # Enters at 10:00 on the 8th and comes back to the digest every 30 minutes.
    steps = [
        digest_step("updates", channel="email", next="pause", window_minutes=120),
        {"key": "pause", "kind": "wait", "next": "updates", "config": {"minutes": 30}},
    ]

    result = simulate(journey_of(steps), days=2, now=NOW)

    # 28 arrivals from 10:00 to 23:30; one digest per two hours goes at 12:00, 14:00,
    # ... 22:00 (6 of them); the one opened at 22:00 goes at midnight, after the window.
    assert result["totals"]["messages"] == {"email": 6}
    assert any("digest step counts one message" in a for a in result["assumptions"])
