"""Export (GDPR Art. 15/20): everything held about the person, as plain JSON."""

from __future__ import annotations

import json

import pytest

from orchestrator.consent.suppressions import suppressions_add
from orchestrator.privacy.services import customer_export
from tests.delivery.factories import make_customer
from tests.privacy.conftest import EMAIL, PHONE

pytestmark = pytest.mark.django_db


def test_export_holds_every_kind_of_data_we_keep(person):
    suppressions_add([("email", EMAIL.upper(), "complaint", "sendgrid:spamreport")])

    data = customer_export(customer=person.customer)

    assert data["customer"]["email"] == EMAIL
    assert data["customer"]["phone"] == PHONE
    assert data["customer"]["timezone"] == "Asia/Tokyo"
    assert data["customer"]["attributes"] == {"first_name": "Mika"}
    events = {e["name"]: e for e in data["events"]}
    assert set(events) == {"order.completed", "message.replied"}  # the SMS reply is one too
    assert events["order.completed"]["properties"] == {"sku": "tea-42"}
    assert {(s["topic"], s["channel"], s["status"]) for s in data["subscriptions"]} == {
        ("promos", "email", "subscribed"),
        ("promos", "sms", "subscribed"),
    }
    ledger = [(r["topic"], r["channel"], r["action"], r["source"]) for r in data["consent_records"]]
    assert ("promos", "email", "opt_in", "api") in ledger
    assert (None, "line", "opt_out", "api") in ledger
    assert data["channel_preference"]["max_per_week"] == 3
    assert data["channel_preference"]["quiet_hours_start"] == "22:00:00"
    assert data["channel_opt_outs"][0]["channel"] == "line"
    assert data["suppressions"] == [
        {
            "channel": "email",
            "reason": "complaint",
            "created_at": data["suppressions"][0]["created_at"],
        }
    ]

    by_id = {m["id"]: m for m in data["messages"]}
    sent = by_id[person.sent.id]
    assert sent["to_address"] == EMAIL
    assert sent["rendered"]["subject"] == "Hello Mika"
    assert [h["status"] for h in sent["history"]][-1] == "sent"
    assert sent["explanation"][0]["step"] == "created"
    assert by_id[person.waiting.id]["status"] == "scheduled"

    [enrollment] = data["journeys"]["enrollments"]
    assert (enrollment["journey"], enrollment["status"], enrollment["step"]) == (
        "j",
        "active",
        "pause",
    )
    assert [s["step"] for s in enrollment["steps"]] == ["hello", "pause"]
    inbound = data["webhooks"]["inbound_messages"]
    assert [m["body"] for m in inbound] == ["who is this?", "Thanks, love the tea"]
    payloads = [e["payload"]["params"]["Body"] for e in data["webhooks"]["webhook_events"]]
    assert payloads == ["who is this?", "Thanks, love the tea"]


def test_export_is_plain_json_and_names_nobody_else(person):
    other = make_customer("sora", email="sora@example.com", phone="+14155550999")

    data = customer_export(customer=person.customer)
    text = json.dumps(data)  # no encoder needed: only JSON types

    assert "sora@example.com" not in text and other.phone not in text


def test_export_of_a_customer_with_nothing_but_an_id(db):
    bare = make_customer("bare", email="", phone="")

    data = customer_export(customer=bare)

    assert data["messages"] == [] and data["channel_preference"] is None
    assert data["journeys"] == {"enrollments": [], "segments": [], "replenishment_predictions": []}
    assert data["webhooks"] == {"inbound_messages": [], "webhook_events": []}
