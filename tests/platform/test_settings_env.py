"""A bad environment value stops the process at start with a message naming the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A well-formed external configuration, so no case touches the embedded PostgreSQL:
# settings parse URLs without connecting.
BASELINE = {
    "DATABASE_URL": "postgresql://app@db.invalid:5432/orchestrator",
    "SECRET_KEY": "s" * 40,
    "CELERY_BROKER_URL": "redis://broker.invalid:6379/0",
    "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
}


def load_settings(**overrides: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in BASELINE}
    env.update(BASELINE)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_good_environment_loads():
    result = load_settings()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("DISPATCH_BATCH_SIZE", "abc"),
        ("DISPATCH_INTERVAL_SECONDS", "0"),
        ("DATABASE_URL", "mysql://x"),
        ("PUBLIC_BASE_URL", "ftp://x"),
        ("CELERY_BROKER_URL", "kafka://x"),
        ("CHANNEL_ADAPTER_DEFAULT", "smtp"),
        ("CHANNEL_ADAPTER_SMS", "sendgrid"),
        ("CHANNEL_ADAPTER_EMAIL", "twilio"),
        ("PROVIDER_TIMEOUT_SECONDS", "0"),
        ("API_MAX_BODY_BYTES", "lots"),
        ("IDEMPOTENCY_KEY_TTL_HOURS", "1"),
        ("SECRET_KEY", "short"),
    ],
)
def test_a_bad_value_stops_start_naming_the_variable(name, value):
    result = load_settings(**{name: value})
    assert result.returncode != 0
    assert f"{name}:" in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_a_real_database_requires_a_secret_key():
    result = load_settings(SECRET_KEY=None)
    assert result.returncode != 0
    assert "SECRET_KEY: must be set when DATABASE_URL is set" in result.stderr


SENDGRID = {"CHANNEL_ADAPTER_EMAIL": "sendgrid", "SENDGRID_API_KEY": "SG.test"}
TWILIO = {
    "CHANNEL_ADAPTER_SMS": "twilio",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "token",
    "TWILIO_FROM_NUMBER": "+15005550006",
}


def show_adapters(**overrides: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in BASELINE}
    env.update(BASELINE)
    env.update({k: v for k, v in overrides.items() if v is not None})
    for name in [k for k, v in overrides.items() if v is None]:
        env.pop(name, None)
    # The adapters are built from the settings' options, as a worker builds them.
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "from channels.adapters.registry import get_adapter; "
        "print(json.dumps({c: type(get_adapter(c)).__name__ "
        "for c in settings.CHANNEL_ADAPTERS}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "sender", [{}, {"TWILIO_FROM_NUMBER": None, "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32}]
)
def test_each_channel_can_switch_to_its_real_provider_by_environment_alone(sender):
    result = show_adapters(**(SENDGRID | TWILIO | sender))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "email": "SendGridAdapter",
        "sms": "TwilioSmsAdapter",
        "whatsapp": "DevInboxAdapter",
        "line": "DevInboxAdapter",
    }


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({**SENDGRID, "SENDGRID_API_KEY": None}, "SENDGRID_API_KEY: required when"),
        ({**SENDGRID, "SENDGRID_BASE_URL": "localhost:8025"}, "SENDGRID_BASE_URL:"),
        ({**TWILIO, "TWILIO_AUTH_TOKEN": None}, "TWILIO_AUTH_TOKEN: required when"),
        ({**TWILIO, "TWILIO_FROM_NUMBER": None}, "TWILIO_FROM_NUMBER or TWILIO_MESSAGING"),
        (
            {**TWILIO, "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32},
            "TWILIO_FROM_NUMBER or TWILIO_MESSAGING",
        ),
    ],
)
def test_a_provider_without_its_credentials_stops_start_naming_them(overrides, named):
    result = show_adapters(**overrides)
    assert result.returncode != 0
    assert named in result.stderr


WHATSAPP = {
    "CHANNEL_ADAPTER_WHATSAPP": "twilio",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "token",
    "TWILIO_WHATSAPP_FROM_NUMBER": "+14155238886",
}
LINE = {"CHANNEL_ADAPTER_LINE": "line", "LINE_CHANNEL_ACCESS_TOKEN": "line-token"}


def test_whatsapp_and_line_switch_to_their_providers_with_a_rate_limit():
    result = show_adapters(**(WHATSAPP | LINE | {"RATE_LIMIT_LINE": "50"}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "email": "DevInboxAdapter",
        "sms": "DevInboxAdapter",
        "whatsapp": "TwilioWhatsAppAdapter",
        "line": "LineAdapter",
    }


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({**WHATSAPP, "TWILIO_WHATSAPP_FROM_NUMBER": None}, "TWILIO_WHATSAPP_FROM_NUMBER or"),
        ({**LINE, "LINE_CHANNEL_ACCESS_TOKEN": None}, "LINE_CHANNEL_ACCESS_TOKEN: required"),
        ({"RATE_LIMIT_SMS": "fast"}, "RATE_LIMIT_SMS: expected messages per second"),
        ({"RATE_LIMIT_SMS": "0"}, "RATE_LIMIT_SMS: must be above 0"),
    ],
)
def test_chat_providers_and_rates_name_what_is_missing(overrides, named):
    result = show_adapters(**overrides)
    assert result.returncode != 0
    assert named in result.stderr
