"""POST /api/v1/messages decides at request time what it can: a template that cannot
render with the data given is refused with 422 naming the missing variables; a key in
flight says when to retry; a message and its first history row commit together."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection
from rest_framework.test import APIClient

from orchestrator.api.idempotency import Claim, idempotency_claim, request_hash
from orchestrator.api.models import ApiKey
from orchestrator.audience.services import customer_upsert
from orchestrator.delivery.models import Message, MessageEvent
from orchestrator.delivery.template_services import template_create
from tests.api.conftest import assert_error

MESSAGES = "/api/v1/messages"


@pytest.mark.django_db
def test_missing_data_variable_is_a_422_naming_it_and_queues_nothing(api, send_body):
    response = api.post(MESSAGES, {**send_body, "data": {}}, format="json")

    error = assert_error(response, 422, "template_cannot_render", fields=("data.order_id",))
    assert "email/en" in error["fields"]["data.order_id"][0]
    assert "the variant this send uses" in error["message"]
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_every_missing_variable_is_named_not_only_the_first(api, send_body, topic):
    template_create(
        key="welcome",
        name="Welcome",
        topic="orders",
        variants=[
            {
                "channel": "email",
                "locale": "en",
                "subject": "Hi {{ customer.first_name }}",
                "body": "{{ data.code }} {{ data.shop.name }} {{ data.note | default: '' }}",
            }
        ],
    )
    response = api.post(MESSAGES, {**send_body, "template": "welcome", "data": {}}, format="json")

    error = assert_error(response, 422, "template_cannot_render")
    assert set(error["fields"]) == {"customer.first_name", "data.code", "data.shop.name"}


@pytest.mark.django_db
def test_preferred_send_is_checked_on_every_variant_it_could_use(api, send_body, topic):
    # The SMS variant needs more than the email one: "preferred" may go by SMS at send
    # time (the customer can change their order or opt out of email meanwhile).
    template_create(
        key="pickup",
        name="Pickup",
        topic="orders",
        variants=[
            {"channel": "email", "locale": "en", "subject": "Ready", "body": "Ready to collect"},
            {"channel": "sms", "locale": "en", "body": "Collect with code {{ data.code }}"},
        ],
    )
    body = {**send_body, "template": "pickup", "channel": "preferred", "data": {}}

    error = assert_error(api.post(MESSAGES, body, format="json"), 422, "template_cannot_render")
    assert error["fields"] == {"data.code": ["Undefined; the template needs it (sms/en)."]}
    assert "'preferred'" in error["message"]
    # Named channel email: only its own variant counts.
    response = api.post(MESSAGES, {**body, "channel": "email"}, format="json")
    assert response.status_code == 202


@pytest.mark.django_db
def test_fallback_channel_variant_is_checked_too(api, send_body):
    body = {**send_body, "fallback_channel": "sms", "data": {}}
    error = assert_error(api.post(MESSAGES, body, format="json"), 422, "template_cannot_render")
    assert error["fields"]["data.order_id"] == [
        "Undefined; the template needs it (email/en, sms/en)."
    ]


@pytest.mark.django_db
def test_template_rendering_empty_is_a_422_on_the_template(api, send_body, topic):
    template_create(
        key="blank",
        name="Blank",
        topic="orders",
        variants=[{"channel": "sms", "locale": "en", "body": "{{ data.text }}"}],
    )
    body = {**send_body, "template": "blank", "channel": "sms", "data": {"text": "  "}}
    error = assert_error(api.post(MESSAGES, body, format="json"), 422, "template_cannot_render")
    assert "empty" in error["fields"]["template"][0]


@pytest.mark.django_db
def test_422_for_rendering_frees_the_idempotency_key(api, send_body):
    bad = api.post(MESSAGES, {**send_body, "data": {}}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    good = api.post(MESSAGES, send_body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert (bad.status_code, good.status_code) == (422, 202)


@pytest.mark.django_db
def test_409_in_flight_tells_the_client_when_to_retry(api, send_body):
    digest = request_hash(method="POST", path=MESSAGES, body=send_body)
    claim = idempotency_claim(
        api_key=ApiKey.objects.get(), key="busy", method="POST", path=MESSAGES, digest=digest
    )
    assert isinstance(claim, Claim)

    response = api.post(MESSAGES, send_body, format="json", HTTP_IDEMPOTENCY_KEY="busy")

    assert_error(response, 409, "idempotency_key_in_flight")
    assert int(response["Retry-After"]) >= 1


def _other_connection() -> psycopg.Connection:
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"],
        host=settings["HOST"],
        port=settings["PORT"],
        autocommit=True,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("key", [None, "with-a-key"])
def test_message_and_its_first_history_row_commit_together(api_key_factory, key):
    """Another process (a dispatcher) never sees the message without its "queued" row:
    looked at from a second connection at the moment the history row is inserted."""
    customer_upsert(external_id="alex", email="alex@example.com")
    from orchestrator.consent.services import topic_create

    topic_create(key="orders", name="Orders", kind="transactional", channels=["email"])
    template_create(
        key="t",
        name="T",
        topic="orders",
        variants=[{"channel": "email", "locale": "en", "subject": "S", "body": "B"}],
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_factory()}")
    seen_by_others: list[int] = []
    lock = threading.Lock()

    def look_from_outside(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if 'INSERT INTO "delivery_messageevent"' in sql:
            # The history row is written: the message is not visible before both commit.
            with lock, _other_connection() as other:
                seen_by_others.append(
                    other.execute("SELECT count(*) FROM delivery_message").fetchone()[0]
                )
        return result

    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    with connection.execute_wrapper(look_from_outside):
        response = client.post(
            MESSAGES, {"to": {"external_id": "alex"}, "template": "t"}, format="json", **headers
        )

    assert response.status_code == 202
    assert seen_by_others == [0]
    message = Message.objects.get()
    assert list(MessageEvent.objects.filter(message=message).values_list("status", flat=True)) == [
        "queued"
    ]
