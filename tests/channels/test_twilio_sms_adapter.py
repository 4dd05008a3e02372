"""The Twilio SMS adapter, through the real ``twilio`` SDK over HTTP to the emulator.

Nothing is mocked: each test starts an emulator with the Twilio routes, points
the adapter's ``base_url`` at it and checks both what the adapter returned and
what arrived on the wire.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from channels.adapters.base import OutboundMessage
from channels.adapters.twilio_sms import TwilioSmsAdapter
from tests.emulator import ProviderEmulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.twilio import ACCOUNT_SID, AUTH_TOKEN

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
FROM = "+15005550006"
CALLBACK = "https://hooks.example.com/twilio/status"


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    server = ProviderEmulator()
    twilio_emulator.install(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_adapter(emulator: ProviderEmulator) -> Iterator[Callable[..., TwilioSmsAdapter]]:
    adapters: list[TwilioSmsAdapter] = []

    def make(**overrides: Any) -> TwilioSmsAdapter:
        options: dict[str, Any] = {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": FROM,
            "status_callback": CALLBACK,
            "base_url": emulator.url,
            "timeout": 2,
        }
        options.update(overrides)
        adapter = TwilioSmsAdapter(alias="sms", **{k: v for k, v in options.items() if v})
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        adapter.close()


def sms(to: str = "+14155550100", body: str = "Your order shipped.", **fields: Any):
    return OutboundMessage(
        message_id=fields.pop("message_id", 1), channel="sms", to=to, body=body, **fields
    )


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- success ----------------------------------------------------------------------------


def test_a_message_is_created_with_from_body_and_status_callback(emulator, make_adapter):
    [result] = make_adapter().send([sms(message_id=42)])

    assert result.accepted and not result.unknown
    assert result.message_id == 42
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    [request] = emulator.requests_to(MESSAGES)
    assert request.method == "POST"
    assert request.header("content-type").startswith("application/x-www-form-urlencoded")
    assert request.form() == {
        "To": ["+14155550100"],
        "From": [FROM],
        "Body": ["Your order shipped."],
        "StatusCallback": [f"{CALLBACK}?m=42"],  # names our message for the report
    }
    scheme, _, credentials = request.header("authorization").partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
    [created] = twilio_emulator.state(emulator).messages
    assert created["sid"] == result.provider_message_id
    assert result.detail["twilio_status"] == "queued"


def test_without_a_status_callback_none_is_sent(emulator, make_adapter):
    [result] = make_adapter(status_callback="").send([sms()])

    assert result.accepted
    assert "StatusCallback" not in emulator.requests_to(MESSAGES)[0].form()


def test_a_messaging_service_sends_instead_of_a_from_number(emulator, make_adapter):
    service = "MG" + "a" * 32
    [result] = make_adapter(from_number="", messaging_service_sid=service).send([sms()])

    assert result.accepted
    assert result.detail["twilio_status"] == "accepted"
    form = emulator.requests_to(MESSAGES)[0].form()
    assert form["MessagingServiceSid"] == [service]
    assert "From" not in form


@pytest.mark.parametrize("configured", [{}, {"from_number": "", "messaging_service_sid": "MG1"}])
def test_the_message_sender_overrides_the_configured_sender(emulator, make_adapter, configured):
    [result] = make_adapter(**configured).send([sms(sender="+15017122661")])

    assert result.accepted
    form = emulator.requests_to(MESSAGES)[0].form()
    assert form["From"] == ["+15017122661"]
    assert "MessagingServiceSid" not in form


@pytest.mark.parametrize(
    ("body", "encoding", "count"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("あ" * 70, "UCS-2", 1),
        ("あ" * 71, "UCS-2", 2),
        ("Summer sale starts now 🎉", "UCS-2", 1),
        ("🎉" * 36, "UCS-2", 2),  # 72 UTF-16 units: a surrogate pair each
    ],
)
def test_segments_and_encoding_are_in_the_detail(make_adapter, body, encoding, count):
    [result] = make_adapter().send([sms(body=body)])

    assert result.accepted
    assert result.detail["encoding"] == encoding
    assert result.detail["segments"] == count
    assert result.detail["twilio_num_segments"] == count


def test_a_batch_runs_concurrently_and_keeps_its_order(emulator, make_adapter):
    delay, size = 0.3, 6
    emulator.fail_next("/2010-04-01/", timeout=True, delay=delay, times=size)
    batch = [sms(to=f"+1415555{i:04d}", message_id=100 + i) for i in range(size)]

    started = time.monotonic()
    results = make_adapter(concurrency=size).send(batch)
    elapsed = time.monotonic() - started

    assert elapsed < delay * size / 2, f"{elapsed:.2f}s: the calls did not overlap"
    assert [r.message_id for r in results] == [m.message_id for m in batch]
    assert all(r.accepted for r in results)
    to_by_sid = {m["sid"]: m["to"] for m in twilio_emulator.state(emulator).messages}
    assert [to_by_sid[r.provider_message_id] for r in results] == [m.to for m in batch]


def test_one_failure_in_a_batch_does_not_spoil_the_others(emulator, make_adapter):
    batch = [
        sms(to="+14155550101", message_id=1),
        sms(to="+15005550001", message_id=2),  # Twilio's magic invalid number
        sms(to="+14155550103", message_id=3),
    ]

    results = make_adapter().send(batch)

    assert [(r.message_id, r.accepted) for r in results] == [(1, True), (2, False), (3, True)]
    assert results[1].error_code == "twilio:21211"
    assert len(emulator.requests_to(MESSAGES)) == 3


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["+15005550001", "090-1234-5678", "+0123"])
def test_an_invalid_number_is_a_permanent_failure(make_adapter, to):
    [result] = make_adapter().send([sms(to=to)])

    assert not result.accepted and result.permanent and not result.unknown
    assert result.error_code == "twilio:21211"
    assert result.detail["twilio_code"] == 21211
    assert result.suppress == "invalid"
    assert result.error == f"Twilio 21211: The 'To' number {to} is not a valid phone number."


def test_an_opted_out_recipient_is_permanent_and_marked_for_suppression(emulator, make_adapter):
    twilio_emulator.state(emulator).opted_out.add("+14155550199")

    [result] = make_adapter().send([sms(to="+14155550199")])

    assert not result.accepted and result.permanent
    assert result.error_code == "twilio:21610"
    assert result.detail == {"http_status": 400, "twilio_code": 21610}
    assert result.suppress == "stop"
    assert result.error == "Twilio 21610: Attempt to send to unsubscribed recipient"


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15005550003", 21408), ("+15005550004", 21610), ("+15005550009", 21614)],
)
def test_twilio_magic_numbers_are_permanent_failures(make_adapter, to, code):
    [result] = make_adapter().send([sms(to=to)])

    assert result.permanent and result.error_code == f"twilio:{code}"


def test_a_wrong_auth_token_is_retried_not_failed_for_good(make_adapter):
    [result] = make_adapter(auth_token="not-the-token").send([sms()])

    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == "twilio:20003"
    assert result.detail == {"http_status": 401, "twilio_code": 20003}
    assert result.suppress == ""


@pytest.mark.parametrize(
    ("body", "code"), [("", 21602), ("x" * 1601, 21617)], ids=["empty", "too-long"]
)
def test_a_body_twilio_rejects_is_permanent(make_adapter, body, code):
    [result] = make_adapter().send([sms(body=body)])

    assert result.permanent and result.error_code == f"twilio:{code}"


@pytest.mark.parametrize(
    ("status", "body", "error_code"),
    [
        (429, twilio_error(429, 20429, "Too Many Requests"), "twilio:20429"),
        (429, None, "twilio:http_429"),
        (500, twilio_error(500, 20500, "Internal Server Error"), "twilio:20500"),
        (503, None, "twilio:http_503"),
    ],
)
def test_rate_limits_and_server_errors_are_transient(
    emulator, make_adapter, status, body, error_code
):
    emulator.fail_next("/2010-04-01/", status=status, body=body)

    [result] = make_adapter().send([sms()])

    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == error_code
    assert result.detail["http_status"] == status
    assert result.error == (
        f"Twilio: HTTP {status}" if body is None else f"Twilio {body['code']}: {body['message']}"
    )


def test_unreachable_handset_30003_is_transient_even_on_a_4xx(emulator, make_adapter):
    emulator.fail_next(
        "/2010-04-01/", status=400, body=twilio_error(400, 30003, "Unreachable handset")
    )

    [result] = make_adapter().send([sms()])

    assert not result.permanent and result.detail["twilio_code"] == 30003


# --- the network ------------------------------------------------------------------------


def test_a_timeout_after_the_request_went_out_is_unknown(emulator, make_adapter):
    emulator.fail_next("/2010-04-01/", timeout=True, delay=0.8)

    started = time.monotonic()
    [result] = make_adapter(timeout=0.3).send([sms()])

    assert time.monotonic() - started < 0.75
    assert result.unknown and not result.accepted and not result.permanent
    assert result.error_code == "twilio:timeout"
    assert len(emulator.requests_to(MESSAGES)) == 1
    # ...and Twilio took it after all: only status callbacks can tell.
    deadline = time.monotonic() + 2
    while not twilio_emulator.state(emulator).messages and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(twilio_emulator.state(emulator).messages) == 1


def test_a_refused_connection_is_transient_not_unknown(make_adapter):
    [result] = make_adapter(base_url=f"http://127.0.0.1:{closed_port()}", timeout=0.5).send([sms()])

    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == "twilio:connect"


def test_a_connection_dropped_after_the_request_is_unknown(make_adapter):
    """A server that reads the whole request and hangs up without answering."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    arrived: list[bytes] = []

    def read_and_hang_up() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            arrived.append(data)

    thread = threading.Thread(target=read_and_hang_up, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        [result] = make_adapter(base_url=f"http://127.0.0.1:{port}").send([sms()])
    finally:
        thread.join(2)
        listener.close()

    assert arrived and arrived[0].startswith(b"POST " + MESSAGES.encode())
    assert result.unknown and not result.accepted and not result.permanent
    assert result.error_code == "twilio:connection_lost"


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["account_sid", "auth_token"])
def test_missing_credentials_are_improperly_configured(make_adapter, missing):
    with pytest.raises(ImproperlyConfigured, match=missing):
        make_adapter(**{missing: ""})


def test_a_sender_is_required(make_adapter):
    with pytest.raises(ImproperlyConfigured, match="from_number"):
        make_adapter(from_number="")


def test_from_number_and_messaging_service_are_exclusive(make_adapter):
    with pytest.raises(ImproperlyConfigured, match="exactly one"):
        make_adapter(messaging_service_sid="MG" + "b" * 32)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", 0),
        ("timeout", "10"),
        ("concurrency", 0),
        ("base_url", "api.twilio.com"),
        ("status_callback_url", "https://x"),
    ],
)
def test_bad_options_are_improperly_configured(make_adapter, option, value):
    with pytest.raises(ImproperlyConfigured, match=option):
        TwilioSmsAdapter(
            alias="sms",
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            from_number=FROM,
            **{option: value},
        )
