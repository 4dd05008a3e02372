"""Plain-JSON spelling of values, for what leaves the platform as data (exports)."""

from __future__ import annotations

import datetime as dt


def iso(value: dt.datetime | dt.date | dt.time | None) -> str | None:
    """ISO 8601 (with offset for datetimes), or None: an export is plain JSON types only."""
    return value.isoformat() if value is not None else None
