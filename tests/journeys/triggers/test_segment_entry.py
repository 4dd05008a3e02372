"""Segment entry: entering enrolls, leaving removes, coming back enrolls again."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from journeys.models import Enrollment, SegmentMember
from journeys.triggers import segment_entry
from orchestrator.audience.models import Customer
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db

VIP = [{"type": "attribute", "name": "spend", "op": "gte", "value": 1000}]


def vip_journey(**fields):
    trigger = {"kind": "segment", "segment": VIP}
    trigger.update(fields.pop("trigger", {}))
    return make_journey([send(channel="email")], key="vip", trigger=trigger, **fields)


def spend(customer, amount) -> None:
    Customer.objects.filter(pk=customer.pk).update(attributes={"spend": amount})


def members(journey) -> set[str]:
    return set(
        SegmentMember.objects.filter(journey=journey).values_list(
            "customer__external_id", flat=True
        )
    )


def test_entering_leaving_and_reentering_the_segment(template):
    journey = vip_journey()
    already, newcomer = make_customer("already"), make_customer("newcomer")
    spend(already, 5000)
    spend(newcomer, "120")
    t0 = timezone.now()

    # The first sweep records who is in already: they did not enter it now.
    assert segment_entry.sweep(journey, now=t0) == 0
    assert members(journey) == {"already"}

    spend(newcomer, "1,200")  # not a number: text, still outside
    assert segment_entry.sweep(journey, now=t0 + dt.timedelta(minutes=1)) == 0
    spend(newcomer, 1200)
    t2 = t0 + dt.timedelta(minutes=2)
    assert segment_entry.sweep(journey, now=t2) == 1
    assert segment_entry.sweep(journey, now=t2 + dt.timedelta(minutes=1)) == 0
    assert members(journey) == {"already", "newcomer"}

    spend(newcomer, 10)
    assert segment_entry.sweep(journey, now=t0 + dt.timedelta(minutes=4)) == 0
    assert members(journey) == {"already"}

    spend(newcomer, 2000)
    t5 = t0 + dt.timedelta(minutes=5)
    assert segment_entry.sweep(journey, now=t5) == 1
    enrollments = Enrollment.objects.filter(journey=journey).order_by("id")
    occurrences = list(enrollments.values_list("occurrence", flat=True))
    assert occurrences == [
        f"segment:{t2.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
        f"segment:{t5.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
    ]


def test_reentry_respects_the_entry_rule(template):
    journey = vip_journey(entry={"rule": "once"})
    customer = make_customer("c")
    t0 = timezone.now()
    segment_entry.sweep(journey, now=t0)
    for i, amount in enumerate([1500, 0, 1500]):
        spend(customer, amount)
        segment_entry.sweep(journey, now=t0 + dt.timedelta(minutes=i + 1))
    assert Enrollment.objects.filter(journey=journey).count() == 1


def test_enroll_existing_enrolls_the_whole_segment_on_the_first_sweep(template):
    journey = vip_journey(trigger={"enroll_existing": True})
    spend(make_customer("already"), 5000)
    assert segment_entry.sweep(journey, now=timezone.now()) == 1
