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

The forecast reads the dates as they stand now: the customers whose date plus the
offset falls in each day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django import forms
from django.db import connection
from django.utils import timezone

from journeys.engine import parse_instant
from journeys.enrollment import enroll_select
from journeys.forecasting import (
    DAY,
    Forecast,
    Row,
    Window,
    apply_entry_rule,
    json_object,
    spread,
    zone_of,
)
from journeys.form_fields import DIRECTIONS, UNITS, split_minutes, to_minutes
from journeys.models import Journey
from journeys.problems import Problem, is_int, is_name, positive
from orchestrator.segments.parsing import ZONES_CTE, instant, iso_utc, json_text

KIND = "date"
LABEL = "A date (attribute or event time) plus or minus an offset"
#: The beat task whose sweep enrolls this kind (run at once when a journey starts).
SWEEP_TASK = "sweeps.journey_triggers"
CONTEXT_FROM_EVENT = True
EXAMPLE: dict[str, Any] = {"source": "attribute", "attribute": "appointment_at"}
DEFAULT_GRACE_MINUTES = 60
#: Settings a builder form leaves unspelled when they have these values.
DEFAULTS: dict[str, Any] = {
    "source": "attribute",
    "offset_minutes": 0,
    "grace_minutes": DEFAULT_GRACE_MINUTES,
}
#: Trigger setting -> the builder's form field for it.
FORM_PLACES = {
    "source": "date_source",
    "attribute": "date_attribute",
    "event": "date_event",
    "property": "date_property",
    "offset_minutes": "date_offset",
    "grace_minutes": "date_grace_minutes",
}
#: Settings that apply only with another setting's value (the canvas shows them then).
SHOW_WHEN: dict[str, dict[str, Any]] = {
    "attribute": {"field": "source", "equals": "attribute"},
    "event": {"field": "source", "equals": "event"},
    "property": {"field": "source", "equals": "event"},
}
FIELDSETS = (
    (
        "Trigger: a date",
        (
            "date_source",
            "date_attribute",
            ("date_event", "date_property"),
            ("date_offset", "date_offset_unit", "date_offset_direction"),
            "date_grace_minutes",
        ),
    ),
)
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


# --- definition, builder and forecast ------------------------------------------------


def validate(trigger: Mapping[str, Any]) -> list[Problem]:
    p: list[Problem] = []
    source = trigger.get("source", "attribute")
    if source not in ("attribute", "event"):
        p.append(Problem("trigger.source", "The date comes from an 'attribute' or an 'event'."))
    elif source == "attribute" and not is_name(trigger.get("attribute")):
        p.append(Problem("trigger.attribute", "Name the date attribute, e.g. appointment_at."))
    elif source == "event" and not is_name(trigger.get("event")):
        p.append(Problem("trigger.event", "Name the event whose time (or property) to use."))
    if trigger.get("property") and not is_name(trigger.get("property")):
        p.append(Problem("trigger.property", "The event property is a name (text)."))
    if not is_int(trigger.get("offset_minutes", 0)):
        p.append(Problem("trigger.offset_minutes", "The offset is a whole number of minutes."))
    grace = trigger.get("grace_minutes", DEFAULT_GRACE_MINUTES)
    if not positive(grace):
        p.append(Problem("trigger.grace_minutes", "Grace must be a positive number."))
    return p


def form_fields() -> dict[str, forms.Field]:
    return {
        "date_source": forms.ChoiceField(
            required=False,
            label="The date is",
            choices=(("attribute", "a customer attribute"), ("event", "the time of an event")),
        ),
        "date_attribute": forms.CharField(
            required=False, label="Date attribute", help_text="e.g. appointment_at"
        ),
        "date_event": forms.CharField(required=False, label="Event"),
        "date_property": forms.CharField(
            required=False,
            label="Event property holding the date",
            help_text="Empty to use the time the event happened.",
        ),
        "date_offset": forms.IntegerField(required=False, min_value=0, label="Offset"),
        "date_offset_unit": forms.ChoiceField(
            required=False, choices=UNITS, initial="hours", label=""
        ),
        "date_offset_direction": forms.ChoiceField(required=False, choices=DIRECTIONS, label=""),
        "date_grace_minutes": forms.IntegerField(
            required=False,
            min_value=1,
            label="Grace (minutes)",
            help_text="How late a date may still be acted on (default 60).",
        ),
    }


def form_initial(trigger: Mapping[str, Any]) -> dict[str, Any]:
    initial = {name: trigger[key] for key, name in FORM_PLACES.items() if key in trigger}
    if "offset_minutes" in trigger:
        amount, unit = split_minutes(trigger["offset_minutes"])
        initial["date_offset"] = amount
        initial["date_offset_unit"] = unit
        initial["date_offset_direction"] = "before" if trigger["offset_minutes"] < 0 else "after"
    return initial


def form_values(cleaned: Mapping[str, Any]) -> dict[str, Any]:
    offset = to_minutes(cleaned.get("date_offset"), cleaned.get("date_offset_unit") or "hours")
    if offset is not None and cleaned.get("date_offset_direction") == "before":
        offset = -offset
    values = {
        "source": cleaned.get("date_source") or "attribute",
        "offset_minutes": offset,
        "grace_minutes": cleaned.get("date_grace_minutes"),
    }
    if values["source"] == "attribute":
        values["attribute"] = cleaned.get("date_attribute")
    else:
        values["event"] = cleaned.get("date_event")
        values["property"] = cleaned.get("date_property")
    return values


def forecast(journey: Journey, trigger: Mapping[str, Any], window: Window, sample: int) -> Forecast:
    offset = dt.timedelta(minutes=int(trigger.get("offset_minutes", 0)))
    # A string prefilter on the date part (ISO dates sort as text); exact parsing after.
    lo = (window.now - offset - 2 * DAY).date().isoformat()
    hi = (window.end - offset + 2 * DAY).date().isoformat()
    rows: list[Row] = []
    source = trigger.get("source", "attribute")
    with connection.cursor() as cursor:
        if source == "attribute":
            name = trigger["attribute"]
            cursor.execute(
                """
                SELECT id, timezone, v FROM (
                    SELECT id, timezone,
                        COALESCE(attributes->>%(name)s, attributes #>> %(path)s) AS v
                    FROM audience_customer
                ) c WHERE substr(v, 1, 10) BETWEEN %(lo)s AND %(hi)s
                """,
                {"name": name, "path": name.split("."), "lo": lo, "hi": hi},
            )
            for customer_id, zone, value in cursor.fetchall():
                when = parse_instant(value, zone_of(zone))
                if when is not None:
                    rows.append((customer_id, when + offset, {}))
        else:
            prop = trigger.get("property")
            if prop:
                cursor.execute(
                    """
                    SELECT e.customer_id, c.timezone, e.properties->>%(prop)s, e.properties
                    FROM audience_event e JOIN audience_customer c ON c.id = e.customer_id
                    WHERE e.name = %(event)s
                        AND substr(e.properties->>%(prop)s, 1, 10) BETWEEN %(lo)s AND %(hi)s
                    """,
                    {"prop": prop, "event": trigger["event"], "lo": lo, "hi": hi},
                )
                for customer_id, zone, value, properties in cursor.fetchall():
                    when = parse_instant(value, zone_of(zone))
                    if when is not None:
                        rows.append((customer_id, when + offset, json_object(properties)))
            else:
                cursor.execute(
                    "SELECT customer_id, occurred_at, properties FROM audience_event"
                    " WHERE name = %s AND occurred_at >= %s AND occurred_at < %s",
                    [trigger["event"], window.now - offset, window.end - offset],
                )
                rows = [(c, at + offset, json_object(p)) for c, at, p in cursor.fetchall()]
    rows = [r for r in rows if window.now <= r[1] < window.end]
    result = spread(apply_entry_rule(journey, rows), window, sample)
    what = trigger.get("attribute") if source == "attribute" else trigger.get("event")
    result.notes.append(
        f"Entries are the customers whose {what} date (plus the offset) falls in each day, "
        "as the data stands now; dates added or changed later are not foreseen."
    )
    return result
