"""Exit events and goals are part of a journey's published version, like its steps.

A customer keeps the exit events and goal of the version they entered on until they
leave; new entries take the newest. Events go in through the event API, the journeys'
event processing and the engine run as in production, and the journey is edited
through its API.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from journeys import engine
from journeys.definition import export
from journeys.events import process_pending
from journeys.models import Enrollment, Journey, JourneyVersion, StepRun
from orchestrator.audience.models import Customer
from orchestrator.delivery.models import Message
from tests.journeys.conftest import make_customer

pytestmark = pytest.mark.django_db

V1: dict[str, Any] = {
    "key": "cart-rescue",
    "name": "Cart rescue",
    "topic": "journey-news",
    "trigger": {"kind": "event", "event": "cart.abandoned"},
    "exit_events": [{"event": "cart.emptied", "match": "cart"}],
    "goal": {"event": "order.completed", "within_hours": 48, "exits": False},
    "steps": [
        {"key": "pause", "kind": "wait", "next": "remind", "config": {"minutes": 60}},
        {"key": "remind", "kind": "send", "config": {"template": "journey-hello"}},
    ],
}
V2: dict[str, Any] = {
    **V1,
    "exit_events": [{"event": "account.closed"}],
    "goal": {"event": "review.written", "within_hours": None, "exits": True},
}


def run_engine(now: dt.datetime | None = None) -> None:
    while engine.advance_batch(now=now).claimed:
        pass


def post_event(api, customer: str, name: str, **properties: Any) -> None:
    response = api.post(
        "/api/v1/events",
        {"customer": customer, "name": name, "properties": properties},
        format="json",
    )
    assert response.status_code == 202, response.content
    process_pending()
    run_engine()


def publish(api, definition: dict[str, Any]) -> dict[str, Any]:
    response = api.put(f"/api/v1/journeys/{definition['key']}", definition, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


def start(api, definition: dict[str, Any]) -> None:
    publish(api, definition)
    response = api.post(f"/api/v1/journeys/{definition['key']}/activate")
    assert response.status_code == 200, response.content


def enter(api, customer: str) -> Enrollment:
    make_customer(customer)  # with an email address, so the journey's send can go
    post_event(api, customer, "cart.abandoned", cart="c-1")
    return Enrollment.objects.get(customer__external_id=customer)


def state(enrollment: Enrollment) -> tuple[str, bool]:
    enrollment.refresh_from_db()
    return enrollment.status, enrollment.converted_at is not None


@pytest.fixture
def journeys_on_two_versions(api, template):
    """Two customers entered on version 1, then version 2 went out and two more entered."""
    start(api, V1)
    v1 = [enter(api, "v1-first"), enter(api, "v1-second")]
    assert publish(api, V2)["version"] == 2
    v2 = [enter(api, "v2-first"), enter(api, "v2-second")]
    assert [e.version.number for e in v1 + v2] == [1, 1, 2, 2]
    assert all(e.status == Enrollment.Status.ACTIVE and e.waiting for e in v1 + v2)
    return v1, v2


def test_an_exit_event_acts_only_on_enrollments_of_the_versions_that_have_it(
    api, journeys_on_two_versions
):
    (v1_first, v1_second), (v2_first, v2_second) = journeys_on_two_versions

    # Version 2's exit event: the version 1 enrollment stays, the version 2 one leaves.
    post_event(api, "v1-first", "account.closed")
    post_event(api, "v2-first", "account.closed")
    assert state(v1_first) == ("active", False)
    assert state(v2_first) == ("exited", False)
    assert v2_first.exit_reason == "exit event account.closed"

    # Version 1's exit event, with its match on the cart: the reverse.
    post_event(api, "v1-second", "cart.emptied", cart="c-1")
    post_event(api, "v2-second", "cart.emptied", cart="c-1")
    assert state(v1_second) == ("exited", False)
    assert v1_second.exit_reason == "exit event cart.emptied"
    assert state(v2_second) == ("active", False)

    # Those still on the journey go on, each on its own version, to the send.
    run_engine(now=timezone.now() + dt.timedelta(minutes=61))
    sent = set(Message.objects.values_list("customer__external_id", flat=True))
    assert sent == {"v1-first", "v2-second"}


def test_version_1s_exit_event_keeps_its_match_on_the_context(api, journeys_on_two_versions):
    (v1_first, _), _ = journeys_on_two_versions
    post_event(api, "v1-first", "cart.emptied", cart="another-cart")
    assert state(v1_first) == ("active", False)
    post_event(api, "v1-first", "cart.emptied", cart="c-1")
    assert state(v1_first) == ("exited", False)


def test_a_goal_converts_only_enrollments_of_the_versions_that_have_it(
    api, journeys_on_two_versions
):
    (v1_first, v1_second), (v2_first, v2_second) = journeys_on_two_versions

    # Version 2's goal: converts (and, as version 2 says, exits) only version 2.
    post_event(api, "v1-first", "review.written")
    post_event(api, "v2-first", "review.written")
    assert state(v1_first) == ("active", False)
    assert state(v2_first) == ("exited", True)
    assert v2_first.exit_reason == "goal review.written"

    # Version 1's goal: converts version 1 and, as version 1 says, keeps it on the journey.
    post_event(api, "v1-second", "order.completed")
    post_event(api, "v2-second", "order.completed")
    assert state(v1_second) == ("active", True)
    assert state(v2_second) == ("active", False)

    converted = StepRun.objects.filter(kind="goal", outcome="converted")
    assert sorted(converted.values_list("enrollment__customer__external_id", flat=True)) == [
        "v1-second",
        "v2-first",
    ]


def test_the_goals_window_and_exit_rule_are_those_of_the_enrollments_version(api, template):
    """Same goal event in both versions: version 1 counts it within 24 hours and exits,
    version 2 at any time and keeps the customer on."""
    goal = {"event": "order.completed"}
    steps = copy.deepcopy(V1["steps"])
    steps[0]["config"]["minutes"] = 7 * 24 * 60  # all three are still on the journey
    two_days_ago = timezone.now() - dt.timedelta(days=2)
    with time_machine.travel(two_days_ago, tick=False):
        start(api, {**V1, "steps": steps, "goal": {**goal, "within_hours": 24, "exits": True}})
        on_v1 = enter(api, "early")
        publish(api, {**V1, "steps": steps, "goal": {**goal, "within_hours": None, "exits": False}})
        on_v2 = enter(api, "later")
    fresh = enter(api, "today")

    for customer in ("early", "later", "today"):
        post_event(api, customer, "order.completed")

    assert state(on_v1) == ("active", False)  # two days is past version 1's window
    assert state(on_v2) == ("active", True)  # no window, and version 2 does not exit
    assert state(fresh) == ("active", True)


def test_exit_events_and_goal_of_a_running_version_stay_when_the_journey_is_paused(
    api, journeys_on_two_versions
):
    (v1_first, _), _ = journeys_on_two_versions
    assert api.post("/api/v1/journeys/cart-rescue/pause").status_code == 200
    post_event(api, "v1-first", "cart.emptied", cart="c-1")
    assert state(v1_first) == ("exited", False)


def test_export_api_and_version_are_one_definition_with_its_exit_events_and_goal(
    api, journeys_on_two_versions
):
    journey = Journey.objects.select_related("topic", "current_version").get(key="cart-rescue")
    exported = export(journey)
    body = api.get("/api/v1/journeys/cart-rescue").json()
    assert body == exported
    assert (body["version"], body["exit_events"], body["goal"]) == (
        2,
        V2["exit_events"],
        V2["goal"],
    )
    # What the export and the API show is what version 2 runs; version 1 keeps its own.
    published = {k: v for k, v in exported.items() if k not in ("status", "version")}
    assert published == journey.current_version.definition
    v1 = JourneyVersion.objects.get(journey=journey, number=1).definition
    assert (v1["exit_events"], v1["goal"]) == (V1["exit_events"], V1["goal"])

    # The simulation reads the same definition: its note on goals and exit events
    # goes once a new version has neither.
    note = "Nobody converts or leaves early on an exit event in the forecast."
    assert note in api.post("/api/v1/journeys/cart-rescue/simulate").json()["assumptions"]
    plain = copy.deepcopy(V2)
    plain.update(exit_events=[], goal=None)
    assert publish(api, plain)["version"] == 3
    assert note not in api.post("/api/v1/journeys/cart-rescue/simulate").json()["assumptions"]
    # ...and customers on version 1 and 2 still leave on their own exit events.
    post_event(api, "v2-second", "account.closed")
    assert state(Enrollment.objects.get(customer__external_id="v2-second")) == ("exited", False)
    assert Customer.objects.count() == 4


def _batch_queries(api, customers: list[str]) -> int:
    """Queries to handle one batch: each customer does both versions' exit events and goals."""
    events = [
        {"customer": customer, "name": name, "properties": {"cart": "c-1"}}
        for customer in customers
        for name in ("review.written", "order.completed", "account.closed", "cart.emptied")
    ]
    assert api.post("/api/v1/events/bulk", {"events": events}, format="json").status_code == 202
    with CaptureQueriesContext(connection) as queries:
        stats = process_pending()
    assert (stats.events, stats.converted) == (len(events), len(customers))
    assert stats.exited == len(customers) // 2  # version 1's; version 2's left by goal
    return len(queries)


def test_a_batch_of_events_costs_the_same_queries_however_many_enrollments_it_touches(
    api, template
):
    start(api, V1)
    small = [enter(api, f"a{n}") for n in range(2)]
    publish(api, V2)
    small += [enter(api, f"b{n}") for n in range(2)]
    large = [enter(api, f"c{n}") for n in range(6)]
    publish(api, {**V2, "goal": {**V2["goal"], "exits": False}})
    large += [enter(api, f"d{n}") for n in range(6)]
    assert {e.version.number for e in small + large} == {1, 2, 3}

    few = _batch_queries(api, [e.customer.external_id for e in small])
    many = _batch_queries(api, [e.customer.external_id for e in large])
    assert few == many
