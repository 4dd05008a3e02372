"""POST /api/v1/messages/batch: per-item results, per-item idempotency, one transaction."""

from __future__ import annotations

import pytest

from orchestrator.api.models import IdempotencyRecord
from orchestrator.audience.services import customer_upsert
from orchestrator.consent.models import Subscription
from orchestrator.consent.services import topic_create
from orchestrator.delivery.models import Message, MessageEvent, MessageStatus
from orchestrator.delivery.template_services import template_create

URL = "/api/v1/messages/batch"


def item(send_body, key, **changes):
    return {**send_body, "idempotency_key": key, **changes}


def batch(api, items):
    return api.post(URL, {"messages": items}, format="json")


def test_valid_and_invalid_items_each_get_their_own_result(api, send_body):
    items = [
        item(send_body, "a"),
        item(send_body, "b", template="no-such-template"),
        "not an object",
        item(send_body, "c", priority=12),
        {k: v for k, v in send_body.items()},  # no idempotency_key
        item(send_body, "d", data={}),  # the template needs data.order_id
        item(send_body, "e", to={"external_id": "nobody"}),
        item(send_body, "f", channel="sms"),
    ]
    response = batch(api, items)
    assert response.status_code == 207, response.content
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [202, 400, 400, 400, 400, 422, 400, 202]
    assert (body["accepted"], body["refused"]) == (2, 6)
    assert results[1]["error"]["code"] == "unknown_template"
    assert "priority" in results[3]["error"]["fields"]
    assert "idempotency_key" in results[4]["error"]["fields"]
    assert results[5]["error"]["code"] == "template_cannot_render"
    assert "data.order_id" in results[5]["error"]["fields"]
    assert results[6]["error"]["code"] == "unknown_customer"
    queued = {m.pk: m for m in Message.objects.all()}
    assert set(queued) == {results[0]["id"], results[7]["id"]}
    assert queued[results[7]["id"]].channel == "sms"
    assert results[0]["replayed"] is False
    # Every queued message has its first history row, as a single send has.
    assert MessageEvent.objects.filter(message_id__in=queued).count() == 2
    # Refused items leave their keys free; accepted ones are stored.
    assert set(IdempotencyRecord.objects.values_list("key", "state")) == {
        ("a", "done"),
        ("f", "done"),
    }


def test_a_replayed_key_returns_the_first_result_across_batches_and_endpoints(api, send_body):
    first = batch(api, [item(send_body, "k1"), item(send_body, "k2")]).json()["results"]
    again = batch(api, [item(send_body, "k2"), item(send_body, "k3")]).json()["results"]
    assert again[0]["id"] == first[1]["id"]
    assert again[0]["replayed"] is True
    assert again[1]["replayed"] is False
    assert Message.objects.count() == 3
    # The single endpoint shares the keys: the same body under k1 is a replay there too.
    single = api.post("/api/v1/messages", send_body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert single.status_code == 202
    assert single["Idempotent-Replayed"] == "true"
    assert single.json()["id"] == first[0]["id"]
    # And a key first used there is a replay in a batch.
    api.post("/api/v1/messages", send_body, format="json", HTTP_IDEMPOTENCY_KEY="s1")
    [replay] = batch(api, [item(send_body, "s1")]).json()["results"]
    assert replay["status"] == 202
    assert replay["replayed"] is True
    assert Message.objects.count() == 4


def test_a_key_reused_with_another_body_is_422_inside_and_across_batches(api, send_body):
    other = {"data": {"order_id": "B-2"}}
    results = batch(
        api, [item(send_body, "k"), item(send_body, "k"), item(send_body, "k", **other)]
    ).json()["results"]
    assert [r["status"] for r in results] == [202, 202, 422]
    assert results[1]["id"] == results[0]["id"]
    assert results[1]["replayed"] is True
    assert results[2]["error"]["code"] == "idempotency_key_reused"
    [later] = batch(api, [item(send_body, "k", **other)]).json()["results"]
    assert later["status"] == 422
    assert later["error"]["code"] == "idempotency_key_reused"
    assert Message.objects.count() == 1


def test_a_key_in_flight_elsewhere_is_409_for_that_item_only(api, send_body):
    from orchestrator.api.idempotency import request_hash
    from orchestrator.api.models import ApiKey

    body = {k: v for k, v in send_body.items()}
    IdempotencyRecord.objects.create(
        api_key=ApiKey.objects.get(),
        key="busy",
        method="POST",
        path="/api/v1/messages",
        request_hash=request_hash(method="POST", path="/api/v1/messages", body=body),
    )
    results = batch(api, [item(send_body, "busy"), item(send_body, "free")]).json()["results"]
    assert [r["status"] for r in results] == [409, 202]
    assert results[0]["error"]["code"] == "idempotency_key_in_flight"


def test_more_items_than_the_limit_are_refused_whole(api, send_body, settings):
    items = [item(send_body, f"k{i}") for i in range(settings.API_BULK_LIMIT + 1)]
    response = batch(api, items)
    assert response.status_code == 400
    assert "messages" in response.json()["error"]["fields"]
    assert not Message.objects.exists()
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize("payload", [{}, {"messages": []}, {"messages": "x"}, []])
def test_a_malformed_batch_is_a_400(api, payload):
    assert api.post(URL, payload, format="json").status_code == 400


def test_consent_is_decided_per_item(api, customer):
    """A "preferred" send picks, per customer, the first channel that customer consents to."""
    news = topic_create(key="news", name="News", channels=["email", "sms"], default_opt_in=True)
    template_create(
        key="news",
        name="News",
        topic="news",
        variants=[
            {"channel": "email", "subject": "News", "body": "News {{ unsubscribe_url }}"},
            {"channel": "sms", "body": "News {{ preferences_url }}"},
        ],
    )
    kim, _ = customer_upsert(external_id="kim", email="kim@example.com", phone="+819012345679")
    Subscription.objects.create(
        customer=kim, topic=news, channel="email", status=Subscription.Status.UNSUBSCRIBED
    )
    send = {"template": "news", "channel": "preferred"}
    results = batch(
        api,
        [
            {**send, "to": {"external_id": "alex"}, "idempotency_key": "alex"},
            {**send, "to": {"external_id": "kim"}, "idempotency_key": "kim"},
        ],
    ).json()["results"]
    assert [r["status"] for r in results] == [202, 202]
    assert [r["channel"] for r in results] == ["email", "sms"]


def test_a_database_error_mid_batch_leaves_nothing_written(api, send_body):
    from django.db import DatabaseError, connection

    def failing(execute, sql, params, many, context):
        if 'INSERT INTO "delivery_messageevent"' in sql:
            raise DatabaseError("the disk is full")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(failing), pytest.raises(DatabaseError):
        batch(api, [item(send_body, "a"), item(send_body, "b")])
    assert not Message.objects.exists()
    assert not IdempotencyRecord.objects.exists()  # the keys are free for the retry
    results = batch(api, [item(send_body, "a"), item(send_body, "b")]).json()["results"]
    assert [r["status"] for r in results] == [202, 202]
    assert Message.objects.filter(status=MessageStatus.QUEUED).count() == 2


def test_the_batch_needs_the_send_scope(client_for, send_body):
    response = batch(client_for("track"), [item(send_body, "a")])
    assert response.status_code == 403


def test_a_batch_reads_its_references_in_a_fixed_number_of_queries(
    api, send_body, django_assert_max_num_queries
):
    for n in range(50):
        customer_upsert(external_id=f"c{n}", email=f"c{n}@example.com")
    items = [item(send_body, f"k{n}", to={"external_id": f"c{n}"}) for n in range(50)]
    batch(api, items[:1])  # warm the key cache
    with django_assert_max_num_queries(20):
        response = batch(api, items)
    assert response.json()["accepted"] == 50


def test_a_preferred_send_follows_each_customers_own_channel_order(api, send_body, customer):
    from orchestrator.consent.models import ChannelPreference

    ChannelPreference.objects.create(customer=customer, channel_order=["sms", "email"])
    customer_upsert(external_id="kim", email="kim@example.com", phone="+819012345679")
    send = {**send_body, "channel": "preferred"}
    results = batch(
        api,
        [
            {**send, "idempotency_key": "alex"},
            {**send, "to": {"external_id": "kim"}, "idempotency_key": "kim"},
        ],
    ).json()["results"]
    assert [(r["status"], r["channel"]) for r in results] == [(202, "sms"), (202, "email")]
