"""Simulation: what a journey's draft would do over the next days, on today's data.

Nothing is sent and nothing is written. The forecast has three parts:

1. **Entries per day**, from the trigger: an event trigger repeats the daily average of
   the last 28 days; a date trigger reads the customers' dates; replenishment reads the
   predictions; a recurring schedule multiplies its fire times by the segment; a segment
   trigger counts who matches now and is not in yet. The entry rule (once, once per N
   days) is applied against the real enrollments.
2. **A walk** of a deterministic sample of those entrants through the steps, the way the
   engine moves them: waits move the clock, branches read current data, splits use a
   stable hash, and each send is routed and consent-checked the way the dispatcher
   would (``resolve_channel``, then consent and suppression for each channel option).
3. **The fatigue policy** (caps, gaps, quiet hours in each customer's own time zone)
   over the simulated sends plus each customer's real recent history, so the forecast
   shows what would be deferred or dropped, and why.

Sample counts are scaled up to the forecast, per day of entry. The result lists, in
plain words, every assumption a marketer should know about.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import heapq
import json
import math
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from journeys import conditions
from journeys.definition import DefinitionInvalid, cron_schedule, definition_of, validate
from journeys.engine import next_local_time, parse_instant
from journeys.models import Journey, StepKind
from orchestrator.audience.models import Customer
from orchestrator.consent.models import Topic
from orchestrator.consent.selectors import SUPPRESSED, ConsentRequest, consent_decisions
from orchestrator.delivery import fatigue, policy
from orchestrator.delivery.models import FrequencyRule, MessageTemplate
from orchestrator.delivery.services import (
    DEFAULT_CHANNEL_ORDER,
    SendRefused,
    resolve_channel,
)

MAX_DAYS = 60
MAX_SAMPLE = 10_000
#: How far back event history is read for averages and probabilities.
HISTORY = dt.timedelta(days=28)
#: Most trigger events read to compute an event trigger's average; beyond it, scaled.
MAX_SCAN = 200_000
#: Most steps one simulated entrant takes (loops with waits would go on to the horizon).
MAX_STEPS = 500
_DAY = dt.timedelta(days=1)


@dataclass
class _Entrant:
    customer_id: int
    at: dt.datetime
    context: dict[str, Any]
    day: int
    #: The same customer standing in for several entrants (event history replayed on
    #: more days than it covers) counts as separate people for caps.
    replica: int = 0


@dataclass
class _Forecast:
    per_day: list[float]
    entrants: list[_Entrant]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Send:
    entrant: int
    person: tuple[int, int]
    at: dt.datetime
    step: str
    options: list[str]
    expires_at: dt.datetime | None
    weight: float
    channel: str = ""
    alternatives: tuple[str, ...] = ()


@dataclass
class _Tally:
    days: int
    entries: list[float]
    messages: list[dict[str, float]] = field(default_factory=list)
    held: list[dict[str, float]] = field(default_factory=list)
    deferred: list[dict[str, float]] = field(default_factory=list)
    dropped: list[dict[str, float]] = field(default_factory=list)
    after_window: float = 0.0

    def __post_init__(self) -> None:
        for name in ("messages", "held", "deferred", "dropped"):
            setattr(self, name, [defaultdict(float) for _ in range(self.days)])


class _Window:
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


def _draw(*parts: Any, scale: int = 10_000) -> int:
    """A stable draw in [0, scale) for these parts (no process-salted ``hash``)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % scale


def _json(value: Any) -> dict[str, Any]:
    """A jsonb column read with a raw cursor arrives as text."""
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def _zone(name: str | None) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


# --- the entry rule ----------------------------------------------------------------------


def _last_entries(journey: Journey, customer_ids: Iterable[int] | None = None) -> dict[int, Any]:
    """Each customer's latest real entry into this journey."""
    sql = "SELECT customer_id, max(entered_at) FROM journeys_enrollment WHERE journey_id = %s"
    params: list[Any] = [journey.id]
    if customer_ids is not None:
        sql += " AND customer_id = ANY(%s)"
        params.append(sorted(set(customer_ids)))
    with connection.cursor() as cursor:
        cursor.execute(sql + " GROUP BY customer_id", params)
        return dict(cursor.fetchall())


def _entry_allowed(
    journey: Journey, last: dt.datetime | None, at: dt.datetime, known: bool
) -> bool:
    if journey.entry == Journey.Entry.ONCE:
        return not known
    if journey.entry == Journey.Entry.ONCE_PER:
        return last is None or last <= at - dt.timedelta(days=journey.entry_days or 1)
    return True


def _apply_entry_rule(
    journey: Journey, rows: Sequence[tuple[int, dt.datetime, dict[str, Any]]]
) -> list[tuple[int, dt.datetime, dict[str, Any]]]:
    """Rows (customer, time, context) that would enroll, in time order, under the rule."""
    rows = sorted(rows, key=lambda r: (r[1], r[0]))
    if journey.entry == Journey.Entry.EVERY_TIME:
        return rows
    last = _last_entries(journey, [r[0] for r in rows])
    out = []
    for row in rows:
        customer_id, at, _context = row
        if _entry_allowed(journey, last.get(customer_id), at, customer_id in last):
            out.append(row)
            last[customer_id] = at
    return out


def _spread(
    rows: Sequence[tuple[int, dt.datetime, dict[str, Any]]], window: _Window, sample: int
) -> _Forecast:
    """Exact entrants: count them per day; sample up to ``sample`` of them, stably."""
    per_day = [0.0] * len(window.dates)
    entrants = []
    for customer_id, at, context in rows:
        day = window.day(at)
        if day is None or at < window.now:
            continue
        per_day[day] += 1
        entrants.append(_Entrant(customer_id, at, context, day))
    if len(entrants) > sample:
        entrants.sort(key=lambda e: _draw(e.customer_id, e.at.isoformat(), scale=2**62))
        entrants = sorted(entrants[:sample], key=lambda e: e.at)
    return _Forecast(per_day, entrants)


# --- triggers ----------------------------------------------------------------------------


def _event_forecast(
    journey: Journey, trigger: Mapping[str, Any], window: _Window, sample: int
) -> _Forecast:
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
    pairs: dict[tuple[int, dt.date], tuple[int, dt.datetime, dict[str, Any]]] = {}
    for customer_id, occurred_at, properties in events:
        properties = _json(properties)
        if wanted and not conditions.matches_properties(wanted, properties):
            continue
        day = occurred_at.astimezone(window.tz).date()
        pairs[(customer_id, day)] = (customer_id, occurred_at, properties)
    rows = _apply_entry_rule(journey, list(pairs.values()))
    average = len(rows) * scale / HISTORY.days
    per_day = [average * window.share_left(i) for i in range(len(window.dates))]
    notes.append(
        f"Entries repeat the daily average of the last {HISTORY.days} days: about "
        f"{average:.1f} a day (distinct customers with a matching {trigger['event']} event)."
    )
    entrants: list[_Entrant] = []
    if rows:
        # Replay real entries: each forecast day gets a stable slice of them, at the time
        # of day they happened (quiet hours depend on it).
        rows.sort(key=lambda r: _draw(r[0], r[1].isoformat(), scale=2**62))
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
                entrants.append(_Entrant(customer_id, at, dict(properties), i, n // len(rows)))
        entrants = entrants[:sample]
        if any(e.replica for e in entrants):
            notes.append(
                "Past entrants stand in for future ones, some on more than one day; each "
                "stand-in counts as a separate person for frequency caps."
            )
    return _Forecast(per_day, entrants, notes)


def _date_forecast(
    journey: Journey, trigger: Mapping[str, Any], window: _Window, sample: int
) -> _Forecast:
    offset = dt.timedelta(minutes=int(trigger.get("offset_minutes", 0)))
    # A string prefilter on the date part (ISO dates sort as text); exact parsing after.
    lo = (window.now - offset - 2 * _DAY).date().isoformat()
    hi = (window.end - offset + 2 * _DAY).date().isoformat()
    rows: list[tuple[int, dt.datetime, dict[str, Any]]] = []
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
                when = parse_instant(value, _zone(zone))
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
                    when = parse_instant(value, _zone(zone))
                    if when is not None:
                        rows.append((customer_id, when + offset, _json(properties)))
            else:
                cursor.execute(
                    "SELECT customer_id, occurred_at, properties FROM audience_event"
                    " WHERE name = %s AND occurred_at >= %s AND occurred_at < %s",
                    [trigger["event"], window.now - offset, window.end - offset],
                )
                rows = [(c, at + offset, _json(p)) for c, at, p in cursor.fetchall()]
    rows = [r for r in rows if window.now <= r[1] < window.end]
    forecast = _spread(_apply_entry_rule(journey, rows), window, sample)
    what = trigger.get("attribute") if source == "attribute" else trigger.get("event")
    forecast.notes.append(
        f"Entries are the customers whose {what} date (plus the offset) falls in each day, "
        "as the data stands now; dates added or changed later are not foreseen."
    )
    return forecast


def _replenishment_forecast(
    journey: Journey, trigger: Mapping[str, Any], window: _Window, sample: int
) -> _Forecast:
    try:
        from journeys.triggers.replenishment import predictions_sql
    except ImportError:
        return _Forecast(
            [0.0] * len(window.dates),
            [],
            ["Replenishment predictions are not available yet, so no entries are forecast."],
        )
    query = predictions_sql(journey)
    sql, params = query if isinstance(query, tuple) else (query, [])
    before = dt.timedelta(days=int(trigger.get("remind_days_before", 0)))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.customer_id, p.product, p.predicted_at FROM ({sql}) p"  # noqa: S608
            " WHERE p.predicted_at >= %s AND p.predicted_at < %s",
            [*params, window.now + before, window.end + before],
        )
        found = cursor.fetchall()
    product_property = trigger.get("product_property") or "product"
    rows = [
        (customer_id, predicted_at - before, {product_property: product})
        for customer_id, product, predicted_at in found
    ]
    forecast = _spread(_apply_entry_rule(journey, rows), window, sample)
    forecast.notes.append(
        f"Entries are today's re-purchase predictions, {before.days} days before each "
        "predicted date; purchases made from now on would move them."
    )
    return forecast


def _segment_condition(segment: Any, now: dt.datetime) -> tuple[str, list[Any]]:
    """A WHERE condition on ``audience_customer c`` for the segment (TRUE for everyone)."""
    if not segment:
        return "TRUE", []
    from journeys.triggers.segments import segment_sql

    sql, params = segment_sql(segment, now=now)
    if sql.lstrip().upper().startswith("SELECT"):
        return f"c.id IN ({sql})", list(params)
    return f"({sql})", list(params)


def _fire_times(cron: str, zone: zoneinfo.ZoneInfo, window: _Window) -> list[dt.datetime]:
    schedule = cron_schedule(cron)
    first = window.now.astimezone(zone).date() - _DAY
    last = window.end.astimezone(zone).date() + _DAY
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
        day += _DAY
    return out


def _entries_at(
    journey: Journey, fires: Sequence[dt.datetime], last: dt.datetime | None
) -> list[dt.datetime]:
    """Which of a customer's fire times enroll, given their last entry, under the rule."""
    out = []
    known = last is not None
    for at in fires:
        if _entry_allowed(journey, last, at, known):
            out.append(at)
            last, known = at, True
    return out


def _recurring_forecast(
    journey: Journey, trigger: Mapping[str, Any], window: _Window, sample: int
) -> _Forecast:
    where, params = _segment_condition(trigger.get("segment"), window.now)
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
            fires[zone_name] = _fire_times(trigger["cron"], _zone(name), window)
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
                entrants.append(_Entrant(customer_id, at, {}, day))
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
    return _Forecast(per_day, entrants, notes)


def _segment_forecast(
    journey: Journey, trigger: Mapping[str, Any], window: _Window, sample: int
) -> _Forecast:
    where, params = _segment_condition(trigger.get("segment"), window.now)
    rule_sql = ""
    rule_params: list[Any] = []
    if journey.entry == Journey.Entry.ONCE:
        rule_sql = " AND NOT EXISTS (SELECT 1 FROM journeys_enrollment p"
        rule_sql += " WHERE p.journey_id = %s AND p.customer_id = c.id)"
        rule_params = [journey.id]
    elif journey.entry == Journey.Entry.ONCE_PER:
        rule_sql = " AND NOT EXISTS (SELECT 1 FROM journeys_enrollment p"
        rule_sql += " WHERE p.journey_id = %s AND p.customer_id = c.id AND p.entered_at > %s)"
        rule_params = [journey.id, window.now - dt.timedelta(days=journey.entry_days or 1)]
    base = f"""
        FROM audience_customer c WHERE {where}
        AND NOT EXISTS (SELECT 1 FROM journeys_segmentmember m
                        WHERE m.journey_id = %s AND m.customer_id = c.id)
        {rule_sql}
    """  # noqa: S608 - our own fragments; values are parameters
    args = [*params, journey.id, *rule_params]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) {base}", args)
        total = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT c.id {base} ORDER BY md5(c.id::text) LIMIT %s",
            [*args, sample],
        )
        chosen = [row[0] for row in cursor.fetchall()]
    per_day = [0.0] * len(window.dates)
    per_day[0] = float(total)
    entrants = [_Entrant(customer_id, window.now, {}, 0) for customer_id in chosen]
    notes = [
        "Everyone who matches the segment today and is not in it yet enters at once; "
        "who will join the segment later is not foreseen."
    ]
    return _Forecast(per_day, entrants, notes)


def _forecast(
    journey: Journey, trigger: Mapping[str, Any], window: _Window, sample: int
) -> _Forecast:
    kind = trigger.get("kind")
    if kind == Journey.TriggerKind.EVENT:
        return _event_forecast(journey, trigger, window, sample)
    if kind == Journey.TriggerKind.DATE:
        return _date_forecast(journey, trigger, window, sample)
    if kind == Journey.TriggerKind.REPLENISHMENT:
        return _replenishment_forecast(journey, trigger, window, sample)
    if kind == Journey.TriggerKind.RECURRING:
        return _recurring_forecast(journey, trigger, window, sample)
    if kind == Journey.TriggerKind.SEGMENT:
        return _segment_forecast(journey, trigger, window, sample)
    return _Forecast(
        [0.0] * len(window.dates),
        [],
        ["This journey is entered only by API or test sends, so no entries are forecast."],
    )


# --- the walk ----------------------------------------------------------------------------


@dataclass
class _World:
    """What the walk reads, loaded once for the whole sample."""

    definition: dict[str, Any]
    by_key: dict[str, dict[str, Any]]
    customers: dict[int, Customer]
    topic: Topic
    template_channels: dict[str, set[str] | None]
    last_event: dict[tuple[int, str], dt.datetime]
    event_rate: dict[str, float]
    window: _Window
    notes: set[str] = field(default_factory=set)


def _load_world(
    journey: Journey, definition: dict[str, Any], entrants: Sequence[_Entrant], window: _Window
) -> _World:
    ids = sorted({e.customer_id for e in entrants})
    customers = {c.id: c for c in Customer.objects.select_related("preference").filter(id__in=ids)}
    steps = definition["steps"]
    template_keys = {
        (s.get("config") or {}).get("template") for s in steps if s["kind"] == StepKind.SEND
    }
    templates = {t.key: t for t in MessageTemplate.objects.filter(key__in=template_keys)}
    template_channels: dict[str, set[str] | None] = {
        key: set(templates[key].variants.values_list("channel", flat=True))
        if key in templates
        else None
        for key in template_keys
    }
    names = set()
    for s in steps:
        config = s.get("config") or {}
        if s["kind"] == StepKind.BRANCH:
            names |= {c["name"] for c in config.get("conditions") or [] if c["type"] == "event"}
    last_event: dict[tuple[int, str], dt.datetime] = {}
    if names and ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT customer_id, name, max(occurred_at) FROM audience_event"
                " WHERE customer_id = ANY(%s) AND name = ANY(%s) GROUP BY 1, 2",
                [ids, sorted(names)],
            )
            last_event = {(c, n): at for c, n, at in cursor.fetchall()}
    event_rate = {}
    for s in steps:
        if s["kind"] != StepKind.WAIT_FOR_EVENT:
            continue
        config = s["config"]
        span = min(dt.timedelta(minutes=float(config["timeout_minutes"])), HISTORY)
        did = 0
        if ids:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(DISTINCT customer_id) FROM audience_event"
                    " WHERE customer_id = ANY(%s) AND name = %s AND occurred_at >= %s",
                    [ids, config["event"], window.now - span],
                )
                did = cursor.fetchone()[0]
        event_rate[s["key"]] = did / len(ids) if ids else 0.0
    return _World(
        definition=definition,
        by_key={s["key"]: s for s in steps},
        customers=customers,
        topic=Topic.objects.get(pk=journey.topic_id),
        template_channels=template_channels,
        last_event=last_event,
        event_rate=event_rate,
        window=window,
    )


def _facts(
    world: _World,
    customer_id: int,
    attributes: dict[str, Any],
    context: dict[str, Any],
    entered_at: dt.datetime,
    at: dt.datetime,
) -> conditions.Facts:
    def had_event(name: str, since: dt.datetime | None) -> bool:
        last = world.last_event.get((customer_id, name))
        return last is not None and (since is None or last >= since)

    def unknown() -> None:
        world.notes.add(
            "Branches on the last message's status or on replies take the 'no' path: "
            "a forecast cannot know how customers will react."
        )
        return None

    return conditions.Facts(
        attributes=attributes,
        context=context,
        entered_at=entered_at,
        now=at,
        had_event=had_event,
        last_message_status=unknown,
        last_reply=unknown,
    )


def _channel_options(world: _World, customer: Customer, config: Mapping[str, Any]) -> list[str]:
    """Channels the dispatcher would consider, in order; [] when it could not be queued."""
    channels = world.template_channels.get(config["template"])
    if channels is None:
        world.notes.add(f"Template {config['template']!r} does not exist: its sends are skipped.")
        return []
    requested = config.get("channel") or "preferred"
    try:
        resolved, _how = resolve_channel(
            customer=customer,
            topic=world.topic,
            template_channels=channels,
            requested=requested,
        )
    except SendRefused:
        return []
    if resolved not in channels:
        return []
    if requested != "preferred":
        return [resolved]
    # The dispatcher re-routes "preferred" at send time: every reachable channel, in order.
    preference = getattr(customer, "preference", None)
    own = list(preference.channel_order) if preference and preference.channel_order else []
    order = own + [c for c in DEFAULT_CHANNEL_ORDER if c not in own]
    return [
        c for c in order if c in world.topic.channels and c in channels and customer.address_for(c)
    ] or [resolved]


def _walk(
    world: _World,
    index: int,
    entrant: _Entrant,
    weight: float,
    sends: list[_Send],
    unsent: list[tuple[dt.datetime, str, float]],
) -> None:
    customer = world.customers.get(entrant.customer_id)
    if customer is None:
        return
    definition, window = world.definition, world.window
    attributes = dict(customer.attributes or {})
    context = dict(entrant.context)
    tz = _zone(customer.timezone)
    at = entrant.at
    key = definition["steps"][0]["key"]
    for _ in range(MAX_STEPS):
        if not key or at >= window.end:
            return
        step = world.by_key[key]
        kind, config = step["kind"], step.get("config") or {}
        key = step.get("next") or ""
        if kind == StepKind.SEND:
            options = _channel_options(world, customer, config)
            if not options:
                unsent.append((at, "no_channel", weight))
                continue
            ttl = config.get("ttl_hours")
            expires_at = None
            if ttl:
                expires_at = at + dt.timedelta(hours=float(ttl))
            elif definition.get("on_hold") == Journey.OnHold.SKIP:
                from journeys.engine import SKIP_TTL

                expires_at = at + SKIP_TTL
            sends.append(
                _Send(
                    index,
                    (entrant.customer_id, entrant.replica),
                    at,
                    step["key"],
                    options,
                    expires_at,
                    weight,
                )
            )
        elif kind == StepKind.WAIT:
            mode = config.get("mode", "duration")
            if mode == "duration":
                at += dt.timedelta(minutes=float(config["minutes"]))
            elif mode == "time_of_day":
                hour, minute = map(int, config["time"].split(":"))
                at = next_local_time(at, dt.time(hour, minute), tz)
            else:
                source = attributes if config.get("from", "attribute") == "attribute" else context
                present, value = conditions.lookup(source, config["attribute"])
                when = parse_instant(value, tz) if present else None
                if when is not None:
                    when += dt.timedelta(minutes=int(config.get("offset_minutes", 0)))
                    at = max(at, when)
        elif kind == StepKind.WAIT_FOR_EVENT:
            timeout = dt.timedelta(minutes=float(config["timeout_minutes"]))
            rate = world.event_rate.get(step["key"], 0.0)
            if _draw(entrant.customer_id, entrant.replica, index, step["key"]) < rate * 10_000:
                at += timeout / 2
            else:
                at += timeout
                key = step.get("alt_next") or ""
        elif kind == StepKind.BRANCH:
            facts = _facts(world, entrant.customer_id, attributes, context, entrant.at, at)
            if not conditions.all_hold(
                config.get("conditions") or [], facts, match=config.get("match", "all")
            ):
                key = step.get("alt_next") or ""
        elif kind == StepKind.SPLIT:
            if _draw(entrant.customer_id, entrant.replica, index, step["key"], scale=100) >= int(
                config["percent"]
            ):
                key = step.get("alt_next") or ""
        elif kind == StepKind.UPDATE_ATTRIBUTE:
            if config.get("from_context"):
                _present, value = conditions.lookup(context, config["from_context"])
            else:
                value = config.get("value")
            attributes[config["name"]] = value
        elif kind == StepKind.WEBHOOK:
            world.notes.add("Webhook steps are not called; the walk goes straight on.")
        elif kind == StepKind.EXIT:
            return


# --- consent and fatigue -----------------------------------------------------------------


def _consent(world: _World, sends: Sequence[_Send]) -> list[tuple[_Send, str]]:
    """Pick each send's channel as the dispatcher would; the ones consent stops, by code."""
    requests, owners = [], []
    for i, s in enumerate(sends):
        customer = world.customers[s.person[0]]
        for channel in s.options:
            requests.append(
                ConsentRequest(customer.id, world.topic.id, channel, customer.address_for(channel))
            )
            owners.append((i, channel))
    decisions = consent_decisions(requests, topics={world.topic.id: world.topic})
    per_send: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for (i, channel), decision in zip(owners, decisions, strict=True):
        per_send[i].append((channel, decision))
    stopped = []
    for i, s in enumerate(sends):
        allowed = [(c, d) for c, d in per_send[i] if d.allowed]
        if not allowed:
            code = per_send[i][0][1].code
            stopped.append((s, "suppressed" if code == SUPPRESSED else "consent"))
            continue
        s.channel = allowed[0][0]
        s.alternatives = tuple(c for c, _d in allowed[1:])
    return stopped


def _fatigue(world: _World, journey: Journey, sends: Sequence[_Send], tally: _Tally) -> None:
    """Run the policy per person over time: their real history, then the simulated sends."""
    window = world.window
    if not sends:
        return
    rows = list(FrequencyRule.objects.filter(active=True))
    rules = [fatigue.rule_from_row(r) for r in rows]
    rule_keys = {r.id: r.key for r in rows}
    customer_ids = {s.person[0] for s in sends}
    policies = fatigue.customer_policies(world.customers, customer_ids)
    with connection.cursor() as cursor:
        history = fatigue.load_history(cursor, customer_ids, now=window.now)
    quiet = fatigue.default_quiet_hours()
    topic = world.topic
    marketing = topic.kind == Topic.Kind.MARKETING
    priority = world.definition.get("priority", 5)
    by_person: dict[tuple[int, int], list[tuple[dt.datetime, int, _Send]]] = defaultdict(list)
    for n, s in enumerate(sends):
        by_person[s.person].append((s.at, n, s))
    for person, queue in by_person.items():
        heapq.heapify(queue)
        sent = list(history.get(person[0], []))
        held_for: set[tuple[int, str]] = set()
        while queue:
            at, n, s = heapq.heappop(queue)
            day = window.day(at)
            if day is None:
                tally.after_window += s.weight
                continue
            item = fatigue.PolicyInput(
                n, person[0], s.channel, topic.id, priority, journey.key, s.expires_at,
                s.alternatives,
            )  # fmt: skip
            decision = policy.decide_for_customer(
                [fatigue.candidate_for(item, topic)],
                history=sent,
                rules=rules,
                customer=policies[person[0]],
                now=at,
                default_quiet_hours=quiet,
            )[n]
            if decision.action == policy.SEND:
                channel = decision.channel or s.channel
                tally.messages[day][channel] += s.weight
                sent.append(policy.Sent(at, channel, topic.id, marketing, journey.key))
                continue
            code = fatigue.hold_code(decision, rule_keys)
            if (n, code) not in held_for:
                held_for.add((n, code))
                tally.held[day][code] += s.weight
                bucket = tally.deferred if decision.action == policy.DEFER else tally.dropped
                bucket[day][code] += s.weight
            if decision.action == policy.DEFER and decision.send_after > at:
                heapq.heappush(queue, (decision.send_after, n, s))


# --- the result --------------------------------------------------------------------------


def _rounded(counts: Mapping[str, float]) -> dict[str, int]:
    return {k: round(v) for k, v in sorted(counts.items()) if round(v)}


def _summed(days: Sequence[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for day in days:
        for k, v in day.items():
            out[k] += v
    return dict(sorted(out.items()))


def simulate(
    journey: Journey, *, days: int = 14, sample: int = 2000, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Forecast the journey's draft over the next ``days`` days; reads only.

    Raises DefinitionInvalid when the draft has problems (as activating would).
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    sample = max(1, min(sample, MAX_SAMPLE))
    now = (now or timezone.now()).astimezone(dt.UTC)
    definition = definition_of(journey)
    problems = validate(definition)
    if problems:
        raise DefinitionInvalid(problems)
    window = _Window(now, days)
    forecast = _forecast(journey, definition["trigger"], window, sample)
    per_day_sampled = [0] * days
    for e in forecast.entrants:
        per_day_sampled[e.day] += 1
    weights = [
        forecast.per_day[i] / per_day_sampled[i] if per_day_sampled[i] else 0.0 for i in range(days)
    ]
    world = _load_world(journey, definition, forecast.entrants, window)
    tally = _Tally(days, forecast.per_day)
    sends: list[_Send] = []
    unsent: list[tuple[dt.datetime, str, float]] = []
    for i, entrant in enumerate(forecast.entrants):
        _walk(world, i, entrant, weights[entrant.day], sends, unsent)
    for at, code, weight in unsent:
        day = window.day(at)
        if day is not None:
            tally.held[day][code] += weight
            tally.dropped[day][code] += weight
    stopped = _consent(world, sends)
    for s, code in stopped:
        day = window.day(s.at)
        if day is not None:
            tally.held[day][code] += s.weight
            tally.dropped[day][code] += s.weight
    stopped_ids = {id(s) for s, _code in stopped}
    _fatigue(world, journey, [s for s in sends if id(s) not in stopped_ids], tally)

    rows = []
    for i, date in enumerate(window.dates):
        rows.append(
            {
                "date": date.isoformat(),
                "entries": round(forecast.per_day[i]),
                "messages": _rounded(tally.messages[i]),
                "held": _rounded(tally.held[i]),
                "deferred": _rounded(tally.deferred[i]),
                "dropped": _rounded(tally.dropped[i]),
            }
        )
    total_entries = sum(r["entries"] for r in rows)
    totals = {
        "entries": total_entries,
        **{k: _summed([r[k] for r in rows]) for k in ("messages", "held", "deferred", "dropped")},
    }
    return {
        "days": rows,
        "totals": totals,
        "sample": {"customers": len(forecast.entrants), "of": total_entries},
        "assumptions": _assumptions(journey, definition, forecast, world, tally, weights),
    }


def _assumptions(
    journey: Journey,
    definition: dict[str, Any],
    forecast: _Forecast,
    world: _World,
    tally: _Tally,
    weights: Sequence[float],
) -> list[str]:
    window = world.window
    out = [
        f"Days are calendar days in {window.tz.key if hasattr(window.tz, 'key') else 'UTC'}, "
        f"starting today ({window.dates[0].isoformat()}); the part of today already gone "
        "is not counted.",
        *forecast.notes,
    ]
    if len(forecast.entrants) and any(w > 1.0001 for w in weights):
        out.append(
            f"{len(forecast.entrants):,} entrants were walked through the journey and their "
            "results scaled up to the forecast."
        )
    if any(forecast.per_day[i] and not w for i, w in enumerate(weights)):
        out.append(
            "Some days have entries but no sampled entrant to walk, so their messages are "
            "not counted."
        )
    if journey.entry == Journey.Entry.ONCE:
        out.append("Customers who already entered this journey are left out (entry: once).")
    elif journey.entry == Journey.Entry.ONCE_PER:
        out.append(
            f"Customers who entered within {journey.entry_days} days are left out "
            f"(entry: at most once per {journey.entry_days} days)."
        )
    kinds = {s["kind"] for s in definition["steps"]}
    if StepKind.WAIT_FOR_EVENT in kinds:
        rates = ", ".join(f"{key}: {rate:.0%}" for key, rate in sorted(world.event_rate.items()))
        out.append(
            "Wait-for-event steps: the share of these customers who did the event within "
            "the timeout lately takes the event path, halfway through the wait; the rest "
            f"time out ({rates})."
        )
    if StepKind.BRANCH in kinds:
        out.append("Branches are decided on the customers' data as it is today.")
    if StepKind.SPLIT in kinds:
        out.append("Random splits divide entrants by their percentages (a stable draw).")
    if definition.get("goal") or definition.get("exit_events"):
        out.append("Nobody converts or leaves early on an exit event in the forecast.")
    out.extend(sorted(world.notes))
    out.append(
        "Channels, consent and suppressions are as they stand today; sends consent would "
        "stop are held as 'consent' or 'suppressed', sends no channel can carry as "
        "'no_channel'."
    )
    out.append(
        "Frequency caps and quiet hours count each customer's real messages of the last "
        f"{policy.MAX_LOOKBACK.days} days plus the simulated ones, but not other journeys' "
        "future messages."
    )
    if tally.after_window:
        out.append(
            f"About {round(tally.after_window)} messages would go after the last day shown "
            "and are not counted."
        )
    return out
