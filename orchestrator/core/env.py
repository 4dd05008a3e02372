"""Typed reading of environment variables.

Every setting that comes from the environment goes through here, so a bad value
stops the process at start with a message that names the variable, instead of
failing later somewhere far from the cause.
"""

from __future__ import annotations

import datetime as dt
import os
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def get_str(name: str, default: str | None = None) -> str | None:
    value = _raw(name)
    return default if value in (None, "") else value


def get_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true/false (1/0, yes/no, on/off), got {value!r}")


def get_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a whole number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {number}")
    return number


def get_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value in (None, ""):
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def get_url(name: str, default: str | None = None, *, schemes: tuple[str, ...]) -> str | None:
    value = get_str(name, default)
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes:
        allowed = ", ".join(schemes)
        raise ImproperlyConfigured(
            f"{name}: expected a URL starting with one of {allowed}, got {value!r}"
        )
    if parsed.scheme in ("http", "https") and not parsed.netloc:
        raise ImproperlyConfigured(f"{name}: URL has no host: {value!r}")
    return value.rstrip("/") if parsed.scheme in ("http", "https") else value


def get_time_range(name: str, default: str) -> tuple[dt.time, dt.time] | None:
    """``HH:MM-HH:MM`` (may wrap midnight), or empty / ``off`` for none."""
    value = get_str(name, default) or ""
    if value.lower() in ("", "off", "none"):
        return None
    try:
        start, end = (dt.time.fromisoformat(part.strip()) for part in value.split("-"))
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}: expected HH:MM-HH:MM (e.g. 21:00-08:00) or off, got {value!r}"
        ) from None
    if start == end:
        raise ImproperlyConfigured(f"{name}: start and end are the same ({value!r})")
    return start, end
