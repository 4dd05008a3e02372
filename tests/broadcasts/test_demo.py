"""The demo's weekly newsletter: scheduled for next Friday 09:00 local, to recent buyers."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from orchestrator.broadcasts.forecast import broadcast_forecast
from orchestrator.broadcasts.models import Broadcast
from orchestrator.demo.broadcasts import next_friday
from orchestrator.demo.services import load_demo

pytestmark = pytest.mark.django_db


def test_next_friday_is_the_coming_one():
    assert next_friday(dt.date(2026, 12, 9)) == dt.date(2026, 12, 11)
    assert next_friday(dt.date(2026, 12, 11)) == dt.date(2026, 12, 18)


@time_machine.travel(dt.datetime(2026, 12, 9, 3, 0, tzinfo=dt.UTC), tick=False)
def test_demo_schedules_the_newsletter_to_recent_buyers():
    load_demo(today=dt.date(2026, 12, 9))
    broadcast = Broadcast.objects.get(key="weekly-newsletter")
    assert broadcast.status == Broadcast.Status.SCHEDULED
    assert (broadcast.audience, broadcast.segment) == ("segment", "recent-buyers")
    assert (broadcast.local_date, broadcast.local_time) == (dt.date(2026, 12, 11), dt.time(9))
    forecast = broadcast_forecast(broadcast)
    assert forecast["audience"] > 0
    load_demo(today=dt.date(2026, 12, 9))  # loading again resets it
    assert Broadcast.objects.filter(key="weekly-newsletter").count() == 1
