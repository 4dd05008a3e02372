"""Recurring journeys: the beat schedule row, fixed-zone and customer-local firing."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django_celery_beat.models import PeriodicTask

from journeys.models import Enrollment, Journey
from journeys.services import journey_activate, journey_pause, journey_save
from journeys.triggers import recurring, schedules
from journeys.triggers.tasks import fire_recurring
from orchestrator.audience.models import Customer
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def weekly(**trigger):
    return make_journey(
        [send(channel="email")],
        key="monday",
        trigger={"kind": "recurring", "cron": "0 9 * * 1", **trigger},
    )


def enrolled(journey) -> list[tuple[str, str]]:
    return sorted(
        Enrollment.objects.filter(journey=journey).values_list(
            "customer__external_id", "occurrence"
        )
    )


def test_activating_creates_the_crontab_in_the_journeys_zone_and_pausing_disables_it(template):
    journey = weekly(timezone="Asia/Tokyo")
    task = PeriodicTask.objects.get(name="journey:monday")
    assert task.enabled and task.task == "journeys.fire_recurring"
    assert json.loads(task.args) == [journey.id]
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_week, str(cron.timezone)) == (
        "0",
        "9",
        "1",
        "Asia/Tokyo",
    )
    journey_pause(journey=journey)
    assert not PeriodicTask.objects.get(name="journey:monday").enabled
    journey_activate(journey=journey)
    assert PeriodicTask.objects.get(name="journey:monday").enabled


def test_editing_a_live_schedule_reaches_beat_through_the_reconciliation(template):
    journey = weekly(timezone="Asia/Tokyo")
    definition = {
        "key": "monday",
        "name": "Monday",
        "topic": "journey-news",
        "trigger": {"kind": "recurring", "cron": "30 18 * * 5", "timezone": "customer"},
        "steps": [send(channel="email")],
    }
    journey_save(definition)
    schedules.sync_all()
    cron = PeriodicTask.objects.get(name="journey:monday").crontab
    assert (cron.minute, cron.hour, str(cron.timezone)) == ("*/15", "*", "UTC")
    Journey.objects.filter(pk=journey.pk).update(status=Journey.Status.ARCHIVED)
    schedules.sync_all()
    assert not PeriodicTask.objects.get(name="journey:monday").enabled


def test_a_fixed_zone_schedule_enrolls_the_segment_once_per_fire_time(template):
    journey = weekly(
        timezone="Asia/Tokyo",
        segment=[{"type": "attribute", "name": "tier", "op": "eq", "value": "gold"}],
    )
    gold = make_customer("gold")
    Customer.objects.filter(pk=gold.pk).update(attributes={"tier": "Gold"})
    make_customer("plain")
    monday_9_tokyo = dt.datetime(2024, 6, 3, 0, 0, tzinfo=UTC)  # 09:00 JST, a Monday

    assert recurring.fire(journey, now=monday_9_tokyo - dt.timedelta(minutes=5)) == 0
    assert recurring.fire(journey, now=monday_9_tokyo + dt.timedelta(seconds=2)) == 1
    # A second beat (or a retried task) for the same fire time enrolls nobody again.
    assert recurring.fire(journey, now=monday_9_tokyo + dt.timedelta(seconds=3)) == 0
    assert enrolled(journey) == [("gold", "recurring:2024-06-03T09:00")]
    enrollment = Enrollment.objects.get(journey=journey)
    assert enrollment.due_at == monday_9_tokyo
    # The next Monday fires again.
    assert recurring.fire(journey, now=monday_9_tokyo + dt.timedelta(days=7, minutes=1)) == 1


def test_a_run_long_after_the_fire_time_does_not_send_it_late(template):
    journey = weekly(timezone="UTC")
    make_customer("a")
    monday_9 = dt.datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
    assert recurring.fire(journey, now=monday_9 + recurring.CATCH_UP + dt.timedelta(minutes=1)) == 0


def test_customer_local_schedule_enrolls_each_customer_at_their_own_9am(template):
    journey = weekly(timezone="customer")
    for name, zone in [
        ("tokyo", "Asia/Tokyo"),
        ("london", "Europe/London"),
        ("york", "America/New_York"),
    ]:
        make_customer(name, timezone=zone)
    unknown = make_customer("unknown")
    Customer.objects.filter(pk=unknown.pk).update(timezone="Nowhere/Special")
    # Beat every 15 minutes through Monday 3 June 2024 (UTC) and into Tuesday.
    start = dt.datetime(2024, 6, 2, 23, 45, tzinfo=UTC)
    seen: dict[str, dt.datetime] = {}
    for i in range(4 * 24):
        now = start + dt.timedelta(minutes=15 * i)
        if recurring.fire(journey, now=now):
            for name, _occ in enrolled(journey):
                seen.setdefault(name, now)
    # Tokyo 09:00 = 00:00 UTC; London (BST) = 08:00 UTC; unknown zone = UTC 09:00;
    # New York (EDT) = 13:00 UTC.
    assert seen == {
        "tokyo": dt.datetime(2024, 6, 3, 0, 0, tzinfo=UTC),
        "london": dt.datetime(2024, 6, 3, 8, 0, tzinfo=UTC),
        "unknown": dt.datetime(2024, 6, 3, 9, 0, tzinfo=UTC),
        "york": dt.datetime(2024, 6, 3, 13, 0, tzinfo=UTC),
    }
    assert {occ for _n, occ in enrolled(journey)} == {"recurring:2024-06-03T09:00"}
    assert Enrollment.objects.filter(journey=journey).count() == 4


def test_the_task_does_nothing_for_a_paused_journey(template):
    journey = weekly(timezone="UTC")
    make_customer("a")
    journey_pause(journey=journey)
    assert fire_recurring(journey.id) == 0
    assert fire_recurring(10**9) == 0
