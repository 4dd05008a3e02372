"""The shapes a trigger's forecast is made of, shared by the trigger kinds and the simulation.

A forecast (``Forecast``) is the expected entries per calendar day of a ``Window`` plus
a deterministic sample of entrants (``Entrant``) that the simulation walks through the
steps. Each trigger kind computes its own (``journeys.triggers.<kind>.forecast``) from
today's data with these helpers; the entry rule (once, once per N days) is applied
against the real enrollments the same way for every kind.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import json
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from journeys.models import Journey

#: How far back event history is read for averages and probabilities.
HISTORY = dt.timedelta(days=28)
DAY = dt.timedelta(days=1)

#: (customer id, entry time, context) of one would-be enrollment.
Row = tuple[int, dt.datetime, dict[str, Any]]


@dataclass
class Entrant:
    customer_id: int
    at: dt.datetime
    context: dict[str, Any]
    day: int
    #: The same customer standing in for several entrants (event history replayed on
    #: more days than it covers) counts as separate people for caps.
    replica: int = 0


@dataclass
class Forecast:
    per_day: list[float]
    entrants: list[Entrant]
    notes: list[str] = field(default_factory=list)


class Window:
    """The forecast's days: calendar days in the project's time zone, today first."""

    def __init__(self, now: dt.datetime, days: int) -> None:
        self.now = now
        self.tz = timezone.get_default_timezone()
        today = now.astimezone(self.tz).date()
        self.dates = [today + dt.timedelta(days=i) for i in range(days)]
        self.bounds = [
            dt.datetime.combine(today + dt.timedelta(days=i), dt.time(), tzinfo=self.tz).astimezone(
                dt.UTC
            )
            for i in range(days + 1)
        ]
        self.end = self.bounds[-1]

    def day(self, at: dt.datetime) -> int | None:
        i = bisect.bisect_right(self.bounds, at) - 1
        return i if 0 <= i < len(self.dates) else None

    def share_left(self, i: int) -> float:
        """The part of day ``i`` still ahead of now (today is partly gone)."""
        start, end = self.bounds[i], self.bounds[i + 1]
        if self.now <= start:
            return 1.0
        return max(0.0, (end - self.now) / (end - start))


def draw(*parts: Any, scale: int = 10_000) -> int:
    """A stable draw in [0, scale) for these parts (no process-salted ``hash``)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % scale


def json_object(value: Any) -> dict[str, Any]:
    """A jsonb column read with a raw cursor arrives as text."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def zone_of(name: str | None) -> zoneinfo.ZoneInfo:
    """The named time zone; UTC for an empty or unknown name, as the engine does."""
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def nothing(window: Window, note: str) -> Forecast:
    """No entries on any day, and why."""
    return Forecast([0.0] * len(window.dates), [], [note])


# --- the entry rule ----------------------------------------------------------------------


def last_entries(journey: Journey, customer_ids: Iterable[int] | None = None) -> dict[int, Any]:
    """Each customer's latest real entry into this journey."""
    sql = "SELECT customer_id, max(entered_at) FROM journeys_enrollment WHERE journey_id = %s"
    params: list[Any] = [journey.id]
    if customer_ids is not None:
        sql += " AND customer_id = ANY(%s)"
        params.append(sorted(set(customer_ids)))
    with connection.cursor() as cursor:
        cursor.execute(sql + " GROUP BY customer_id", params)
        return dict(cursor.fetchall())


def entry_allowed(journey: Journey, last: dt.datetime | None, at: dt.datetime, known: bool) -> bool:
    if journey.entry == Journey.Entry.ONCE:
        return not known
    if journey.entry == Journey.Entry.ONCE_PER:
        return last is None or last <= at - dt.timedelta(days=journey.entry_days or 1)
    return True


def apply_entry_rule(journey: Journey, rows: Sequence[Row]) -> list[Row]:
    """Rows (customer, time, context) that would enroll, in time order, under the rule."""
    rows = sorted(rows, key=lambda r: (r[1], r[0]))
    if journey.entry == Journey.Entry.EVERY_TIME:
        return rows
    last = last_entries(journey, [r[0] for r in rows])
    out = []
    for row in rows:
        customer_id, at, _context = row
        if entry_allowed(journey, last.get(customer_id), at, customer_id in last):
            out.append(row)
            last[customer_id] = at
    return out


def spread(rows: Sequence[Row], window: Window, sample: int) -> Forecast:
    """Exact entrants: count them per day; sample up to ``sample`` of them, stably."""
    per_day = [0.0] * len(window.dates)
    entrants = []
    for customer_id, at, context in rows:
        day = window.day(at)
        if day is None or at < window.now:
            continue
        per_day[day] += 1
        entrants.append(Entrant(customer_id, at, context, day))
    if len(entrants) > sample:
        entrants.sort(key=lambda e: draw(e.customer_id, e.at.isoformat(), scale=2**62))
        entrants = sorted(entrants[:sample], key=lambda e: e.at)
    return Forecast(per_day, entrants)
