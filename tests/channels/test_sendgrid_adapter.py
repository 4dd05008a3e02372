"""The SendGrid adapter, through the real SDK over HTTP to the provider emulator."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from channels.adapters.base import OutboundMessage
from channels.adapters.sendgrid import SendGridAdapter
from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator.server import ProviderEmulator

PATH = sendgrid_emulator.PATH


def make_adapter(emulator: ProviderEmulator, **options: Any) -> SendGridAdapter:
    config: dict[str, Any] = {
        "api_key": "SG.test-key",
        "from_email": "Stride Running <hello@example.com>",
        "base_url": emulator.url,
        "timeout": 0.5,
    }
    config.update(options)
    return SendGridAdapter(alias="email", **config)


def email(message_id: int = 42, **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "channel": "email",
        "to": "runner@example.org",
        "subject": "Your spring plan",
        "body": "Week 1: three easy runs.",
    }
    values.update(fields)
    return OutboundMessage(message_id=message_id, **values)


def test_accepted_message_carries_what_sendgrid_needs_and_nothing_personal(emulator):
    adapter = make_adapter(emulator, categories=["marketing", "spring"])
    message = email(
        html="<p>Week 1: three easy runs.</p>",
        headers={
            "List-Unsubscribe": "<https://example.com/u/tok>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        metadata={"customer_email": "runner@example.org", "first_name": "Aki"},
    )

    [result] = adapter.send([message])

    [queued] = sendgrid_emulator.accepted(emulator)
    assert result.accepted and not result.unknown
    assert result.provider_message_id == queued.x_message_id
    assert len(result.provider_message_id) == 22
    assert result.detail["status"] == 202

    [request] = emulator.requests_to(PATH)
    assert request.header("Authorization") == "Bearer SG.test-key"
    assert request.header("User-Agent").startswith("sendgrid/")
    body = request.json()
    assert body["personalizations"] == [{"to": [{"email": "runner@example.org"}]}]
    assert body["from"] == {"email": "hello@example.com", "name": "Stride Running"}
    assert body["subject"] == "Your spring plan"
    assert body["content"] == [
        {"type": "text/plain", "value": "Week 1: three easy runs."},
        {"type": "text/html", "value": "<p>Week 1: three easy runs.</p>"},
    ]
    assert body["custom_args"] == {"message_id": "42"}
    assert body["headers"] == {
        "List-Unsubscribe": "<https://example.com/u/tok>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["categories"] == ["marketing", "spring"]
    assert "mail_settings" not in body


def test_text_only_message_has_a_single_plain_content_block(emulator):
    [result] = make_adapter(emulator).send([email()])
    assert result.accepted
    body = emulator.requests_to(PATH)[0].json()
    assert body["content"] == [{"type": "text/plain", "value": "Week 1: three easy runs."}]
    assert "headers" not in body and "categories" not in body


def test_japanese_subject_body_and_names_round_trip(emulator):
    adapter = make_adapter(emulator, from_email="ストライド・ランニング <hello@example.com>")
    message = email(
        to="山田 花子 <hanako@example.jp>",
        subject="【春のセール】新作シューズが20%オフ",
        body="山田様、いつもご利用ありがとうございます。",
        html="<p>山田様、いつもご利用ありがとうございます。🏃</p>",
    )

    [result] = adapter.send([message])

    assert result.accepted
    body = sendgrid_emulator.accepted(emulator)[0].payload
    assert body["subject"] == "【春のセール】新作シューズが20%オフ"
    assert body["content"][0]["value"] == "山田様、いつもご利用ありがとうございます。"
    assert body["content"][1]["value"] == "<p>山田様、いつもご利用ありがとうございます。🏃</p>"
    assert body["from"] == {"email": "hello@example.com", "name": "ストライド・ランニング"}
    assert body["personalizations"][0]["to"] == [
        {"email": "hanako@example.jp", "name": "山田 花子"}
    ]


def test_message_sender_overrides_the_default(emulator):
    [result] = make_adapter(emulator).send([email(sender="Stride Coach <coach@example.com>")])
    assert result.accepted
    body = emulator.requests_to(PATH)[0].json()
    assert body["from"] == {"email": "coach@example.com", "name": "Stride Coach"}


def test_without_any_sender_the_message_is_refused_before_any_request(emulator):
    [result] = make_adapter(emulator, from_email="").send([email()])
    assert (result.accepted, result.permanent, result.unknown) == (False, True, False)
    assert result.error_code == "sendgrid:no_sender"
    assert emulator.requests_to(PATH) == []


def test_header_with_a_line_break_is_refused_before_any_request(emulator):
    message = email(headers={"X-Campaign": "spring\r\nBcc: victim@example.com"})
    [result] = make_adapter(emulator).send([message])
    assert (result.accepted, result.permanent) == (False, True)
    assert result.error_code == "sendgrid:invalid_header"
    assert emulator.requests_to(PATH) == []


def test_batch_runs_concurrently_and_keeps_batch_order(emulator):
    delay, size = 0.3, 6
    # Every request is held for `delay` before SendGrid accepts it.
    emulator.fail_next(PATH, times=size, timeout=True, delay=delay)
    adapter = make_adapter(emulator, timeout=3, concurrency=8)
    # Personalized content: one request per message (identical content would be grouped).
    batch = [
        email(message_id=100 + i, to=f"runner{i}@example.org", body=f"Week 1, runner {i}.")
        for i in range(size)
    ]

    started = time.monotonic()
    results = adapter.send(batch)
    elapsed = time.monotonic() - started

    assert len(emulator.requests_to(PATH)) == size
    assert elapsed < size * delay / 2
    assert [r.message_id for r in results] == [m.message_id for m in batch]
    assert all(r.accepted for r in results)
    queued = {
        mail.payload["custom_args"]["message_id"]: mail.x_message_id
        for mail in sendgrid_emulator.accepted(emulator)
    }
    assert {str(r.message_id): r.provider_message_id for r in results} == queued


def test_validation_error_is_permanent_with_sendgrids_message(emulator):
    [result] = make_adapter(emulator).send([email(subject="")])
    assert (result.accepted, result.permanent, result.unknown) == (False, True, False)
    assert result.error_code == "sendgrid:400"
    assert "The subject is required" in result.error
    assert result.detail["errors"][0]["field"] == "subject"
    assert sendgrid_emulator.accepted(emulator) == []


def test_a_bad_api_key_is_retried_not_failed_for_good(emulator):
    [result] = make_adapter(emulator, api_key="not-a-sendgrid-key").send([email()])
    assert (result.accepted, result.permanent, result.unknown) == (False, False, False)
    assert result.error_code == "sendgrid:401"
    assert "authorization grant is invalid" in result.error


def test_payload_too_large_is_permanent(emulator):
    emulator.fail_next(
        PATH,
        status=413,
        body={"errors": [{"message": "Payload too large", "field": None, "help": None}]},
    )
    [result] = make_adapter(emulator).send([email()])
    assert (result.accepted, result.permanent) == (False, True)
    assert result.error_code == "sendgrid:413"
    assert "Payload too large" in result.error


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limit_and_server_errors_are_transient(emulator, status):
    emulator.fail_next(
        PATH,
        status=status,
        headers={"X-RateLimit-Reset": "1767225600"} if status == 429 else {},
        body={"errors": [{"message": "try again later", "field": None, "help": None}]},
    )
    [result] = make_adapter(emulator).send([email()])
    assert (result.accepted, result.permanent, result.unknown) == (False, False, False)
    assert result.error_code == f"sendgrid:{status}"
    if status == 429:
        assert result.detail["rate_limit_reset"] == "1767225600"


def test_timeout_after_the_request_went_out_is_unknown(emulator):
    # SendGrid answers only after 0.8 s, and then does queue the mail.
    emulator.fail_next(PATH, timeout=True, delay=0.8)
    started = time.monotonic()
    [result] = make_adapter(emulator, timeout=0.3).send([email()])
    assert time.monotonic() - started < 0.7  # the timeout really applied

    assert (result.accepted, result.permanent, result.unknown) == (False, False, True)
    assert result.error_code == "sendgrid:timeout"
    assert len(emulator.requests_to(PATH)) == 1
    deadline = time.monotonic() + 2
    while not sendgrid_emulator.accepted(emulator) and time.monotonic() < deadline:
        time.sleep(0.05)
    [queued] = sendgrid_emulator.accepted(emulator)
    assert queued.payload["custom_args"] == {"message_id": "42"}


def test_connection_refused_is_transient_not_unknown():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = SendGridAdapter(
        alias="email",
        api_key="SG.test-key",
        from_email="hello@example.com",
        base_url=f"http://127.0.0.1:{port}",
        timeout=0.5,
    )
    [result] = adapter.send([email()])
    assert (result.accepted, result.permanent, result.unknown) == (False, False, False)
    assert result.error_code == "sendgrid:unreachable"


def test_sandbox_mode_validates_without_queueing(emulator):
    [result] = make_adapter(emulator, sandbox=True).send([email()])
    assert result.accepted
    assert result.detail == {"status": 200, "sandbox": True}
    body = emulator.requests_to(PATH)[0].json()
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert sendgrid_emulator.accepted(emulator) == []


def test_missing_api_key_is_improperly_configured():
    with pytest.raises(ImproperlyConfigured, match="api_key"):
        SendGridAdapter(alias="email", from_email="hello@example.com")


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"concurrency": 0},
        {"from_email": "not an address"},
        {"categories": [f"c{i}" for i in range(11)]},
        {"max_personalizations": 0},
        {"max_personalizations": "1000"},
    ],
)
def test_invalid_options_are_improperly_configured(options):
    with pytest.raises(ImproperlyConfigured):
        SendGridAdapter(alias="email", api_key="SG.test-key", **options)


def test_connection_dropped_before_the_response_is_unknown():
    """A server that reads the whole request and hangs up without answering."""
    received = threading.Event()

    def read_request_then_hang_up(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += conn.recv(65536)
            received.set()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        server = threading.Thread(target=read_request_then_hang_up, args=(listener,))
        server.start()
        adapter = SendGridAdapter(
            alias="email",
            api_key="SG.test-key",
            from_email="hello@example.com",
            base_url=f"http://127.0.0.1:{port}",
            timeout=2,
        )
        [result] = adapter.send([email()])
        server.join(2)

    assert received.is_set()
    assert (result.accepted, result.permanent, result.unknown) == (False, False, True)
    assert result.error_code == "sendgrid:disconnected"
