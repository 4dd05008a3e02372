"""/healthz: 200 while the database answers, "degraded" when only the broker is down."""

from __future__ import annotations

import socket
import time

import pytest
from django.db import connection

from orchestrator.celery import app as celery_app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_healthz_is_ok_with_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is True
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_healthz_reports_a_dead_broker_quickly_and_stays_up(client, monkeypatch):
    dead = f"redis://127.0.0.1:{_closed_port()}/0"
    # Celery resolves the write URL from broker_url once and keeps it: replace both.
    monkeypatch.setattr(celery_app.conf, "broker_url", dead)
    monkeypatch.setattr(celery_app.conf, "broker_write_url", dead)
    started = time.monotonic()
    response = client.get("/healthz")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert elapsed < 5


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_when_the_database_does_not_answer(client):
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["HOST"] = "127.0.0.1"
    connection.settings_dict["PORT"] = str(_closed_port())
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["ok"] is False


@pytest.mark.django_db
def test_landing_page_links_admin_docs_and_inbox(client):
    response = client.get("/")
    assert response.status_code == 200
    for href in ('href="/admin/"', 'href="/api/docs/"', 'href="/dev/inbox/"', 'href="/healthz"'):
        assert href in response.content.decode()
