"""A provider that hangs past the timeout: "maybe sent", never resent blindly, settled in time.

Per provider (Twilio SMS, SendGrid, LINE), for the whole provider and for one
recipient: the request times out after the provider took it, so the message is left
``sending`` with the unknown outcome recorded; dispatching again never resends it.
The stalled-send sweep then settles it within a bounded wait: LINE by a resend under
the same stored retry key (LINE runs a key once: a 409, the message was sent), Twilio
and SendGrid (no idempotency key) as ``failed`` with ``unknown_outcome`` after the
wait, never by a second request.
"""

from __future__ import annotations

import datetime as dt

import pytest

from orchestrator.delivery import dispatcher
from orchestrator.delivery.dispatcher.claim import unknown_outcome_wait
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import queue
from tests.emulator.server import wait_until
from tests.faults.accounting import accepted_requests
from tests.faults.conftest import accounting, customers, drain

pytestmark = pytest.mark.django_db

#: The emulator holds a hung request this long (the adapters give up after 0.3 s),
#: then takes the message: the provider has it, our side does not know.
HANG = 0.8


def settle(wired, provider, clock, ids) -> None:
    """Everything answered on the wire, then the clock past the unknown-outcome wait."""
    assert wait_until(
        lambda: all(r.status is not None for r in wired.requests_to(provider.path)), timeout=5
    )
    clock.shift(unknown_outcome_wait() + dt.timedelta(minutes=6))
    dispatcher.recover_stalled()
    drain(clock, ids)


def assert_settled_without_a_second_delivery(wired, provider, ids, hung: list[int]) -> None:
    for message in Message.objects.filter(id__in=hung):
        if provider.name == "line":
            # Resent under the same retry key: LINE answered 409, it had the message.
            assert message.status == MessageStatus.SENT
        else:
            assert message.status == MessageStatus.FAILED
            assert message.history.last().code == "unknown_outcome"
    kept = accounting(wired, provider, ids)
    assert kept.notes["taken"] == len(ids)  # the provider took each message once
    kept.assert_kept()


def test_a_hang_of_the_whole_provider_is_unknown_and_never_resent(wired, provider, clock, template):
    ids = [queue(c, template, channel=provider.channel).id for c in customers(provider, 2)]
    wired.fail_next(provider.path, timeout=True, delay=HANG, times=2)

    first, _more = dispatcher.dispatch_due()
    clock.shift(dt.timedelta(hours=1))
    again, _more = dispatcher.dispatch_due()

    assert first.unknown == 2 and again.claimed == 0
    for message in Message.objects.filter(id__in=ids):
        assert message.status == MessageStatus.SENDING
        assert "outcome unknown" in message.history.last().reason
    assert len(wired.requests_to(provider.path)) == 2  # nothing resent blindly
    settle(wired, provider, clock, ids)
    requests = wired.requests_to(provider.path)
    assert len(accepted_requests(requests)) == 2
    if provider.name != "line":
        assert len(requests) == 2
    assert_settled_without_a_second_delivery(wired, provider, ids, ids)


def test_a_hang_for_one_recipient_leaves_the_others_sent(wired, provider, clock, template):
    people = customers(provider, 3)
    stuck = provider.address(2)
    wired.fail_next(provider.path, timeout=True, delay=HANG, match=provider.to(stuck))
    ids = [queue(c, template, channel=provider.channel).id for c in people]

    first, _more = dispatcher.dispatch_due()

    assert (first.sent, first.unknown) == (2, 1)
    assert Message.objects.get(id=ids[1]).status == MessageStatus.SENDING
    settle(wired, provider, clock, ids)
    to_stuck = [r for r in wired.requests_to(provider.path) if provider.recipient(r) == stuck]
    assert len(accepted_requests(to_stuck)) == 1
    assert_settled_without_a_second_delivery(wired, provider, ids, [ids[1]])
