"""The single send's round trips are counted, and the API key cache keeps revocation bounded."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from orchestrator.api import auth
from orchestrator.api.models import ApiKey


def test_a_single_send_takes_a_bounded_number_of_queries(
    api, send_body, django_assert_max_num_queries
):
    api.post("/api/v1/messages", send_body, format="json")  # the key is read and cached
    # Customer, template with its topic and variants, the message with its history row
    # (one statement; the topic is loaded, so no digest choice is asked for).
    with django_assert_max_num_queries(3):
        assert api.post("/api/v1/messages", send_body, format="json").status_code == 202
    # With an Idempotency-Key: also the claim (committed alone) and the stored response,
    # and the two transactions, each a savepoint pair inside the test's own.
    with django_assert_max_num_queries(9):
        response = api.post("/api/v1/messages", send_body, format="json", HTTP_IDEMPOTENCY_KEY="k")
        assert response.status_code == 202


def test_a_revoked_key_is_refused_once_the_cache_bound_has_passed(
    api, send_body, settings, monkeypatch
):
    settings.API_KEY_CACHE_SECONDS = 5
    now = [1000.0]
    monkeypatch.setattr(auth, "_clock", lambda: now[0])
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 202
    # Revoked by another process (no signal reaches this one): still known for a while...
    ApiKey.objects.update(revoked_at=timezone.now())
    now[0] += 4.9
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 202
    # ...and refused once API_KEY_CACHE_SECONDS have passed since it was read.
    now[0] += 0.2
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 401


def test_revoking_in_this_process_takes_effect_at_once(api, send_body, monkeypatch):
    monkeypatch.setattr(auth, "_clock", lambda: 1000.0)  # the cache never expires by itself
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 202
    key = ApiKey.objects.get()
    key.revoked_at = timezone.now()
    key.save()  # as the admin's form does; its bulk action clears the cache itself
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 401


def test_the_admin_revoke_action_clears_the_cache(api, send_body, monkeypatch, rf):
    from django.contrib.admin.sites import site
    from django.contrib.messages.storage.fallback import FallbackStorage

    monkeypatch.setattr(auth, "_clock", lambda: 1000.0)
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 202
    request = rf.post("/admin/")
    request.session = {}
    request._messages = FallbackStorage(request)
    site._registry[ApiKey].revoke(request, ApiKey.objects.all())
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 401


def test_a_zero_cache_reads_the_key_every_time(api, send_body, settings):
    settings.API_KEY_CACHE_SECONDS = 0
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 202
    ApiKey.objects.update(revoked_at=timezone.now())
    assert api.post("/api/v1/messages", send_body, format="json").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_claim_commits_on_its_own_and_leaves_the_session_as_it_was(api_key_factory):
    from orchestrator.api.idempotency import Claim, idempotency_claim

    api_key_factory()
    key = ApiKey.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        (before,) = cursor.fetchone()
    outcome = idempotency_claim(api_key=key, key="k", method="POST", path="/p", digest="d")
    assert isinstance(outcome, Claim)
    assert connection.get_autocommit()  # no transaction left open
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == (before,)
    # Committed: a second connection sees the claim at once.
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT state FROM api_idempotencyrecord WHERE key = 'k'")
            assert cursor.fetchone() == ("in_flight",)
    finally:
        other.close()


def test_the_shared_send_checker_gives_what_a_fresh_serializer_gives_across_threads():
    """One MessageInSerializer serves every single send of a process (``_checked``): it
    keeps nothing from one body to the next, in one thread or in several at once."""
    import threading

    from rest_framework import serializers

    from orchestrator.api.serializers import MessageInSerializer
    from orchestrator.api.views import _checked, _valid

    bodies = [
        {"to": {"external_id": f"c-{i}"}, "template": f"t{i}", "data": {"n": i}, "priority": i}
        for i in range(10)
    ] + [
        {"to": {"email": "a@example.com"}, "template": "t", "channel": "sms", "topic": None},
        {"to": {"phone": "+81 90-1234-5678"}, "template": "t", "send_at": "2026-12-06T08:00Z"},
        {"to": {}, "template": "t"},  # refused: no recipient
        {"to": {"external_id": "x"}, "template": 5},  # refused: not a string
        {"to": {"external_id": "x"}, "template": "t", "priority": 10},  # refused: range
    ]

    def outcome(check, body):
        try:
            return "ok", check(MessageInSerializer, body)
        except serializers.ValidationError as exc:
            return "refused", exc.detail

    expected = [outcome(_valid, body) for body in bodies]
    assert [kind for kind, _ in expected].count("refused") == 3
    mismatches: list[int] = []

    def run() -> None:
        for _ in range(20):
            for index, body in enumerate(bodies):
                if outcome(_checked, body) != expected[index]:
                    mismatches.append(index)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []
