"""The real-time path end to end: event API call → journeys worker → dispatcher → adapter."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from journeys.models import Enrollment, PendingEvent
from tests.journeys.conftest import make_customer, make_journey, send


@pytest.mark.django_db(transaction=True)
def test_an_event_reaches_the_provider_through_the_commit_kicks_alone(
    outbox, template, celery_worker, api_key_factory
):
    make_journey(
        [send(channel="email")],
        trigger={
            "kind": "event",
            "event": "weather.changed",
            "filter": [{"type": "property", "name": "condition", "op": "eq", "value": "snow"}],
        },
    )
    make_customer("chicago-runner")
    key = api_key_factory(scopes=("track",))

    started = time.monotonic()
    response = Client().post(
        "/api/v1/events",
        {
            "customer": "chicago-runner",
            "name": "weather.changed",
            "properties": {"condition": "snow", "item": "winter trail shoes"},
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 202
    # No beat runs here: only the kicks published on the event's and the message's
    # commits can carry it to the provider. How fast is bench.realtime's question (a
    # timed assertion here would fail on a busy machine, not on a broken path).
    while not outbox and time.monotonic() - started < 30:
        time.sleep(0.02)

    from orchestrator.delivery.models import Message

    assert outbox, list(Message.objects.values_list("status", "last_error", "explanation"))
    assert outbox[0].to == "chicago-runner@example.com"
    assert Enrollment.objects.get().status == Enrollment.Status.COMPLETED
    assert not PendingEvent.objects.exists()
