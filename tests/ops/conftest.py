"""Fixtures for the operations tests: /metrics, /healthz, the status rollup and logging."""

from __future__ import annotations

import pytest

from tests.ops.promtext import Exposition, parse


@pytest.fixture
def metrics_store(broker_url, settings):
    """The metrics counters in the session's broker, emptied; yields a Redis client on it."""
    from orchestrator.core import metrics

    settings.CELERY_BROKER_URL = broker_url
    metrics._redis.cache_clear()
    metrics._skip_writes_until = 0.0
    client = metrics._redis()
    client.delete(metrics._REQUESTS, metrics._LATENCY, metrics._REJECTED)
    yield client
    client.delete(metrics._REQUESTS, metrics._LATENCY, metrics._REJECTED)
    metrics._redis.cache_clear()
    metrics._skip_writes_until = 0.0


@pytest.fixture
def scrape(client, metrics_store, settings):
    """GET /metrics (no token configured), checked and parsed strictly."""
    settings.METRICS_TOKEN = ""

    def get() -> Exposition:
        response = client.get("/metrics")
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return parse(response.content.decode())

    return get
