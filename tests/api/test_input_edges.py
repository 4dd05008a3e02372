"""Input the database cannot store or the JSON grammar leaves ambiguous: a 400 naming
the field, never a 500 - datetimes with offsets PostgreSQL refuses, NUL characters in
strings, a key given twice in one object."""

from __future__ import annotations

import pytest

from orchestrator.audience.models import Event
from orchestrator.consent.models import ChannelPreference
from orchestrator.delivery.models import Message
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

#: Python parses these; PostgreSQL's timestamptz takes offsets up to 15:59 either way.
UNSTORABLE_TIMES = [
    "2025-04-01T09:00:00-17:45",
    "2025-04-01T09:00:00+16:00",
    "2025-04-01T09:00:00+23:59",
    "2025-04-01T09:00:00+05:30:15",
]


@pytest.mark.parametrize("when", UNSTORABLE_TIMES)
def test_event_time_with_an_offset_the_database_cannot_store_is_a_400(api, when):
    response = api.post(
        "/api/v1/events", {"customer": "c-1", "name": "x", "occurred_at": when}, format="json"
    )
    error = assert_error(response, 400, "invalid", fields=("occurred_at",))
    assert "offset" in error["fields"]["occurred_at"][0]
    assert not Event.objects.exists()


def test_event_time_at_the_largest_storable_offset_is_recorded(api):
    response = api.post(
        "/api/v1/events",
        {"customer": "c-1", "name": "x", "occurred_at": "2025-04-01T09:00:00-15:59"},
        format="json",
    )
    assert response.status_code == 202
    assert Event.objects.get().occurred_at.isoformat() == "2025-04-02T00:59:00+00:00"


def test_bulk_event_with_an_unstorable_offset_names_the_item(api):
    events = [
        {"customer": "c-1", "name": "x"},
        {"customer": "c-1", "name": "y", "occurred_at": "2025-04-01T09:00:00+16:00"},
    ]
    response = api.post("/api/v1/events/bulk", {"events": events}, format="json")
    assert_error(response, 400, "invalid", fields=("events.1.occurred_at",))
    assert not Event.objects.exists()


@pytest.mark.parametrize("field", ["send_at", "expires_at"])
def test_send_times_with_an_unstorable_offset_are_a_400(api, send_body, field):
    body = {**send_body, field: "2099-04-01T09:00:00-17:45"}
    assert_error(api.post("/api/v1/messages", body, format="json"), 400, fields=(field,))
    assert not Message.objects.exists()


@pytest.mark.parametrize("when", [*UNSTORABLE_TIMES, "9999-12-31T23:00:00-05:00"])
def test_paused_until_with_an_unstorable_time_is_a_400(api, customer, when):
    response = api.patch(
        f"/api/v1/customers/{customer.external_id}/preferences",
        {"paused_until": when},
        format="json",
    )
    assert_error(response, 400, fields=("paused_until",))
    assert not ChannelPreference.objects.filter(paused_until__isnull=False).exists()


def test_nul_in_a_string_is_a_400_naming_the_field(api, send_body):
    body = {**send_body, "data": {"note": "a\x00b"}}
    error = assert_error(api.post("/api/v1/messages", body, format="json"), 400, "malformed_json")
    assert list(error["fields"]) == ["data.note"]
    assert not Message.objects.exists()


def test_nul_in_an_event_name_names_the_item(api):
    events = [{"customer": "c-1", "name": "ok"}, {"customer": "c-1", "name": "b\x00d"}]
    error = assert_error(api.post("/api/v1/events/bulk", {"events": events}, format="json"), 400)
    assert list(error["fields"]) == ["events.1.name"]
    assert not Event.objects.exists()


def test_nul_in_a_key_is_a_400(api):
    body = {"customer": "c-1", "name": "x", "properties": {"a\x00": 1}}
    error = assert_error(api.post("/api/v1/events", body, format="json"), 400, "malformed_json")
    assert list(error["fields"]) == ["properties.a?"]


@pytest.mark.parametrize(
    "text",
    [
        '{"to": {"external_id": "alex"}, "template": "order-shipped", "template": "other"}',
        '{"to": {"external_id": "alex", "external_id": "sam"}, "template": "order-shipped"}',
        '{"to": {"external_id": "alex"}, "template": "order-shipped",'
        ' "data": {"order_id": "1", "order_id": "2"}}',
    ],
)
def test_a_key_given_twice_in_one_object_is_refused(api, send_body, text):
    response = api.generic("POST", "/api/v1/messages", text, content_type="application/json")
    error = assert_error(response, 400, "duplicate_key")
    assert len(error["fields"]) == 1
    assert not Message.objects.exists()


def test_duplicate_keys_are_refused_on_every_json_endpoint(api):
    response = api.generic(
        "POST",
        "/api/v1/customers",
        '{"external_id": "a", "email": "a@example.com", "email": "b@example.com"}',
        content_type="application/json",
    )
    assert_error(response, 400, "duplicate_key", fields=("email",))
