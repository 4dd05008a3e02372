"""Transient provider failures end in a final state, with a reason, in bounded time.

Per provider (Twilio SMS, SendGrid, LINE), through the real SDKs against the emulator:
a burst of 500s for the whole provider is retried with backoff until everything is
sent; a recipient the provider always refuses transiently is tried exactly
``MAX_ATTEMPTS`` times and then ``failed`` with the provider's code and reason,
while the others go out. Nothing is sent twice.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from orchestrator.delivery import dispatcher
from orchestrator.delivery.dispatcher import outcomes
from orchestrator.delivery.models import Message, MessageStatus
from tests.delivery.factories import queue
from tests.faults.conftest import accounting, customers, drain

pytestmark = pytest.mark.django_db


def test_a_burst_of_500s_for_the_whole_provider_is_retried_until_sent(
    wired, provider, clock, template
):
    ids = [queue(c, template, channel=provider.channel).id for c in customers(provider, 4)]
    # Six 500s: every message's first try, then two of the second tries.
    wired.fail_next(provider.path, status=500, times=6)

    first, _more = dispatcher.dispatch_due()
    rounds = drain(clock, ids)

    assert first.retrying == 4
    retried = Message.objects.get(id=ids[0])
    assert retried.status == MessageStatus.SENT
    assert retried.attempts in (2, 3)
    assert "failed transiently" in retried.history.filter(status="queued").last().reason
    assert rounds <= 4
    kept = accounting(wired, provider, ids)
    assert kept.provider_calls == 4 + 6
    assert kept.notes["taken"] == 4
    kept.assert_kept()


def test_a_recipient_always_refused_fails_after_max_attempts_with_the_providers_code(
    wired, provider, clock, template
):
    people = customers(provider, 3)
    doomed = provider.address(2)
    wired.fail_next(provider.path, status=503, times=50, match=provider.to(doomed))
    ids = [queue(c, template, channel=provider.channel).id for c in people]
    started = timezone.now()

    drain(clock, ids)

    failed = Message.objects.get(id=ids[1])
    assert failed.status == MessageStatus.FAILED
    assert failed.attempts == outcomes.MAX_ATTEMPTS
    last = failed.history.last()
    assert f"gave up after {outcomes.MAX_ATTEMPTS} attempts" in last.reason
    assert "503" in last.code and last.code.startswith(f"{provider.name}:")
    assert "503" in failed.last_error
    # Bounded: the backoffs of MAX_ATTEMPTS - 1 retries, at most 30+60+120+240 s.
    assert last.occurred_at - started < dt.timedelta(minutes=8)
    to_doomed = [r for r in wired.requests_to(provider.path) if provider.recipient(r) == doomed]
    assert len(to_doomed) == outcomes.MAX_ATTEMPTS
    assert Message.objects.filter(id__in=ids, status=MessageStatus.SENT).count() == 2
    kept = accounting(wired, provider, ids)
    assert kept.provider_calls == 2 + outcomes.MAX_ATTEMPTS
    kept.assert_kept()
