"""The adapter base's fixed sequence: fan-out in batch order, and one classification of
what a provider request raises, the same for every provider."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from urllib3.exceptions import (
    ClosedPoolError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from channels.adapters.base import AdapterError, ChannelAdapter, OutboundMessage, SendResult


class _Provider(ChannelAdapter):
    provider = "fake"
    label = "Fake"
    connect_code = "fake:connect"
    timeout_code = "fake:timeout"
    lost_code = "fake:lost"
    unexpected_code = "fake:unexpected"

    def __init__(self, request: Callable[[OutboundMessage], SendResult], **options) -> None:
        super().__init__(alias="fake", **options)
        self.configure_transport(options, where="fake")
        self.request = request

    def send_one(self, message: OutboundMessage) -> SendResult:
        return self.attempt([message], lambda: [self.request(message)])[0]


def _message(i: int = 1) -> OutboundMessage:
    return OutboundMessage(message_id=i, channel="sms", to=f"+1415555{i:04d}", body="Hi")


def _raising(exc: Exception) -> Callable[[OutboundMessage], SendResult]:
    def request(message: OutboundMessage) -> SendResult:
        raise exc

    return request


@pytest.mark.parametrize(
    ("exc", "code", "unknown"),
    [
        (NewConnectionError(None, "refused"), "fake:connect", False),
        (ClosedPoolError(None, "closed"), "fake:connect", False),
        (MaxRetryError(None, "/", NewConnectionError(None, "refused")), "fake:connect", False),
        (ReadTimeoutError(None, "/", "read timed out"), "fake:timeout", True),
        (ProtocolError("connection aborted"), "fake:lost", True),
        (ConnectionResetError("reset"), "fake:lost", True),
        (MaxRetryError(None, "/", ProtocolError("aborted")), "fake:lost", True),
        (KeyError("sid"), "fake:unexpected", True),
    ],
)
def test_every_provider_classifies_transport_errors_the_same(exc, code, unknown):
    [result] = _Provider(_raising(exc)).send([_message()])
    assert (result.accepted, result.permanent, result.unknown) == (False, False, unknown)
    assert result.error_code == code


def test_an_adapter_error_is_the_result_of_the_request_s_messages():
    refusal = AdapterError(
        "no", permanent=True, code="fake:21211", suppress="invalid", detail={"a": 1}
    )
    [result] = _Provider(_raising(refusal)).send([_message()])
    assert (result.permanent, result.error_code, result.suppress) == (True, "fake:21211", "invalid")
    assert (result.error, result.detail) == ("no", {"a": 1})


def test_a_batch_fans_out_over_concurrency_threads_and_keeps_its_order():
    threads: set[str] = set()
    barrier = threading.Barrier(4, timeout=5)

    def request(message: OutboundMessage) -> SendResult:
        threads.add(threading.current_thread().name)
        if message.message_id <= 4:
            barrier.wait()  # four requests in flight at once, or this times out
        return ChannelAdapter.sent(message, f"id-{message.message_id}")

    results = _Provider(request, concurrency=4).send([_message(i) for i in range(1, 11)])
    assert [r.provider_message_id for r in results] == [f"id-{i}" for i in range(1, 11)]
    assert len(threads) == 4 and all(name.startswith("fake") for name in threads)
