"""The fatigue policy's decisions, as pure functions of rules, history and the clock."""

import datetime as dt
from zoneinfo import ZoneInfo

from orchestrator.delivery.policy import (
    DEFER,
    DROP,
    EXPIRE,
    SEND,
    Candidate,
    CustomerPolicy,
    Rule,
    Sent,
    calendar_bounds,
    decide,
    decide_for_customer,
    quiet_hours_end,
)

UTC = dt.UTC
TOKYO = ZoneInfo("Asia/Tokyo")
CHICAGO = ZoneInfo("America/Chicago")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(*args):
    return dt.datetime(*args, tzinfo=UTC)


def marketing(mid=1, **kw):
    return Candidate(
        message_id=mid, channel=kw.pop("channel", "email"), topic_id=1, marketing=True, **kw
    )


def sent(at, channel="email", topic_id=1, marketing=True, journey=""):
    return Sent(at, channel, topic_id, marketing, journey)


DAILY_3 = Rule(id=1, name="3 a day", limit=3, calendar="day")


def test_calendar_day_cap_defers_to_the_customers_local_midnight():
    # 10:00 in Tokyo on 2026-03-10 is 01:00 UTC; midnight Tokyo is 15:00 UTC the same day.
    now = utc(2026, 3, 10, 1, 0)
    history = [sent(utc(2026, 3, 9, 16, 0)), sent(utc(2026, 3, 9, 23)), sent(utc(2026, 3, 10, 0))]
    decision = decide(
        marketing(),
        history=history,
        rules=[DAILY_3],
        customer=CustomerPolicy(timezone="Asia/Tokyo"),
        now=now,
    )
    assert decision.action == DEFER
    assert decision.send_after == utc(2026, 3, 10, 15, 0)
    assert decision.rule_id == 1
    assert decision.trail[0]["count"] == 3


def test_sends_from_the_previous_local_day_do_not_count():
    now = utc(2026, 3, 10, 1, 0)  # 10:00 Tokyo
    history = [sent(utc(2026, 3, 9, 14, 0))] * 3  # 23:00 Tokyo the day before
    decision = decide(
        marketing(),
        history=history,
        rules=[DAILY_3],
        customer=CustomerPolicy(timezone="Asia/Tokyo"),
        now=now,
    )
    assert decision.action == SEND


def test_calendar_day_across_spring_forward_is_23_hours_long():
    start, end = calendar_bounds(utc(2026, 3, 8, 12), "day", CHICAGO)
    assert end - start == dt.timedelta(hours=23)
    assert start == utc(2026, 3, 8, 6)  # CST midnight
    assert end == utc(2026, 3, 9, 5)  # CDT midnight


def test_calendar_day_across_fall_back_is_25_hours_long():
    start, end = calendar_bounds(utc(2026, 11, 1, 12), "day", CHICAGO)
    assert end - start == dt.timedelta(hours=25)


def test_cap_across_dst_defers_to_the_real_next_local_midnight():
    now = utc(2026, 3, 8, 20)  # 15:00 CDT on the spring-forward day
    history = [sent(utc(2026, 3, 8, 7)), sent(utc(2026, 3, 8, 9)), sent(utc(2026, 3, 8, 15))]
    decision = decide(
        marketing(),
        history=history,
        rules=[DAILY_3],
        customer=CustomerPolicy(timezone="America/Chicago"),
        now=now,
    )
    assert decision.send_after == utc(2026, 3, 9, 5)


def test_calendar_week_starts_on_local_monday():
    start, end = calendar_bounds(utc(2026, 11, 25, 12), "week", TOKYO)  # a Wednesday
    assert start.astimezone(TOKYO).date() == dt.date(2026, 11, 23)
    assert end - start == dt.timedelta(days=7)


def test_calendar_month_bounds():
    start, end = calendar_bounds(utc(2026, 12, 31, 20), "month", TOKYO)  # Jan 1 in Tokyo
    assert start.astimezone(TOKYO).date() == dt.date(2027, 1, 1)
    assert end.astimezone(TOKYO).date() == dt.date(2027, 2, 1)


def test_rolling_window_defers_until_the_oldest_send_ages_out():
    rule = Rule(id=2, name="2 per 24h", limit=2, window=dt.timedelta(hours=24))
    now = utc(2026, 5, 1, 12)
    history = [sent(utc(2026, 4, 30, 18)), sent(utc(2026, 5, 1, 6))]
    decision = decide(
        marketing(), history=history, rules=[rule], customer=CustomerPolicy(), now=now
    )
    assert decision.action == DEFER
    assert decision.send_after == utc(2026, 5, 1, 18)


def test_minimum_gap_between_marketing_messages():
    gap = Rule(id=3, name="4h gap", limit=1, kind="gap", window=dt.timedelta(hours=4))
    now = utc(2026, 5, 1, 12)
    decision = decide(
        marketing(),
        history=[sent(utc(2026, 5, 1, 10))],
        rules=[gap],
        customer=CustomerPolicy(),
        now=now,
    )
    assert decision.action == DEFER
    assert decision.send_after == utc(2026, 5, 1, 14)
    assert "4 hours" in decision.reason


def test_transactional_is_exempt_from_marketing_rules():
    txn = Candidate(message_id=1, channel="sms", topic_id=9, marketing=False)
    history = [sent(utc(2026, 5, 1, h)) for h in (1, 2, 3)]
    decision = decide(
        txn,
        history=history,
        rules=[DAILY_3],
        customer=CustomerPolicy(),
        now=utc(2026, 5, 1, 12),
        default_quiet_hours=(dt.time(21), dt.time(8)),
    )
    assert decision.action == SEND


def test_a_rule_for_all_messages_binds_transactional_too():
    rule = Rule(id=4, name="hard 3/day", limit=3, calendar="day", applies_to="all")
    txn = Candidate(message_id=1, channel="sms", topic_id=9, marketing=False)
    history = [sent(utc(2026, 5, 1, h), marketing=False) for h in (1, 2, 3)]
    decision = decide(
        txn, history=history, rules=[rule], customer=CustomerPolicy(), now=utc(2026, 5, 1, 12)
    )
    assert decision.action == DEFER


def test_channel_scoped_rule_counts_only_that_channel():
    rule = Rule(id=5, name="1 sms/day", limit=1, calendar="day", scope="channel", channel="sms")
    history = [sent(utc(2026, 5, 1, 1), channel="email")]
    now = utc(2026, 5, 1, 12)
    assert (
        decide(
            marketing(channel="sms"),
            history=history,
            rules=[rule],
            customer=CustomerPolicy(),
            now=now,
        ).action
        == SEND
    )
    history.append(sent(utc(2026, 5, 1, 2), channel="sms"))
    assert (
        decide(
            marketing(channel="sms"),
            history=history,
            rules=[rule],
            customer=CustomerPolicy(),
            now=now,
        ).action
        == DEFER
    )
    assert (
        decide(
            marketing(channel="email"),
            history=history,
            rules=[rule],
            customer=CustomerPolicy(),
            now=now,
        ).action
        == SEND
    )


def test_drop_rule_drops_instead_of_deferring():
    rule = Rule(id=6, name="drop over 1", limit=1, calendar="day", action="drop")
    decision = decide(
        marketing(),
        history=[sent(utc(2026, 5, 1, 1))],
        rules=[rule],
        customer=CustomerPolicy(),
        now=utc(2026, 5, 1, 12),
    )
    assert decision.action == DROP
    assert decision.rule_id == 6


def test_quiet_hours_defer_marketing_to_the_local_morning():
    # 22:30 in Tokyo is 13:30 UTC; 08:00 next morning in Tokyo is 23:00 UTC.
    decision = decide(
        marketing(),
        history=[],
        rules=[],
        customer=CustomerPolicy(timezone="Asia/Tokyo"),
        now=utc(2026, 5, 1, 13, 30),
        default_quiet_hours=(dt.time(21), dt.time(8)),
    )
    assert decision.action == DEFER
    assert decision.send_after == utc(2026, 5, 1, 23, 0)
    assert "quiet hours" in decision.reason


def test_quiet_hours_with_a_half_hour_offset():
    # Kolkata is UTC+5:30: 02:00 local is 20:30 UTC the day before; 08:00 local is 02:30 UTC.
    end = quiet_hours_end(utc(2026, 5, 1, 20, 30), dt.time(21), dt.time(8), KOLKATA)
    assert end == utc(2026, 5, 2, 2, 30)
    assert quiet_hours_end(utc(2026, 5, 2, 3, 0), dt.time(21), dt.time(8), KOLKATA) is None


def test_customer_quiet_hours_override_the_default():
    customer = CustomerPolicy(timezone="UTC", quiet_start=dt.time(12), quiet_end=dt.time(13))
    decision = decide(
        marketing(),
        history=[],
        rules=[],
        customer=customer,
        now=utc(2026, 5, 1, 12, 15),
        default_quiet_hours=(dt.time(21), dt.time(8)),
    )
    assert decision.send_after == utc(2026, 5, 1, 13)


def test_pause_holds_marketing_until_it_ends():
    until = utc(2026, 6, 1, 9)
    decision = decide(
        marketing(),
        history=[],
        rules=[],
        customer=CustomerPolicy(paused_until=until),
        now=utc(2026, 5, 1),
    )
    assert (decision.action, decision.send_after) == (DEFER, until)


def test_deferral_past_expiry_expires_instead():
    decision = decide(
        marketing(expires_at=utc(2026, 5, 1, 18)),
        history=[],
        rules=[],
        customer=CustomerPolicy(timezone="Asia/Tokyo"),
        now=utc(2026, 5, 1, 13, 30),
        default_quiet_hours=(dt.time(21), dt.time(8)),
    )
    assert decision.action == EXPIRE


def test_a_deferral_out_of_quiet_hours_is_pushed_again_by_a_full_window():
    # Quiet until 08:00 UTC; a 4 h gap since 06:00 pushes the send to 10:00.
    gap = Rule(id=7, name="gap", limit=1, kind="gap", window=dt.timedelta(hours=4))
    decision = decide(
        marketing(),
        history=[sent(utc(2026, 5, 1, 6))],
        rules=[gap],
        customer=CustomerPolicy(),
        now=utc(2026, 5, 1, 7),
        default_quiet_hours=(dt.time(21), dt.time(8)),
    )
    assert decision.send_after == utc(2026, 5, 1, 10)


def test_higher_priority_takes_the_room_left_under_a_cap():
    candidates = [marketing(mid=i, priority=p) for i, p in ((1, 2), (2, 9), (3, 5), (4, 7))]
    history = [sent(utc(2026, 5, 1, 1))]
    decisions = decide_for_customer(
        candidates,
        history=history,
        rules=[DAILY_3],
        customer=CustomerPolicy(),
        now=utc(2026, 5, 1, 12),
    )
    sent_ids = {m for m, d in decisions.items() if d.action == SEND}
    assert sent_ids == {2, 4}
    assert decisions[1].action == decisions[3].action == DEFER


def test_personal_weekly_cap_is_obeyed():
    personal = Rule(id=None, name="your limit", limit=2, calendar="week", personal=True)
    history = [sent(utc(2026, 11, 23, 1)), sent(utc(2026, 11, 24, 1))]
    decision = decide(
        marketing(),
        history=history,
        rules=[],
        customer=CustomerPolicy(personal_rules=(personal,)),
        now=utc(2026, 11, 25, 12),
    )
    assert decision.action == DEFER
    assert decision.send_after == utc(2026, 11, 30)
    assert decision.trail[0]["personal"] is True


def test_preferred_channel_moves_to_the_next_channel_with_room():
    sms_cap = Rule(id=8, name="1 sms/day", limit=1, calendar="day", scope="channel", channel="sms")
    candidate = marketing(channel="sms", alternatives=("line", "email"))
    decisions = decide_for_customer(
        [candidate],
        history=[sent(utc(2026, 5, 1, 1), "sms")],
        rules=[sms_cap],
        customer=CustomerPolicy(),
        now=utc(2026, 5, 1, 12),
    )
    decision = decisions[1]
    assert (decision.action, decision.channel) == (SEND, "line")
    assert "instead of sms" in decision.reason


def test_preferred_channel_does_not_escape_a_global_cap():
    candidate = marketing(channel="sms", alternatives=("line", "email"))
    history = [sent(utc(2026, 5, 1, h)) for h in (1, 2, 3)]
    decision = decide_for_customer(
        [candidate],
        history=history,
        rules=[DAILY_3],
        customer=CustomerPolicy(),
        now=utc(2026, 5, 1, 12),
    )[1]
    assert (decision.action, decision.channel) == (DEFER, "sms")


def test_with_nothing_to_judge_every_message_goes_with_the_same_reason_as_a_full_decision():
    candidates = [marketing(mid=1, channel="sms"), marketing(mid=2, priority=9)]
    fast = decide_for_customer(
        candidates, history=[], rules=[], customer=CustomerPolicy(), now=utc(2026, 5, 1, 12)
    )
    assert {m: (d.action, d.channel, d.trail) for m, d in fast.items()} == {
        1: (SEND, "sms", []),
        2: (SEND, "email", []),
    }
    # The same answer the full path gives.
    assert (
        fast[1].reason
        == decide(
            candidates[0], history=[], rules=[], customer=CustomerPolicy(), now=utc(2026, 5, 1, 12)
        ).reason
    )
    # A pause in the future is something to judge: held, not sent.
    paused = CustomerPolicy(paused_until=utc(2026, 5, 3))
    held = decide_for_customer(
        candidates, history=[], rules=[], customer=paused, now=utc(2026, 5, 1, 12)
    )
    assert {d.action for d in held.values()} == {DEFER}
