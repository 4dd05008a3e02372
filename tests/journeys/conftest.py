from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from journeys.models import Journey
from journeys.services import journey_activate, journey_save
from tests.delivery.factories import make_customer, make_template, make_topic


@pytest.fixture
def topic(db):
    return make_topic("journey-news")


@pytest.fixture
def template(topic):
    return make_template("journey-hello", topic=topic)


def send(
    key: str = "send", template: str = "journey-hello", *, next: str = "", **config: Any
) -> dict[str, Any]:
    return {"key": key, "kind": "send", "next": next, "config": {"template": template, **config}}


def digest_step(
    step_key: str = "digest", template: str = "journey-hello", *, next: str = "", **config: Any
) -> dict[str, Any]:
    """A digest step: ``window_minutes``, ``count`` and ``key`` go in ``config``."""
    return {
        "key": step_key,
        "kind": "digest",
        "next": next,
        "config": {"template": template, **config},
    }


def make_journey(
    steps: list[dict[str, Any]],
    *,
    key: str = "j",
    topic: str = "journey-news",
    trigger: dict[str, Any] | None = None,
    activate: bool = True,
    **fields: Any,
) -> Journey:
    definition = {
        "key": key,
        "name": key.title(),
        "topic": topic,
        "trigger": trigger or {"kind": "event", "event": "order.completed"},
        "steps": steps,
        **fields,
    }
    journey = journey_save(definition)
    if activate:
        journey_activate(journey=journey)
        journey.refresh_from_db()
    return journey


def ago(**kw: float) -> dt.datetime:
    from django.utils import timezone

    return timezone.now() - dt.timedelta(**kw)


__all__ = ["ago", "digest_step", "make_customer", "make_journey", "send"]
