"""The Simulate page and the Archive button of the journey admin, through the test client."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from journeys.enrollment import Candidate, enroll
from journeys.models import Enrollment, Journey, JourneyVersion, Step, StepRun
from journeys.services import journey_archive, journey_pause
from orchestrator.delivery.models import Message
from tests.journeys.admin.helpers import change_url
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-12345")
    client.force_login(user)
    return client


def simulate_url(journey: Journey) -> str:
    return reverse("admin:journeys_journey_simulate", args=[journey.pk])


def archive_url(journey: Journey) -> str:
    return reverse("admin:journeys_journey_archive", args=[journey.pk])


def local_noon(days_ahead: int) -> str:
    """Noon, ``days_ahead`` days from today in the project's zone, as an ISO instant."""
    tz = timezone.get_default_timezone()
    day = timezone.now().astimezone(tz).date() + dt.timedelta(days=days_ahead)
    return dt.datetime.combine(day, dt.time(12), tzinfo=tz).isoformat()


def fitting_journey(**kw) -> Journey:
    return make_journey(
        [send(channel="email")],
        key="fitting",
        trigger={"kind": "date", "source": "attribute", "attribute": "fitting_at"},
        **kw,
    )


@pytest.fixture
def fittings(template):
    """Two customers with a fitting in two days, one in three days, two outside."""
    zone = str(timezone.get_default_timezone())
    for name, when in [
        ("ann", local_noon(2)),
        ("bob", local_noon(2)),
        ("cy", local_noon(3)),
        ("later", local_noon(40)),
        ("past", local_noon(-5)),
    ]:
        make_customer(name, timezone=zone, attributes={"fitting_at": when})


def test_the_change_page_links_to_simulate_and_offers_archive_only_when_not_live(
    admin_client, template
):
    journey = fitting_journey()
    page = admin_client.get(change_url(journey)).content.decode()
    assert simulate_url(journey) in page
    assert archive_url(journey) not in page  # active: pause it first
    journey_pause(journey=journey)
    page = admin_client.get(change_url(journey)).content.decode()
    assert archive_url(journey) in page


def test_simulate_shows_the_forecast_per_day_totals_chart_sample_and_assumptions(
    admin_client, fittings
):
    journey = fitting_journey(activate=False)

    response = admin_client.get(simulate_url(journey))

    assert response.status_code == 200
    ctx = response.context
    assert ctx["form"].is_bound is False  # computed with the defaults on a plain GET
    assert len(ctx["rows"]) == 14
    entries = [row["entries"] for row in ctx["rows"]]
    assert entries[2] == 2 and entries[3] == 1 and sum(entries) == 3
    assert ctx["channels"] == ["email"]
    assert [row["messages"] for row in ctx["rows"]][2:4] == [[2], [1]]
    assert ctx["total_row"]["entries"] == 3 and ctx["total_row"]["messages"] == [3]
    assert ctx["sample_text"] == "Simulated 3 of 3 expected entrants."
    page = response.content.decode()
    assert "<svg" in page and 'class="chart"' in page
    assert "Forecast entries and messages per day" in page
    assert "Messages: email" in page
    assert "Simulated 3 of 3 expected entrants." in page
    assert "current draft" in page and "no published version yet" in page
    for line in ctx["result"]["assumptions"]:
        assert line.split("'")[0] in page  # every assumption, in words
    assert "fitting_at date" in page


def test_simulate_takes_days_and_sample_from_the_form(admin_client, fittings):
    journey = fitting_journey(activate=False)
    response = admin_client.get(simulate_url(journey), {"days": "3", "sample": "1"})
    assert response.status_code == 200
    assert [row["entries"] for row in response.context["rows"]] == [0, 0, 2]
    assert response.context["sample_text"] == "Simulated 1 of 2 expected entrants."


@pytest.mark.parametrize(
    ("days", "sample"), [("0", "2000"), ("61", "2000"), ("soon", "2000"), ("14", "-3"), ("", "")]
)
def test_bad_form_input_shows_a_form_error_not_a_500(admin_client, fittings, days, sample):
    journey = fitting_journey(activate=False)
    response = admin_client.get(simulate_url(journey), {"days": days, "sample": sample})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert "result" not in response.context or response.context["result"] is None
    page = response.content.decode()
    assert "errorlist" in page and 'class="chart"' not in page


def test_a_broken_draft_lists_its_problems_instead_of_a_forecast(admin_client, fittings):
    journey = fitting_journey(activate=False)
    Step.objects.filter(journey=journey).update(config={})  # a send without a template
    response = admin_client.get(simulate_url(journey))
    assert response.status_code == 200
    assert response.context["problems"]
    assert "cannot be simulated" in response.content.decode()


def test_simulate_writes_nothing(admin_client, fittings):
    journey = fitting_journey()
    customer = make_customer("on-it")
    enroll(journey, [Candidate(customer.id, "t", {})])
    tables = (Message, Enrollment, StepRun, JourneyVersion, Journey, Step)
    before = [model.objects.count() for model in tables]
    updated = Journey.objects.get(pk=journey.pk).updated_at

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(simulate_url(journey), {"days": "14", "sample": "50"})

    assert response.status_code == 200 and response.context["total_row"]["entries"] == 3
    assert [model.objects.count() for model in tables] == before
    assert Journey.objects.get(pk=journey.pk).updated_at == updated
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == []


def test_simulate_says_whether_the_draft_differs_from_the_published_version(admin_client, fittings):
    journey = fitting_journey()
    page = admin_client.get(simulate_url(journey)).content.decode()
    assert "same as published version 1" in page
    Step.objects.filter(journey=journey).update(label="Changed in the draft")
    page = admin_client.get(simulate_url(journey)).content.decode()
    assert "differs from published version 1" in page


def test_archive_from_paused_keeps_enrollments_and_disables_the_schedule(admin_client, template):
    journey = make_journey(
        [send(channel="email")], key="monday", trigger={"kind": "recurring", "cron": "0 9 * * 1"}
    )
    customer = make_customer("waiting")
    enroll(journey, [Candidate(customer.id, "t", {})])
    journey_pause(journey=journey)
    # Beat's row was switched back on behind our back: archiving must switch it off.
    PeriodicTask.objects.filter(name="journey:monday").update(enabled=True)

    response = admin_client.post(archive_url(journey), follow=True)

    assert response.status_code == 200
    journey.refresh_from_db()
    assert journey.status == Journey.Status.ARCHIVED
    assert not PeriodicTask.objects.get(name="journey:monday").enabled
    assert Enrollment.objects.get(journey=journey).status == Enrollment.Status.ACTIVE
    said = [str(m) for m in response.context["messages"]]
    assert any("Archived" in m and "1 customer already on it stays" in m for m in said)
    assert archive_url(journey) not in response.content.decode()  # no button once archived


def test_archive_of_a_draft_works_and_an_active_journey_is_refused(admin_client, template):
    draft = fitting_journey(activate=False)
    admin_client.post(archive_url(draft))
    draft.refresh_from_db()
    assert draft.status == Journey.Status.ARCHIVED

    live = make_journey([send(channel="email")], key="live")
    response = admin_client.post(archive_url(live), follow=True)
    live.refresh_from_db()
    assert live.status == Journey.Status.ACTIVE
    assert any("pause it first" in str(m) for m in response.context["messages"])


def test_archive_via_get_is_405(admin_client, template):
    journey = fitting_journey()
    journey_pause(journey=journey)
    response = admin_client.get(archive_url(journey))
    assert response.status_code == 405
    journey.refresh_from_db()
    assert journey.status == Journey.Status.PAUSED


def test_journey_archive_pauses_an_active_journey_first(template):
    journey = make_journey(
        [send(channel="email")], key="monday", trigger={"kind": "recurring", "cron": "0 9 * * 1"}
    )
    assert PeriodicTask.objects.get(name="journey:monday").enabled
    journey_archive(journey=journey)
    assert journey.status == Journey.Status.ARCHIVED
    assert Journey.objects.get(pk=journey.pk).status == Journey.Status.ARCHIVED
    assert not PeriodicTask.objects.get(name="journey:monday").enabled


def test_held_sends_show_by_reason_with_deferred_and_dropped(admin_client, template):
    make_customer("reachable", attributes={"fitting_at": local_noon(2)})
    make_customer("no-address", email="", phone="", attributes={"fitting_at": local_noon(2)})
    journey = fitting_journey(activate=False)

    response = admin_client.get(simulate_url(journey), {"days": "3", "sample": "100"})

    assert response.context["reasons"] == ["no consent"]
    assert response.context["rows"][2]["held"] == ["1 (1 dropped)"]
    assert response.context["total_row"]["held"] == ["1 (1 dropped)"]
    assert "Held: no consent" in response.content.decode()
