"""/api/v1/frequency-rules, and the cap holding for concurrent API sends."""

from __future__ import annotations

import os
import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from orchestrator.delivery import dispatcher
from orchestrator.delivery.models import FrequencyRule, Message

pytestmark = pytest.mark.django_db

DAILY = {"key": "daily-3", "name": "3 a day", "limit": 3, "calendar": "day"}


def test_create_read_replace_and_delete_a_rule(api):
    created = api.post("/api/v1/frequency-rules", DAILY, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["calendar"] == "day"
    assert api.get("/api/v1/frequency-rules/daily-3").json()["limit"] == 3
    replaced = api.put(
        "/api/v1/frequency-rules/daily-3",
        {"name": "4h gap", "kind": "gap", "window_seconds": 4 * 3600},
        format="json",
    )
    assert replaced.status_code == 200, replaced.json()
    assert (replaced.json()["kind"], replaced.json()["window_seconds"]) == ("gap", 14400)
    assert [r["key"] for r in api.get("/api/v1/frequency-rules").json()["results"]] == ["daily-3"]
    assert api.delete("/api/v1/frequency-rules/daily-3").status_code == 204
    assert api.get("/api/v1/frequency-rules/daily-3").status_code == 404


def test_a_channel_rule_without_a_channel_is_refused_with_the_field_named(api):
    response = api.post("/api/v1/frequency-rules", {**DAILY, "scope": "channel"}, format="json")
    assert response.status_code == 400
    assert "channel" in response.json()["error"]["fields"]
    assert not FrequencyRule.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"key": "x", "name": "x", "limit": 3}, "window"),
        ({"key": "x", "name": "x", "calendar": "day", "window_seconds": 3600}, "calendar"),
        ({"key": "x", "name": "x", "calendar": "year"}, "calendar"),
        ({"key": "x", "name": "x", "kind": "gap"}, "window"),
        ({"key": "x", "name": "x", "scope": "topic", "topic": "nope", "calendar": "day"}, "topic"),
        ({"key": "x", "name": "x", "limit": 0, "calendar": "day"}, "limit"),
        ({"key": "x", "name": "x", "limit": "3", "calendar": "day"}, "limit"),
    ],
)
def test_bad_rule_definitions_are_400_with_field_errors(api, body, field):
    response = api.post("/api/v1/frequency-rules", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_rules_need_the_admin_scope(client_for):
    assert client_for("send").get("/api/v1/frequency-rules").status_code == 403


def test_message_detail_explains_the_hold_in_plain_words(api, send_body, settings):
    from orchestrator.consent.services import topic_create
    from orchestrator.delivery.template_services import template_create

    settings.CHANNEL_ADAPTERS = {
        c: {"BACKEND": "channels.adapters.locmem.LocmemAdapter", "OPTIONS": {}}
        for c in ("email", "sms", "whatsapp", "line")
    }
    topic_create(key="promos", name="Promotions", default_opt_in=True)
    template_create(
        key="promo",
        name="Promo",
        topic="promos",
        variants=[{"channel": "email", "subject": "Sale", "body": "Sale! {{ unsubscribe_url }}"}],
    )
    api.post("/api/v1/frequency-rules", {**DAILY, "limit": 1}, format="json")
    body = {"to": {"external_id": "alex"}, "template": "promo", "channel": "email"}
    ids = [api.post("/api/v1/messages", body, format="json").json()["id"] for _ in range(2)]
    dispatcher.dispatch_due()
    held = api.get(f"/api/v1/messages/{ids[1]}").json()
    assert held["status"] == "deferred"
    assert held["history"][-1]["code"] == "rule:daily-3"
    assert held["explanation"][-1]["details"]["rules"][0]["count"] == 1
    assert held["explanation_text"][-1].startswith("We held it until")


@pytest.mark.django_db(transaction=True)
def test_cap_holds_for_50_concurrent_api_sends_and_two_dispatcher_processes(
    api_key_factory, settings
):
    from orchestrator.audience.services import customer_upsert
    from orchestrator.consent.services import topic_create
    from orchestrator.delivery.template_services import template_create

    settings.CHANNEL_ADAPTERS = {
        c: {"BACKEND": "channels.adapters.locmem.LocmemAdapter", "OPTIONS": {}}
        for c in ("email", "sms", "whatsapp", "line")
    }
    customer_upsert(external_id="alex", email="alex@example.com", timezone="America/Chicago")
    topic_create(key="promos", name="Promotions", default_opt_in=True)
    template_create(
        key="promo",
        name="Promo",
        topic="promos",
        variants=[{"channel": "email", "subject": "Sale", "body": "Sale! {{ unsubscribe_url }}"}],
    )
    FrequencyRule.objects.create(key="daily-3", name="3 a day", limit=3, calendar="day")
    key = api_key_factory()
    statuses: list[int] = []

    def send(n: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        response = client.post(
            "/api/v1/messages",
            {"to": {"external_id": "alex"}, "template": "promo", "channel": "email"},
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"send-{n}",
        )
        statuses.append(response.status_code)
        connections.close_all()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [202] * 50

    connections.close_all()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                for _round in range(4):
                    dispatcher.dispatch_due(batch_size=5)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for pid in children:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

    counts = {
        s: Message.objects.filter(status=s).count() for s in ("sent", "deferred", "suppressed")
    }
    assert counts == {"sent": 3, "deferred": 47, "suppressed": 0}
    for message in Message.objects.filter(status="deferred"):
        assert "at most 3 marketing messages per day" in message.explanation[-1]["reason"]
