"""Recurring journeys: a cron schedule, in one time zone or in each customer's own.

Config (``Journey.trigger``)::

    {"cron": "0 9 * * 1", "timezone": "Asia/Tokyo" | "customer", "segment": [conditions]}

Beat calls ``journeys.fire_recurring`` (see ``schedules``). ``fire`` looks at the cron
fire times that passed since its previous run (kept in a ``JourneyCursor``, at most
``CATCH_UP`` back, so a worker down for a day does not send yesterday's 09:00 message
in the afternoon) and enrolls the segment's customers for the latest one. With
``"customer"`` that is computed per time zone: a customer in Tokyo is enrolled by the
run after 09:00 Tokyo time, one in New York by the run after 09:00 there.

The occurrence is the scheduled local wall time (``recurring:2024-05-06T09:00``), so two
beats, a retried task or a customer moving zones the same morning never enroll twice.
A day-of-month and a day-of-week both restrict (celery's crontab, unlike classic cron).
The forecast multiplies the fire times in the window by the segment as it is today.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from celery.schedules import crontab
from django import forms
from django.db import connection, transaction
from django.utils import timezone

from journeys.enrollment import enroll_select
from journeys.forecasting import DAY, Entrant, Forecast, Window, entry_allowed, zone_of
from journeys.models import Journey, JourneyCursor
from journeys.problems import Problem, conditions_problems
from journeys.triggers import segment_entry
from orchestrator.segments.sql import segment_sql, segment_where

KIND = "recurring"
LABEL = "A recurring schedule, for a segment"
#: Not swept: beat fires each journey on its own crontab (``schedules``), which calls
#: ``fire``; the minute sweep only reconciles those beat entries.
SWEEP_TASK = None
sweep = None
CONTEXT_FROM_EVENT = False
EXAMPLE: dict[str, Any] = {"cron": "0 9 * * 1", "timezone": "Asia/Tokyo"}
#: Settings a builder form leaves unspelled when they have these values.
DEFAULTS: dict[str, Any] = {"timezone": "UTC"}
#: Trigger setting -> the builder's form field for it.
FORM_PLACES = {"cron": "rec_cron", "timezone": "rec_timezone", "segment": "segment"}
FIELDSETS = (
    ("Trigger: a schedule", ("rec_cron", "rec_timezone")),
    *segment_entry.FIELDSETS,
)
CURSOR = "recurring"
#: With ``"timezone": "customer"`` beat runs ``fire`` this often (see ``schedules``).
CUSTOMER_BEAT_MINUTES = 15
#: How far back a run looks for missed fire times.
CATCH_UP = dt.timedelta(hours=1)
#: A beat that arrives a little early (clock skew between beat and worker) still fires.
EARLY = dt.timedelta(seconds=30)
MINUTE = dt.timedelta(minutes=1)


def cron_schedule(expression: str) -> crontab:
    """Parse a five-field cron expression; ValueError with a readable message."""
    fields = str(expression).split()
    if len(fields) != 5:
        raise ValueError("Give the schedule as five cron fields, e.g. '0 9 * * 1' (Mon 09:00).")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        schedule = crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except Exception as exc:  # celery raises ValueError or its own ParseException
        raise ValueError(f"The schedule {expression!r} is not valid cron: {exc}") from None
    return schedule


def fire(journey: Journey, now: dt.datetime | None = None) -> int:
    """Enroll the segment for the fire time(s) that just passed; returns how many."""
    now = now or timezone.now()
    config = journey.trigger or {}
    schedule = cron_schedule(config["cron"])
    zone_name = config.get("timezone", "UTC")
    with transaction.atomic():
        state, _created = JourneyCursor.objects.select_for_update().get_or_create(
            journey=journey, name=CURSOR
        )
        until = now + EARLY
        first_look = (
            dt.timedelta(minutes=CUSTOMER_BEAT_MINUTES) if zone_name == "customer" else CATCH_UP
        )
        since = max(state.last_at or now - first_look, now - CATCH_UP)
        if zone_name == "customer":
            fires = customer_fires(schedule, since, until)
        else:
            fired = last_fire(schedule, zoneinfo.ZoneInfo(zone_name), since, until)
            fires = {zone_name: fired} if fired else {}
        state.last_at = max(state.last_at or until, until)
        state.save(update_fields=["last_at"])
        if not fires:
            return 0
        where, params = segment_sql(config.get("segment") or [], now=now)
        fired_zones = list(fires)
        fire_at = [fires[z][0] for z in fired_zones]
        local = [fires[z][1] for z in fired_zones]
        if zone_name == "customer":
            # A customer whose zone name neither side knows is on UTC, as everywhere else.
            join = (
                "LEFT JOIN known k ON k.tz = c.timezone "
                "JOIN fires f ON f.tz = COALESCE(k.tz, 'UTC')"
            )
            known = sorted(_zones())
        else:
            join = "CROSS JOIN fires f"
            known = []
        select = f"""
            WITH fires AS (
                SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[])
                    AS f(tz, fire_at, local_at)
            ),
            known AS (SELECT unnest(%s::text[]) AS tz)
            SELECT c.id AS customer_id, 'recurring:' || f.local_at AS occurrence,
                   jsonb_build_object('scheduled_at', f.local_at, 'timezone', f.tz) AS context,
                   f.fire_at AS due_at
            FROM audience_customer c
            {join}
            WHERE {where}
        """  # noqa: S608 - fixed fragments; values are parameters
        head = [fired_zones, fire_at, local, known]
        return len(enroll_select(journey, select, [*head, *params], now=now))


def _matches(schedule: crontab, local: dt.datetime) -> bool:
    return (
        local.minute in schedule.minute
        and local.hour in schedule.hour
        and local.day in schedule.day_of_month
        and local.month in schedule.month_of_year
        and local.isoweekday() % 7 in schedule.day_of_week  # cron: 0 is Sunday
    )


def last_fire(
    schedule: crontab, zone: dt.tzinfo, since: dt.datetime, until: dt.datetime
) -> tuple[dt.datetime, str] | None:
    """The latest fire time in ``(since, until]`` in ``zone``: (instant, local wall time).

    Walks UTC minutes, so a wall time skipped by daylight saving never fires and one
    repeated by it fires once (both have the same local wall time, the occurrence).
    """
    minute = until.astimezone(dt.UTC).replace(second=0, microsecond=0)
    while minute > since:
        local = minute.astimezone(zone)
        if _matches(schedule, local):
            return minute, local.strftime("%Y-%m-%dT%H:%M")
        minute -= MINUTE
    return None


def customer_fires(
    schedule: crontab, since: dt.datetime, until: dt.datetime
) -> dict[str, tuple[dt.datetime, str]]:
    """Per time zone name, the latest fire time in ``(since, until]``, if any.

    Zones that keep the same UTC offsets over the window give the same answer up to the
    wall time's offset, so each distinct pair of offsets is walked once.
    """
    out: dict[str, tuple[dt.datetime, str]] = {}
    by_offsets: dict[tuple, tuple[dt.datetime, str] | None] = {}
    for name in _zones():
        zone = zoneinfo.ZoneInfo(name)
        offsets = (since.astimezone(zone).utcoffset(), until.astimezone(zone).utcoffset())
        if offsets not in by_offsets:
            by_offsets[offsets] = last_fire(schedule, zone, since, until)
        found = by_offsets[offsets]
        if found is not None:
            out[name] = found
    return out


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    # The zones PostgreSQL and Python both know; a customer's zone outside them is UTC.
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_timezone_names")
        pg = {row[0] for row in cursor.fetchall()}
    return frozenset(pg & zoneinfo.available_timezones() | {"UTC"})


# --- definition, builder and forecast ------------------------------------------------


def validate(trigger: Mapping[str, Any]) -> list[Problem]:
    p: list[Problem] = []
    try:
        cron_schedule(trigger.get("cron", ""))
    except ValueError as exc:
        p.append(Problem("trigger.cron", str(exc)))
    zone = trigger.get("timezone", "UTC")
    if zone != "customer":
        try:
            zoneinfo.ZoneInfo(str(zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            p.append(Problem("trigger.timezone", f"Unknown time zone {zone!r}."))
    p += conditions_problems(
        trigger.get("segment"), "trigger.segment", allowed=("attribute", "event"), required=False
    )
    return p


def form_fields() -> dict[str, forms.Field]:
    return {
        "rec_cron": forms.CharField(
            required=False,
            label="Schedule (cron)",
            help_text="Five fields: minute hour day month weekday, e.g. 0 9 * * 1 (Mondays 09:00).",
        ),
        "rec_timezone": forms.CharField(
            required=False,
            label="Time zone",
            help_text="e.g. Asia/Tokyo, or 'customer' for each customer's own time zone.",
        ),
        # Optional here, required for segment entry: one field serves both.
        **segment_entry.form_fields(),
    }


def form_initial(trigger: Mapping[str, Any]) -> dict[str, Any]:
    return {name: trigger[key] for key, name in FORM_PLACES.items() if key in trigger}


def form_values(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "cron": " ".join((cleaned.get("rec_cron") or "").split()),
        "timezone": cleaned.get("rec_timezone") or "UTC",
        "segment": cleaned.get("segment"),
    }


def _fire_times(cron: str, zone: zoneinfo.ZoneInfo, window: Window) -> list[dt.datetime]:
    schedule = cron_schedule(cron)
    first = window.now.astimezone(zone).date() - DAY
    last = window.end.astimezone(zone).date() + DAY
    out = []
    day = first
    while day <= last:
        # crontab numbers weekdays from Sunday = 0.
        if (
            day.month in schedule.month_of_year
            and day.day in schedule.day_of_month
            and day.isoweekday() % 7 in schedule.day_of_week
        ):
            for hour in sorted(schedule.hour):
                for minute in sorted(schedule.minute):
                    at = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=zone)
                    at = at.astimezone(dt.UTC)
                    if window.now <= at < window.end:
                        out.append(at)
        day += DAY
    return out


def _entries_at(
    journey: Journey, fires: Sequence[dt.datetime], last: dt.datetime | None
) -> list[dt.datetime]:
    """Which of a customer's fire times enroll, given their last entry, under the rule."""
    out = []
    known = last is not None
    for at in fires:
        if entry_allowed(journey, last, at, known):
            out.append(at)
            last, known = at, True
    return out


def forecast(journey: Journey, trigger: Mapping[str, Any], window: Window, sample: int) -> Forecast:
    where, params = segment_where(trigger.get("segment"), now=window.now)
    per_customer_zone = trigger.get("timezone", "UTC") == "customer"
    base = f"""
        FROM audience_customer c
        LEFT JOIN (
            SELECT customer_id, max(entered_at) AS last FROM journeys_enrollment
            WHERE journey_id = %s GROUP BY customer_id
        ) e ON e.customer_id = c.id
        WHERE {where}
    """  # noqa: S608 - the condition is built from our own fragments; values are params
    zone_column = "c.timezone" if per_customer_zone else "''"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {zone_column}, e.last, count(*) {base} GROUP BY 1, 2",
            [journey.id, *params],
        )
        groups = cursor.fetchall()
    fires: dict[str, list[dt.datetime]] = {}

    def fires_in(zone_name: str) -> list[dt.datetime]:
        if zone_name not in fires:
            name = zone_name if per_customer_zone else trigger.get("timezone", "UTC")
            fires[zone_name] = _fire_times(trigger["cron"], zone_of(name), window)
        return fires[zone_name]

    per_day = [0.0] * len(window.dates)
    most = 1
    for zone_name, last, count in groups:
        times = _entries_at(journey, fires_in(zone_name or ""), last)
        most = max(most, len(times))
        for at in times:
            day = window.day(at)
            if day is not None:
                per_day[day] += count
    # Enough customers that their entries fill the sample.
    customers = max(1, sample // most)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.id, {zone_column}, e.last {base} ORDER BY md5(c.id::text) LIMIT %s",
            [journey.id, *params, customers],
        )
        chosen = cursor.fetchall()
    entrants = []
    for customer_id, zone_name, last in chosen:
        for at in _entries_at(journey, fires_in(zone_name or ""), last):
            day = window.day(at)
            if day is not None:
                entrants.append(Entrant(customer_id, at, {}, day))
    entrants.sort(key=lambda e: e.at)
    zone_text = (
        "each customer's own time zone"
        if per_customer_zone
        else f"{trigger.get('timezone', 'UTC')} time"
    )
    notes = [
        f"The schedule {trigger['cron']!r} ({zone_text}) fires {len(fires_in(''))} times in "
        "the window"
        if not per_customer_zone
        else f"The schedule {trigger['cron']!r} runs in {zone_text}.",
        "Each run enrolls the segment as it is today; people joining or leaving it later "
        "are not foreseen.",
    ]
    return Forecast(per_day, entrants, notes)
