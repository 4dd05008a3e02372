"""Customers (upsert, bulk, read) and events (single, bulk)."""

from __future__ import annotations

import pytest

from orchestrator.audience.models import Customer, Event
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_upsert_creates_with_201_then_updates_with_200_merging_attributes(api):
    created = api.post(
        "/api/v1/customers",
        {"external_id": "kim", "email": "kim@example.com", "attributes": {"plan": "pro", "x": 1}},
        format="json",
    )
    updated = api.post(
        "/api/v1/customers",
        {"external_id": "kim", "phone": "+14155550123", "attributes": {"x": None, "y": 2}},
        format="json",
    )

    assert created.status_code == 201
    assert updated.status_code == 200
    body = updated.json()
    assert body["email"] == "kim@example.com"  # left out: unchanged
    assert body["phone"] == "+14155550123"
    assert body["attributes"] == {"plan": "pro", "y": 2}
    assert Customer.objects.count() == 1


def test_read_customer_by_external_id(api, customer):
    response = api.get("/api/v1/customers/alex")
    assert response.status_code == 200
    assert response.json()["timezone"] == "Asia/Tokyo"


def test_unknown_customer_is_a_json_404(api):
    assert_error(api.get("/api/v1/customers/nobody"), 404, "not_found")


def test_bulk_upsert_reports_each_item_and_one_bad_item_does_not_sink_the_rest(api, customer):
    items = [
        {"external_id": "new-1", "email": "n1@example.com"},
        {"external_id": "alex", "locale": "ja"},
        {"external_id": "bad-phone", "phone": "12345"},
        "not an object",
        {"email": "no-id@example.com"},
    ]
    response = api.post("/api/v1/customers/bulk", {"customers": items}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert (body["created"], body["updated"], body["invalid"]) == (1, 1, 3)
    statuses = [(r["index"], r["external_id"], r["status"]) for r in body["results"]]
    assert statuses == [
        (0, "new-1", "created"),
        (1, "alex", "updated"),
        (2, "bad-phone", "invalid"),
        (3, None, "invalid"),
        (4, None, "invalid"),
    ]
    assert "phone" in body["results"][2]["errors"]
    assert "external_id" in body["results"][4]["errors"]
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"alex", "new-1"}
    assert Customer.objects.get(external_id="alex").locale == "ja"


def test_event_is_accepted_with_202_and_creates_an_unknown_customer(api):
    response = api.post(
        "/api/v1/events",
        {"customer": "stranger", "name": "order.completed", "properties": {"total": 42}},
        format="json",
    )

    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 0}
    event = Event.objects.get()
    assert (event.customer.external_id, event.name, event.properties) == (
        "stranger",
        "order.completed",
        {"total": 42},
    )


def test_repeated_event_id_for_a_customer_counts_as_a_duplicate(api):
    body = {"customer": "kim", "name": "page.viewed", "event_id": "ev-1"}
    api.post("/api/v1/events", body, format="json")
    response = api.post("/api/v1/events", body, format="json")

    assert response.json() == {"accepted": 0, "duplicates": 1}
    assert Event.objects.count() == 1


def test_event_time_keeps_its_offset(api):
    api.post(
        "/api/v1/events",
        {"customer": "kim", "name": "x", "occurred_at": "2025-04-01T09:00:00+09:00"},
        format="json",
    )
    assert Event.objects.get().occurred_at.isoformat() == "2025-04-01T00:00:00+00:00"


def test_event_time_without_an_offset_is_refused(api):
    response = api.post(
        "/api/v1/events",
        {"customer": "kim", "name": "x", "occurred_at": "2025-04-01T09:00:00"},
        format="json",
    )
    assert_error(response, 400, "invalid", ("occurred_at",))
    assert not Event.objects.exists()


def test_bulk_events_answer_202_with_counts(api):
    events = [
        {"customer": "a", "name": "x", "event_id": "1"},
        {"customer": "a", "name": "x", "event_id": "1"},
        {"customer": "b", "name": "y"},
    ]
    response = api.post("/api/v1/events/bulk", {"events": events}, format="json")

    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "duplicates": 1}


def test_bulk_events_with_an_invalid_item_record_nothing_and_name_the_item(api):
    events = [{"customer": "a", "name": "x"}, {"customer": "a", "name": 7}]
    response = api.post("/api/v1/events/bulk", {"events": events}, format="json")

    assert_error(response, 400, "invalid", ("events.1.name",))
    assert not Event.objects.exists()
