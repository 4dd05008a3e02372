"""Hostile and mistaken input (RELIABILITY.md case 12): always a 4xx with the error body,
never a 500, and nothing written."""

from __future__ import annotations

import io
import json

import pytest
from django.conf import settings

from orchestrator.api.errors import ApiError
from orchestrator.api.parsers import SafeJSONParser
from orchestrator.audience.models import Customer, Event
from orchestrator.delivery.models import Message
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def _raw(api, path, text, content_type="application/json"):
    return api.generic("POST", path, text, content_type=content_type, HTTP_IDEMPOTENCY_KEY="bad-1")


def _nested(depth: int) -> str:
    return (
        '{"to": {"external_id": "alex"}, "template": "order-shipped", "data": '
        + ("[" * depth + "]" * depth)
        + "}"
    )


RAW_MESSAGE_CASES = {
    "malformed json": ('{"to": {"external_id": "alex"}, "template": ', 400, "malformed_json"),
    "deep nesting 10000 levels": (_nested(10_000), 400, "malformed_json"),
    "nesting over the depth limit": (_nested(40), 400, "malformed_json"),
    "NaN": (
        '{"to": {"external_id": "alex"}, "template": "order-shipped", "priority": NaN}',
        400,
        "malformed_json",
    ),
    "number out of range": (
        '{"to": {"external_id": "alex"}, "template": "x", "data": {"n": 1e999}}',
        400,
        "malformed_json",
    ),
    "NUL in a string": (
        '{"to": {"external_id": "alex"}, "template": "order-shipped", '
        '"data": {"note": "a\\u0000b"}}',
        400,
        "malformed_json",
    ),
    "lone surrogate": (
        '{"to": {"external_id": "alex"}, "template": "order-shipped", "data": {"note": "\\ud800"}}',
        400,
        "malformed_json",
    ),
    "not utf-8": (b'{"template": "\xff\xfe"}', 400, "malformed_json"),
    "top-level array": ("[1, 2]", 400, "invalid"),
    "empty body": ("", 400, "invalid"),
}


@pytest.mark.parametrize("case", RAW_MESSAGE_CASES)
def test_unparseable_message_body_is_a_400_and_sends_nothing(api, send_body, case):
    text, status, code = RAW_MESSAGE_CASES[case]
    assert_error(_raw(api, "/api/v1/messages", text), status, code)
    assert not Message.objects.exists()


def test_non_json_content_type_is_a_415(api, send_body):
    response = _raw(api, "/api/v1/messages", "to=alex", "application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")
    assert not Message.objects.exists()


def test_body_over_the_limit_is_a_413_before_it_is_read(api, send_body):
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = api.post(
        "/api/v1/messages", {**send_body, "data": {"padding": padding}}, format="json"
    )
    assert_error(response, 413, "body_too_large")
    assert not Message.objects.exists()


def test_ten_megabyte_customer_body_is_a_413(api):
    response = _raw(api, "/api/v1/customers", json.dumps({"external_id": "x" * 10_000_000}))
    assert_error(response, 413, "body_too_large")
    assert not Customer.objects.exists()


def test_parser_bounds_a_body_that_did_not_declare_its_length():
    oversize = io.BytesIO(b" " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    with pytest.raises(ApiError) as raised:
        SafeJSONParser().parse(oversize)
    assert raised.value.status_code == 413


MESSAGE_FIELD_CASES = {
    "priority as a string": ({"priority": "5"}, "invalid", "priority"),
    "priority out of range": ({"priority": 10}, "invalid", "priority"),
    "priority as a boolean": ({"priority": True}, "invalid", "priority"),
    "data not an object": ({"data": ["a"]}, "invalid", "data"),
    "to not an object": ({"to": "alex"}, "invalid", "to"),
    "to with two identities": (
        {"to": {"external_id": "alex", "email": "alex@example.com"}},
        "invalid",
        "to",
    ),
    "external_id as a number": ({"to": {"external_id": 42}}, "invalid", "to.external_id"),
    "invalid phone": ({"to": {"phone": "12345"}}, "invalid", "to.phone"),
    "invalid email": ({"to": {"email": "not-an-email"}}, "invalid", "to.email"),
    "CRLF in email": (
        {"to": {"email": "alex@example.com\r\nBcc: all@example.com"}},
        "invalid",
        "to.email",
    ),
    "unknown customer": ({"to": {"external_id": "nobody"}}, "unknown_customer", "to"),
    "unknown template": ({"template": "nope"}, "unknown_template", "template"),
    "unknown topic": ({"topic": "nope"}, "unknown_topic", "topic"),
    "template as a number": ({"template": 7}, "invalid", "template"),
    "unknown channel": ({"channel": "pigeon"}, "invalid", "channel"),
    "naive send_at": ({"send_at": "2030-01-01T09:00:00"}, "invalid", "send_at"),
    "send_at not a date": ({"send_at": "tomorrow"}, "invalid", "send_at"),
    "send_at in year 0001": ({"send_at": "0001-01-01T00:00:00+09:00"}, "invalid", "send_at"),
}


@pytest.mark.parametrize("case", MESSAGE_FIELD_CASES)
def test_invalid_message_field_is_a_400_naming_the_field(api, send_body, case):
    change, code, field = MESSAGE_FIELD_CASES[case]
    response = api.post(
        "/api/v1/messages", {**send_body, **change}, format="json", HTTP_IDEMPOTENCY_KEY=case
    )
    assert_error(response, 400, code, (field,))
    assert not Message.objects.exists()


CUSTOMER_CASES = {
    "invalid phone": ({"phone": "+1 555"}, "phone"),
    "invalid whatsapp": ({"whatsapp": "abc"}, "whatsapp"),
    "invalid email": ({"email": "alex@"}, "email"),
    "CRLF in email": ({"email": "alex@example.com\r\nBcc: x@example.com"}, "email"),
    "invalid timezone": ({"timezone": "Mars/Olympus"}, "timezone"),
    "invalid locale": ({"locale": "english!"}, "locale"),
    "email as a number": ({"email": 12}, "email"),
    "attributes not an object": ({"attributes": [1]}, "attributes"),
    "external_id missing": ({"external_id": None}, "external_id"),
}


@pytest.mark.parametrize("case", CUSTOMER_CASES)
def test_invalid_customer_field_is_a_400_naming_the_field(api, case):
    change, field = CUSTOMER_CASES[case]
    body = {"external_id": "kim", **change}
    assert_error(api.post("/api/v1/customers", body, format="json"), 400, "invalid", (field,))
    assert not Customer.objects.exists()


def test_bulk_of_1001_customers_is_refused_whole(api):
    items = [{"external_id": f"c{i}"} for i in range(settings.API_BULK_LIMIT + 1)]
    response = api.post("/api/v1/customers/bulk", {"customers": items}, format="json")
    assert_error(response, 400, "invalid", ("customers",))
    assert not Customer.objects.exists()


def test_bulk_of_1000_customers_is_accepted(api):
    items = [{"external_id": f"c{i}"} for i in range(settings.API_BULK_LIMIT)]
    response = api.post("/api/v1/customers/bulk", {"customers": items}, format="json")
    assert response.status_code == 200
    assert response.json()["created"] == settings.API_BULK_LIMIT


def test_bulk_of_1001_events_is_refused_whole(api):
    events = [{"customer": "a", "name": "x"} for _ in range(settings.API_BULK_LIMIT + 1)]
    response = api.post("/api/v1/events/bulk", {"events": events}, format="json")
    assert_error(response, 400, "invalid", ("events",))
    assert not Event.objects.exists()


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_unknown_api_path_is_a_json_404(api, method):
    assert_error(getattr(api, method)("/api/v1/no-such-thing", {}, format="json"), 404)
    assert_error(getattr(api, method)("/api/v2/customers", {}, format="json"), 404)


def test_non_numeric_message_id_is_a_json_404(api):
    assert_error(api.get("/api/v1/messages/abc"), 404)


def test_wrong_method_is_a_json_405(api):
    assert_error(api.delete("/api/v1/messages"), 405, "method_not_allowed")
