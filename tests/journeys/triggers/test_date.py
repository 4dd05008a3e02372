"""Date triggers: appointment reminders, birthdays, event dates, bad data and reruns."""

from __future__ import annotations

import datetime as dt

import pytest

from journeys.models import Enrollment
from journeys.triggers import date
from orchestrator.audience.models import Customer, Event
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db

UTC = dt.UTC
#: 10:00 in Tokyo on 1 June 2024.
APPOINTMENT = "2024-06-01T10:00:00+09:00"
APPOINTMENT_UTC = dt.datetime(2024, 6, 1, 1, 0, tzinfo=UTC)


def reminder(key: str, offset_minutes: int, **trigger):
    return make_journey(
        [send(channel="email")],
        key=key,
        trigger={
            "kind": "date",
            "source": "attribute",
            "attribute": "appointment_at",
            "offset_minutes": offset_minutes,
            **trigger,
        },
    )


def set_attributes(customer: Customer, **attributes) -> None:
    Customer.objects.filter(pk=customer.pk).update(attributes=attributes)


def enrolled(journey) -> list[tuple[str, str]]:
    return list(
        Enrollment.objects.filter(journey=journey)
        .order_by("id")
        .values_list("customer__external_id", "occurrence")
    )


def test_reminders_fire_24_hours_and_2_hours_before_the_appointment(template):
    day_before = reminder("day-before", -24 * 60)
    two_hours = reminder("two-hours", -120)
    alex = make_customer("alex", timezone="Asia/Tokyo")
    set_attributes(alex, appointment_at=APPOINTMENT)

    early = APPOINTMENT_UTC - dt.timedelta(hours=24, minutes=1)
    assert date.sweep(day_before, now=early) == 0
    on_time = APPOINTMENT_UTC - dt.timedelta(hours=24) + dt.timedelta(minutes=1)
    assert date.sweep(day_before, now=on_time) == 1
    assert date.sweep(two_hours, now=on_time) == 0
    assert date.sweep(two_hours, now=APPOINTMENT_UTC - dt.timedelta(minutes=119)) == 1

    enrollment = Enrollment.objects.get(journey=day_before)
    assert enrollment.context == {"appointment_at": APPOINTMENT}
    assert enrollment.due_at == APPOINTMENT_UTC - dt.timedelta(hours=24)
    assert enrollment.occurrence == "appointment_at:2024-06-01T01:00:00Z"


def test_a_rerun_never_enrolls_twice_and_a_missed_window_is_not_caught_up(template):
    journey = reminder("day-before", -24 * 60, grace_minutes=60)
    alex = make_customer("alex")
    set_attributes(alex, appointment_at=APPOINTMENT)
    fire = APPOINTMENT_UTC - dt.timedelta(hours=24)

    assert date.sweep(journey, now=fire + dt.timedelta(minutes=1)) == 1
    assert date.sweep(journey, now=fire + dt.timedelta(minutes=2)) == 0
    assert date.sweep(journey, now=fire + dt.timedelta(minutes=59)) == 0
    other = reminder("late", -24 * 60, grace_minutes=60)
    assert date.sweep(other, now=fire + dt.timedelta(minutes=61)) == 0


def test_a_rescheduled_appointment_fires_again_for_the_new_time(template):
    journey = reminder("day-before", -24 * 60)
    alex = make_customer("alex")
    set_attributes(alex, appointment_at=APPOINTMENT)
    first = APPOINTMENT_UTC - dt.timedelta(hours=24)
    assert date.sweep(journey, now=first + dt.timedelta(minutes=5)) == 1

    set_attributes(alex, appointment_at="2024-06-03T15:30:00+09:00")
    second = dt.datetime(2024, 6, 3, 6, 30, tzinfo=UTC) - dt.timedelta(hours=24)
    assert date.sweep(journey, now=first + dt.timedelta(minutes=6)) == 0
    assert date.sweep(journey, now=second + dt.timedelta(minutes=1)) == 1
    assert [o for _c, o in enrolled(journey)] == [
        "appointment_at:2024-06-01T01:00:00Z",
        "appointment_at:2024-06-03T06:30:00Z",
    ]


def test_a_bare_date_or_local_time_is_in_the_customers_time_zone(template):
    journey = reminder("on-the-day", 9 * 60)  # 09:00 on the date
    tokyo = make_customer("tokyo", timezone="Asia/Tokyo")
    york = make_customer("york", timezone="America/New_York")
    set_attributes(tokyo, appointment_at="2024-06-01")
    set_attributes(york, appointment_at="2024-06-01")
    # 09:00 in Tokyo is 00:00 UTC; 09:00 in New York (EDT) is 13:00 UTC.
    assert date.sweep(journey, now=dt.datetime(2024, 6, 1, 0, 5, tzinfo=UTC)) == 1
    assert date.sweep(journey, now=dt.datetime(2024, 6, 1, 13, 5, tzinfo=UTC)) == 1
    assert enrolled(journey) == [
        ("tokyo", "appointment_at:2024-05-31T15:00:00Z"),
        ("york", "appointment_at:2024-06-01T04:00:00Z"),
    ]
    wall = reminder("wall-time", 0)
    set_attributes(york, appointment_at="2024-06-01T09:00:00")
    assert date.sweep(wall, now=dt.datetime(2024, 6, 1, 13, 0, tzinfo=UTC)) == 1


def test_unparseable_dates_and_zones_are_skipped_without_an_error(template):
    journey = reminder("day-before", -24 * 60)
    good = make_customer("good")
    set_attributes(good, appointment_at=APPOINTMENT)
    for i, bad in enumerate(["soon", "2024-02-30", "2024-06-01T25:00", 1717203600, None, "today"]):
        set_attributes(make_customer(f"bad-{i}"), appointment_at=bad)
    odd_zone = make_customer("odd-zone")
    set_attributes(odd_zone, appointment_at=APPOINTMENT)
    Customer.objects.filter(pk=odd_zone.pk).update(timezone="Mars/Olympus")
    now = APPOINTMENT_UTC - dt.timedelta(hours=24) + dt.timedelta(minutes=1)
    assert date.sweep(journey, now=now) == 2
    assert {c for c, _o in enrolled(journey)} == {"good", "odd-zone"}


def test_birthdays_fire_every_year_and_29_february_on_the_28th(template):
    journey = make_journey(
        [send(channel="email")],
        key="birthday",
        trigger={
            "kind": "date",
            "attribute": "birthday",
            "annual": True,
            "offset_minutes": 9 * 60,
        },
    )
    ann = make_customer("ann", timezone="Asia/Tokyo")
    leap = make_customer("leap", timezone="UTC")
    set_attributes(ann, birthday="1990-07-14")
    set_attributes(leap, birthday="2000-02-29")
    # 09:00 in Tokyo on 14 July is 00:00 UTC.
    assert date.sweep(journey, now=dt.datetime(2025, 7, 14, 0, 10, tzinfo=UTC)) == 1
    assert date.sweep(journey, now=dt.datetime(2025, 7, 14, 0, 20, tzinfo=UTC)) == 0
    assert date.sweep(journey, now=dt.datetime(2026, 7, 14, 0, 10, tzinfo=UTC)) == 1
    assert date.sweep(journey, now=dt.datetime(2025, 2, 28, 9, 30, tzinfo=UTC)) == 1
    assert date.sweep(journey, now=dt.datetime(2028, 2, 29, 9, 30, tzinfo=UTC)) == 1
    assert enrolled(journey) == [
        ("ann", "birthday:2025-07-14"),
        ("ann", "birthday:2026-07-14"),
        ("leap", "birthday:2025-02-28"),
        ("leap", "birthday:2028-02-29"),
    ]
    enrollment = Enrollment.objects.filter(journey=journey).first()
    assert enrollment.context == {"birthday": "1990-07-14", "anniversary": "2025-07-14"}


def test_an_event_property_date_with_the_events_properties_in_context(template):
    journey = make_journey(
        [send(channel="email")],
        key="event-date",
        trigger={
            "kind": "date",
            "source": "event",
            "event": "appointment.booked",
            "property": "starts_at",
            "offset_minutes": -120,
        },
    )
    alex = make_customer("alex")
    booked = dt.datetime(2024, 5, 20, tzinfo=UTC)
    Event.objects.create(
        customer=alex,
        name="appointment.booked",
        occurred_at=booked,
        properties={"starts_at": APPOINTMENT, "clinic": "Shibuya"},
    )
    Event.objects.create(
        customer=alex, name="appointment.booked", occurred_at=booked, properties={"starts_at": "?"}
    )
    assert date.sweep(journey, now=APPOINTMENT_UTC - dt.timedelta(minutes=110)) == 1
    context = Enrollment.objects.get(journey=journey).context
    assert context["starts_at"] == APPOINTMENT
    assert context["clinic"] == "Shibuya"
    assert context["_event"]["name"] == "appointment.booked"


def test_days_after_an_event_uses_its_time(template):
    journey = make_journey(
        [send(channel="email")],
        key="review",
        trigger={
            "kind": "date",
            "source": "event",
            "event": "order.delivered",
            "offset_minutes": 3 * 24 * 60,
        },
    )
    alex = make_customer("alex")
    delivered = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    Event.objects.create(customer=alex, name="order.delivered", occurred_at=delivered)
    assert date.sweep(journey, now=delivered + dt.timedelta(days=3, minutes=-1)) == 0
    assert date.sweep(journey, now=delivered + dt.timedelta(days=3, minutes=1)) == 1
    enrollment = Enrollment.objects.get(journey=journey)
    assert enrollment.context["occurred_at"] == "2024-05-01T12:00:00Z"
    assert enrollment.due_at == delivered + dt.timedelta(days=3)
