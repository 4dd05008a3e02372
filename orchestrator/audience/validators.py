"""Validation and normalization of customer identities."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from functools import lru_cache
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

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


#: PostgreSQL's timestamptz takes UTC offsets up to 15:59 either way (real zones lie
#: between -12:00 and +14:00); a larger one is refused by the database, not stored.
MAX_UTC_OFFSET = dt.timedelta(hours=15, minutes=59)
#: Datetimes outside these years are refused: PostgreSQL would store them, but Python's
#: datetime could not read some of them back once shifted to UTC.
MIN_YEAR, MAX_YEAR = 1900, 9000

DATETIME_MESSAGES = {
    "invalid": "Must be an ISO 8601 date-time with offset, e.g. 2025-04-01T09:00:00+09:00.",
    "naive": "Must include a UTC offset (Z or +09:00): a time without one is ambiguous.",
    "offset": "The UTC offset must be whole minutes between -15:59 and +15:59.",
    "range": f"Must be between the years {MIN_YEAR} and {MAX_YEAR}.",
}


def parse_aware_datetime(value: Any) -> dt.datetime:
    """An ISO 8601 date-time with a UTC offset the database can store, or ValidationError
    (its ``code`` one of ``DATETIME_MESSAGES``): one rule for every datetime a client sends."""
    parsed = None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
    if parsed is None:
        raise ValidationError(DATETIME_MESSAGES["invalid"], code="invalid")
    offset = parsed.utcoffset()
    if offset is None:
        raise ValidationError(DATETIME_MESSAGES["naive"], code="naive")
    if abs(offset) > MAX_UTC_OFFSET or offset % dt.timedelta(minutes=1):
        raise ValidationError(DATETIME_MESSAGES["offset"], code="offset")
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValidationError(DATETIME_MESSAGES["range"], code="range")
    return parsed
