"""Date triggers: enroll when a customer's date plus an offset comes round.

Config (``Journey.trigger``)::

    {"source": "attribute" | "event", "attribute": "appointment_at",
     "event": "appointment.booked", "property": "starts_at",   # else the event's time
     "offset_minutes": -1440, "annual": false, "grace_minutes": 60}

The sweep runs every minute and enrolls, in one statement, everyone whose fire time
(the date plus the offset) lies in ``(now - grace, now]``. The occurrence names the
target date itself (``appointment_at:2024-05-01T01:00:00Z``), so a rerun or a second
worker never enrolls twice while a rescheduled appointment is a new occurrence and fires
again. With ``annual`` the date recurs every year (birthdays): the occurrence is that
year's anniversary, at midnight in the customer's zone plus the offset; 29 February is
the 28th in other years.

Dates are ISO strings: a bare date is midnight and a date-time without an offset is wall
time, both in the customer's own time zone. Anything else (``soon``, ``2024-02-30``, a
number) is skipped without an error.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from journeys.enrollment import enroll_select
from journeys.models import Journey
from journeys.triggers.parsing import ZONES_CTE, instant, iso_utc, json_text

DEFAULT_GRACE_MINUTES = 60
#: Occurrences are at most 200 characters; keep room for the date after the name.
NAME_CHARS = 150


def sweep(journey: Journey, now: dt.datetime | None = None) -> int:
    """Enroll the customers whose date fires now; returns how many were enrolled."""
    now = now or timezone.now()
    select, params = due_sql(journey, now=now)
    return len(enroll_select(journey, select, params, now=now))


def due_sql(journey: Journey, *, now: dt.datetime) -> tuple[str, list[Any]]:
    """The SELECT of (customer_id, occurrence, context, due_at) firing at ``now``."""
    config = journey.trigger or {}
    offset = dt.timedelta(minutes=int(config.get("offset_minutes", 0)))
    grace = dt.timedelta(minutes=float(config.get("grace_minutes", DEFAULT_GRACE_MINUTES)))
    annual = bool(config.get("annual"))
    if config.get("source", "attribute") == "event":
        source, source_params, key = _event_source(config, now, offset, grace, annual)
    else:
        source, source_params, key = _attribute_source(config)
    label = key[:NAME_CHARS]
    if annual:
        fires = """
            SELECT s.customer_id, s.pick,
                   (a.day::timestamp AT TIME ZONE s.zone) + %s::interval AS fire_at,
                   %s::text || ':' || a.day::text AS occurrence,
                   s.context || jsonb_build_object('anniversary', a.day::text) AS context
            FROM src s
            CROSS JOIN LATERAL (
                SELECT make_date(
                           (extract(year FROM %s::timestamptz AT TIME ZONE s.zone) + k)::int,
                           extract(month FROM s.target AT TIME ZONE s.zone)::int, 1) AS first,
                       extract(day FROM s.target AT TIME ZONE s.zone)::int AS dom
                FROM generate_series(-1, 1) AS k
            ) y
            CROSS JOIN LATERAL (
                SELECT LEAST(y.first + (y.dom - 1),
                             (y.first + interval '1 month' - interval '1 day')::date) AS day
            ) a
        """
        fire_params: list[Any] = [offset, label, now]
    else:
        fires = f"""
            SELECT s.customer_id, s.pick, s.target + %s::interval AS fire_at,
                   %s::text || ':' || {iso_utc("s.target")} AS occurrence, s.context
            FROM src s
        """  # noqa: S608 - fixed fragments; values are parameters
        fire_params = [offset, label]
    sql = f"""
        WITH {ZONES_CTE},
        src AS ({source}),
        fires AS ({fires})
        SELECT DISTINCT ON (customer_id, occurrence)
               customer_id, occurrence, context, fire_at AS due_at
        FROM fires
        WHERE fire_at > %s AND fire_at <= %s
        ORDER BY customer_id, occurrence, pick DESC
    """  # noqa: S608 - fixed fragments; values are parameters
    return sql, [*source_params, *fire_params, now - grace, now]


def _attribute_source(config: dict[str, Any]) -> tuple[str, list[Any], str]:
    name = config["attribute"]
    value = "c.attributes -> %s"
    zone = "COALESCE(z.name, 'UTC')"
    sql = f"""
        SELECT c.id AS customer_id, 0::bigint AS pick, {zone} AS zone,
               {instant(json_text(value), zone)} AS target,
               jsonb_build_object(%s::text, {value}) AS context
        FROM audience_customer c
        LEFT JOIN zones z ON z.name = c.timezone
        WHERE c.attributes ? %s
    """  # noqa: S608 - fixed fragments; values are parameters
    # The target repeats the value expression (json_text has it twice, instant() uses
    # its text several times), then the context names it twice and WHERE once.
    params = [name] * (2 * _text_uses()) + [name, name, name]
    return sql, params, name


def _text_uses() -> int:
    """How many times ``instant`` repeats its text argument (each repeat has parameters)."""
    marker = "\x00"
    return instant(marker, "zone").count(marker)


def _event_source(
    config: dict[str, Any],
    now: dt.datetime,
    offset: dt.timedelta,
    grace: dt.timedelta,
    annual: bool,
) -> tuple[str, list[Any], str]:
    event = config["event"]
    prop = config.get("property") or ""
    zone = "COALESCE(z.name, 'UTC')"
    properties = (
        "(CASE WHEN jsonb_typeof(e.properties) = 'object' THEN e.properties ELSE '{}'::jsonb END)"
    )
    meta = "jsonb_build_object('_event', jsonb_build_object('name', e.name, 'id', e.id))"
    params: list[Any] = []
    if prop:
        value = "e.properties -> %s"
        target = instant(json_text(value), zone)
        params += [prop] * (2 * _text_uses())
        context = f"{properties} || jsonb_build_object(%s::text, {value}) || {meta}"
        params += [prop, prop]
        key = prop
    else:
        target = "e.occurred_at"
        occurred = iso_utc("e.occurred_at")
        context = f"{properties} || jsonb_build_object('occurred_at', {occurred}) || {meta}"
        key = "occurred_at"
    where = "e.name = %s"
    params.append(event)
    if not prop and not annual:
        # Fire time = occurred_at + offset, so only a window of events can fire now: a
        # range scan on (name, occurred_at) instead of the event's whole history.
        where += " AND e.occurred_at > %s AND e.occurred_at <= %s"
        params += [now - grace - offset, now - offset]
    sql = f"""
        SELECT e.customer_id, e.id AS pick, {zone} AS zone, {target} AS target,
               {context} AS context
        FROM audience_event e
        JOIN audience_customer c ON c.id = e.customer_id
        LEFT JOIN zones z ON z.name = c.timezone
        WHERE {where}
    """  # noqa: S608 - fixed fragments; values are parameters
    return sql, params, key
