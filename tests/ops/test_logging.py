"""Log output: emails and phone numbers masked everywhere, JSON lines when asked for."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.core.logging import JsonFormatter, MaskPersonalData, PlainFormatter, mask

ROOT = Path(__file__).resolve().parents[2]

EMAIL, PHONE = "alice.smith@example.co.jp", "+819012345678"
SECRETS = (EMAIL, "alice.smith", PHONE, "9012345678", "12345678")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to alice@example.com.", "to a***@example.com."),
        ("<Bob.O+news@mail.example.org>", "<B***@mail.example.org>"),
        ("mailto:héloïse@example.fr", "mailto:h***@example.fr"),
        ("sms to +819012345678 failed", "sms to +81******5678 failed"),
        ("call +81 90-1234-5678", "call +81******5678"),
        ("call +1 (415) 555-0100 now", "call +14*****0100 now"),
        ("whatsapp:+14155550100", "whatsapp:+14*****0100"),
    ],
)
def test_mask_hides_emails_and_phone_numbers(text, expected):
    assert mask(text) == expected
    assert mask(expected) == expected  # masking twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23T23:45:00.123+09:00",
        "sent 1234567 messages in 12.5 s",
        "message #123456789 deferred",
        "version 1.2.3+4",
        "user@localhost",  # no domain with a dot: not an address we store
    ],
)
def test_mask_leaves_times_counts_and_ids_alone(text):
    assert mask(text) == text


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskPersonalData())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"tests.ops.logging.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def _log_everything(logger: logging.Logger) -> None:
    logger.info("sending to %s", EMAIL)
    logger.warning("sms to %(to)s refused", {"to": PHONE})
    logger.info("plain line %s", 42, extra={"address": EMAIL, "payload": {"to": [PHONE]}})
    try:
        raise ValueError(f"provider said: {EMAIL} bounced, {PHONE} unreachable")
    except ValueError:
        logger.exception("send failed")


def _assert_no_secrets(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} leaked into: {output}"


def test_plain_format_masks_messages_arguments_and_exceptions():
    logger, stream = _logger(PlainFormatter("%(levelname)s %(name)s: %(message)s"))

    _log_everything(logger)

    output = stream.getvalue()
    _assert_no_secrets(output)
    assert "sending to a***@example.co.jp" in output
    assert "sms to +81******5678 refused" in output
    assert "ValueError: provider said: a***@example.co.jp bounced, +81******5678" in output


def test_plain_format_masks_exception_text_another_handler_cached_unmasked():
    logger, stream = _logger(PlainFormatter("%(message)s"))
    raw = logging.StreamHandler(io.StringIO())  # formats first, caching record.exc_text
    raw.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers.insert(0, raw)

    try:
        raise RuntimeError(f"no such address {EMAIL}")
    except RuntimeError:
        logger.exception("failed")

    _assert_no_secrets(stream.getvalue())
    assert "RuntimeError: no such address a***@example.co.jp" in stream.getvalue()


def test_json_format_is_one_object_per_line_with_masked_fields():
    logger, stream = _logger(JsonFormatter())

    _log_everything(logger)

    output = stream.getvalue()
    _assert_no_secrets(output)
    lines = output.splitlines()
    assert len(lines) == 4  # the traceback stays inside its line
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys()
        assert entry["time"].endswith("+00:00")
        assert entry["logger"] == logger.name
    assert [e["level"] for e in entries] == ["INFO", "WARNING", "INFO", "ERROR"]
    assert entries[0]["message"] == "sending to a***@example.co.jp"
    assert entries[1]["message"] == "sms to +81******5678 refused"
    assert entries[2]["message"] == "plain line 42"
    assert entries[2]["address"] == "a***@example.co.jp"
    assert entries[2]["payload"] == {"to": ["+81******5678"]}
    assert "exc" not in entries[2]
    assert entries[3]["message"] == "send failed"
    assert entries[3]["exc"].startswith("Traceback")
    assert "ValueError: provider said: a***@example.co.jp bounced" in entries[3]["exc"]


def test_json_format_survives_values_json_cannot_encode():
    logger, stream = _logger(JsonFormatter())

    logger.info("odd extras", extra={"when": object(), "keys": {(1, 2): EMAIL}})

    [entry] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["when"].startswith("<object object")
    assert entry["keys"] == {"(1, 2)": "a***@example.co.jp"}


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
    environment.update(DJANGO_SETTINGS_MODULE="orchestrator.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


LOG_FROM_DJANGO = f"""
import logging, django
django.setup()
logging.getLogger("orchestrator.delivery").info("sent to %s", {EMAIL!r})
logging.getLogger("orchestrator.delivery").debug("debug line")
"""


def test_settings_log_json_lines_with_log_format_json():
    result = _run_python(LOG_FROM_DJANGO, LOG_FORMAT="json")

    [line] = result.stderr.splitlines()
    entry = json.loads(line)
    assert entry["message"] == "sent to a***@example.co.jp"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "orchestrator.delivery"


def test_settings_log_plain_masked_lines_by_default_and_honour_log_level():
    result = _run_python(LOG_FROM_DJANGO, LOG_LEVEL="debug")

    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("INFO orchestrator.delivery: sent to a***@example.co.jp")
    assert lines[1].endswith("DEBUG orchestrator.delivery: debug line")


def test_celery_worker_and_beat_keep_the_masked_json_handlers():
    # Celery's logging setup (the same call the worker and beat make) would otherwise
    # replace the root handlers with its own: unmasked, never JSON.
    code = f"""
import logging, django
django.setup()
from orchestrator.celery import app
app.log.setup(loglevel="INFO")
logging.getLogger("celery.worker").info("task for %s", {EMAIL!r})
"""
    result = _run_python(code, LOG_FORMAT="json")

    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert entries[-1]["message"] == "task for a***@example.co.jp"
    _assert_no_secrets(result.stderr)
