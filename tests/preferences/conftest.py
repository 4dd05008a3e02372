"""Preference center fixtures: a clean rate-limit count per test, a customer with a link."""

from __future__ import annotations

import pytest
import redis
from django.core.cache import cache

from orchestrator.preferences import ratelimit

#: A store nothing listens on: the rate limit's fallback test points at it.
DEAD_STORE = "redis://127.0.0.1:1/0"


def clear_rate_counts() -> None:
    """Forget the per-IP counts: in the shared store and in this process's cache."""
    url = ratelimit.store_url()
    if url and url != DEAD_STORE:
        store = redis.Redis.from_url(url.replace("valkey", "redis", 1))
        keys = list(store.scan_iter(f"{ratelimit.KEY_PREFIX}*"))
        if keys:
            store.delete(*keys)
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    # Every test client is 127.0.0.1.
    clear_rate_counts()
    yield
    clear_rate_counts()
