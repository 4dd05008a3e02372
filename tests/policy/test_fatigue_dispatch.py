"""The fatigue policy applied by the real dispatcher on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from orchestrator.consent.models import ChannelPreference
from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import FrequencyRule, Message, MessageEvent, MessageStatus
from tests.delivery.factories import make_customer, make_template, make_topic, queue


def daily_cap(limit=3, **kw):
    return FrequencyRule.objects.create(
        key=kw.pop("key", "daily"), name=f"{limit} a day", limit=limit, calendar="day", **kw
    )


def statuses(messages):
    ids = [m.id for m in messages]
    return list(Message.objects.filter(id__in=ids).order_by("id").values_list("status", flat=True))


@pytest.mark.django_db(transaction=True)
def test_cap_holds_when_two_dispatcher_processes_race(outbox):
    daily_cap(3)
    customer = make_customer(timezone="Asia/Tokyo")
    template = make_template(topic=make_topic())
    messages = [queue(customer, template) for _ in range(50)]

    connections.close_all()  # each child opens its own connection
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                for _round in range(5):
                    dispatcher.dispatch_due(batch_size=7)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for pid in children:
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    result = statuses(messages)
    assert result.count(MessageStatus.SENT) == 3
    assert result.count(MessageStatus.DEFERRED) == 47
    deferred = Message.objects.filter(customer=customer, status=MessageStatus.DEFERRED)
    local_midnight = timezone.now().astimezone(
        dt.timezone(dt.timedelta(hours=9))
    ).date() + dt.timedelta(days=1)
    for message in deferred:
        assert message.send_after.astimezone(
            dt.timezone(dt.timedelta(hours=9))
        ) == dt.datetime.combine(
            local_midnight, dt.time(0), tzinfo=dt.timezone(dt.timedelta(hours=9))
        )
        assert message.explanation[-1]["step"] == "policy"
        assert "at most 3 marketing messages per day" in message.explanation[-1]["reason"]
    assert (
        MessageEvent.objects.filter(
            message__customer=customer, status=MessageStatus.DEFERRED, code="rule:daily"
        ).count()
        == 47
    )


@pytest.mark.django_db
def test_deferred_messages_are_sent_when_the_window_opens(outbox):
    daily_cap(1)
    customer = make_customer()
    template = make_template(topic=make_topic())
    first, second = queue(customer, template), queue(customer, template)
    dispatcher.dispatch_due()
    assert statuses([first, second]) == ["sent", "deferred"]
    second.refresh_from_db()
    with time_machine.travel(second.send_after + dt.timedelta(seconds=1), tick=False):
        dispatcher.dispatch_due()
    assert statuses([first, second]) == ["sent", "sent"]


@pytest.mark.django_db
def test_quiet_hours_defer_marketing_in_the_customers_own_timezone(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(21), dt.time(8))
    tokyo = make_customer(timezone="Asia/Tokyo")
    london = make_customer(timezone="Europe/London")
    template = make_template(topic=make_topic())
    # 13:30 UTC: 22:30 in Tokyo (quiet), 13:30 in London (not).
    with time_machine.travel(dt.datetime(2026, 6, 1, 13, 30, tzinfo=dt.UTC), tick=False):
        held, free = queue(tokyo, template), queue(london, template)
        dispatcher.dispatch_due()
    assert statuses([held, free]) == ["deferred", "sent"]
    held.refresh_from_db()
    assert held.send_after == dt.datetime(2026, 6, 1, 23, 0, tzinfo=dt.UTC)  # 08:00 Tokyo
    assert "quiet hours 21:00-08:00 Asia/Tokyo" in held.explanation[-1]["reason"]


@pytest.mark.django_db
def test_transactional_goes_through_quiet_hours_and_caps(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(21), dt.time(8))
    daily_cap(1)
    customer = make_customer(timezone="Asia/Tokyo")
    receipts = make_template(topic=make_topic("orders", kind="transactional"))
    with time_machine.travel(dt.datetime(2026, 6, 1, 13, 30, tzinfo=dt.UTC), tick=False):
        sent = [queue(customer, receipts) for _ in range(3)]
        dispatcher.dispatch_due()
    assert statuses(sent) == ["sent"] * 3


@pytest.mark.django_db
def test_a_topic_can_make_transactional_wait_for_quiet_hours(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(21), dt.time(8))
    customer = make_customer(timezone="Asia/Tokyo")
    topic = make_topic("account-digest", kind="transactional", quiet_hours="respect")
    with time_machine.travel(dt.datetime(2026, 6, 1, 13, 30, tzinfo=dt.UTC), tick=False):
        message = queue(customer, make_template(topic=topic))
        dispatcher.dispatch_due()
    assert statuses([message]) == ["deferred"]


@pytest.mark.django_db
def test_higher_priority_wins_the_room_left_under_the_cap(outbox):
    daily_cap(2)
    customer = make_customer()
    template = make_template(topic=make_topic())
    low = queue(customer, template, priority=1)
    high = queue(customer, template, priority=9)
    mid = queue(customer, template, priority=5)
    dispatcher.dispatch_due()
    assert statuses([low, high, mid]) == ["deferred", "sent", "sent"]


@pytest.mark.django_db
def test_a_message_held_past_its_expiry_expires_instead_of_arriving_stale(outbox):
    daily_cap(1)
    customer = make_customer()
    template = make_template(topic=make_topic())
    # Midday: the next calendar day (when the cap frees up) is well past the hour it has.
    with time_machine.travel(dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC), tick=False):
        queue(customer, template)
        snow_day_offer = queue(
            customer, template, expires_at=timezone.now() + dt.timedelta(hours=1), priority=1
        )
        dispatcher.dispatch_due()
    snow_day_offer.refresh_from_db()
    assert snow_day_offer.status == MessageStatus.EXPIRED
    assert "expired" in snow_day_offer.explanation[-1]["reason"]


@pytest.mark.django_db
def test_drop_rule_suppresses_with_the_rule_named(outbox):
    daily_cap(1, action="drop", key="one-a-day")
    customer = make_customer()
    template = make_template(topic=make_topic())
    kept, dropped = queue(customer, template), queue(customer, template)
    dispatcher.dispatch_due()
    assert statuses([kept, dropped]) == ["sent", "suppressed"]
    assert MessageEvent.objects.get(message=dropped, status="suppressed").code == "rule:one-a-day"


@pytest.mark.django_db
def test_the_customers_own_weekly_limit_is_obeyed(outbox):
    customer = make_customer()
    ChannelPreference.objects.create(customer=customer, max_per_week=2)
    template = make_template(topic=make_topic())
    messages = [queue(customer, template) for _ in range(4)]
    dispatcher.dispatch_due()
    assert statuses(messages).count("sent") == 2
    held = Message.objects.filter(id__in=[m.id for m in messages], status="deferred").first()
    assert "your own limit" in held.explanation[-1]["reason"]
    assert held.explanation[-1]["details"]["rules"][0]["personal"] is True


@pytest.mark.django_db
def test_pause_holds_marketing_until_the_date(outbox):
    customer = make_customer()
    until = timezone.now() + dt.timedelta(days=14)
    ChannelPreference.objects.create(customer=customer, paused_until=until)
    message = queue(customer, make_template(topic=make_topic()))
    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.send_after) == ("deferred", until)


@pytest.mark.django_db
def test_every_send_records_the_rules_it_passed(outbox):
    daily_cap(3)
    customer = make_customer()
    message = queue(customer, make_template(topic=make_topic()))
    dispatcher.dispatch_due()
    message.refresh_from_db()
    policy_entry = next(e for e in message.explanation if e["step"] == "policy")
    assert policy_entry["decision"] == "sending"
    assert policy_entry["details"]["rules"][0] == {
        "rule": "3 a day",
        "rule_id": FrequencyRule.objects.get().id,
        "personal": False,
        "describe": "at most 3 marketing messages per day",
        "action": "defer",
        "ok": True,
        "count": 0,
        "window_start": policy_entry["details"]["rules"][0]["window_start"],
    }


@pytest.mark.django_db
def test_preferred_routes_around_a_channel_the_customer_opted_out_of(outbox):
    from orchestrator.consent.models import Subscription

    topic = make_topic(default_opt_in=True)
    customer = make_customer(line_user_id="U1234567890abcdef")
    ChannelPreference.objects.create(customer=customer, channel_order=["email", "line", "sms"])
    template = make_template(
        topic=topic,
        variants={
            ("email", "en"): {"subject": "Hi", "body": "email body"},
            ("line", "en"): {"body": "line body"},
        },
    )
    message = queue(customer, template, channel="preferred")
    assert message.channel == "email"  # first reachable when queued
    # The opt-out comes after the message was queued: the dispatcher routes around it.
    Subscription.objects.create(
        customer=customer, topic=topic, channel="email", status="unsubscribed"
    )
    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.channel, message.to_address) == (
        "sent",
        "line",
        "U1234567890abcdef",
    )
    assert [m.channel for m in outbox] == ["line"]


@pytest.mark.django_db
def test_preferred_routes_around_a_full_channel_cap(outbox):
    FrequencyRule.objects.create(
        key="sms-1", name="1 sms a day", limit=1, calendar="day", scope="channel", channel="sms"
    )
    customer = make_customer()
    ChannelPreference.objects.create(customer=customer, channel_order=["sms", "email"])
    template = make_template(topic=make_topic())
    first = queue(customer, template, channel="preferred")
    second = queue(customer, template, channel="preferred")
    dispatcher.dispatch_due()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.channel, second.channel) == ("sms", "email")
    assert statuses([first, second]) == ["sent", "sent"]
    assert (
        "instead of sms" in next(e for e in second.explanation if e["step"] == "policy")["reason"]
    )


@pytest.mark.django_db
def test_a_permanent_failure_moves_to_the_fallback_channel_once(settings):
    from channels.adapters import locmem
    from tests.delivery.factories import locmem_adapters

    customer = make_customer()
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"fail": {customer.phone: "permanent"}})
    locmem.clear()
    template = make_template(topic=make_topic(kind="transactional"))
    message = queue(customer, template, channel="sms", fallback_channel="email")
    dispatcher.dispatch_due()
    dispatcher.dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.channel, message.fallback_channel) == ("sent", "email", "")
    assert [m.channel for m in locmem.outbox] == ["email"]
    assert any(e["decision"] == "fallback" for e in message.explanation)
    locmem.clear()


@pytest.mark.django_db
def test_daily_cap_across_the_spring_forward_day_reopens_at_the_next_local_midnight(outbox):
    daily_cap(2)
    customer = make_customer(timezone="America/Chicago")
    template = make_template(topic=make_topic())
    # 2026-03-08 is the spring-forward day in Chicago: local midnight is 06:00 UTC (CST),
    # the next local midnight 05:00 UTC (CDT) - a 23-hour day.
    with time_machine.travel(dt.datetime(2026, 3, 8, 6, 30, tzinfo=dt.UTC), tick=False):
        messages = [queue(customer, template) for _ in range(3)]
        dispatcher.dispatch_due()
    assert statuses(messages) == ["sent", "sent", "deferred"]
    held = Message.objects.get(id=messages[2].id)
    assert held.send_after == dt.datetime(2026, 3, 9, 5, 0, tzinfo=dt.UTC)
    with time_machine.travel(dt.datetime(2026, 3, 9, 4, 59, tzinfo=dt.UTC), tick=False):
        dispatcher.dispatch_due()  # not due yet
    assert statuses(messages)[2] == "deferred"
    with time_machine.travel(dt.datetime(2026, 3, 9, 5, 0, 1, tzinfo=dt.UTC), tick=False):
        dispatcher.dispatch_due()
    assert statuses(messages) == ["sent", "sent", "sent"]


@pytest.mark.django_db
def test_quiet_hours_in_kolkata_end_at_0830_utc_offset_half_hour(outbox, settings):
    settings.QUIET_HOURS_DEFAULT = (dt.time(21), dt.time(8))
    customer = make_customer(timezone="Asia/Kolkata")
    with time_machine.travel(dt.datetime(2026, 6, 1, 17, 0, tzinfo=dt.UTC), tick=False):
        message = queue(customer, make_template(topic=make_topic()))  # 22:30 in Kolkata
        dispatcher.dispatch_due()
    message.refresh_from_db()
    assert message.send_after == dt.datetime(2026, 6, 2, 2, 30, tzinfo=dt.UTC)  # 08:00 IST


@pytest.mark.django_db(transaction=True)
def test_a_customer_being_decided_elsewhere_is_left_due_not_waited_for(outbox):
    from orchestrator.delivery import fatigue

    daily_cap(3)
    template = make_template(topic=make_topic())
    busy, free = make_customer(), make_customer()
    held = [queue(busy, template) for _ in range(2)]
    sent = [queue(free, template) for _ in range(2)]
    before = {m.id: Message.objects.get(id=m.id).explanation for m in held}

    other = connections.create_connection("default")  # another dispatcher, mid-decision
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [fatigue._LOCK_NAMESPACE + busy.id])
        stats = dispatcher.dispatch_batch()
        assert (stats.claimed, stats.busy, stats.sent) == (4, 2, 2)
        assert statuses(held) == ["queued", "queued"]
        assert {m.id: Message.objects.get(id=m.id).explanation for m in held} == before
        assert statuses(sent) == ["sent", "sent"]
        # While the other dispatcher holds on, a run keeps trying until its budget is spent.
        _stats, more = dispatcher.dispatch_due(time_budget=0.2)
        assert more is True
        assert statuses(held) == ["queued", "queued"]
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [fatigue._LOCK_NAMESPACE + busy.id])
    finally:
        other.close()
    _stats, more = dispatcher.dispatch_due()
    assert more is False
    assert statuses(held) == ["sent", "sent"]


@pytest.mark.django_db
def test_a_rule_for_all_messages_counts_transactional_sends(outbox):
    FrequencyRule.objects.create(
        key="hard", name="2 a day", limit=2, calendar="day", applies_to="all"
    )
    customer = make_customer()
    receipts = make_template(topic=make_topic("orders", kind="transactional"))
    news = make_template(topic=make_topic())
    with time_machine.travel(dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC), tick=False):
        first = [queue(customer, receipts), queue(customer, news)]
        dispatcher.dispatch_due()
    with time_machine.travel(dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC), tick=False):
        third = queue(customer, receipts)
        dispatcher.dispatch_due()
    assert statuses([*first, third]) == ["sent", "sent", "deferred"]


@pytest.mark.django_db
def test_a_marketing_rule_ignores_transactional_history_and_sees_its_whole_window(outbox):
    FrequencyRule.objects.create(
        key="weekly", name="1 a week", limit=1, window=dt.timedelta(days=7)
    )
    customer = make_customer()
    receipts = make_template(topic=make_topic("orders", kind="transactional"))
    news = make_template(topic=make_topic())
    with time_machine.travel(dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC), tick=False):
        receipt = queue(customer, receipts)
        dispatcher.dispatch_due()
    with time_machine.travel(dt.datetime(2026, 6, 2, 9, tzinfo=dt.UTC), tick=False):
        promo = queue(customer, news)
        dispatcher.dispatch_due()
    # Six days and 23 hours later the promotion still fills the rolling week.
    with time_machine.travel(dt.datetime(2026, 6, 9, 8, tzinfo=dt.UTC), tick=False):
        later = queue(customer, news)
        dispatcher.dispatch_due()
    assert statuses([receipt, promo, later]) == ["sent", "sent", "deferred"]
    later.refresh_from_db()
    assert later.send_after == dt.datetime(2026, 6, 9, 9, tzinfo=dt.UTC)
