"""The canvas's pending draft: saved apart from what runs (problems and all), compared,
simulated and published on purpose, discarded; and what an API PUT does to it."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.urls import reverse

from journeys import canvas
from journeys.definition import definition_of
from journeys.enrollment import Candidate, enroll
from journeys.events import process_pending
from journeys.models import Enrollment, Journey, JourneyVersion
from journeys.services import journey_activate
from journeys.triggers import date
from orchestrator.audience.models import Customer
from orchestrator.audience.services import event_record
from tests.journeys.canvas_api.conftest import definition, post, url
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def live(journey):
    """The journey active on version 1 with one customer on it."""
    with time_machine.travel(T0, tick=False):
        journey_activate(journey=journey)
        journey.refresh_from_db()
        enroll(journey, [Candidate(make_customer("on-v1").id, "o", {})])
    return Journey.objects.get(pk=journey.pk)


def retriggered() -> dict:
    changed = definition()
    changed["trigger"]["event"] = "cart.abandoned"
    changed["steps"][1]["config"]["minutes"] = 60
    return changed


def test_saving_on_an_active_journey_leaves_what_runs_untouched(editor_client, live):
    before = definition_of(live)
    enrollments = list(Enrollment.objects.values_list("id", "version_id", "step", "status"))

    response = post(editor_client, "draft", live, {"definition": retriggered()})

    assert response.status_code == 200, response.content
    assert response.json()["journey"]["has_unpublished_changes"] is True
    live = Journey.objects.select_related("current_version").get(pk=live.pk)
    assert live.current_version.number == 1
    assert JourneyVersion.objects.filter(journey=live).count() == 1
    assert definition_of(live) == before
    assert live.trigger == {"event": "order.completed"}
    assert list(Enrollment.objects.values_list("id", "version_id", "step", "status")) == (
        enrollments
    )
    # The event trigger still enrolls on the published event, not the draft's.
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        make_customer("buyer")
        make_customer("abandoner")
        event_record(customer="abandoner", name="cart.abandoned")
        event_record(customer="buyer", name="order.completed")
        assert process_pending().enrolled == 1
    assert Enrollment.objects.filter(customer__external_id="buyer").exists()
    assert not Enrollment.objects.filter(customer__external_id="abandoner").exists()


def test_state_returns_the_pending_draft_and_the_diff_compares_it(editor_client, live):
    post(editor_client, "draft", live, {"definition": retriggered()})

    state = editor_client.get(url("state", live)).json()
    assert state["draft"] == retriggered()
    assert state["journey"]["draft_pending"] is True
    assert state["journey"]["has_unpublished_changes"] is True
    assert state["journey"]["stale"] is False
    assert state["journey"]["draft_saved_by"] == "Eda Tor"
    assert state["published"]["trigger"] == {"kind": "event", "event": "order.completed"}

    said = {
        c["where"]: c["summary"] for c in editor_client.get(url("diff", live)).json()["changes"]
    }
    assert said == {
        "trigger": "Trigger: event from order.completed to cart.abandoned",
        "steps.pause": "Wait changed from 2 days to 1 h",
    }


def test_simulate_forecasts_the_pending_draft(editor_client, live):
    broken = retriggered()
    broken["steps"][0]["config"]["template"] = ""
    post(editor_client, "draft", live, {"definition": broken})

    refused = post(editor_client, "simulate", live, {"days": 2, "sample": 20})
    assert refused.status_code == 400
    assert refused.json()["problems"][0]["step"] == "hello"

    post(editor_client, "draft", live, {"definition": retriggered()})
    with time_machine.travel(T0, tick=False):
        response = post(editor_client, "simulate", live, {"days": 2, "sample": 20})
    assert response.status_code == 200, response.content
    assert len(response.json()["days"]) == 2


def test_a_draft_with_problems_is_kept_but_cannot_be_published(editor_client, live):
    broken = retriggered()
    broken["steps"][2]["alt_next"] = "nowhere"

    saved = post(editor_client, "draft", live, {"definition": broken})
    assert saved.status_code == 200
    assert [p["step"] for p in saved.json()["problems"]] == ["vip"]
    state = editor_client.get(url("state", live)).json()
    assert state["draft"]["steps"][2]["alt_next"] == "nowhere"
    assert [p["step"] for p in state["problems"]] == ["vip"]

    refused = post(editor_client, "publish", live, {})

    assert refused.status_code == 400
    assert refused.json()["problems"][0]["step"] == "vip"
    live = Journey.objects.get(pk=live.pk)
    assert live.draft_definition == broken
    assert JourneyVersion.objects.filter(journey=live).count() == 1


def test_publish_applies_the_draft_records_who_and_clears_it(editor_client, editor, live):
    post(editor_client, "draft", live, {"definition": retriggered()})

    response = post(editor_client, "publish", live, {})

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2
    assert response.json()["journey"]["has_unpublished_changes"] is False
    live = Journey.objects.select_related("current_version").get(pk=live.pk)
    assert live.draft_definition is None
    assert live.trigger == {"event": "cart.abandoned"}
    assert live.status == Journey.Status.ACTIVE
    assert live.current_version.published_by == editor
    assert live.current_version.definition["steps"][1]["config"]["minutes"] == 60
    # Who was on version 1 stays there.
    assert set(Enrollment.objects.values_list("version__number", flat=True)) == {1}
    assert editor_client.get(url("state", live)).json()["journey"]["draft_pending"] is False


def test_publishing_a_never_published_journey_uses_the_same_flow(editor_client, journey):
    wanted = definition(name="Welcome v1")
    post(editor_client, "draft", journey, {"definition": wanted})
    assert Journey.objects.get(pk=journey.pk).name == "Welcome"

    response = post(editor_client, "publish", journey, {})

    assert response.json()["version"] == 1
    journey = Journey.objects.select_related("current_version").get(pk=journey.pk)
    assert journey.name == "Welcome v1"
    assert journey.status == Journey.Status.DRAFT
    assert journey.current_version.definition["name"] == "Welcome v1"
    assert journey.draft_definition is None


def test_discard_drops_the_draft_and_leaves_what_runs(editor_client, live):
    post(editor_client, "draft", live, {"definition": retriggered()})

    response = post(editor_client, "discard", live, {})

    assert response.status_code == 200
    data = response.json()
    assert data["journey"]["draft_pending"] is False
    assert data["journey"]["has_unpublished_changes"] is False
    assert data["draft"] == definition_of(live)
    live = Journey.objects.get(pk=live.pk)
    assert live.draft_definition is None
    assert live.trigger == {"event": "order.completed"}
    assert JourneyVersion.objects.filter(journey=live).count() == 1


def test_view_only_staff_cannot_discard(viewer_client, editor_client, live):
    post(editor_client, "draft", live, {"definition": retriggered()})

    assert post(viewer_client, "discard", live, {}).status_code == 403
    assert Journey.objects.get(pk=live.pk).draft_definition is not None


def test_an_api_put_wins_and_the_pending_draft_is_kept_but_flagged_stale(editor_client, api, live):
    post(editor_client, "draft", live, {"definition": retriggered()})
    assert editor_client.get(url("state", live)).json()["journey"]["stale"] is False

    put = definition(name="Welcome (API)")
    assert api.put("/api/v1/journeys/welcome", put, format="json").status_code == 200

    live = Journey.objects.select_related("current_version").get(pk=live.pk)
    assert live.name == "Welcome (API)"
    assert live.current_version.number == 2  # the API's PUT publishes an active journey
    state = editor_client.get(url("state", live)).json()
    assert state["draft"] == retriggered()
    assert state["journey"]["stale"] is True
    # Saving again keeps the warning; discarding or publishing ends it.
    post(editor_client, "draft", live, {"definition": retriggered()})
    assert canvas.journey_json(Journey.objects.get(pk=live.pk))["stale"] is True
    post(editor_client, "discard", live, {})
    assert editor_client.get(url("state", live)).json()["journey"]["stale"] is False


def test_the_form_page_says_when_a_canvas_draft_is_pending(editor_client, live):
    change = reverse("admin:journeys_journey_change", args=[live.pk])
    assert b"canvas-draft-note" not in editor_client.get(change).content

    post(editor_client, "draft", live, {"definition": retriggered()})

    page = editor_client.get(change)
    assert page.status_code == 200
    assert b"canvas-draft-note" in page.content


def test_the_date_sweep_reads_the_published_trigger_not_the_pending_draft(editor_client, template):
    journey = make_journey(
        [send(channel="email")],
        key="reminder",
        trigger={"kind": "date", "source": "attribute", "attribute": "appointment_at"},
    )
    due = dt.datetime(2026, 6, 1, 1, 0, tzinfo=dt.UTC)
    for name, attribute in (("booked", "appointment_at"), ("renewing", "renewal_at")):
        customer = make_customer(name)
        Customer.objects.filter(pk=customer.pk).update(attributes={attribute: due.isoformat()})
    draft = definition_of(journey)
    draft["trigger"]["attribute"] = "renewal_at"
    assert post(editor_client, "draft", journey, {"definition": draft}).status_code == 200

    assert date.sweep(Journey.objects.get(pk=journey.pk), now=due + dt.timedelta(minutes=1)) == 1

    assert list(Enrollment.objects.values_list("customer__external_id", flat=True)) == ["booked"]


def test_the_simulate_page_forecasts_the_pending_draft(editor_client, live):
    page = reverse("admin:journeys_journey_simulate", args=[live.pk])
    assert b"same as published version 1" in editor_client.get(page).content

    broken = retriggered()
    broken["steps"][0]["config"]["template"] = ""
    post(editor_client, "draft", live, {"definition": broken})
    refused = editor_client.get(page)
    assert b"canvas&#x27;s saved draft" in refused.content
    assert refused.context["problems"]  # the draft's problems, not the running journey's

    post(editor_client, "draft", live, {"definition": retriggered()})
    with time_machine.travel(T0, tick=False):
        shown = editor_client.get(page, {"days": 2, "sample": 20})
    assert shown.status_code == 200
    assert not shown.context["problems"]
