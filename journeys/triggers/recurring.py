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
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import lru_cache

from celery.schedules import crontab
from django.db import connection, transaction
from django.utils import timezone

from journeys.definition import cron_schedule
from journeys.enrollment import enroll_select
from journeys.models import Journey, JourneyCursor
from journeys.triggers.schedules import CUSTOMER_BEAT_MINUTES
from journeys.triggers.segments import segment_sql

CURSOR = "recurring"
#: How far back a run looks for missed fire times.
CATCH_UP = dt.timedelta(hours=1)
#: A beat that arrives a little early (clock skew between beat and worker) still fires.
EARLY = dt.timedelta(seconds=30)
MINUTE = dt.timedelta(minutes=1)


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
