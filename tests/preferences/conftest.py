"""Preference center fixtures: a clean rate-limit count per test, a customer with a link."""

from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    # The per-IP counts live in the cache; every test client is 127.0.0.1.
    cache.clear()
    yield
    cache.clear()
