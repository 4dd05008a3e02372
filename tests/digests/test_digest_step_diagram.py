"""The journey diagram draws a digest step as a box of its own saying when it goes."""

from __future__ import annotations

from journeys.diagram import render, summarize
from tests.journeys.conftest import digest_step, send


def test_a_digest_step_says_what_it_collects_and_when_it_goes():
    step = digest_step(
        "updates", "order-digest", channel="email", window_minutes=120, count=5, key="order_id"
    )
    assert summarize(step) == "order-digest by email per order_id, after 2 h or at 5 messages"
    assert summarize(digest_step("updates", "order-digest", count=3)) == (
        "order-digest by preferred channel, at 3 messages"
    )


def test_the_diagram_draws_the_digest_step_with_its_kind():
    definition = {
        "key": "j",
        "steps": [
            send("hello", next="updates"),
            digest_step("updates", "order-digest", window_minutes=30),
        ],
    }
    svg = render(definition)
    assert 'data-step="updates" data-kind="digest"' in svg
    assert "DIGEST" in svg
    assert "order-digest by preferred channel, after 30 min" in svg
