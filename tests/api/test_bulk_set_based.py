"""Bulk customers and events are written set-based: a fixed number of statements per request."""

from __future__ import annotations

from orchestrator.audience.models import Customer, Event
from orchestrator.audience.services import customer_upsert, customers_upsert

BULK = "/api/v1/customers/bulk"


def test_a_thousand_customers_take_a_fixed_number_of_queries(api, django_assert_max_num_queries):
    customer_upsert(external_id="c0", email="old@example.com", attributes={"a": 1, "b": 2})
    items = [
        {"external_id": f"c{n}", "email": f"c{n}@example.com", "attributes": {"n": n}}
        for n in range(1000)
    ]
    api.post(BULK, {"customers": [{"external_id": "warm"}]}, format="json")  # key cached
    # The INSERT, the UPDATE, and the savepoints of the test's transaction.
    with django_assert_max_num_queries(6):
        body = api.post(BULK, {"customers": items}, format="json").json()
    assert (body["created"], body["updated"], body["invalid"]) == (999, 1, 0)
    c0 = Customer.objects.get(external_id="c0")
    assert (c0.email, c0.attributes) == ("c0@example.com", {"a": 1, "b": 2, "n": 0})
    assert Customer.objects.get(external_id="c999").attributes == {"n": 999}


def test_fields_left_out_are_kept_and_null_clears_or_removes(api):
    customer_upsert(
        external_id="alex", email="a@example.com", phone="+819012345678", attributes={"x": 1}
    )
    items = [{"external_id": "alex", "phone": None, "attributes": {"x": None, "y": 2}}]
    body = api.post(BULK, {"customers": items}, format="json").json()
    assert body["results"][0]["status"] == "updated"
    alex = Customer.objects.get(external_id="alex")
    assert (alex.email, alex.phone, alex.attributes) == ("a@example.com", "", {"y": 2})


def test_an_id_given_twice_is_applied_in_order(api):
    items = [
        {"external_id": "kim", "locale": "ja", "attributes": {"a": 1, "b": 1}},
        {"external_id": "kim", "email": "k@example.com", "attributes": {"a": None, "c": 3}},
    ]
    body = api.post(BULK, {"customers": items}, format="json").json()
    assert [r["status"] for r in body["results"]] == ["created", "updated"]
    kim = Customer.objects.get(external_id="kim")
    assert (kim.locale, kim.email, kim.attributes) == ("ja", "k@example.com", {"b": 1, "c": 3})


def test_new_customers_get_the_defaults_and_invalid_items_write_nothing(db):
    outcomes = customers_upsert(
        [{"external_id": "new"}, {"external_id": "bad", "timezone": "Mars/Olympus"}]
    )
    assert [o.created for o in outcomes] == [True, None]
    assert "timezone" in outcomes[1].errors
    new = Customer.objects.get(external_id="new")
    assert (new.locale, new.timezone, new.email, new.attributes) == ("en", "UTC", "", {})
    assert not Customer.objects.filter(external_id="bad").exists()


def test_a_thousand_events_take_a_fixed_number_of_queries(api, django_assert_max_num_queries):
    events = [
        {"customer": f"e{n % 100}", "name": "viewed", "event_id": str(n)} for n in range(1000)
    ]
    api.post("/api/v1/events/bulk", {"events": events[:1]}, format="json")
    with django_assert_max_num_queries(8):
        response = api.post("/api/v1/events/bulk", {"events": events}, format="json")
    assert response.json() == {"accepted": 999, "duplicates": 1}
    assert Event.objects.count() == 1000
