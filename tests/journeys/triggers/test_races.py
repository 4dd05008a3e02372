"""Two workers running the same sweep at the same moment enroll each customer once."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from django.db import connection
from django.utils import timezone

from journeys.models import Enrollment
from journeys.triggers import date, recurring, replenishment, segment_entry
from orchestrator.audience.models import Customer
from orchestrator.audience.services import event_record
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db(transaction=True)

CUSTOMERS = 40


def race(run: Callable[[], int], workers: int = 2) -> list[int]:
    """Run ``run`` in ``workers`` threads (own connections) released at the same moment."""
    barrier = threading.Barrier(workers)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(run())
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def customers(attributes: dict) -> list[Customer]:
    made = [make_customer(f"c{i}") for i in range(CUSTOMERS)]
    Customer.objects.filter(pk__in=[c.pk for c in made]).update(attributes=attributes)
    return made


def assert_once_each(journey, results: list[int]) -> None:
    per_customer = Enrollment.objects.filter(journey=journey).values_list("customer_id", flat=True)
    assert sorted(results) == [0, CUSTOMERS] or sum(results) == CUSTOMERS
    assert len(per_customer) == CUSTOMERS == len(set(per_customer))


def test_two_date_sweeps_at_once_enroll_each_customer_once(template):
    journey = make_journey(
        [send(channel="email")],
        trigger={"kind": "date", "attribute": "appointment_at", "offset_minutes": -60},
    )
    customers({"appointment_at": "2024-06-01T10:00:00Z"})
    now = dt.datetime(2024, 6, 1, 9, 1, tzinfo=dt.UTC)
    assert_once_each(journey, race(lambda: date.sweep(journey, now=now)))


def test_two_replenishment_sweeps_at_once_enroll_each_customer_once(template):
    journey = make_journey(
        [send(channel="email")],
        trigger={
            "kind": "replenishment",
            "event": "order.completed",
            "product_property": "sku",
            "default_cycle_days": 30,
            "remind_days_before": 5,
        },
    )
    now = timezone.now()
    for c in customers({}):
        event_record(
            customer=c.external_id,
            name="order.completed",
            properties={"sku": "gel"},
            occurred_at=now - dt.timedelta(days=26),
        )
    assert_once_each(journey, race(lambda: replenishment.sweep(journey, now=now)))


def test_two_segment_sweeps_at_once_enroll_each_newcomer_once(template):
    journey = make_journey(
        [send(channel="email")],
        trigger={
            "kind": "segment",
            "segment": [{"type": "attribute", "name": "vip", "op": "eq", "value": True}],
        },
    )
    now = timezone.now()
    segment_entry.sweep(journey, now=now)  # the first sweep only records the members
    customers({"vip": True})
    # Different clocks, as two workers have: still one enrollment each.
    results = race_with_times(
        lambda at: segment_entry.sweep(journey, now=at),
        [now + dt.timedelta(seconds=60), now + dt.timedelta(seconds=61)],
    )
    assert_once_each(journey, results)


def race_with_times(run: Callable[[dt.datetime], int], times: list[dt.datetime]) -> list[int]:
    it = iter(times)
    lock = threading.Lock()

    def one() -> int:
        with lock:
            at = next(it)
        return run(at)

    return race(one, workers=len(times))


def test_two_recurring_beats_at_once_enroll_each_customer_once(template):
    journey = make_journey(
        [send(channel="email")],
        trigger={"kind": "recurring", "cron": "0 9 * * *", "timezone": "customer"},
    )
    customers({})
    nine = dt.datetime(2024, 6, 3, 9, 0, tzinfo=dt.UTC)
    results = race_with_times(
        lambda at: recurring.fire(journey, now=at),
        [nine + dt.timedelta(minutes=5), nine + dt.timedelta(minutes=6)],
    )
    assert_once_each(journey, results)
