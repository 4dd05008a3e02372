"""POST /api/v1/messages and GET /api/v1/messages/{id}."""

from __future__ import annotations

import datetime as dt

import pytest

from orchestrator.audience.services import customer_upsert
from orchestrator.delivery.models import Message, MessageStatus
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_send_to_external_id_queues_a_message_and_answers_202(api, send_body):
    response = api.post("/api/v1/messages", send_body, format="json")

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "status", "channel", "explanation"}
    message = Message.objects.get(pk=body["id"])
    assert (body["status"], body["channel"]) == ("queued", "email")
    assert message.to_address == "alex@example.com"
    assert message.topic.key == "orders"  # the template's default topic
    assert message.data == {"order_id": "A-1001"}
    assert body["explanation"][0]["step"] == "created"


def test_send_by_email_finds_the_customer(api, send_body, customer):
    response = api.post(
        "/api/v1/messages", {**send_body, "to": {"email": "alex@example.com"}}, format="json"
    )
    assert response.status_code == 202
    assert Message.objects.get().customer == customer


def test_send_by_phone_normalizes_the_number_before_looking_up(api, send_body, customer):
    body = {**send_body, "to": {"phone": "+81 90-1234-5678"}, "channel": "sms"}
    response = api.post("/api/v1/messages", body, format="json")

    assert response.status_code == 202
    message = Message.objects.get()
    assert (message.customer, message.channel, message.to_address) == (
        customer,
        "sms",
        "+819012345678",
    )


def test_preferred_channel_picks_the_first_reachable_one(api, send_body):
    response = api.post("/api/v1/messages", {**send_body, "channel": "preferred"}, format="json")
    assert response.status_code == 202
    assert response.json()["channel"] == "email"


def test_send_at_in_the_future_schedules_the_message(api, send_body):
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)).isoformat()
    response = api.post("/api/v1/messages", {**send_body, "send_at": later}, format="json")

    assert response.status_code == 202
    assert response.json()["status"] == MessageStatus.SCHEDULED


def test_channel_the_template_lacks_is_refused_naming_the_template(api, send_body):
    response = api.post("/api/v1/messages", {**send_body, "channel": "line"}, format="json")
    assert_error(response, 400, fields=("template",))
    assert not Message.objects.exists()


def test_customer_reachable_on_no_allowed_channel_is_refused(api, send_body):
    customer_upsert(external_id="no-address")
    body = {**send_body, "to": {"external_id": "no-address"}, "channel": "preferred"}
    assert_error(
        api.post("/api/v1/messages", body, format="json"),
        400,
        "no_reachable_channel",
        fields=("channel",),
    )
    assert not Message.objects.exists()


def test_expiry_before_the_send_time_is_refused(api, send_body):
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    response = api.post("/api/v1/messages", {**send_body, "expires_at": past}, format="json")
    assert_error(response, 400, fields=("expires_at",))


def test_email_shared_by_two_customers_is_ambiguous(api, send_body):
    customer_upsert(external_id="alex-2", email="alex@example.com")
    body = {**send_body, "to": {"email": "alex@example.com"}}
    assert_error(
        api.post("/api/v1/messages", body, format="json"), 400, "ambiguous_customer", ("to",)
    )


def test_message_detail_shows_status_history_explanation_and_a_masked_address(api, send_body):
    message_id = api.post("/api/v1/messages", send_body, format="json").json()["id"]

    response = api.get(f"/api/v1/messages/{message_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == message_id
    assert (body["status"], body["channel"], body["customer"]) == ("queued", "email", "alex")
    assert (body["template"], body["topic"]) == ("order-shipped", "orders")
    assert body["to"] == "a***@example.com"
    assert body["provider"] == "" and body["provider_message_id"] == ""
    assert body["sent_at"] is None and body["created_at"]
    assert [h["status"] for h in body["history"]] == ["queued"]
    assert body["explanation"] == Message.objects.get().explanation


def test_unknown_message_is_a_json_404(api):
    assert_error(api.get("/api/v1/messages/999999"), 404, "not_found")


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_a_send_answers_json_to_any_client_that_takes_it(api, send_body, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = api.post("/api/v1/messages", send_body, format="json", **headers)

    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    assert response.json()["status"] == "queued"


def test_a_send_honours_accept_parameters_and_refuses_what_it_cannot_answer(api, send_body):
    indented = api.post(
        "/api/v1/messages", send_body, format="json", HTTP_ACCEPT="application/json; indent=2"
    )
    assert indented.status_code == 202
    assert indented.content.startswith(b'{\n  "id"')

    refused = api.post("/api/v1/messages", send_body, format="json", HTTP_ACCEPT="text/html")
    assert_error(refused, 406, "not_acceptable")
    assert Message.objects.count() == 1  # the refused request wrote nothing
