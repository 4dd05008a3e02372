"""Replenishment: predictions from purchase history, incremental refresh, reminders, exit."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from journeys.events import process_pending
from journeys.models import Enrollment, JourneyCursor, ReplenishmentState
from journeys.triggers import replenishment
from orchestrator.audience.services import event_record
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db

TRIGGER = {
    "kind": "replenishment",
    "event": "order.completed",
    "product_property": "sku",
    "default_cycle_days": 90,
    "product_cycles": {"gel-24": 30},
    "min_purchases": 3,
    "remind_days_before": 10,
    "grace_days": 3,
}


def journey_for(**overrides):
    return make_journey(
        [
            {"key": "wait", "kind": "wait", "next": "send", "config": {"minutes": 60 * 24}},
            send(channel="email"),
        ],
        key="refill",
        trigger={**TRIGGER, **overrides},
        exit_events=[{"event": "order.completed", "match": "sku"}],
    )


def buy(customer: str, sku: str, at: dt.datetime) -> None:
    event_record(customer=customer, name="order.completed", properties={"sku": sku}, occurred_at=at)


def state(journey, customer: str, sku: str) -> ReplenishmentState:
    return ReplenishmentState.objects.get(
        journey=journey, customer__external_id=customer, product=sku
    )


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


def test_a_regular_buyer_is_predicted_from_their_own_median_interval(template, now):
    journey = journey_for()
    make_customer("reg")
    start = now - dt.timedelta(days=120)
    for i in range(4):  # every 35 days
        buy("reg", "shoe-41", start + dt.timedelta(days=35 * i))
    replenishment.refresh(journey, now=now)
    s = state(journey, "reg", "shoe-41")
    last = start + dt.timedelta(days=105)
    assert (s.purchases, s.basis, s.last_purchase_at) == (4, "own", last)
    assert s.median_interval_days == pytest.approx(35)
    assert s.predicted_at == last + dt.timedelta(days=35)


def test_one_outlier_gap_barely_moves_the_median(template, now):
    journey = journey_for()
    make_customer("irr")
    start = now - dt.timedelta(days=300)
    at = start
    for gap in [30, 32, 150, 28, 0]:  # a long break once
        buy("irr", "shoe-41", at)
        at += dt.timedelta(days=gap)
    replenishment.refresh(journey, now=now)
    s = state(journey, "irr", "shoe-41")
    assert s.purchases == 5
    assert s.median_interval_days == pytest.approx(31)  # the mean would be 60
    assert s.cycle_days == pytest.approx(31)


def test_a_single_purchase_uses_the_products_cycle_or_the_default(template, now):
    journey = journey_for()
    make_customer("once")
    bought = now - dt.timedelta(days=5)
    buy("once", "gel-24", bought)
    buy("once", "shoe-41", bought)
    buy("once", "shoe-41", bought + dt.timedelta(hours=2))  # same day: one purchase
    replenishment.refresh(journey, now=now)
    gel, shoe = state(journey, "once", "gel-24"), state(journey, "once", "shoe-41")
    assert (gel.basis, gel.cycle_days, gel.predicted_at) == (
        "product",
        30,
        bought + dt.timedelta(days=30),
    )
    assert (shoe.basis, shoe.cycle_days, shoe.purchases) == ("default", 90, 1)
    # Two purchases are fewer than min_purchases: still the default, not a median of one.
    buy("once", "shoe-41", bought + dt.timedelta(days=3))
    replenishment.refresh(journey, now=now)
    assert state(journey, "once", "shoe-41").basis == "default"


def test_refresh_recomputes_only_pairs_with_new_events(template, now):
    journey = journey_for()
    for name in ("a", "b"):
        make_customer(name)
        buy(name, "shoe-41", now - dt.timedelta(days=50))
    assert replenishment.refresh(journey, now=now) == 2
    later = now + replenishment.COMMIT_LAG + dt.timedelta(minutes=1)
    assert replenishment.refresh(journey, now=later) == 0  # nothing changed: nothing written
    cursor = JourneyCursor.objects.get(journey=journey, name__startswith="replenishment:")
    assert cursor.last_id > 0
    buy("b", "shoe-41", now - dt.timedelta(days=1))
    assert replenishment.refresh(journey, now=later) == 1
    assert state(journey, "b", "shoe-41").purchases == 2
    assert state(journey, "a", "shoe-41").purchases == 1


def test_events_committed_late_inside_the_lag_are_not_skipped(template, now):
    journey = journey_for()
    make_customer("late")
    buy("late", "shoe-41", now - dt.timedelta(days=50))
    # The run sees the event as received just now: the cursor must stay before it, so
    # an event with a lower id still committing then is read by the next run.
    replenishment.refresh(journey, now=now)
    cursor = JourneyCursor.objects.get(journey=journey, name__startswith="replenishment:")
    assert cursor.last_id < max_event_id()
    # Once the lag has passed, the cursor moves past it.
    replenishment.refresh(journey, now=now + replenishment.COMMIT_LAG + dt.timedelta(seconds=5))
    cursor.refresh_from_db()
    assert cursor.last_id == max_event_id()


def max_event_id() -> int:
    from orchestrator.audience.models import Event

    return Event.objects.order_by("-id").values_list("id", flat=True).first()


def test_predictions_sql_matches_the_refreshed_state(template, now):
    journey = journey_for()
    for name, gaps in {"p": [20, 22, 24], "q": []}.items():
        make_customer(name)
        at = now - dt.timedelta(days=100)
        buy(name, "shoe-41", at)
        for gap in gaps:
            at += dt.timedelta(days=gap)
            buy(name, "shoe-41", at)
    replenishment.refresh(journey, now=now)
    sql, params = replenishment.predictions_sql(journey)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        predicted = {(r[0], r[1]): (r[2], r[3]) for r in cursor.fetchall()}
    stored = {
        (s.customer_id, s.product): (s.predicted_at, s.basis)
        for s in ReplenishmentState.objects.filter(journey=journey)
    }
    assert predicted == stored
    assert sorted(b for _p, b in predicted.values()) == ["default", "own"]


def test_the_sweep_reminds_before_the_predicted_date_once(template, now):
    journey = journey_for()
    make_customer("due")
    make_customer("later")
    # Own median 30 days; predicted 9 days from now; remind 10 days before = yesterday.
    last = now - dt.timedelta(days=21)
    for i in range(3):
        buy("due", "shoe-41", last - dt.timedelta(days=30 * i))
    buy("later", "shoe-41", now - dt.timedelta(days=10))  # default 90 days: not yet

    assert replenishment.sweep(journey, now=now) == 1
    assert replenishment.sweep(journey, now=now + dt.timedelta(hours=12)) == 0
    enrollment = Enrollment.objects.get(journey=journey)
    predicted = last + dt.timedelta(days=30)
    assert enrollment.customer.external_id == "due"
    assert enrollment.occurrence == f"shoe-41:{predicted:%Y-%m-%d}"
    assert enrollment.context == {
        "sku": "shoe-41",
        "last_purchase_at": f"{last:%Y-%m-%dT%H:%M:%SZ}",
        "predicted_at": f"{predicted:%Y-%m-%dT%H:%M:%SZ}",
        "cycle_days": 30.0,
        "basis": "own",
    }
    assert enrollment.due_at == predicted - dt.timedelta(days=10)
    # Past the grace window nobody new is due.
    assert replenishment.sweep(journey, now=now + dt.timedelta(days=4)) == 0


def test_buying_the_product_again_takes_the_customer_out(template, now):
    journey = journey_for()
    make_customer("due")
    last = now - dt.timedelta(days=21)
    for i in range(3):
        buy("due", "shoe-41", last - dt.timedelta(days=30 * i))
        buy("due", "gel-24", last - dt.timedelta(days=30 * i))
    assert replenishment.sweep(journey, now=now) == 2
    process_pending()  # the history above

    buy("due", "gel-24", now)
    process_pending()
    by_sku = {e.context["sku"]: e for e in Enrollment.objects.filter(journey=journey)}
    assert by_sku["gel-24"].status == Enrollment.Status.EXITED
    assert by_sku["shoe-41"].status == Enrollment.Status.ACTIVE
    # The new purchase moves the prediction: no reminder for the old date again.
    assert replenishment.sweep(journey, now=now + dt.timedelta(hours=1)) == 0
    assert state(journey, "due", "gel-24").last_purchase_at == now


def test_changing_the_settings_recomputes_everyone(template, now):
    journey = journey_for()
    make_customer("once")
    buy("once", "shoe-41", now - dt.timedelta(days=5))
    replenishment.refresh(journey, now=now)
    assert state(journey, "once", "shoe-41").cycle_days == 90
    journey.trigger = {**journey.trigger, "default_cycle_days": 60}
    journey.save(update_fields=["trigger"])
    replenishment.refresh(journey, now=now)
    assert state(journey, "once", "shoe-41").cycle_days == 60
    assert JourneyCursor.objects.filter(journey=journey).count() == 1


def test_bad_product_values_are_skipped(template, now):
    journey = journey_for()
    make_customer("odd")
    for sku in [None, "", {"id": 1}, "x" * 300, 42]:
        event_record(
            customer="odd",
            name="order.completed",
            properties={"sku": sku},
            occurred_at=now - dt.timedelta(days=3),
        )
    replenishment.refresh(journey, now=now)
    assert list(
        ReplenishmentState.objects.filter(journey=journey).values_list("product", flat=True)
    ) == ["42"]
