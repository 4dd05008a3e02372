"""Idempotency-Key on POST /api/v1/messages (and the other POSTs): RELIABILITY.md case 3."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.db.models.functions import Now
from rest_framework.test import APIClient

from orchestrator.api.idempotency import (
    Claim,
    idempotency_claim,
    idempotency_complete,
    request_hash,
)
from orchestrator.api.models import ApiKey, IdempotencyRecord
from orchestrator.api.tasks import purge_idempotency_records
from orchestrator.delivery.models import Message
from tests.api.conftest import assert_error

MESSAGES = "/api/v1/messages"


def send(client, body, key):
    return client.post(MESSAGES, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_same_key_and_body_five_times_makes_one_message_and_identical_responses(api, send_body):
    responses = [send(api, send_body, "order-A-1001") for _ in range(5)]

    assert Message.objects.count() == 1
    assert {r.status_code for r in responses} == {202}
    assert len({r.content for r in responses}) == 1
    assert responses[0].json()["id"] == Message.objects.get().pk
    assert "Idempotent-Replayed" not in responses[0]
    assert all(r["Idempotent-Replayed"] == "true" for r in responses[1:])


@pytest.mark.django_db
def test_same_key_with_a_different_body_is_refused_with_422(api, send_body):
    first = send(api, send_body, "order-A-1001")
    other = send(api, {**send_body, "data": {"order_id": "A-1002"}}, "order-A-1001")

    assert first.status_code == 202
    assert_error(other, 422, "idempotency_key_reused")
    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_same_key_on_another_path_is_refused_with_422(api, send_body):
    assert send(api, send_body, "k-1").status_code == 202
    response = api.post(
        "/api/v1/events",
        {"customer": "alex", "name": "x"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k-1",
    )
    assert_error(response, 422, "idempotency_key_reused")


@pytest.mark.django_db
def test_keys_belong_to_one_api_key_so_two_clients_may_use_the_same_key(client_for, send_body):
    first = send(client_for("send"), send_body, "shared-key")
    second = send(client_for("send"), send_body, "shared-key")

    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]
    assert Message.objects.count() == 2


@pytest.mark.django_db
def test_refused_request_frees_its_key_for_the_corrected_retry(api, send_body):
    refused = send(api, {**send_body, "template": "no-such-template"}, "retry-me")
    assert_error(refused, 400, "unknown_template", fields=("template",))
    assert not IdempotencyRecord.objects.exists()

    accepted = send(api, send_body, "retry-me")
    assert accepted.status_code == 202
    record = IdempotencyRecord.objects.get()
    assert (record.state, record.response_status) == ("done", 202)


@pytest.mark.django_db
def test_replay_answers_with_the_first_status_not_a_fresh_one(api):
    body = {"external_id": "kim", "email": "kim@example.com"}
    first = api.post("/api/v1/customers", body, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    replay = api.post("/api/v1/customers", body, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    fresh = api.post("/api/v1/customers", body, format="json")

    assert (first.status_code, replay.status_code, fresh.status_code) == (201, 201, 200)
    assert replay.content == first.content


@pytest.mark.django_db
def test_overlong_or_blank_key_is_refused_with_400(api, send_body):
    assert_error(send(api, send_body, "k" * 256), 400, "invalid_idempotency_key")
    assert_error(send(api, send_body, "   "), 400, "invalid_idempotency_key")
    assert send(api, send_body, "k" * 255).status_code == 202
    assert Message.objects.count() == 1


def _claim_for(api_key: ApiKey, body, key: str):
    digest = request_hash(method="POST", path=MESSAGES, body=body)
    return idempotency_claim(api_key=api_key, key=key, method="POST", path=MESSAGES, digest=digest)


@pytest.mark.django_db
def test_key_still_in_flight_is_answered_with_409(api, send_body):
    claim = _claim_for(ApiKey.objects.get(), send_body, "busy")
    assert isinstance(claim, Claim)

    assert_error(send(api, send_body, "busy"), 409, "idempotency_key_in_flight")
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_claims_are_aged_by_the_database_clock_whatever_the_servers_clock(api, send_body):
    """The lease is the database's clock, so is its age: a server whose clock runs an hour
    behind still takes over a claim abandoned two minutes ago, and one an hour ahead
    does not take over a claim made a moment ago (and run the request twice)."""
    api_key = ApiKey.objects.get()
    now = dt.datetime.now(dt.UTC)
    _claim_for(api_key, send_body, "fresh")
    with time_machine.travel(now + dt.timedelta(hours=1)):
        assert_error(send(api, send_body, "fresh"), 409, "idempotency_key_in_flight")

    _claim_for(api_key, send_body, "abandoned")
    IdempotencyRecord.objects.filter(key="abandoned").update(
        created_at=Now() - dt.timedelta(minutes=2)
    )
    with time_machine.travel(now - dt.timedelta(hours=1)):
        assert send(api, send_body, "abandoned").status_code == 202

    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_claim_abandoned_by_a_crashed_process_is_taken_over(api, send_body):
    _claim_for(ApiKey.objects.get(), send_body, "crashed")
    # The process that claimed it died two minutes ago without finishing.
    IdempotencyRecord.objects.update(
        created_at=Now() - dt.timedelta(minutes=2)
    )  # the lease's clock: the database's

    response = send(api, send_body, "crashed")

    assert response.status_code == 202
    assert Message.objects.count() == 1
    assert send(api, send_body, "crashed").content == response.content


@pytest.mark.django_db
def test_owner_that_lost_its_claim_to_a_takeover_cannot_store_its_response(api, send_body):
    api_key = ApiKey.objects.get()
    stalled = _claim_for(api_key, send_body, "slow")
    IdempotencyRecord.objects.update(
        created_at=Now() - dt.timedelta(minutes=2)
    )  # the lease's clock: the database's
    successor = _claim_for(api_key, send_body, "slow")

    assert isinstance(successor, Claim)
    assert successor.lease != stalled.lease
    assert not idempotency_complete(stalled, status=202, content="{}")
    assert idempotency_complete(successor, status=202, content='{"id": 1}')


@pytest.mark.django_db
def test_purge_task_deletes_records_past_the_ttl_and_keeps_younger_ones(api, send_body, settings):
    send(api, send_body, "old")
    send(api, send_body, "new")
    past_ttl = dt.datetime.now(dt.UTC) - dt.timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1)
    IdempotencyRecord.objects.filter(key="old").update(created_at=past_ttl)

    assert purge_idempotency_records() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def _wait_for_lock_waiter(table: str, timeout: float = 10.0) -> None:
    """Poll until another backend waits for a lock on ``table`` (a write held back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
                [table],
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    pytest.fail(f"no request blocked on {table!r} within {timeout}s")


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_one_key_make_one_message(api_key_factory, send_body):
    raw_key = api_key_factory(scopes=["send"])
    responses = {}

    def post(name: str) -> None:
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
            responses[name] = send(client, send_body, "race-1")
        finally:
            connections.close_all()  # this thread's own database connection

    # A third connection holds the message table so the first request stops inside
    # messages_queue, at its INSERT, while it owns the key.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE delivery_message IN SHARE MODE")
        first = threading.Thread(target=post, args=("first",))
        first.start()
        _wait_for_lock_waiter("delivery_message")

        second = threading.Thread(target=post, args=("second",))
        second.start()
        second.join(timeout=30)
        assert not second.is_alive()
        assert Message.objects.count() == 0  # the first is still held
    first.join(timeout=30)
    assert not first.is_alive()

    assert responses["first"].status_code == 202, responses["first"].content
    assert_error(responses["second"], 409, "idempotency_key_in_flight")
    assert Message.objects.count() == 1

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    later = send(client, send_body, "race-1")
    assert later.status_code == 202
    assert later.content == responses["first"].content
    assert Message.objects.count() == 1
