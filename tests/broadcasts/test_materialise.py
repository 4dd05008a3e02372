"""Broadcasts: the audience frozen in one statement, its copies expanded into the outbox
as they come due; local times, rate, idempotence, the dispatcher's policy at send time,
priority, cancel, the deadline, A/B, progress and results."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from orchestrator.broadcasts import materialise as mat
from orchestrator.broadcasts import services
from orchestrator.broadcasts.forecast import broadcast_forecast
from orchestrator.broadcasts.materialise import expand, freeze
from orchestrator.broadcasts.models import Broadcast, Recipient
from orchestrator.broadcasts.selectors import (
    broadcast_preview,
    broadcast_progress,
    broadcast_results,
)
from orchestrator.broadcasts.services import (
    BroadcastInvalid,
    broadcast_cancel,
    broadcast_save,
    broadcast_schedule,
    broadcast_test_send,
    broadcasts_sweep,
)
from orchestrator.consent.channel_consent import topic_subscription_set
from orchestrator.delivery.dispatcher import dispatch_due
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from orchestrator.privacy.services import customer_erase, customer_export
from tests.delivery.factories import make_customer, make_template, make_topic, queue

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)  # a Wednesday


@pytest.fixture
def news():
    topic = make_topic("newsletter", default_opt_in=False)
    template = make_template("weekly", topic=topic)
    return topic, template


def _subscribe(customer, topic, channel="email"):
    topic_subscription_set(
        customer_id=customer.id,
        topic_id=topic.id,
        channel=channel,
        subscribed=True,
        source="admin",
        evidence={"test": True},
    )


def materialise(broadcast):
    """Freeze the audience and expand every copy due by now (or within the look-ahead);
    returns how many recipients were frozen."""
    frozen = freeze(broadcast)
    while expand(broadcast, limit=1000).more:
        pass
    return frozen


def _broadcast(topic, template, **fields):
    broadcast, _ = broadcast_save(
        key=fields.pop("key", "friday"),
        fields={"name": "Friday", "template": template, "topic": topic, **fields},
    )
    return broadcast


@time_machine.travel(NOW, tick=False)
def test_local_time_send_reaches_each_customer_at_nine_in_their_own_zone(news):
    topic, template = news
    tokyo = make_customer("tokyo", timezone="Asia/Tokyo")
    new_york = make_customer("ny", timezone="America/New_York")
    for c in (tokyo, new_york):
        _subscribe(c, topic)
    broadcast = _broadcast(
        topic,
        template,
        schedule="local_time",
        local_date=dt.date(2026, 12, 11),
        local_time=dt.time(9, 0),
    )
    broadcast_schedule(broadcast=broadcast)
    # Due when 09:00 first comes anywhere (UTC+14), not before.
    assert broadcast.due_at == dt.datetime(2026, 12, 10, 19, 0, tzinfo=dt.UTC)
    assert broadcasts_sweep()["materialised"] == 0
    with time_machine.travel(broadcast.due_at, tick=False):
        stats = broadcasts_sweep()
    # The audience is frozen with each one's send time; nothing is in the outbox yet.
    assert (stats["recipients"], stats["messages"]) == (2, 0)
    frozen = dict(Recipient.objects.values_list("customer_id", "send_at"))
    assert frozen == {
        tokyo.id: dt.datetime(2026, 12, 11, 0, 0, tzinfo=dt.UTC),  # 09:00 JST
        new_york.id: dt.datetime(2026, 12, 11, 14, 0, tzinfo=dt.UTC),  # 09:00 EST
    }
    broadcast.refresh_from_db()
    progress = broadcast_progress(broadcast)
    assert (progress.total, progress.pending, progress.waiting) == (2, 2, 2)
    # A few minutes before 09:00 in Tokyo its copy enters the outbox; New York's waits.
    with time_machine.travel(dt.datetime(2026, 12, 10, 23, 56, tzinfo=dt.UTC), tick=False):
        assert broadcasts_sweep()["messages"] == 1
    assert Message.objects.get().customer_id == tokyo.id
    with time_machine.travel(dt.datetime(2026, 12, 11, 13, 59, tzinfo=dt.UTC), tick=False):
        assert broadcasts_sweep()["messages"] == 1
    assert not Recipient.objects.exists()
    sends = dict(Message.objects.values_list("customer__external_id", "send_after"))
    assert sends["tokyo"] == dt.datetime(2026, 12, 11, 0, 0, tzinfo=dt.UTC)
    assert sends["ny"] == dt.datetime(2026, 12, 11, 14, 0, tzinfo=dt.UTC)
    message = Message.objects.get(customer=tokyo)
    assert message.status == MessageStatus.SCHEDULED
    assert (message.broadcast_id, message.source, message.priority) == (
        broadcast.id,
        "broadcast",
        1,
    )
    assert message.explanation[0]["details"]["broadcast"] == "friday"
    assert list(message.history.values_list("status", flat=True)) == ["scheduled"]


@time_machine.travel(NOW, tick=False)
def test_rerun_never_doubles_and_only_subscribers_with_an_address_get_it(news):
    topic, template = news
    subscribed = [make_customer(f"s{i}") for i in range(3)]
    for c in subscribed:
        _subscribe(c, topic)
    make_customer("not-subscribed")
    no_address = make_customer("no-address", email="", phone="")
    _subscribe(no_address, topic)
    broadcast = _broadcast(topic, template, channel="email")
    assert materialise(broadcast) == 3
    assert materialise(broadcast) == 0
    assert Message.objects.filter(broadcast_id=broadcast.id).count() == 3
    assert MessageEvent.objects.filter(message__broadcast_id=broadcast.id).count() == 3


@time_machine.travel(NOW, tick=False)
def test_rate_limit_spreads_send_times_by_minute(news):
    topic, template = news
    for i in range(5):
        _subscribe(make_customer(f"r{i}"), topic)
    broadcast = _broadcast(topic, template, rate_per_minute=2)
    materialise(broadcast)
    times = sorted(Message.objects.values_list("send_after", flat=True))
    assert times == [NOW, NOW, NOW + dt.timedelta(minutes=1), NOW + dt.timedelta(minutes=1),
                     NOW + dt.timedelta(minutes=2)]  # fmt: skip


@time_machine.travel(NOW, tick=False)
def test_deadline_expires_copies_not_sent_and_skips_those_due_after_it(news):
    topic, template = news
    early = make_customer("tokyo", timezone="Asia/Tokyo")
    late = make_customer("la", timezone="America/Los_Angeles")
    for c in (early, late):
        _subscribe(c, topic)
    broadcast = _broadcast(
        topic,
        template,
        schedule="local_time",
        local_date=dt.date(2026, 12, 10),
        local_time=dt.time(9, 0),
        expires_at=dt.datetime(2026, 12, 10, 6, 0, tzinfo=dt.UTC),
    )
    # Due after the deadline: LA is not in the frozen audience at all.
    assert freeze(broadcast) == 1
    assert list(Recipient.objects.values_list("customer_id", flat=True)) == [early.id]
    with time_machine.travel(dt.datetime(2026, 12, 9, 23, 57, tzinfo=dt.UTC), tick=False):
        assert expand(broadcast).written == 1
    message = Message.objects.get()
    assert message.customer_id == early.id
    assert message.expires_at == broadcast.expires_at


@time_machine.travel(NOW, tick=False)
def test_copies_still_pending_at_the_deadline_expire_with_their_cause(news, monkeypatch):
    topic, template = news
    customers = [make_customer(f"d{i}") for i in range(3)]
    for c in customers:
        _subscribe(c, topic)
    broadcast = _broadcast(topic, template, expires_at=NOW + dt.timedelta(hours=1))
    broadcast_schedule(broadcast=broadcast)
    # The outbox is full of broadcast copies the dispatcher has not sent: held back.
    monkeypatch.setattr(services, "OUTBOX_HIGH_WATER", 0)
    stats = broadcasts_sweep()
    assert (stats["recipients"], stats["messages"]) == (3, 0)
    assert services.broadcasts_expand()["held_back"] == 1
    with time_machine.travel(NOW + dt.timedelta(hours=1), tick=False):
        assert broadcasts_sweep()["messages"] == 3
    for message in Message.objects.all():
        assert message.status == MessageStatus.EXPIRED
        assert "deadline" in message.explanation[0]["reason"]
        assert list(message.history.values_list("status", "code")) == [("expired", "expired")]
    broadcast.refresh_from_db()
    progress = broadcast_progress(broadcast)
    assert (progress.expired, progress.pending, progress.held) == (3, 0, {"expired": 3})
    with time_machine.travel(NOW + dt.timedelta(hours=1), tick=False):
        assert broadcasts_sweep()["finished"] == 1


@time_machine.travel(NOW, tick=False)
def test_the_outbox_is_topped_up_a_slice_at_a_time_under_the_high_water_mark(
    news, monkeypatch, outbox
):
    topic, template = news
    for i in range(7):
        _subscribe(make_customer(f"h{i}"), topic)
    broadcast = _broadcast(topic, template, channel="email", data={"item": "news"})
    monkeypatch.setattr(mat, "SLICE", 2)
    monkeypatch.setattr(services, "OUTBOX_HIGH_WATER", 3)
    broadcast_schedule(broadcast=broadcast)
    assert broadcasts_sweep()["messages"] == 2  # one slice
    assert services.broadcasts_expand()["messages"] == 1  # up to the mark
    assert services.broadcasts_expand()["held_back"] == 1
    broadcast.refresh_from_db()
    progress = broadcast_progress(broadcast)
    assert (progress.pending, progress.waiting, progress.total) == (4, 7, 7)
    assert [v.messages for v in broadcast_results(broadcast).variants] == [7]
    dispatch_due(batch_size=10)  # the dispatcher drains it; the expansion tops it up
    assert services.broadcasts_expand()["messages"] == 2
    dispatch_due(batch_size=10)
    assert services.broadcasts_expand()["messages"] == 2
    dispatch_due(batch_size=10)
    assert len(outbox) == 7
    assert broadcasts_sweep()["finished"] == 1


@time_machine.travel(NOW, tick=False)
def test_dispatcher_applies_consent_at_send_time_and_sends_transactional_first(news, outbox):
    topic, template = news
    stays = make_customer("stays")
    leaves = make_customer("leaves")
    for c in (stays, leaves):
        _subscribe(c, topic)
    broadcast = _broadcast(topic, template, channel="email", data={"item": "news"})
    broadcast_schedule(broadcast=broadcast)
    broadcasts_sweep()
    # Opted out after the broadcast was materialised: the dispatcher honours it.
    topic_subscription_set(
        customer_id=leaves.id, topic_id=topic.id, channel="email", subscribed=False,
        source="admin", evidence={},
    )  # fmt: skip
    receipts = make_topic("receipts", kind="transactional")
    transactional = queue(stays, make_template("receipt", topic=receipts), channel="email")
    dispatch_due(batch_size=1)
    assert outbox[0].message_id == transactional.id  # claimed first despite queued later
    assert Message.objects.get(customer=leaves, broadcast_id=broadcast.id).status == "suppressed"
    progress = broadcast_progress(broadcast)
    assert progress.sent == 1
    assert progress.suppressed == 1
    assert progress.held == {"consent:unsubscribed": 1} or set(progress.held) <= {
        "consent",
        "consent:unsubscribed",
    }
    broadcasts_sweep()
    broadcast.refresh_from_db()
    assert broadcast.status == Broadcast.Status.SENT


@time_machine.travel(NOW, tick=False)
def test_cancel_stops_what_has_not_gone(news):
    topic, template = news
    for i in range(3):
        _subscribe(make_customer(f"c{i}"), topic)
    broadcast = _broadcast(topic, template, send_at=NOW + dt.timedelta(hours=2), schedule="at")
    broadcast_schedule(broadcast=broadcast)
    with time_machine.travel(NOW + dt.timedelta(hours=2), tick=False):
        broadcasts_sweep()
    assert broadcast_cancel(broadcast=broadcast) == 3
    assert set(Message.objects.values_list("status", flat=True)) == {"canceled"}
    broadcast.refresh_from_db()
    assert broadcast.status == "canceled"
    assert broadcast_progress(broadcast).canceled == 3


@time_machine.travel(NOW, tick=False)
def test_cancel_drops_recipients_not_yet_in_the_outbox(news):
    topic, template = news
    for i in range(3):
        _subscribe(make_customer(f"p{i}", timezone="America/New_York"), topic)
    broadcast = _broadcast(
        topic, template, schedule="local_time", local_date=dt.date(2026, 12, 10),
        local_time=dt.time(9, 0),
    )  # fmt: skip
    broadcast_schedule(broadcast=broadcast)
    with time_machine.travel(broadcast.due_at, tick=False):
        assert broadcasts_sweep()["recipients"] == 3
    assert broadcast_cancel(broadcast=broadcast) == 3
    assert not Recipient.objects.exists() and not Message.objects.exists()
    broadcast.refresh_from_db()
    progress = broadcast_progress(broadcast)
    assert (progress.canceled, progress.pending, progress.total) == (3, 0, 3)
    # Nothing is expanded after the cancel, even when the time comes.
    with time_machine.travel(dt.datetime(2026, 12, 10, 14, 0, tzinfo=dt.UTC), tick=False):
        assert broadcasts_sweep()["messages"] == 0
    assert not Message.objects.exists()


@time_machine.travel(NOW, tick=False)
def test_erasure_deletes_pending_recipients_and_the_expansion_skips_a_deleted_customer(news):
    topic, template = news
    kept, erased, deleted = (
        make_customer(n, timezone="America/New_York") for n in ("kept", "erased", "deleted")
    )
    for c in (kept, erased, deleted):
        _subscribe(c, topic)
    broadcast = _broadcast(
        topic, template, schedule="local_time", local_date=dt.date(2026, 12, 10),
        local_time=dt.time(9, 0),
    )  # fmt: skip
    broadcast_schedule(broadcast=broadcast)
    with time_machine.travel(broadcast.due_at, tick=False):
        assert broadcasts_sweep()["recipients"] == 3
    # Their export names the broadcast they are due to get, copy not written yet.
    assert customer_export(customer=erased)["pending_broadcasts"] == [
        {"broadcast": broadcast.name, "due_at": "2026-12-10T14:00:00+00:00", "variant": None}
    ]
    summary = customer_erase(customer=erased, source="api")
    assert summary.deleted["broadcasts.Recipient"] == 1
    deleted.delete()  # no foreign key: the recipient row stays, the customer does not
    with time_machine.travel(dt.datetime(2026, 12, 10, 14, 0, tzinfo=dt.UTC), tick=False):
        assert broadcasts_sweep()["messages"] == 1
    assert list(Message.objects.values_list("customer_id", flat=True)) == [kept.id]
    assert not Recipient.objects.exists()


@time_machine.travel(NOW, tick=False)
def test_ab_test_sends_the_winner_by_clicks_to_the_rest(news):
    topic, template = news
    other = make_template("weekly-b", topic=topic)
    customers = [make_customer(f"ab{i}") for i in range(60)]
    for c in customers:
        _subscribe(c, topic)
    broadcast = _broadcast(
        topic, template, ab_share=50, ab_template=other, ab_wait=dt.timedelta(hours=1)
    )
    broadcast_schedule(broadcast=broadcast)
    broadcasts_sweep()
    test = Message.objects.filter(broadcast_id=broadcast.id)
    variants = set(test.values_list("broadcast_variant", flat=True))
    assert variants == {"a", "b"}
    in_test = test.count()
    assert 10 < in_test < 50
    # B's recipients click; A's do not.
    for m in test:
        Message.objects.filter(pk=m.pk).update(sent_at=NOW)
        if m.broadcast_variant == "b":
            MessageEvent.objects.create(message=m, status="clicked", occurred_at=NOW)
    assert broadcasts_sweep()["winners"] == 0  # the test still runs
    with time_machine.travel(NOW + dt.timedelta(hours=1), tick=False):
        assert broadcasts_sweep()["winners"] == 1
    broadcast.refresh_from_db()
    assert broadcast.ab_winner == "b"
    rest = Message.objects.filter(broadcast_id=broadcast.id, broadcast_variant="")
    assert rest.count() == 60 - in_test
    assert set(rest.values_list("template", flat=True)) == {other.id}
    results = broadcast_results(broadcast)
    assert results.total.messages == 60
    assert [v.variant for v in results.variants] == ["a", "b", ""]
    assert results.variants[1].clicks == results.variants[1].messages


@time_machine.travel(NOW, tick=False)
def test_scheduling_refuses_a_broadcast_that_cannot_be_sent(news):
    topic, template = news
    with pytest.raises(BroadcastInvalid) as exc:
        _broadcast(topic, template, channel="line")
    assert "channel" in exc.value.fields
    broadcast = _broadcast(topic, template, audience="segment", segment="nobody")
    with pytest.raises(BroadcastInvalid) as exc:
        broadcast_schedule(broadcast=broadcast)
    assert "segment" in exc.value.fields


@time_machine.travel(NOW, tick=False)
def test_forecast_counts_channels_and_holds_with_the_dispatchers_rules(news):
    topic, template = news
    emailable = [make_customer(f"e{i}") for i in range(4)]
    for c in emailable:
        _subscribe(c, topic)
    sms_only = make_customer("sms-only", email="")
    _subscribe(sms_only, topic, "sms")
    unsubscribed = make_customer("gone")
    _subscribe(unsubscribed, topic)
    topic_subscription_set(
        customer_id=unsubscribed.id, topic_id=topic.id, channel="email", subscribed=False,
        source="admin", evidence={},
    )  # fmt: skip
    _subscribe(unsubscribed, topic, "sms")
    broadcast = _broadcast(topic, template)
    forecast = broadcast_forecast(broadcast)
    assert forecast["audience"] == 6
    assert forecast["messages"] == {"email": 4, "sms": 2}
    assert Message.objects.count() == 0


@time_machine.travel(NOW, tick=False)
def test_preview_renders_each_variant_and_test_send_queues_for_named_customers(news):
    topic, template = news
    ann = make_customer("ann", attributes={"first_name": "Ann"})
    broadcast = _broadcast(
        topic, template, data={"item": "new shoes"}, ab_share=20, ab_kind="subject",
        ab_subject="Last chance, {{ customer.first_name }}",
    )  # fmt: skip
    previews = {(p.variant, p.channel): p for p in broadcast_preview(broadcast, ann)}
    assert previews[("a", "email")].subject == "Hello Ann"
    assert previews[("b", "email")].subject == "Last chance, Ann"
    assert previews[("a", "sms")].body == "Hi Ann: new shoes ready."
    sent = broadcast_test_send(broadcast=broadcast, customers=[ann])
    assert len(sent) == 2
    assert all(m.broadcast_id is None for m in sent)
    assert timezone.now() == NOW


@time_machine.travel(NOW, tick=False)
def test_a_customer_whose_address_went_since_the_freeze_is_recorded_not_dropped(news):
    topic, template = news
    stays, goes = make_customer("stays"), make_customer("goes")
    for c in (stays, goes):
        _subscribe(c, topic)
    broadcast = _broadcast(topic, template, channel="email", send_at=NOW, schedule="at")
    assert freeze(broadcast) == 2
    goes.email = ""
    goes.save(update_fields=["email"])
    assert expand(broadcast).written == 2
    message = Message.objects.get(customer=goes)
    assert message.status == MessageStatus.SUPPRESSED
    assert "no address" in message.explanation[0]["reason"]
    assert list(message.history.values_list("code", flat=True)) == ["consent:no_address"]
    assert Message.objects.get(customer=stays).status == MessageStatus.QUEUED
