"""The send path keeps its SDK clients and connections, and never waits on its pool.

Building an SDK client (and a connection) per message is what made the send path
slow: each adapter builds its clients once and lends them to its sending threads,
and a change of credentials in the settings gives a new adapter with new clients.
A pool that has no free connection opens one more instead of waiting for one, so
requests beyond ``concurrency`` still go out, each under its own timeout.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import pytest

from channels.adapters import line as line_module
from channels.adapters import sendgrid as sendgrid_module
from channels.adapters import twilio_sms as twilio_module
from channels.adapters.registry import get_adapter, reset_adapters
from tests.channels import test_adapter_transports as transports
from tests.channels.test_adapter_transports import PROVIDERS
from tests.emulator.server import wait_until

#: The emulator of all three providers, and the adapters closed after each test.
emulator = transports.emulator
adapters = transports.adapters

#: Where each adapter builds its SDK client: (module, name of the class there).
SDK_CLIENTS = {
    "sendgrid": (sendgrid_module, "SendGridAPIClient"),
    "twilio": (twilio_module, "Client"),
    "whatsapp": (twilio_module, "Client"),
    "line": (line_module, "ApiClient"),
}


def count_clients(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    """Every SDK client the ``name`` adapter builds from now on."""
    module, attribute = SDK_CLIENTS[name]
    sdk_class = getattr(module, attribute)
    built: list[Any] = []

    def build(*args: Any, **kwargs: Any) -> Any:
        client = sdk_class(*args, **kwargs)
        built.append(client)
        return client

    monkeypatch.setattr(module, attribute, build)
    return built


def accepted(results: list[Any]) -> bool:
    return all(result.accepted for result in results)


@pytest.mark.parametrize("name", PROVIDERS)
def test_one_sdk_client_serves_every_send(emulator, adapters, monkeypatch, name):
    provider = PROVIDERS[name]
    built = count_clients(monkeypatch, name)
    adapter = provider.make(emulator.url, concurrency=1)
    adapters.append(adapter)

    for batch in range(3):
        messages = [provider.message(batch * 10 + i) for i in range(4)]
        assert accepted(adapter.send(messages))

    assert len(emulator.requests_to(provider.path)) == 12
    assert len(built) == 1


@pytest.mark.parametrize("name", PROVIDERS)
def test_concurrent_sends_build_at_most_one_client_per_thread(
    emulator, adapters, monkeypatch, name
):
    provider = PROVIDERS[name]
    built = count_clients(monkeypatch, name)
    adapter = provider.make(emulator.url, concurrency=3)
    adapters.append(adapter)

    for batch in range(5):
        assert accepted(adapter.send([provider.message(batch * 10 + i) for i in range(6)]))

    assert len(emulator.requests_to(provider.path)) == 30
    # SendGrid's client is the adapter's own; the others lend one to each sending thread.
    assert 1 <= len(built) <= (1 if name == "sendgrid" else 3)


def _twilio_settings(auth_token: str) -> dict[str, Any]:
    return {
        "sms": {
            "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
            "OPTIONS": {
                # An account the emulator does not know takes any token: the header shows it.
                "account_sid": "AC" + "f" * 32,
                "auth_token": auth_token,
                "from_number": "+15005550006",
                "timeout": 2,
            },
        }
    }


def test_the_adapter_and_its_client_are_kept_until_the_credentials_change(
    emulator, settings, monkeypatch
):
    built = count_clients(monkeypatch, "twilio")
    settings.CHANNEL_ADAPTERS = _twilio_settings("first-token")
    settings.CHANNEL_ADAPTERS["sms"]["OPTIONS"]["base_url"] = emulator.url
    message = PROVIDERS["twilio"].message
    try:
        adapter = get_adapter("sms")
        assert accepted(adapter.send([message(1)]))
        assert get_adapter("sms") is adapter
        assert accepted(get_adapter("sms").send([message(2)]))
        assert len(built) == 1

        rotated = _twilio_settings("second-token")
        rotated["sms"]["OPTIONS"]["base_url"] = emulator.url
        settings.CHANNEL_ADAPTERS = rotated  # the registry forgets the old adapter
        fresh = get_adapter("sms")
        assert fresh is not adapter
        assert accepted(fresh.send([message(3)]))
        assert len(built) == 2

        tokens = [
            base64.b64decode(r.header("authorization").split()[1]).decode().split(":")[1]
            for r in emulator.requests_to("/2010-04-01/")
        ]
        assert tokens == ["first-token", "first-token", "second-token"]
        adapter.close()  # type: ignore[attr-defined]
        fresh.close()  # type: ignore[attr-defined]
    finally:
        reset_adapters()


@pytest.mark.parametrize("name", PROVIDERS)
def test_sends_beyond_the_pool_do_not_wait_for_a_connection(emulator, adapters, name):
    """Four batches at once through an adapter whose pool keeps one connection, the
    provider holding every request past the timeout: each request still gets a
    connection at once and ends at its own timeout, "maybe sent", none left waiting."""
    provider = PROVIDERS[name]
    adapter = provider.make(emulator.url, concurrency=1, timeout=0.5)
    adapters.append(adapter)
    emulator.fail_next(provider.path, timeout=True, delay=2.0, drop=True, times=4)
    results: list[Any] = []

    def send(n: int) -> None:
        results.extend(adapter.send([provider.message(n)]))

    threads = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    assert wait_until(lambda: not any(thread.is_alive() for thread in threads), 10)
    took = time.monotonic() - started

    assert len(results) == 4
    assert all(r.unknown and not r.accepted and not r.permanent for r in results), results
    assert all(r.error_code.endswith("timeout") for r in results), results
    # Side by side, not one after another behind a single connection (4 x 0.5 s).
    assert took < 1.9, took
    assert len(emulator.requests_to(provider.path)) == 4
