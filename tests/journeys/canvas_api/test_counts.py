"""Live counts on the canvas: per step and per edge, from real enrollments through the
engine, for the published version or the draft."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from journeys import canvas, engine
from journeys.enrollment import Candidate, enroll
from journeys.events import process_pending
from journeys.models import Enrollment, Journey
from journeys.services import journey_activate, journey_save
from orchestrator.audience.services import event_record
from orchestrator.delivery.dispatcher import dispatch_due
from tests.journeys.canvas_api.conftest import definition, url
from tests.journeys.conftest import make_customer

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


def run_until_idle(now: dt.datetime) -> None:
    while engine.advance_batch(now=now).claimed:
        pass


@pytest.fixture
def travelled(template, outbox):
    """Three customers through v1: all sent hello and waited; two days on, the VIP got
    thanks, the others ended at the branch; the VIP then converted. A fourth is on v2."""
    with time_machine.travel(T0, tick=False):
        journey = journey_save(definition(goal={"event": "review.written"}))
        journey_activate(journey=journey)
        journey.refresh_from_db()
        people = [
            make_customer("vip", attributes={"first_name": "Vi", "vip": True}),
            make_customer("plain", attributes={"first_name": "Pl"}),
            make_customer("other", attributes={"first_name": "Ot"}),
        ]
        enroll(journey, [Candidate(c.id, "o", {"item": "shoes"}) for c in people])
        run_until_idle(T0)
        assert dispatch_due()[0].sent == 3
    later = T0 + dt.timedelta(days=3)
    with time_machine.travel(later, tick=False):
        run_until_idle(later)
        event_record(customer="vip", name="review.written")
        assert process_pending().converted == 1
        # A second version: the wait is shorter; a newcomer takes it.
        changed = definition(goal={"event": "review.written"})
        changed["steps"][1]["config"]["minutes"] = 60
        journey = journey_save(changed)
        journey.refresh_from_db()
        enroll(journey, [Candidate(make_customer("new").id, "o", {"item": "socks"})])
        run_until_idle(later)
    return Journey.objects.select_related("current_version").get(pk=journey.pk)


def test_counts_of_the_draft_cover_every_enrollment_by_step_key(travelled):
    data = canvas.counts(travelled, of="draft")

    assert data["steps"] == {
        "hello": {"entered": 4, "waiting": 0, "sent": 3, "converted": 1},
        "pause": {"entered": 4, "waiting": 1, "sent": 0, "converted": 1},
        "vip": {"entered": 3, "waiting": 0, "sent": 0, "converted": 1},
        "thanks": {"entered": 1, "waiting": 0, "sent": 0, "converted": 1},
    }
    assert data["edges"] == {"hello->pause": 4, "pause->vip": 3, "vip->thanks": 1}


def test_counts_of_the_published_version_cover_only_its_enrollments(travelled):
    assert travelled.current_version.number == 2

    data = canvas.counts(travelled, of="published")

    assert data["steps"] == {
        "hello": {"entered": 1, "waiting": 0, "sent": 0, "converted": 0},
        "pause": {"entered": 1, "waiting": 1, "sent": 0, "converted": 0},
        "vip": {"entered": 0, "waiting": 0, "sent": 0, "converted": 0},
        "thanks": {"entered": 0, "waiting": 0, "sent": 0, "converted": 0},
    }
    assert data["edges"] == {"hello->pause": 1}


def test_counts_take_one_query_however_many_steps(travelled):
    with CaptureQueriesContext(connection) as queries:
        canvas.counts(travelled, of="draft")

    # One statement over the step log for every step and edge (the rest read the draft).
    assert sum("journeys_steprun" in q["sql"] for q in queries.captured_queries) == 1
    assert len(queries) <= 3


def test_counts_endpoint_answers_both_and_refuses_anything_else(editor_client, travelled):
    published = editor_client.get(url("counts", travelled, of="published"))
    draft = editor_client.get(url("counts", travelled, of="draft"))
    wrong = editor_client.get(url("counts", travelled, of="tomorrow"))

    assert published.status_code == draft.status_code == 200
    assert published.json()["steps"]["pause"]["waiting"] == 1
    assert draft.json()["edges"]["hello->pause"] == 4
    assert wrong.status_code == 400


def test_a_journey_never_published_counts_zero_for_its_published_version(editor_client, journey):
    data = editor_client.get(url("counts", journey, of="published")).json()

    assert data["edges"] == {}
    assert data["steps"]["hello"] == {"entered": 0, "waiting": 0, "sent": 0, "converted": 0}
    assert not Enrollment.objects.exists()
