"""A digest step is described in words saying what it collects and when it goes."""

from __future__ import annotations

from journeys.diagram import summarize
from tests.journeys.conftest import digest_step


def test_a_digest_step_says_what_it_collects_and_when_it_goes():
    step = digest_step(
        "updates", "order-digest", channel="email", window_minutes=120, count=5, key="order_id"
    )
    assert summarize(step) == "order-digest by email per order_id, after 2 h or at 5 messages"
    assert summarize(digest_step("updates", "order-digest", count=3)) == (
        "order-digest by preferred channel, at 3 messages"
    )
