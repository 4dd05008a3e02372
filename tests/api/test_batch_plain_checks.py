"""The bulk endpoints' plain checks vouch only for what the serializer accepts, as it
accepts it: for each item either nothing (the serializer then judges and words the
error) or exactly the serializer's validated data."""

from __future__ import annotations

import copy

import pytest
from rest_framework import serializers

from orchestrator.api.batch import MessageBatchItemSerializer
from orchestrator.api.plain import plain_validated, validated
from orchestrator.api.serializers import CustomerInSerializer

SEND = {
    "idempotency_key": "k-1",
    "to": {"external_id": "alex"},
    "template": "order-shipped",
    "channel": "email",
    "data": {"order_id": "A1", "n": 2, "nested": {"x": [1, None]}},
}

#: (changes to SEND, whether the plain checks must vouch for it)
SENDS = [
    ({}, True),
    ({"channel": None}, False),
    ({"channel": "preferred"}, True),
    ({"channel": "fax"}, False),
    ({"channel": 3}, False),
    ({"to": {"email": "alex@example.com"}}, True),
    ({"to": {"email": "not an address"}}, False),
    ({"to": {"email": "a@example.com\n"}}, False),
    ({"to": {"phone": "090-1234-5678"}}, False),
    ({"to": {"phone": "+819012345678"}}, True),
    ({"to": {"external_id": "alex", "email": "alex@example.com"}}, False),
    ({"to": {}}, False),
    ({"to": "alex"}, False),
    ({"to": {"external_id": "x" * 256}}, False),
    ({"to": {"external_id": " alex "}}, False),
    ({"to": {"external_id": ""}}, False),
    ({"to": {"external_id": "al\x00ex"}}, False),
    ({"to": {"external_id": "\ud800"}}, False),
    ({"to": {"external_id": "アレックス"}}, True),
    ({"template": ""}, False),
    ({"template": 5}, False),
    ({"template": "t" * 101}, False),
    ({"topic": None}, True),
    ({"topic": "orders"}, True),
    ({"topic": "  "}, False),
    ({"priority": 9}, True),
    ({"priority": 10}, False),
    ({"priority": -1}, False),
    ({"priority": True}, False),
    ({"priority": "5"}, False),
    ({"priority": 5.0}, False),
    ({"data": {}}, True),
    ({"data": None}, False),
    ({"data": []}, False),
    ({"send_at": "2026-12-06T09:00:00+09:00"}, True),
    ({"send_at": "2026-12-06T09:00:00"}, False),
    ({"send_at": None}, True),
    ({"expires_at": 12}, False),
    ({"fallback_channel": "sms"}, True),
    ({"fallback_channel": "preferred"}, False),
    ({"fallback_channel": ""}, False),
    ({"idempotency_key": "   "}, False),
    ({"idempotency_key": " padded "}, True),  # kept as sent: trim_whitespace is off
    ({"idempotency_key": 7}, False),
    ({"idempotency_key": "k" * 256}, False),
    ({"unknown_field": 1}, True),
]


def _serializer_result(serializer, item):
    try:
        return dict(serializer.run_validation(copy.deepcopy(item)))
    except serializers.ValidationError:
        return None


@pytest.mark.parametrize(("changes", "vouched"), SENDS)
def test_a_send_is_vouched_for_exactly_as_the_serializer_validates_it(changes, vouched):
    item = {**SEND, **changes}
    checker = MessageBatchItemSerializer()
    plain = plain_validated(checker, copy.deepcopy(item))
    expected = _serializer_result(MessageBatchItemSerializer(), item)
    if vouched:
        assert plain is not None
    if plain is not None:
        assert expected is not None
        assert dict(plain) == expected
        assert {k: type(v) for k, v in plain.items()} == {k: type(v) for k, v in expected.items()}


@pytest.mark.parametrize("removed", ["to", "template", "idempotency_key"])
def test_a_send_without_a_required_field_goes_to_the_serializer(removed):
    item = {k: v for k, v in SEND.items() if k != removed}
    assert plain_validated(MessageBatchItemSerializer(), item) is None
    with pytest.raises(serializers.ValidationError) as refused:
        validated(MessageBatchItemSerializer(), item)
    assert removed in refused.value.detail


def test_defaults_are_filled_in_as_the_serializer_fills_them():
    item = {"idempotency_key": "k", "to": {"external_id": "a"}, "template": "t"}
    plain = plain_validated(MessageBatchItemSerializer(), item)
    assert plain == _serializer_result(MessageBatchItemSerializer(), item)
    assert plain["channel"] == "preferred"
    assert plain["priority"] == 5
    assert plain["data"] == {}


CUSTOMER = {"external_id": "c1", "email": "c1@example.com", "locale": "ja"}


@pytest.mark.parametrize(
    ("changes", "vouched"),
    [
        ({}, True),
        ({"email": None, "phone": None}, True),
        ({"email": ""}, False),  # blank allowed: the serializer's own path
        ({"attributes": {"plan": "gold", "seats": 3}}, True),
        ({"attributes": None}, False),
        ({"attributes": "gold"}, False),
        ({"external_id": None}, False),
        ({"external_id": 1}, False),
        ({"line_user_id": "U" * 65}, False),
        ({"timezone": "Asia/Tokyo"}, True),
    ],
)
def test_a_customer_is_vouched_for_exactly_as_the_serializer_validates_it(changes, vouched):
    item = {**CUSTOMER, **changes}
    plain = plain_validated(CustomerInSerializer(), copy.deepcopy(item))
    expected = _serializer_result(CustomerInSerializer(), item)
    if vouched:
        assert plain is not None
    if plain is not None:
        assert plain == expected


def test_a_serializer_validate_refusal_is_left_to_the_serializer():
    class Picky(serializers.Serializer):
        name = serializers.CharField(max_length=5)

        def validate(self, attrs):
            if attrs["name"] == "no":
                raise serializers.ValidationError("Not that name.")
            return attrs

    assert plain_validated(Picky(), {"name": "yes"}) == {"name": "yes"}
    assert plain_validated(Picky(), {"name": "no"}) is None
    with pytest.raises(serializers.ValidationError, match="Not that name"):
        validated(Picky(), {"name": "no"})
