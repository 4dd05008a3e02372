"""The provider's reset, read the same way by every adapter, and the sender hold it sets.

A refusal naming when to come back (``Retry-After`` in seconds or as an HTTP date,
SendGrid's ``X-RateLimit-Reset`` in epoch seconds) is ``SendResult.retry_after``; a
429 with a reset also holds the sender, for every adapter instance and worker sharing
the store, so no request goes out until then.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from channels.adapters.base import ChannelAdapter, OutboundMessage, provider_reset
from channels.adapters.line import LineAdapter
from channels.adapters.ratelimit import HOLD_PREFIX, SenderHold
from channels.adapters.sendgrid import SendGridAdapter
from channels.adapters.twilio_sms import TwilioSmsAdapter
from tests.emulator import ProviderEmulator
from tests.emulator import line as line_emulator
from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator import twilio as twilio_emulator

TWILIO_PATH = f"/2010-04-01/Accounts/{twilio_emulator.ACCOUNT_SID}/Messages.json"
LINE_USER = "U" + "1a" * 16


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    with ProviderEmulator() as server:
        twilio_emulator.install(server)
        sendgrid_emulator.install(server)
        line_emulator.install(server)
        yield server


def twilio(emulator: ProviderEmulator, **options: Any) -> TwilioSmsAdapter:
    return TwilioSmsAdapter(
        alias="reset-sms",
        account_sid=twilio_emulator.ACCOUNT_SID,
        auth_token=twilio_emulator.AUTH_TOKEN,
        from_number="+15005550006",
        base_url=emulator.url,
        timeout=2,
        **options,
    )


def sendgrid(emulator: ProviderEmulator, **options: Any) -> SendGridAdapter:
    return SendGridAdapter(
        alias="reset-email",
        api_key="SG.test-key",
        from_email="hello@example.com",
        base_url=emulator.url,
        timeout=2,
        **options,
    )


def line(emulator: ProviderEmulator, **options: Any) -> LineAdapter:
    return LineAdapter(
        alias="reset-line",
        channel_access_token=line_emulator.CHANNEL_ACCESS_TOKEN,
        base_url=emulator.url,
        timeout=2,
        **options,
    )


def message(kind: str, n: int = 1) -> OutboundMessage:
    if kind == "twilio":
        return OutboundMessage(n, "sms", f"+1415555{n:04d}", "Hi")
    if kind == "sendgrid":
        return OutboundMessage(n, "email", f"c{n}@example.com", "Hi", subject="Hi")
    return OutboundMessage(n, "line", "U" + f"{n:02x}" * 16, "Hi")


PROVIDERS: dict[str, tuple[Callable[..., ChannelAdapter], str]] = {
    "twilio": (twilio, TWILIO_PATH),
    "sendgrid": (sendgrid, sendgrid_emulator.PATH),
    "line": (line, line_emulator.PUSH_PATH),
}


def test_retry_after_reads_seconds_an_http_date_and_an_epoch_reset():
    now = 1_900_000_000.0
    in_ten_minutes = email.utils.formatdate(now + 600, usegmt=True)

    assert provider_reset({"Retry-After": "120"}, now=now) == 120.0
    assert provider_reset({"retry-after": in_ten_minutes}, now=now) == pytest.approx(600)
    assert provider_reset({"X-RateLimit-Reset": str(int(now) + 90)}, now=now) == 90.0
    assert provider_reset({"X-RateLimit-Reset": "45"}, now=now) == 45.0  # a delta
    # Both named: the later reset wins; a reset already past is "now".
    assert (
        provider_reset({"Retry-After": "5", "X-RateLimit-Reset": str(int(now) + 60)}, now=now) == 60
    )
    assert provider_reset({"Retry-After": "5", "X-RateLimit-Reset": "60"}, now=now) == 60.0
    assert provider_reset({"Retry-After": "-3"}, now=now) == 0.0
    assert provider_reset({"X-RateLimit-Reset": str(int(now) - 100)}, now=now) == 0.0
    # Nothing, or nothing readable: the provider did not say.
    assert provider_reset({}, now=now) is None
    assert provider_reset(None, now=now) is None
    assert provider_reset({"Retry-After": "soon"}, now=now) is None


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_a_429_reports_the_reset_and_holds_the_sender_until_then(emulator, kind):
    make, path = PROVIDERS[kind]
    adapter = make(emulator)
    emulator.fail_next(path, status=429, headers={"Retry-After": "600"})

    [limited] = adapter.send([message(kind, 1)])
    later = adapter.send([message(kind, 2), message(kind, 3)])
    # Another adapter on the same sender (another worker) is held too.
    [elsewhere] = make(emulator).send([message(kind, 4)])

    assert (limited.accepted, limited.permanent, limited.unknown) == (False, False, False)
    assert limited.retry_after == pytest.approx(600, abs=2)
    assert limited.attempted
    for held in [*later, elsewhere]:
        assert (held.accepted, held.permanent, held.attempted) == (False, False, False)
        assert held.error_code == f"{adapter.provider}:held"
        assert 590 < held.retry_after <= 600
        assert "rate limited" in held.error
    assert len(emulator.requests_to(path)) == 1  # nothing went out after the 429


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_a_server_error_with_a_reset_delays_that_message_only(emulator, kind):
    make, path = PROVIDERS[kind]
    adapter = make(emulator)
    emulator.fail_next(path, status=503, headers={"Retry-After": "30"})

    [refused] = adapter.send([message(kind, 1)])
    [sent] = adapter.send([message(kind, 2)])

    assert (refused.accepted, refused.permanent) == (False, False)
    assert refused.retry_after == pytest.approx(30, abs=1)
    assert sent.accepted
    assert len(emulator.requests_to(path)) == 2


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_a_refusal_without_a_reset_says_nothing_of_when(emulator, kind):
    make, path = PROVIDERS[kind]
    emulator.fail_next(path, status=429)

    [refused] = make(emulator).send([message(kind, 1)])
    [sent] = make(emulator).send([message(kind, 2)])

    assert refused.retry_after is None and not refused.accepted
    assert sent.accepted  # no reset named: nobody is held


def test_sendgrid_epoch_reset_is_the_retry_after(emulator):
    reset = int(time.time()) + 120
    emulator.fail_next(
        sendgrid_emulator.PATH, status=429, headers={"X-RateLimit-Reset": str(reset)}
    )

    [refused] = sendgrid(emulator).send([message("sendgrid")])

    assert refused.retry_after == pytest.approx(120, abs=2)
    assert refused.detail["rate_limit_reset"] == str(reset)


def test_the_hold_is_kept_in_the_store_and_only_moves_later(broker_url):
    key = f"test-hold-{time.monotonic_ns()}"
    hold = SenderHold(key, url=broker_url)
    other = SenderHold(key, url=broker_url)  # another process's view of the same sender
    try:
        hold.hold(300)
        hold.hold(10)  # an earlier reset does not shorten the hold

        assert 290 < other.remaining() <= 300
        import redis

        assert redis.Redis.from_url(broker_url).pttl(f"{HOLD_PREFIX}{key}") > 290_000
    finally:
        hold.clear()
    assert other.remaining() == 0.0


def test_the_hold_applies_in_the_process_when_the_store_is_down():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hold = SenderHold("test-hold-down", url=f"redis://127.0.0.1:{port}/0")

    hold.hold(60)

    assert 55 < hold.remaining() <= 60
