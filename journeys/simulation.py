"""Simulation: what a journey's draft would do over the next days, on today's data.

Nothing is sent and nothing is written. The forecast has three parts:

1. **Entries per day**, from the trigger kind's own ``forecast``
   (``journeys.triggers.registry``): an event trigger repeats the daily average of the
   last 28 days; a date trigger reads the customers' dates; replenishment reads the
   predictions; a recurring schedule multiplies its fire times by the segment; a segment
   trigger counts who matches now and is not in yet. The entry rule (once, once per N
   days) is applied against the real enrollments.
2. **A walk** of a deterministic sample of those entrants through the steps, the way the
   engine moves them: waits move the clock, branches read current data, splits use a
   stable hash, and each send is routed and consent-checked the way the dispatcher
   would (``delivery.routing``, then consent and suppression for each channel option).
3. **The fatigue policy** (caps, gaps, quiet hours in each customer's own time zone)
   over the simulated sends plus each customer's real recent history, so the forecast
   shows what would be deferred or dropped, and why.

Sample counts are scaled up to the forecast, per day of entry. The result lists, in
plain words, every assumption a marketer should know about.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from journeys.definition import definition_of, normalized, validate
from journeys.engine import next_local_time, parse_instant
from journeys.forecasting import HISTORY, Entrant, Forecast, Window, draw, zone_of
from journeys.models import MESSAGE_KINDS, Journey, StepKind
from journeys.problems import DefinitionInvalid
from journeys.triggers import registry
from orchestrator.audience.models import Customer
from orchestrator.consent.models import Topic
from orchestrator.consent.selectors import SUPPRESSED, ConsentRequest, consent_decisions
from orchestrator.delivery import fatigue, policy, routing
from orchestrator.delivery.models import FrequencyRule, MessageTemplate
from orchestrator.segments import conditions
from orchestrator.segments.selectors import SegmentMissing, members_among

MAX_DAYS = 60
MAX_SAMPLE = 10_000
#: Most steps one simulated entrant takes (loops with waits would go on to the horizon).
MAX_STEPS = 500


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


def _forecast(
    journey: Journey, trigger: Mapping[str, Any], window: Window, sample: int
) -> Forecast:
    # Validation has refused any kind the registry does not know.
    return registry.KINDS[trigger["kind"]].forecast(journey, trigger, window, sample)


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
    window: Window
    notes: set[str] = field(default_factory=set)
    #: Open digests of digest steps: (person, step, key value) -> (opened, due, held).
    digests: dict[tuple, list[Any]] = field(default_factory=dict)
    #: Segment key -> which sampled customers are members today (one query per segment).
    segment_members: dict[str, set[int]] = field(default_factory=dict)


def _load_world(
    journey: Journey, definition: dict[str, Any], entrants: Sequence[Entrant], window: Window
) -> _World:
    ids = sorted({e.customer_id for e in entrants})
    customers = {c.id: c for c in Customer.objects.select_related("preference").filter(id__in=ids)}
    steps = definition["steps"]
    template_keys = {
        (s.get("config") or {}).get("template") for s in steps if s["kind"] in MESSAGE_KINDS
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

    def in_segment(key: str) -> bool:
        members = world.segment_members.get(key)
        if members is None:
            world.notes.add(
                "Segment conditions read who is in the segment today, not on the day "
                "a customer would reach the branch."
            )
            try:
                members = members_among(key, sorted(world.customers), now=world.window.now)
            except SegmentMissing:
                members = set()
            world.segment_members[key] = members
        return customer_id in members

    return conditions.Facts(
        attributes=attributes,
        context=context,
        entered_at=entered_at,
        now=at,
        had_event=had_event,
        last_message_status=unknown,
        last_reply=unknown,
        in_segment=in_segment,
    )


def _channel_options(world: _World, customer: Customer, config: Mapping[str, Any]) -> list[str]:
    """Channels the dispatcher would consider, in order; [] when it could not be queued."""
    channels = world.template_channels.get(config["template"])
    if channels is None:
        world.notes.add(f"Template {config['template']!r} does not exist: its sends are skipped.")
        return []
    requested = config.get("channel") or routing.PREFERRED
    order, own = routing.customer_channel_order(customer)
    route = routing.resolve_channel(
        requested,
        order=order,
        own_order=own,
        topic_channels=world.topic.channels,
        template_channels=channels,
        address_for=customer.address_for,
    )
    if route is None or route[0] not in channels:
        return []
    # The dispatcher re-routes "preferred" at send time: every reachable channel, in order.
    return routing.send_options(
        requested,
        route[0],
        order=order,
        topic_channels=world.topic.channels,
        template_channels=channels,
        address_for=customer.address_for,
    )


def _digest_send_at(
    world: _World, entrant: Entrant, step: dict, context: dict, at: dt.datetime
) -> dt.datetime | None:
    """When a digest step's message goes for this arrival, or None when it joins the
    customer's open digest (one message per window, or per ``count`` arrivals)."""
    digest = step["config"]
    world.notes.add(
        "A digest step counts one message per customer (and per "
        f"{digest.get('key') or 'customer'}) per digest, at the end of its window."
    )
    value = context.get(digest["key"]) if digest.get("key") else None
    person = (entrant.customer_id, entrant.replica, step["key"], str(value))
    window = dt.timedelta(minutes=float(digest.get("window_minutes") or 0)) or None
    count = int(digest.get("count") or 0)
    open_digest = world.digests.get(person)
    if open_digest is not None:
        opened, due, held = open_digest
        if opened <= at < due and (not count or held < count):
            open_digest[2] += 1
            return None
    due = at + window if window else at + dt.timedelta(days=7)
    world.digests[person] = [at, due, 1]
    return due if window else at


def _walk(
    world: _World,
    index: int,
    entrant: Entrant,
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
    tz = zone_of(customer.timezone)
    at = entrant.at
    key = definition["steps"][0]["key"]
    for _ in range(MAX_STEPS):
        if not key or at >= window.end:
            return
        step = world.by_key[key]
        kind, config = step["kind"], step.get("config") or {}
        key = step.get("next") or ""
        if kind in MESSAGE_KINDS:
            options = _channel_options(world, customer, config)
            if not options:
                unsent.append((at, "no_channel", weight))
                continue
            send_at = at
            if kind == StepKind.DIGEST:
                send_at = _digest_send_at(world, entrant, step, context, at)
                if send_at is None:
                    continue  # joins the digest already open: no message of its own
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
                    send_at,
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
            if draw(entrant.customer_id, entrant.replica, index, step["key"]) < rate * 10_000:
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
            if draw(entrant.customer_id, entrant.replica, index, step["key"], scale=100) >= int(
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
        channel, decision, alternatives = routing.choose_consented(per_send[i])
        if not decision.allowed:
            stopped.append((s, "suppressed" if decision.code == SUPPRESSED else "consent"))
            continue
        s.channel = channel
        s.alternatives = alternatives
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


def _as_defined(journey: Journey, definition: Mapping[str, Any]) -> Journey:
    """An unsaved copy of ``journey`` carrying a (valid, normalized) definition's
    settings that the forecast reads from the journey (entry rule, topic, priority)."""
    copy = Journey(
        pk=journey.pk,
        key=journey.key,
        name=definition["name"],
        status=journey.status,
        topic=Topic.objects.get(key=definition["topic"]),
        priority=definition["priority"],
        entry=definition["entry"]["rule"],
        entry_days=definition["entry"]["days"],
        trigger_kind=definition["trigger"]["kind"],
        trigger={k: v for k, v in definition["trigger"].items() if k != "kind"},
        exit_events=definition["exit_events"],
        on_hold=definition["on_hold"],
        current_version_id=journey.current_version_id,
    )
    return copy


def simulate(
    journey: Journey,
    *,
    days: int = 14,
    sample: int = 2000,
    now: dt.datetime | None = None,
    definition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Forecast the journey's draft over the next ``days`` days; reads only.

    ``definition``: forecast this one (e.g. the canvas's pending draft) instead of the
    journey's row and steps. Raises DefinitionInvalid when it has problems (as
    activating would).
    """
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    sample = max(1, min(sample, MAX_SAMPLE))
    now = (now or timezone.now()).astimezone(dt.UTC)
    given = definition is not None
    definition = {**definition, "key": journey.key} if given else definition_of(journey)
    problems = validate(definition)
    if problems:
        raise DefinitionInvalid(problems)
    if given:
        definition = normalized(definition)
        journey = _as_defined(journey, definition)
    window = Window(now, days)
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
    forecast: Forecast,
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
