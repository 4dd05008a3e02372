"""Log output: one JSON object per line for production, and personal data masked in every format.

Email addresses and phone numbers reach log lines through messages, their ``%``
arguments, ``extra`` fields and exception text (a provider error often quotes the
address). :class:`MaskPersonalData` is a *handler* filter, so it sees records
propagated from every logger, and rewrites the message once with the arguments
merged in; the formatters mask exception text and extras the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

# The local part's first character is kept; ``\w`` also takes non-ASCII letters.
_EMAIL = re.compile(r"(?<![\w.%+-])([\w.%+-])[\w.%+-]*@([\w-]+(?:\.[\w-]+)+)")
# E.164, also as written with spaces, dots, dashes or brackets ("+81 90-1234-5678",
# "+1 (415) 555-0100").
_PHONE = re.compile(r"\+[1-9](?:[\s().-]{0,2}\d){6,16}")

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if len(digits) < 8:
        return match.group(0)
    # Country code (at most two digits shown) and the last four: enough to tell numbers apart.
    return f"+{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


def mask(text: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``; ``+819012345678`` -> ``+81******5678``."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(str(k)): _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v) for v in value]
    return value


class MaskPersonalData(logging.Filter):
    """Merge the arguments into the message and mask emails and phone numbers in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let logging report it as usual
            return True
        record.msg = mask(message)
        record.args = None
        return True


class PlainFormatter(logging.Formatter):
    """The human format, masked as a whole: message, exception text and stack.

    Masking the whole line (not only ``formatException``) also covers exception text
    another handler's formatter already cached on the record (``record.exc_text``).
    """

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _mask_value(value)
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = mask(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(entry, default=lambda v: mask(str(v)), ensure_ascii=False)
