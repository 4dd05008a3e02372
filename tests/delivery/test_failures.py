"""Render errors, provider failures and retries: never a blank send, never a duplicate."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from channels.adapters import locmem
from orchestrator.delivery.dispatcher import dispatch_due, outcomes, recover_stalled
from orchestrator.delivery.models import MessageStatus
from tests.delivery.factories import (
    locmem_adapters,
    make_customer,
    make_template,
    make_topic,
    queue,
)

pytestmark = pytest.mark.django_db


def test_undefined_variable_fails_the_message_with_field_and_line_and_sends_nothing(outbox):
    template = make_template(
        topic=make_topic(),
        variants={("sms", "en"): {"body": "Hi {{ customer.first_name }},\nyour {{ data.nope }}"}},
    )
    message = queue(make_customer(), template, channel="sms")

    stats, _ = dispatch_due()

    assert (stats.failed, outbox) == (1, [])
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.handed_off_at is None
    assert message.rendered is None
    assert message.last_error.startswith("body, line 2:")
    assert "nope" in message.last_error
    entry = message.explanation[-1]
    assert (entry["step"], entry["details"]["field"], entry["details"]["line"]) == (
        "render",
        "body",
        2,
    )


def test_runaway_loop_fails_the_message_instead_of_rendering_forever(outbox):
    template = make_template(
        topic=make_topic(),
        variants={
            ("email", "en"): {
                "subject": "Hi",
                "body": "{% for i in (1..1000000) %}{{ i }}{% endfor %}",
            }
        },
    )
    message = queue(make_customer(), template)

    dispatch_due()

    assert outbox == []
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert "loop" in message.last_error.lower()


def test_subject_that_renders_empty_is_refused_rather_than_sent_blank(outbox):
    template = make_template(
        topic=make_topic(),
        variants={("email", "en"): {"subject": "{{ data.title | default: '' }}", "body": "x"}},
    )
    message = queue(make_customer(), template)

    dispatch_due()

    assert outbox == []
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.last_error.startswith("subject:")


def test_one_bad_message_does_not_hold_back_the_rest_of_the_batch(outbox):
    template = make_template(
        topic=make_topic(),
        variants={("sms", "en"): {"body": "{{ data.code }}"}},
    )
    good = queue(make_customer(), template, channel="sms", data={"code": "1234"})
    bad = queue(make_customer(), template, channel="sms", data={})

    dispatch_due()

    assert [m.message_id for m in outbox] == [good.id]
    bad.refresh_from_db()
    assert bad.status == MessageStatus.FAILED


def test_permanent_provider_refusal_fails_without_retry(settings, outbox):
    customer = make_customer(phone="+14155550100")
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"fail": {"+14155550100": "permanent"}})
    message = queue(customer, make_template(topic=make_topic()), channel="sms")

    stats, _ = dispatch_due()

    assert (stats.failed, stats.retrying) == (1, 0)
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert "refused it permanently" in message.explanation[-1]["reason"]
    assert message.last_error == "locmem refused +14155550100 (permanent)"
    assert len(locmem.attempts) == 1


def test_transient_failure_requeues_with_bounded_backoff_then_fails_after_max_attempts(
    settings, outbox
):
    customer = make_customer(phone="+14155550101")
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"fail": {"+14155550101": "transient"}})
    message = queue(customer, make_template(topic=make_topic()), channel="sms")
    delays = []

    now = timezone.now()
    with time_machine.travel(now, tick=False) as traveller:
        for attempt in range(1, outcomes.MAX_ATTEMPTS):
            stats, _ = dispatch_due()
            assert stats.retrying == 1
            message.refresh_from_db()
            assert (message.status, message.attempts) == (MessageStatus.QUEUED, attempt)
            assert message.handed_off_at is None
            delay = message.send_after - timezone.now()
            nominal = min(outcomes.BACKOFF_BASE * 2 ** (attempt - 1), outcomes.BACKOFF_MAX)
            assert nominal / 2 <= delay <= nominal
            delays.append(delay)
            # Not due yet: a second dispatch right away leaves it alone.
            assert dispatch_due()[0].claimed == 0
            traveller.shift(delay + dt.timedelta(seconds=1))
        stats, _ = dispatch_due()

    assert stats.failed == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.attempts == outcomes.MAX_ATTEMPTS
    assert f"gave up after {outcomes.MAX_ATTEMPTS} attempts" in message.explanation[-1]["reason"]
    assert len(locmem.attempts) == outcomes.MAX_ATTEMPTS
    assert outbox == []
    assert delays[-1] > delays[0]


def test_transient_failure_then_success_sends_exactly_once(settings, outbox):
    customer = make_customer(phone="+14155550102")
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"fail": {"+14155550102": "transient"}})
    message = queue(customer, make_template(topic=make_topic()), channel="sms")
    dispatch_due()

    settings.CHANNEL_ADAPTERS = locmem_adapters()
    with time_machine.travel(timezone.now() + outcomes.BACKOFF_MAX, tick=False):
        dispatch_due()
        dispatch_due()

    message.refresh_from_db()
    assert (message.status, message.attempts) == (MessageStatus.SENT, 2)
    assert [m.message_id for m in outbox] == [message.id]


def test_unknown_provider_outcome_stays_sending_and_is_never_resent(settings, outbox):
    customer = make_customer(phone="+14155550103")
    settings.CHANNEL_ADAPTERS = locmem_adapters(sms={"fail": {"+14155550103": "unknown"}})
    message = queue(customer, make_template(topic=make_topic()), channel="sms")

    stats, _ = dispatch_due()
    start = timezone.now()
    # Within the wait for a provider report (DISPATCH_UNKNOWN_OUTCOME_WAIT_SECONDS).
    with time_machine.travel(start + dt.timedelta(minutes=10), tick=False):
        recover_stalled()
        dispatch_due()

    assert stats.unknown == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING
    assert message.handed_off_at is not None
    assert len(locmem.attempts) == 1

    # No report came: settled as failed, with what is known, and still not resent.
    with time_machine.travel(start + dt.timedelta(hours=1), tick=False):
        assert recover_stalled().settled_unknown == 1
        dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.history.last().code == "unknown_outcome"
    assert "not resent" in message.explanation[-1]["reason"]
    assert len(locmem.attempts) == 1


def test_channel_without_a_configured_adapter_fails_before_the_hand_off(settings, outbox):
    adapters = locmem_adapters()
    del adapters["line"]
    settings.CHANNEL_ADAPTERS = adapters
    customer = make_customer(line_user_id="U42")
    template = make_template(topic=make_topic(), variants={("line", "en"): {"body": "Hi"}})
    message = queue(customer, template, channel="line")

    dispatch_due()

    message.refresh_from_db()
    assert (message.status, message.handed_off_at) == (MessageStatus.FAILED, None)
    assert "no adapter configured for line" in message.explanation[-1]["reason"]
    assert outbox == []
