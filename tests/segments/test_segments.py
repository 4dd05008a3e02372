"""Saved segments: what each condition selects (set-based SQL), validation in plain
words, reach per channel by the consent rules, the daily sizes, and the admin's count."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from orchestrator.audience.models import Event
from orchestrator.audience.services import event_record
from orchestrator.consent.models import ChannelOptOut, Subscription, Suppression, address_hash
from orchestrator.consent.selectors import ConsentRequest, consent_decisions
from orchestrator.delivery.models import MessageEvent, MessageStatus
from orchestrator.segments.models import Segment, SegmentSize
from orchestrator.segments.selectors import (
    members_among,
    members_query,
    segment_count,
    segment_problems,
    segment_sample,
)
from orchestrator.segments.services import (
    SegmentInUse,
    SegmentInvalid,
    segment_delete,
    segment_save,
    segment_sizes_record,
)
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db


def members(tree) -> set[str]:
    sql, params = members_query(tree)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id FROM audience_customer WHERE id IN ({sql})",
            params,
        )
        return {row[0] for row in cursor.fetchall()}


def event(customer, name, *, days_ago: float, **properties):
    Event.objects.create(
        customer=customer,
        name=name,
        properties=properties,
        occurred_at=timezone.now() - dt.timedelta(days=days_ago),
    )


@pytest.fixture
def people(db):
    ann = make_customer("ann", attributes={"sport": "running", "tier": "gold"})
    bob = make_customer("bob", attributes={"sport": "Running", "tier": "silver"})
    cat = make_customer("cat", attributes={"sport": "cycling"})
    event(ann, "order.completed", days_ago=10, sku="shoe")
    event(ann, "order.completed", days_ago=20, sku="gel")
    event(bob, "order.completed", days_ago=200, sku="shoe")
    event(cat, "order.completed", days_ago=5, sku="gel")
    return ann, bob, cat


def test_attributes_and_events_in_the_last_n_days_select_the_recent_runners(people):
    tree = {
        "all": [
            {"type": "attribute", "name": "sport", "op": "eq", "value": "running"},
            {"type": "event", "name": "order.completed", "op": "happened", "within_days": 90},
        ]
    }
    assert members(tree) == {"ann"}


def test_event_at_least_k_times_with_a_property_condition(people):
    twice = {"type": "event", "name": "order.completed", "op": "happened", "at_least": 2}
    assert members(twice) == {"ann"}
    gel = {
        "type": "event",
        "name": "order.completed",
        "op": "happened",
        "where": [{"type": "property", "name": "sku", "op": "eq", "value": "gel"}],
    }
    assert members(gel) == {"ann", "cat"}
    not_recent = {**gel, "op": "not_happened", "within_days": 7}
    assert members(not_recent) == {"ann", "bob"}


def test_any_not_and_an_empty_group(people):
    tree = {
        "any": [
            {"type": "attribute", "name": "tier", "op": "eq", "value": "silver"},
            {"not": {"type": "attribute", "name": "sport", "op": "exists"}},
        ]
    }
    assert members(tree) == {"bob"}
    assert members({"all": []}) == {"ann", "bob", "cat"}
    assert members({"any": []}) == set()


def test_a_segment_includes_another_by_key_and_refuses_a_cycle(people):
    segment_save(
        key="runners",
        name="Runners",
        conditions={
            "all": [{"type": "attribute", "name": "sport", "op": "eq", "value": "running"}]
        },
    )
    segment_save(
        key="recent-runners",
        name="Recent runners",
        conditions={
            "all": [
                {"segment": "runners"},
                {"type": "event", "name": "order.completed", "op": "happened", "within_days": 30},
            ]
        },
    )
    assert members("recent-runners") == {"ann"}
    assert members({"all": [{"type": "segment", "segment": "runners", "op": "not_in"}]}) == {"cat"}
    with pytest.raises(SegmentInvalid) as refused:
        segment_save(
            key="runners", name="Runners", conditions={"all": [{"segment": "recent-runners"}]}
        )
    assert "include each other: runners → recent-runners → runners" in str(refused.value)
    with pytest.raises(SegmentInUse):
        segment_delete(segment=Segment.objects.get(key="runners"))


def test_validation_returns_every_problem_in_plain_words_with_its_path(db):
    problems = segment_problems(
        {
            "all": [
                {"type": "attribute", "name": "", "op": "eq", "value": 1},
                {"type": "event", "name": "x", "op": "happened", "within_days": -3},
                {"type": "consent", "topic": "nope", "channel": "fax"},
                {"segment": "ghost"},
                {"any": "not a list"},
                {"type": "teleport"},
            ]
        }
    )
    said = {(p.path, p.message) for p in problems}
    assert ("conditions.all.0", "The customer attribute condition needs a name.") in said
    assert ("conditions.all.1", "The number of days must be a positive number.") in said
    assert ("conditions.all.2", "Choose a channel: email, sms, whatsapp, line.") in said
    assert ("conditions.all.2", "There is no topic 'nope'.") in said
    assert ("conditions.all.3", "There is no saved segment 'ghost'.") in said
    assert ("conditions.all.4", "'any' takes a list of conditions.") in said
    assert any(p.path == "conditions.all.5" for p in problems)


def test_consent_condition_follows_the_consent_rules(db):
    news = make_topic("news", default_opt_in=False)
    ann, bob, cat, dan = (make_customer(n) for n in ("ann", "bob", "cat", "dan"))
    for c in (ann, bob, cat):
        Subscription.objects.create(customer=c, topic=news, channel="email", status="subscribed")
    ChannelOptOut.objects.create(customer=bob, channel="email", source="api")
    Suppression.objects.create(
        channel="email", address_hash=address_hash("email", cat.email), reason="bounce"
    )
    tree = {"type": "consent", "topic": "news", "channel": "email"}
    assert members(tree) == {"ann"}
    # One rule, two readings: the SQL agrees with the dispatcher's decisions.
    decisions = consent_decisions(
        [ConsentRequest(c.id, news.id, "email", c.email) for c in (ann, bob, cat, dan)]
    )
    assert {
        c.external_id for c, d in zip((ann, bob, cat, dan), decisions, strict=True) if d.allowed
    } == {"ann"}
    assert members({**tree, "op": "not_subscribed"}) == {"bob", "cat", "dan"}


def test_message_history_received_opened_clicked(db):
    topic = make_topic("promo")
    template = make_template("spring-sale", topic=topic)
    ann, bob, _cat = (make_customer(n) for n in ("ann", "bob", "cat"))
    now = timezone.now()
    for customer, engagement in ((ann, "clicked"), (bob, None)):
        message = queue(customer, template)
        message.status = MessageStatus.SENT
        message.sent_at = now - dt.timedelta(days=3)
        message.save()
        if engagement:
            MessageEvent.objects.create(message=message, status=engagement, occurred_at=now)
    received = {"type": "message", "op": "received", "template": "spring-sale", "within_days": 7}
    assert members(received) == {"ann", "bob"}
    assert members({**received, "op": "clicked"}) == {"ann"}
    assert members({**received, "op": "not_opened"}) == {"bob"}
    assert members({**received, "op": "not_received"}) == {"cat"}
    assert members({**received, "within_days": 1}) == set()


def test_count_gives_size_and_reachable_per_channel(db):
    ann = make_customer("ann", attributes={"vip": True})
    bob = make_customer("bob", attributes={"vip": True}, phone="")
    make_customer("cat", attributes={"vip": False})
    Suppression.objects.create(
        channel="email", address_hash=address_hash("email", bob.email), reason="complaint"
    )
    ChannelOptOut.objects.create(customer=ann, channel="sms", source="api")
    count = segment_count({"type": "attribute", "name": "vip", "op": "eq", "value": True})
    assert count.size == 2
    assert count.reachable == {"email": 1, "sms": 0, "whatsapp": 0, "line": 0}
    sample = segment_sample({"type": "attribute", "name": "vip", "op": "eq", "value": True}, 1)
    assert [m["external_id"] for m in sample] == ["ann"]
    assert members_among(
        {"type": "attribute", "name": "vip", "op": "eq", "value": True}, [bob.id]
    ) == {bob.id}


def test_predicted_replenishment_reads_the_journeys_predictions(db):
    from journeys.models import Journey, ReplenishmentState

    journey = Journey.objects.create(key="refill", name="Refill", topic=make_topic("refills"))
    now = timezone.now()
    for customer, days in ((make_customer("ann"), 5), (make_customer("bob"), 40)):
        ReplenishmentState.objects.create(
            journey=journey,
            customer=customer,
            product="gel",
            purchases=3,
            last_purchase_at=now - dt.timedelta(days=20),
            cycle_days=30,
            basis="own",
            predicted_at=now + dt.timedelta(days=days),
        )
    assert members({"type": "replenishment", "within_days": 14}) == {"ann"}
    assert members({"type": "replenishment", "within_days": 60, "product": "gel"}) == {"ann", "bob"}
    assert members({"type": "replenishment", "within_days": 60, "product": "shoe"}) == set()


def test_the_daily_sweep_stores_each_segment_size_once_a_day(people):
    segment_save(
        key="runners",
        name="Runners",
        conditions={
            "all": [{"type": "attribute", "name": "sport", "op": "eq", "value": "running"}]
        },
    )
    assert segment_sizes_record() == 1
    make_customer("dan", attributes={"sport": "running"})
    segment_sizes_record()  # the same day again: replaced, not added
    (size,) = SegmentSize.objects.all()
    assert (size.size, size.day) == (3, timezone.now().date())
    assert size.reachable["email"] == 3


def test_the_admin_counts_while_editing_and_says_problems_at_the_row(client, people):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.login(username="boss", password="pw")
    url = "/admin/segments/segment/count/"
    tree = {"all": [{"type": "attribute", "name": "sport", "op": "eq", "value": "running"}]}
    answer = client.post(url, json.dumps({"conditions": tree}), content_type="application/json")
    body = answer.json()
    assert (body["size"], body["problems"]) == (2, [])
    assert body["sample"][0]["url"].startswith("/admin/audience/customer/")
    tree["all"].append({"type": "event", "name": "", "op": "happened"})
    body = client.post(
        url, json.dumps({"conditions": tree}), content_type="application/json"
    ).json()
    assert body["problems"] == [
        {"path": "conditions.all.1", "message": "Name the event (e.g. order.completed)."}
    ]
    assert client.post(url, "{nope", content_type="application/json").status_code == 400


def test_the_segment_page_shows_the_size_chart(client, people):
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.login(username="boss", password="pw")
    segment, _ = segment_save(key="all", name="Everyone", conditions={"all": []})
    segment_sizes_record()
    page = client.get(f"/admin/segments/segment/{segment.pk}/change/")
    assert page.status_code == 200
    assert b"<svg" in page.content and b"Size of Everyone by day" in page.content


def test_event_recorded_through_the_service_counts(people):
    ann = people[0]
    event_record(customer=ann.external_id, name="app.opened", properties={})
    assert members({"type": "event", "name": "app.opened", "op": "happened", "within_days": 1}) == {
        "ann"
    }
