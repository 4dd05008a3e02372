"""Event triggers: a customer enters when they do something (``order.completed``).

Config (``Journey.trigger``)::

    {"event": "cart.abandoned", "filter": [property conditions]}

There is no sweep: ``journeys.events`` enrolls as events are recorded, in real time.
The forecast repeats the daily average of the last 28 days, replaying real entrants at
the time of day they came.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from django import forms
from django.db import connection

from journeys.forecasting import (
    HISTORY,
    Entrant,
    Forecast,
    Row,
    Window,
    apply_entry_rule,
    draw,
    json_object,
)
from journeys.form_fields import ConditionsField
from journeys.models import Journey
from journeys.problems import Problem, conditions_problems, is_name
from orchestrator.segments import conditions

KIND = "event"
LABEL = "An event happens"
#: Enrolled from events as they arrive, not by a beat sweep.
SWEEP_TASK = None
sweep = None
#: Enrollments carry the trigger event's properties (a test send samples the latest).
CONTEXT_FROM_EVENT = True
EXAMPLE: dict[str, Any] = {"event": "order.completed"}
DEFAULTS: dict[str, Any] = {}
#: Trigger setting -> the builder's form field for it.
FORM_PLACES = {"event": "event_name", "filter": "event_filter"}
FIELDSETS = (("Trigger: an event", ("event_name", "event_filter")),)
#: Most trigger events read to compute the average; beyond it, scaled.
MAX_SCAN = 200_000


def validate(trigger: Mapping[str, Any]) -> list[Problem]:
    p: list[Problem] = []
    if not is_name(trigger.get("event")):
        p.append(Problem("trigger.event", "Name the event that starts the journey."))
    p += conditions_problems(
        trigger.get("filter"), "trigger.filter", allowed=("property",), required=False
    )
    return p


def form_fields() -> dict[str, forms.Field]:
    return {
        "event_name": forms.CharField(
            required=False, label="Event", help_text="e.g. order.completed"
        ),
        "event_filter": ConditionsField(
            types=("property",), label="Only when the event's properties match"
        ),
    }


def form_initial(trigger: Mapping[str, Any]) -> dict[str, Any]:
    return {name: trigger[key] for key, name in FORM_PLACES.items() if key in trigger}


def form_values(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    return {"event": cleaned.get("event_name"), "filter": cleaned.get("event_filter")}


def forecast(journey: Journey, trigger: Mapping[str, Any], window: Window, sample: int) -> Forecast:
    since = window.now - HISTORY
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT customer_id, occurred_at, properties FROM audience_event"
            " WHERE name = %s AND occurred_at >= %s AND occurred_at < %s"
            " ORDER BY occurred_at DESC LIMIT %s",
            [trigger["event"], since, window.now, MAX_SCAN + 1],
        )
        events = cursor.fetchall()
    notes = []
    scale = 1.0
    if len(events) > MAX_SCAN:
        events = events[:MAX_SCAN]
        covered = window.now - events[-1][1]
        scale = HISTORY / covered if covered.total_seconds() > 0 else 1.0
        notes.append(
            f"Only the latest {MAX_SCAN:,} {trigger['event']} events were read; the daily "
            "average is scaled from the time they cover."
        )
    wanted = trigger.get("filter") or []
    # One entry per customer and day: distinct customers per day, as the average counts.
    pairs: dict[tuple[int, dt.date], Row] = {}
    for customer_id, occurred_at, properties in events:
        properties = json_object(properties)
        if wanted and not conditions.matches_properties(wanted, properties):
            continue
        day = occurred_at.astimezone(window.tz).date()
        pairs[(customer_id, day)] = (customer_id, occurred_at, properties)
    rows = apply_entry_rule(journey, list(pairs.values()))
    average = len(rows) * scale / HISTORY.days
    per_day = [average * window.share_left(i) for i in range(len(window.dates))]
    notes.append(
        f"Entries repeat the daily average of the last {HISTORY.days} days: about "
        f"{average:.1f} a day (distinct customers with a matching {trigger['event']} event)."
    )
    entrants: list[Entrant] = []
    if rows:
        # Replay real entries: each forecast day gets a stable slice of them, at the time
        # of day they happened (quiet hours depend on it).
        rows.sort(key=lambda r: draw(r[0], r[1].isoformat(), scale=2**62))
        per = min(len(rows), max(1, math.ceil(sample / len(window.dates))))
        for i in range(len(window.dates)):
            for j in range(per):
                n = i * per + j
                customer_id, occurred_at, properties = rows[n % len(rows)]
                local = occurred_at.astimezone(window.tz)
                at = dt.datetime.combine(
                    window.dates[i], local.time(), tzinfo=window.tz
                ).astimezone(dt.UTC)
                if at < window.now or at >= window.bounds[i + 1]:
                    continue
                entrants.append(Entrant(customer_id, at, dict(properties), i, n // len(rows)))
        entrants = entrants[:sample]
        if any(e.replica for e in entrants):
            notes.append(
                "Past entrants stand in for future ones, some on more than one day; each "
                "stand-in counts as a separate person for frequency caps."
            )
    return Forecast(per_day, entrants, notes)
