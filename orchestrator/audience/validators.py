"""Validation and normalization of customer identities."""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache

import phonenumbers
from django.core.exceptions import ValidationError

_LOCALE_RE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(value: str) -> None:
    if value not in _timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. Asia/Tokyo).")


def validate_locale(value: str) -> None:
    if not _LOCALE_RE.match(value or ""):
        raise ValidationError(f"{value!r} is not a locale (e.g. ja, en, en-US).")


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """Return ``value`` in E.164, or raise ValidationError.

    Numbers without a leading + are only accepted when a default region is given.
    """
    raw = (value or "").strip()
    if not raw:
        return ""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise ValidationError(
            f"{value!r} is not a phone number; use E.164 with the country code, e.g. +819012345678."
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(f"{value!r} is not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def validate_e164(value: str) -> None:
    if value and normalize_phone(value) != value:
        raise ValidationError(f"{value!r} is not in E.164 form (e.g. +819012345678).")
