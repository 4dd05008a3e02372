"""segment_sql agrees with the Python conditions on a table of values, and never fails."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.db import connection
from django.utils import timezone

from orchestrator.audience.models import Customer, Event
from orchestrator.segments import conditions
from orchestrator.segments.sql import segment_sql

pytestmark = pytest.mark.django_db

#: Attribute values as integrations send them, good and bad.
VALUES = [
    "Chicago",
    " chicago ",
    "\uff23\uff28\uff29\uff23\uff21\uff27\uff2f",  # full-width CHICAGO (Japanese keyboard)
    "Chicagoland",
    "",
    None,
    "10",
    "9",
    "abc",
    "2.5",
    " 12 ",
    "1e3",
    10,
    9.5,
    0,
    1,
    True,
    False,
    ["gold", "Silver"],
    ["10", 3],
    {"city": "Tokyo"},
    "2024-05-01",
    "2024-05-01T10:00:00+09:00",
    "2024-05-01T10:00:00",
    "2024-02-30",
    "2024-13-01T00:00:00Z",
    "not a date at all",
    "\uff11\uff12",  # full-width 12
]

CONDITIONS = [
    ("eq", "chicago"),
    ("eq", "10"),
    ("eq", 10),
    ("eq", 1),
    ("eq", True),
    ("eq", "12"),
    ("eq", ["gold", "Silver"]),
    ("eq", None),
    ("ne", "chicago"),
    ("ne", 10),
    ("gt", 9),
    ("gt", "9"),
    ("gte", 10),
    ("lt", 2.5),
    ("lte", "2.5"),
    ("gt", "b"),
    ("lt", "Chicago"),
    ("gt", "2024-04-30"),
    ("lt", "2024-05-01T02:00:00Z"),
    ("gte", "2024-05-01T01:00:00Z"),
    ("contains", "cago"),
    ("contains", "gold"),
    ("contains", "silver"),
    ("contains", 3),
    ("contains", "10"),
    ("in", ["Chicago", "Tokyo"]),
    ("in", [10, "abc"]),
    ("exists", None),
    ("not_exists", None),
]


@pytest.fixture
def customers(db):
    made = []
    for i, value in enumerate(VALUES):
        made.append(
            Customer.objects.create(
                external_id=f"v{i}", attributes={"x": value, "nested": {"x": value}}
            )
        )
    made.append(Customer.objects.create(external_id="missing", attributes={}))
    made.append(Customer.objects.create(external_id="flat", attributes={"nested": 5}))
    return made


def _sql_matches(conditions_list, now=None) -> set[int]:
    where, params = segment_sql(conditions_list, now=now)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT c.id FROM audience_customer c WHERE {where}", params)
        return {row[0] for row in cursor.fetchall()}


def _python_matches(customers, condition) -> set[int]:
    out = set()
    for customer in customers:
        present, value = conditions.lookup(customer.attributes, condition["name"])
        if conditions.compare(condition["op"], value, condition.get("value"), present=present):
            out.add(customer.id)
    return out


@pytest.mark.parametrize(("op", "value"), CONDITIONS)
@pytest.mark.parametrize("name", ["x", "nested.x"])
def test_sql_and_python_agree_on_every_value(customers, name, op, value):
    condition = {"type": "attribute", "name": name, "op": op, "value": value}
    by_id = {c.id: c.attributes for c in customers}
    got, expected = _sql_matches([condition]), _python_matches(customers, condition)
    assert got == expected, {
        "only_sql": [by_id[i] for i in got - expected],
        "only_python": [by_id[i] for i in expected - got],
    }


def test_conditions_combine_with_and_and_an_empty_segment_is_everyone(customers):
    both = [
        {"type": "attribute", "name": "x", "op": "exists"},
        {"type": "attribute", "name": "x", "op": "gt", "value": 9},
    ]
    expected = set.intersection(*(_python_matches(customers, c) for c in both))
    assert _sql_matches(both) == expected
    assert _sql_matches([]) == {c.id for c in customers}


def test_event_conditions_look_at_history_within_the_window(customers):
    now = timezone.now()
    recent, old, never = customers[0], customers[1], customers[2]
    Event.objects.create(
        customer=recent, name="order.completed", occurred_at=now - dt.timedelta(hours=2)
    )
    Event.objects.create(
        customer=old, name="order.completed", occurred_at=now - dt.timedelta(days=40)
    )
    within = {"type": "event", "name": "order.completed", "op": "happened", "within_hours": 24}
    ever = {"type": "event", "name": "order.completed", "op": "happened"}
    not_within = {**within, "op": "not_happened"}
    assert _sql_matches([within], now=now) == {recent.id}
    assert _sql_matches([ever]) == {recent.id, old.id}
    assert never.id in _sql_matches([not_within], now=now)
    assert recent.id not in _sql_matches([not_within], now=now)
    # Without an explicit now the statement's own time anchors the window.
    assert _sql_matches([within]) == {recent.id}


def test_names_and_values_are_parameters_not_sql(customers):
    hostile = "x'); DROP TABLE audience_customer; --"
    condition = {"type": "attribute", "name": hostile, "op": "eq", "value": hostile}
    assert _sql_matches([condition]) == set()
    assert Customer.objects.count() == len(customers)


def test_every_op_on_every_value_runs_without_an_error(customers):
    # Cross product of ops and right-hand values of every type: never a SQL error.
    rights = [v for _op, v in CONDITIONS] + VALUES
    ops = ["eq", "ne", "gt", "gte", "lt", "lte", "contains"]
    for op, right in itertools.product(ops, rights):
        _sql_matches([{"type": "attribute", "name": "x", "op": op, "value": right}])
