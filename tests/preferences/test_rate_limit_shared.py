"""The preference center's per-IP limit holds across web processes (counted in the
shared Redis/Valkey store), and per process when the store is down."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache

from orchestrator.audience.services import customer_upsert
from orchestrator.consent.tokens import preference_token
from orchestrator.preferences import ratelimit
from orchestrator.preferences.ratelimit import WindowLimiter
from tests.preferences.conftest import DEAD_STORE


def _page(customer_id: int) -> str:
    return f"/preferences/{preference_token(customer_id)}/"


def test_two_limiters_on_one_store_share_the_count(broker_url):
    first = WindowLimiter(url=broker_url, limit=3, window=60)
    second = WindowLimiter(url=broker_url, limit=3, window=60)

    answers = [limiter.over_limit("198.51.100.1") for limiter in (first, second, first, second)]

    assert answers == [False, False, False, True]
    assert second.over_limit("198.51.100.2") is False  # another address, its own count


def test_the_limit_holds_across_two_processes(broker_url):
    WindowLimiter(url=broker_url, limit=4, window=60).over_limit("198.51.100.9")
    script = textwrap.dedent(
        f"""
        from orchestrator.preferences.ratelimit import WindowLimiter
        limiter = WindowLimiter(url={broker_url!r}, limit=4, window=60)
        print(",".join(str(limiter.over_limit("198.51.100.9")) for _ in range(4)))
        """
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=django_settings.BASE_DIR,
        env={"DJANGO_SETTINGS_MODULE": "orchestrator.settings", "PATH": ""},
    )

    # This process took one; the other process gets the three left, then is refused.
    assert other.stdout.strip() == "False,False,False,True"


@pytest.mark.django_db
def test_page_refuses_beyond_the_limit_even_when_this_process_forgets(client, settings):
    customer, _created = customer_upsert(external_id="rate-1", email="r@example.com")
    settings.PREFERENCE_CENTER_RATE_LIMIT = (3, 60)
    assert ratelimit.store_url()  # the session's Valkey, as the broker
    assert [client.get(_page(customer.pk)).status_code for _ in range(3)] == [200] * 3

    # Another web process: no local state at all.
    cache.clear()
    ratelimit._limiters.clear()
    refused = client.get(_page(customer.pk))

    assert refused.status_code == 429
    assert refused["Retry-After"] == "60"


@pytest.mark.django_db
def test_page_still_limits_per_process_when_the_store_is_down(client, settings, caplog):
    customer, _created = customer_upsert(external_id="rate-2", email="s@example.com")
    settings.PREFERENCE_CENTER_RATE_LIMIT = (2, 60)
    settings.RATE_LIMIT_URL = DEAD_STORE

    statuses = [client.get(_page(customer.pk)).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert "counting per process" in caplog.text
