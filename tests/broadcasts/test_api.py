"""/api/v1/broadcasts: create, schedule at a local time, progress, test, forecast, cancel."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from orchestrator.broadcasts.services import broadcasts_sweep
from orchestrator.consent.channel_consent import topic_subscription_set
from orchestrator.delivery.models import Message
from tests.delivery.factories import make_customer, make_template, make_topic

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def newsletter():
    topic = make_topic("newsletter", default_opt_in=False)
    make_template("weekly", topic=topic)
    for external_id, zone in (("tokyo", "Asia/Tokyo"), ("ny", "America/New_York")):
        customer = make_customer(external_id, timezone=zone)
        topic_subscription_set(
            customer_id=customer.id, topic_id=topic.id, channel="email", subscribed=True,
            source="admin", evidence={},
        )  # fmt: skip
    return topic


BODY = {
    "key": "friday",
    "name": "Friday newsletter",
    "template": "weekly",
    "audience": {"topic": "newsletter"},
    "local_time": {"date": "2026-12-11", "time": "09:00"},
    "rate_per_minute": 1000,
    "expires_at": "2026-12-12T00:00:00+00:00",
    "data": {"item": "new shoes"},
}


@time_machine.travel(NOW, tick=False)
def test_create_schedule_and_read_progress(api, newsletter):
    created = api.post("/api/v1/broadcasts", BODY, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["status"] == "draft"
    assert created.json()["local_time"] == {"date": "2026-12-11", "time": "09:00"}
    again = api.post("/api/v1/broadcasts", BODY, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_exists"

    scheduled = api.post("/api/v1/broadcasts/friday/schedule")
    assert scheduled.status_code == 200
    assert scheduled.json()["status"] == "scheduled"
    assert scheduled.json()["due_at"] == "2026-12-10T19:00:00Z"
    with time_machine.travel(dt.datetime(2026, 12, 10, 19, 0, tzinfo=dt.UTC), tick=False):
        broadcasts_sweep()
    body = api.get("/api/v1/broadcasts/friday").json()
    assert body["status"] == "sending"
    assert body["progress"]["waiting"] == 2
    assert body["results"]["total"]["messages"] == 2

    forecast = api.post("/api/v1/broadcasts/friday/forecast", {}, format="json")
    assert forecast.status_code == 200
    assert forecast.json()["messages"] == {"email": 2}

    test = api.post("/api/v1/broadcasts/friday/test", {"customers": ["tokyo"]}, format="json")
    assert test.status_code == 202
    assert test.json()["messages"][0]["customer"] == "tokyo"

    canceled = api.post("/api/v1/broadcasts/friday/cancel")
    assert canceled.json() == {"key": "friday", "status": "canceled", "canceled": 2}
    # Neither copy had reached the outbox (09:00 had not come anywhere): both dropped.
    assert not Message.objects.filter(broadcast_id__isnull=False).exists()
    assert api.get("/api/v1/broadcasts/friday").json()["progress"]["canceled"] == 2


@time_machine.travel(NOW, tick=False)
def test_bad_input_comes_back_in_the_error_envelope(api, newsletter):
    bad = api.post(
        "/api/v1/broadcasts",
        {**BODY, "template": "nope", "local_time": {"date": "2026-12-11", "time": "9am"}},
        format="json",
    )
    assert bad.status_code == 400
    assert "local_time.time" in bad.json()["error"]["fields"]
    unknown = api.post("/api/v1/broadcasts", {**BODY, "template": "nope"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["fields"] == {"template": ["No template 'nope'."]}
    both = api.post(
        "/api/v1/broadcasts", {**BODY, "send_at": "2026-12-11T09:00:00+00:00"}, format="json"
    )
    assert both.status_code == 400
    assert api.get("/api/v1/broadcasts/missing").status_code == 404
    api.post("/api/v1/broadcasts", BODY, format="json")
    api.post("/api/v1/broadcasts/friday/schedule")
    twice = api.post("/api/v1/broadcasts/friday/schedule")
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "conflict"
    unknown_customer = api.post(
        "/api/v1/broadcasts/friday/test", {"customers": ["nobody"]}, format="json"
    )
    assert unknown_customer.status_code == 400


@time_machine.travel(NOW, tick=False)
def test_put_replaces_a_draft_and_delete_removes_it(api, newsletter):
    put = api.put("/api/v1/broadcasts/friday", {**BODY, "name": "Renamed"}, format="json")
    assert put.status_code == 201
    put = api.put(
        "/api/v1/broadcasts/friday",
        {**BODY, "name": "Renamed again", "ab_test": {"share": 20, "subject": "B!"}},
        format="json",
    )
    assert put.status_code == 200
    assert put.json()["ab_test"]["kind"] == "subject"
    assert api.delete("/api/v1/broadcasts/friday").status_code == 204
    assert api.get("/api/v1/broadcasts").json() == {"results": []}
