"""The engine: every step kind, exits, goals, entry rules, versions, pause and races."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from journeys import engine
from journeys.enrollment import Candidate, enroll
from journeys.events import process_pending
from journeys.models import Enrollment, StepRun
from journeys.services import journey_pause, journey_save
from orchestrator.audience.models import Customer
from orchestrator.audience.services import event_record
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import make_template
from tests.journeys.conftest import make_customer, make_journey, send

pytestmark = pytest.mark.django_db


def run_until_idle(now: dt.datetime | None = None) -> engine.TickStats:
    total = engine.TickStats()
    while True:
        stats = engine.advance_batch(now=now)
        total.add(stats)
        if not stats.claimed:
            return total


def enroll_one(journey, customer, occurrence="t", **context) -> Enrollment:
    ids = enroll(journey, [Candidate(customer.id, occurrence, context)])
    assert ids, "not enrolled"
    return Enrollment.objects.get(id=ids[0])


def outcomes(enrollment: Enrollment) -> list[tuple[str, str]]:
    return list(
        StepRun.objects.filter(enrollment=enrollment).values_list("step", "outcome").order_by("id")
    )


def test_event_enrolls_and_the_send_step_queues_a_journey_message(template):
    journey = make_journey([send(channel="email")], priority=7)
    customer = make_customer("alex")

    event_record(customer="alex", name="order.completed", properties={"sku": "pegasus-41"})
    stats = process_pending()
    run_until_idle()

    assert stats.enrolled == 1
    enrollment = Enrollment.objects.get(journey=journey, customer=customer)
    assert enrollment.status == Enrollment.Status.COMPLETED
    assert enrollment.context["sku"] == "pegasus-41"
    message = Message.objects.get(enrollment_id=enrollment.id)
    assert (message.journey, message.priority, message.channel) == (journey.key, 7, "email")
    assert message.source == Message.Source.JOURNEY
    assert message.data["sku"] == "pegasus-41"
    assert outcomes(enrollment) == [("send", "queued")]


def test_an_event_filter_decides_who_enters(template):
    make_journey(
        [send()],
        trigger={
            "kind": "event",
            "event": "weather.changed",
            "filter": [{"type": "property", "name": "condition", "op": "eq", "value": "snow"}],
        },
    )
    make_customer("chicago")
    make_customer("miami")
    event_record(customer="chicago", name="weather.changed", properties={"condition": "Snow"})
    event_record(customer="miami", name="weather.changed", properties={"condition": "sun"})

    assert process_pending().enrolled == 1
    assert list(Enrollment.objects.values_list("customer__external_id", flat=True)) == ["chicago"]


def test_events_from_long_ago_do_not_enroll(template):
    make_journey([send()])
    make_customer("late")
    event_record(
        customer="late", name="order.completed", occurred_at=timezone.now() - dt.timedelta(days=3)
    )
    assert process_pending().enrolled == 0


def test_wait_holds_until_the_duration_passes(template):
    journey = make_journey(
        [{"key": "w", "kind": "wait", "next": "send", "config": {"minutes": 90}}, send()]
    )
    enrollment = enroll_one(journey, make_customer())

    run_until_idle()
    enrollment.refresh_from_db()
    assert enrollment.waiting and enrollment.step == "w"
    assert enrollment.due_at == pytest.approx(
        timezone.now() + dt.timedelta(minutes=90), abs=dt.timedelta(seconds=5)
    )
    assert not Message.objects.exists()

    run_until_idle(now=timezone.now() + dt.timedelta(minutes=91))
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED
    assert Message.objects.filter(enrollment_id=enrollment.id).count() == 1


def test_wait_until_a_time_of_day_uses_the_customers_own_clock(template):
    journey = make_journey(
        [
            {
                "key": "w",
                "kind": "wait",
                "next": "send",
                "config": {"mode": "time_of_day", "time": "09:00"},
            },
            send(),
        ]
    )
    tokyo = make_customer(timezone="Asia/Tokyo")
    chicago = make_customer(timezone="America/Chicago")
    # 2026-11-23 22:00 UTC is 07:00 on the 24th in Tokyo and 16:00 on the 23rd in Chicago.
    now = dt.datetime(2026, 11, 23, 22, 0, tzinfo=dt.UTC)
    with time_machine.travel(now, tick=False):
        a = enroll_one(journey, tokyo)
        b = enroll_one(journey, chicago)
        run_until_idle(now=now)
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.due_at == dt.datetime(2026, 11, 24, 0, 0, tzinfo=dt.UTC)  # 09:00 JST
    assert b.due_at == dt.datetime(2026, 11, 24, 15, 0, tzinfo=dt.UTC)  # 09:00 CST


def test_wait_until_a_date_attribute_minus_an_offset(template):
    journey = make_journey(
        [
            {
                "key": "w",
                "kind": "wait",
                "next": "send",
                "config": {
                    "mode": "until_date",
                    "attribute": "appointment_at",
                    "offset_minutes": -120,
                },
            },
            send(),
        ]
    )
    soon = make_customer(attributes={"appointment_at": "2030-01-10T10:00:00+09:00"})
    undated = make_customer(attributes={"appointment_at": "next tuesday"})
    a = enroll_one(journey, soon)
    b = enroll_one(journey, undated)
    run_until_idle()
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.due_at == dt.datetime(2030, 1, 10, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    # No usable date: the wait is skipped (and logged), never an error.
    assert b.status == Enrollment.Status.COMPLETED
    assert outcomes(b)[0] == ("w", "no date")


def _wait_for_reply_journey():
    return make_journey(
        [
            send("ask", next="reply"),
            {
                "key": "reply",
                "kind": "wait_for_event",
                "next": "thanks",
                "alt_next": "nudge",
                "config": {"event": "message.replied", "timeout_minutes": 60 * 24},
            },
            send("thanks"),
            send("nudge"),
        ],
        entry={"rule": "every_time"},
    )


def test_wait_for_event_takes_the_event_exit_when_it_happens(template):
    journey = _wait_for_reply_journey()
    customer = make_customer("patient")
    enrollment = enroll_one(journey, customer)
    run_until_idle()
    enrollment.refresh_from_db()
    assert enrollment.waiting_for == "message.replied"

    event_record(customer="patient", name="message.replied", properties={"body": "1"})
    assert process_pending().resumed == 1
    run_until_idle()

    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED
    assert [s for s, _ in outcomes(enrollment)] == ["ask", "reply", "reply", "thanks"]
    assert outcomes(enrollment)[2] == ("reply", "event")


def test_wait_for_event_takes_the_timeout_exit_otherwise(template):
    journey = _wait_for_reply_journey()
    enrollment = enroll_one(journey, make_customer())
    run_until_idle()
    run_until_idle(now=timezone.now() + dt.timedelta(days=1, minutes=1))
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED
    assert outcomes(enrollment)[-2:] == [("reply", "timeout"), ("nudge", "queued")]


def _branch(conditions, match="all"):
    return {
        "key": "b",
        "kind": "branch",
        "next": "yes",
        "alt_next": "no",
        "config": {"conditions": conditions, "match": match},
    }


@pytest.mark.parametrize(
    ("condition", "attributes", "expected"),
    [
        (
            {"type": "attribute", "name": "city", "op": "eq", "value": "chicago"},
            {"city": "Chicago"},
            "yes",
        ),
        ({"type": "attribute", "name": "km", "op": "gte", "value": 500}, {"km": "612"}, "yes"),
        ({"type": "attribute", "name": "km", "op": "gte", "value": 500}, {"km": 120}, "no"),
        ({"type": "attribute", "name": "km", "op": "gte", "value": 500}, {}, "no"),
        ({"type": "attribute", "name": "vip", "op": "exists"}, {"vip": True}, "yes"),
        ({"type": "property", "name": "sku", "op": "in", "value": ["a", "b"]}, {}, "yes"),
    ],
)
def test_branch_on_attributes_and_context(template, condition, attributes, expected):
    journey = make_journey([_branch([condition]), send("yes"), send("no")])
    enrollment = enroll_one(journey, make_customer(attributes=attributes), sku="b")
    run_until_idle()
    assert outcomes(enrollment)[-1] == (expected, "queued")


def test_branch_on_event_history_and_last_message_status(template):
    journey = make_journey(
        [
            send("first", next="b"),
            _branch(
                [
                    {"type": "event", "name": "site.visited", "op": "happened", "within_hours": 24},
                    {"type": "last_message", "op": "in", "value": ["queued", "sent"]},
                ]
            ),
            send("yes"),
            send("no"),
        ]
    )
    visitor = make_customer("visitor")
    event_record(customer="visitor", name="site.visited")
    process_pending()
    a = enroll_one(journey, visitor)
    b = enroll_one(journey, make_customer())
    run_until_idle()
    assert outcomes(a)[-1] == ("yes", "queued")
    assert outcomes(b)[-1] == ("no", "queued")


def test_branch_on_reply_text_after_entering(template):
    journey = make_journey(
        [_branch([{"type": "reply", "op": "eq", "value": "1"}]), send("yes"), send("no")]
    )
    confirmer = make_customer("confirmer")
    a = enroll_one(journey, confirmer)
    # A full-width digit one, typed on a Japanese keyboard, counts as "1".
    event_record(customer="confirmer", name="message.replied", properties={"body": " \uff11 "})
    process_pending()
    run_until_idle()
    assert outcomes(a)[-1] == ("yes", "queued")


def test_split_sends_about_the_configured_share_to_arm_a_and_records_the_arm(template):
    journey = make_journey(
        [
            {"key": "ab", "kind": "split", "next": "a", "alt_next": "b", "config": {"percent": 30}},
            send("a"),
            send("b"),
        ]
    )
    customers = [make_customer() for _ in range(300)]
    enroll(journey, [Candidate(c.id, "t", {}) for c in customers])
    run_until_idle()
    arms = list(Enrollment.objects.filter(journey=journey).values_list("arm", flat=True))
    share = arms.count("A") / len(arms)
    assert 0.22 < share < 0.38, share
    assert set(arms) == {"A", "B"}
    a_sends = StepRun.objects.filter(journey=journey, step="a", outcome="queued").count()
    assert a_sends == arms.count("A")


def test_update_attribute_sets_a_value_or_copies_one_from_the_context(template):
    journey = make_journey(
        [
            {
                "key": "u1",
                "kind": "update_attribute",
                "next": "u2",
                "config": {"name": "stage", "value": "reminded"},
            },
            {
                "key": "u2",
                "kind": "update_attribute",
                "config": {"name": "last_sku", "from_context": "sku"},
            },
        ]
    )
    customer = make_customer(attributes={"first_name": "Alex"})
    enroll_one(journey, customer, sku="pegasus-41")
    run_until_idle()
    customer.refresh_from_db()
    assert customer.attributes == {
        "first_name": "Alex",
        "stage": "reminded",
        "last_sku": "pegasus-41",
    }


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    _Hook.received = []
    _Hook.status = 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook
    server.shutdown()


def test_webhook_step_posts_outside_the_transaction_and_moves_on(template, hook_server):
    url, hook = hook_server
    journey = make_journey(
        [
            {
                "key": "crm",
                "kind": "webhook",
                "next": "send",
                "config": {"url": url, "timeout_seconds": 2},
            },
            send(),
        ]
    )
    enrollment = enroll_one(journey, make_customer("hooked"), sku="x")
    run_until_idle()
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED
    assert hook.received[0]["customer"] == "hooked"
    assert hook.received[0]["context"] == {"sku": "x"}
    assert outcomes(enrollment)[0][:2] == ("crm", "ok")
    assert outcomes(enrollment)[-1] == ("send", "queued")


def test_a_failing_webhook_is_logged_and_the_journey_goes_on(template, hook_server):
    url, hook = hook_server
    hook.status = 503
    journey = make_journey(
        [{"key": "crm", "kind": "webhook", "next": "send", "config": {"url": url}}, send()]
    )
    enrollment = enroll_one(journey, make_customer())
    run_until_idle()
    run = StepRun.objects.get(enrollment=enrollment, step="crm")
    assert (run.outcome, run.detail["status"]) == ("failed", 503)
    assert outcomes(enrollment)[-1] == ("send", "queued")


def test_exit_step_ends_the_enrollment(template):
    journey = make_journey([{"key": "out", "kind": "exit", "label": "not eligible"}])
    enrollment = enroll_one(journey, make_customer())
    run_until_idle()
    enrollment.refresh_from_db()
    assert (enrollment.status, enrollment.exit_reason) == ("exited", "not eligible")


def test_exit_event_takes_the_customer_out_and_cancels_what_is_queued(template):
    journey = make_journey(
        [
            send("remind", channel="email", next="w"),
            {"key": "w", "kind": "wait", "config": {"minutes": 60}},
        ],
        exit_events=[{"event": "order.completed", "match": "sku"}],
        trigger={"kind": "manual"},
    )
    make_customer("buyer")
    enrollment = enroll_one(journey, Customer.objects.get(external_id="buyer"), sku="pegasus-41")
    run_until_idle()
    message = Message.objects.get(enrollment_id=enrollment.id)
    # Still waiting to go (e.g. deferred by quiet hours) when the customer buys.
    Message.objects.filter(id=message.id).update(
        status=MessageStatus.DEFERRED, send_after=timezone.now() + dt.timedelta(hours=8)
    )

    # A purchase of another product does not count; of this product it does.
    event_record(customer="buyer", name="order.completed", properties={"sku": "other"})
    process_pending()
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.ACTIVE
    event_record(customer="buyer", name="order.completed", properties={"sku": "PEGASUS-41"})
    assert process_pending().exited == 1

    enrollment.refresh_from_db()
    message.refresh_from_db()
    assert (enrollment.status, enrollment.exit_reason) == ("exited", "exit event order.completed")
    assert message.status == MessageStatus.CANCELED


def test_goal_event_records_the_conversion_within_the_window_and_exits(template):
    journey = make_journey(
        [send(next="w"), {"key": "w", "kind": "wait", "config": {"minutes": 6000}}],
        goal={"event": "order.completed", "within_hours": 48, "exits": True},
        trigger={"kind": "manual"},
    )
    converted = make_customer("converted")
    too_late = make_customer("too-late")
    a = enroll_one(journey, converted)
    with time_machine.travel(timezone.now() - dt.timedelta(days=3)):
        b = enroll_one(journey, too_late)
    run_until_idle()
    event_record(customer="converted", name="order.completed")
    event_record(customer="too-late", name="order.completed")
    assert process_pending().converted == 1
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.converted_at is not None and a.status == Enrollment.Status.EXITED
    assert b.converted_at is None and b.status == Enrollment.Status.ACTIVE
    assert StepRun.objects.filter(enrollment=a, outcome="converted").count() == 1


@pytest.mark.parametrize(
    ("entry", "expected"),
    [({"rule": "once"}, 1), ({"rule": "every_time"}, 3), ({"rule": "once_per", "days": 7}, 1)],
)
def test_entry_rules(template, entry, expected):
    journey = make_journey([send()], entry=entry)
    customer = make_customer()
    for n in range(3):
        enroll(journey, [Candidate(customer.id, f"event:{n}", {})])
    assert Enrollment.objects.filter(journey=journey).count() == expected


def test_once_per_lets_the_customer_back_in_after_the_period(template):
    journey = make_journey([send()], entry={"rule": "once_per", "days": 7})
    customer = make_customer()
    with time_machine.travel(timezone.now() - dt.timedelta(days=8)):
        enroll(journey, [Candidate(customer.id, "event:1", {})])
    enroll(journey, [Candidate(customer.id, "event:2", {})])
    enroll(journey, [Candidate(customer.id, "event:3", {})])
    assert Enrollment.objects.filter(journey=journey).count() == 2


def test_the_same_occurrence_never_enrolls_twice(template):
    journey = make_journey([send()])
    customer = make_customer()
    assert len(enroll(journey, [Candidate(customer.id, "event:1", {})])) == 1
    assert enroll(journey, [Candidate(customer.id, "event:1", {})]) == []


def test_editing_an_active_journey_versions_it_and_running_enrollments_keep_theirs(template):
    make_template("v2-template", topic=template.topic)
    journey = make_journey(
        [{"key": "w", "kind": "wait", "next": "send", "config": {"minutes": 10}}, send()]
    )
    early = enroll_one(journey, make_customer(), "early")
    run_until_idle()

    definition = journey.current_version.definition
    definition["steps"][1]["config"]["template"] = "v2-template"
    journey = journey_save(definition)
    assert journey.current_version.number == 2
    late = enroll_one(journey, make_customer(), "late")
    run_until_idle()
    run_until_idle(now=timezone.now() + dt.timedelta(minutes=11))

    early_msg = Message.objects.get(enrollment_id=early.id)
    late_msg = Message.objects.get(enrollment_id=late.id)
    assert early_msg.template.key == "journey-hello"
    assert late_msg.template.key == "v2-template"
    assert early.version.number == 1


def test_pausing_holds_enrollments_where_they_are_until_it_resumes(template):
    from journeys.services import journey_activate

    journey = make_journey([send()])
    enrollment = enroll_one(journey, make_customer())
    journey_pause(journey=journey)
    assert run_until_idle().claimed == 0
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.ACTIVE

    journey_activate(journey=journey)
    run_until_idle()
    enrollment.refresh_from_db()
    assert enrollment.status == Enrollment.Status.COMPLETED


def test_a_refused_send_is_logged_and_the_journey_goes_on(template):
    journey = make_journey(
        [
            send(channel="preferred", next="tag"),
            {"key": "tag", "kind": "update_attribute", "config": {"name": "seen", "value": True}},
        ]
    )
    unreachable = make_customer(email="", phone="")
    enrollment = enroll_one(journey, unreachable)
    run_until_idle()
    assert outcomes(enrollment) == [("send", "skipped"), ("tag", "updated")]
    run = StepRun.objects.get(enrollment=enrollment, step="send")
    assert run.detail["code"] == "no_reachable_channel"


@pytest.mark.django_db(transaction=True)
def test_two_engines_racing_step_each_enrollment_once(template):
    journey = make_journey([send()])
    customers = [make_customer() for _ in range(120)]
    enroll(journey, [Candidate(c.id, "t", {}) for c in customers])
    barrier = threading.Barrier(2)
    errors = []

    def work():
        try:
            barrier.wait()
            while engine.advance_batch(batch_size=10).claimed:
                pass
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Message.objects.filter(journey=journey.key).count() == 120
    assert StepRun.objects.filter(journey=journey).count() == 120
    assert Customer.objects.count() == 120
