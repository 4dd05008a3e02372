"""A provider's reset is honoured: no try before it, for the one message or the whole sender.

Per provider (Twilio SMS, SendGrid, LINE): a 429 with ``Retry-After: N`` holds the
sender - the refused message and every other due message of the channel wait until
the reset (no request at all meanwhile, no attempt spent by the held ones), then all
go out; a reset on one recipient's refusal (a 503 with ``Retry-After``) delays that
message only; a reset beyond a message's expiry expires it at once, with the reason.
The clock is moved with time_machine, never slept.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import queue
from tests.faults.conftest import accounting, customers, drain

pytestmark = pytest.mark.django_db

RESET = 600
#: The most jitter added on top of a 600 s reset (10%, at most the 30 s backoff base).
JITTER = 30


def test_a_429_holds_the_whole_channel_until_the_reset(wired, provider, clock, template):
    ids = [queue(c, template, channel=provider.channel).id for c in customers(provider, 3)]
    wired.fail_next(provider.path, status=429, headers={"Retry-After": str(RESET)})

    first, _more = dispatcher.dispatch_due()
    refused_at = wired.requests_to(provider.path)[0].received_at

    assert first.retrying == 3
    assert len(wired.requests_to(provider.path)) == 1  # the others were not even tried
    limited, *held = Message.objects.filter(id__in=ids).order_by("id")
    assert limited.attempts == 1 and [m.attempts for m in held] == [0, 0]
    assert "held" in held[0].history.last().code
    for message in (limited, *held):
        assert message.status == MessageStatus.QUEUED
        assert message.send_after >= timezone.now() + dt.timedelta(seconds=RESET - 2)

    clock.shift(RESET - 5)
    dispatcher.dispatch_due()
    assert len(wired.requests_to(provider.path)) == 1  # nothing before the reset

    clock.shift(5 + JITTER + 1)
    after, _more = dispatcher.dispatch_due()

    assert after.sent == 3
    retried = wired.requests_to(provider.path)[1]
    assert retried.received_at - refused_at >= RESET
    assert Message.objects.get(id=limited.id).attempts == 2
    assert [m.attempts for m in Message.objects.filter(id__in=[m.id for m in held])] == [1, 1]
    kept = accounting(wired, provider, ids)
    assert kept.provider_calls == 1 + 3
    kept.assert_kept()


def test_a_429_for_one_recipient_is_not_retried_before_the_reset(wired, provider, clock, template):
    people = customers(provider, 3)
    limited_address = provider.address(1)
    wired.fail_next(
        provider.path,
        status=429,
        headers={"Retry-After": str(RESET)},
        match=provider.to(limited_address),
    )
    ids = [queue(c, template, channel=provider.channel).id for c in people]

    dispatcher.dispatch_due()
    drain(clock, ids)

    to_limited = [
        r for r in wired.requests_to(provider.path) if provider.recipient(r) == limited_address
    ]
    assert len(to_limited) == 2
    assert to_limited[1].received_at - to_limited[0].received_at >= RESET
    assert Message.objects.filter(id__in=ids, status=MessageStatus.SENT).count() == 3
    accounting(wired, provider, ids).assert_kept()


def test_a_reset_on_one_recipients_server_error_delays_that_message_only(
    wired, provider, clock, template
):
    people = customers(provider, 3)
    slow = provider.address(2)
    wired.fail_next(
        provider.path, status=503, headers={"Retry-After": str(RESET)}, match=provider.to(slow)
    )
    ids = [queue(c, template, channel=provider.channel).id for c in people]

    first, _more = dispatcher.dispatch_due()

    assert (first.sent, first.retrying) == (2, 1)
    delayed = Message.objects.get(id=ids[1])
    assert delayed.send_after >= timezone.now() + dt.timedelta(seconds=RESET - 2)
    assert "reset is in 600 s" in delayed.history.last().reason
    clock.shift(RESET - 5)
    dispatcher.dispatch_due()
    assert len(wired.requests_to(provider.path)) == 3
    drain(clock, ids)
    to_slow = [r for r in wired.requests_to(provider.path) if provider.recipient(r) == slow]
    assert to_slow[1].received_at - to_slow[0].received_at >= RESET
    kept = accounting(wired, provider, ids)
    assert kept.provider_calls == 4
    kept.assert_kept()


def test_a_reset_after_the_messages_expiry_expires_it_now(wired, provider, clock, template):
    [person] = customers(provider, 1)
    message = queue(
        person,
        template,
        channel=provider.channel,
        expires_at=timezone.now() + dt.timedelta(minutes=5),
    )
    wired.fail_next(provider.path, status=429, headers={"Retry-After": str(RESET)})

    stats, _more = dispatcher.dispatch_due()

    assert stats.expired == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.EXPIRED
    reason = message.history.last().reason
    assert "would come after its expiry" in reason and "429" in reason
    kept = accounting(wired, provider, [message.id])
    assert kept.provider_calls == 1
    kept.assert_kept()
