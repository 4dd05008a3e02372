"""Fatigue policy: frequency caps, minimum gaps, quiet hours and pauses, decided per message.

Pure functions over plain dataclasses, so the rules can be reasoned about and
tested without a database; the dispatcher loads what they need in bulk, holds a
per-customer lock while deciding, and records the trail these functions return.

Every decision explains itself: the rules evaluated, the counts in each window,
the action, the new send time when deferred, and each cause that held it - every
rule in force at the time asked, and any that pushed the send time further once
those allowed it - each with a stable code (``Decision.causes``).
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

SEND = "send"
DEFER = "defer"
DROP = "drop"
EXPIRE = "expire"

#: Hold codes besides ``rule:<key>``: what a history row and analytics count a hold by.
QUIET_HOURS = "quiet_hours"
PAUSED = "paused"
PERSONAL_CAP = "personal_cap"

#: How far back history must reach to judge any rule (a calendar month plus slack).
MAX_LOOKBACK = dt.timedelta(days=32)


@dataclass(frozen=True, slots=True)
class Rule:
    """A frequency rule, loaded from ``FrequencyRule`` or made from a personal preference."""

    id: int | None
    name: str
    limit: int
    #: The rule's stable key (``FrequencyRule.key``): its hold code is ``rule:<key>``.
    key: str = ""
    #: "cap": at most ``limit`` in the window; "gap": at least ``window`` between sends.
    kind: str = "cap"
    #: "global", "channel", "topic" or "journey".
    scope: str = "global"
    channel: str = ""
    topic_id: int | None = None
    journey: str = ""
    #: Rolling window length; or None with ``calendar`` set.
    window: dt.timedelta | None = None
    #: "day", "week" or "month" in the customer's own time zone.
    calendar: str = ""
    #: "marketing" (transactional exempt) or "all".
    applies_to: str = "marketing"
    #: "defer" to the earliest allowed moment, or "drop".
    action: str = DEFER
    personal: bool = False

    def describe(self) -> str:
        if self.kind == "gap":
            text = f"at least {_human(self.window)} between {self._what()}"
        else:
            span = f"per {self.calendar}" if self.calendar else f"per {_human(self.window)}"
            text = f"at most {self.limit} {self._what()} {span}"
        return f"your own limit: {text}" if self.personal else text

    @property
    def code(self) -> str:
        if self.personal:
            return PERSONAL_CAP
        return f"rule:{self.key or self.id}"

    def _what(self) -> str:
        noun = "marketing messages" if self.applies_to == "marketing" else "messages"
        if self.scope == "channel":
            return f"{noun} by {self.channel}"
        if self.scope == "topic":
            return f"{noun} on this topic"
        if self.scope == "journey":
            return f"{noun} from journey {self.journey!r}"
        return noun


@dataclass(frozen=True, slots=True)
class Sent:
    """A message that counts against caps: already sent, or already decided to send."""

    at: dt.datetime
    channel: str
    topic_id: int
    marketing: bool
    journey: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    message_id: int
    channel: str
    topic_id: int
    marketing: bool
    priority: int = 5
    journey: str = ""
    expires_at: dt.datetime | None = None
    #: None: the default (marketing respects quiet hours, transactional does not).
    respect_quiet_hours: bool | None = None
    #: For channel "preferred": further channels to try, in order, when ``channel`` is held.
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CustomerPolicy:
    timezone: str = "UTC"
    quiet_start: dt.time | None = None
    quiet_end: dt.time | None = None
    paused_until: dt.datetime | None = None
    personal_rules: tuple[Rule, ...] = ()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")


@dataclass(slots=True)
class Decision:
    action: str
    send_after: dt.datetime
    reason: str
    rule_id: int | None = None
    trail: list[dict[str, Any]] = field(default_factory=list)
    #: The channel decided on (differs from the candidate's when an alternative was taken).
    channel: str = ""
    #: What held the message, one dict per cause (JSON-ready): ``code``, ``describe``,
    #: ``until`` and ``in_force`` - True when it held the message at the time asked,
    #: False when it only pushed the send time further once the others allowed it -
    #: plus its figures (window counts, the quiet window in local time, the pause).
    causes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        """The codes of the causes in force when decided: what held the message."""
        return [c["code"] for c in self.causes if c["in_force"]]


def _human(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "?"
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


# --- windows ---------------------------------------------------------------------


def calendar_bounds(at: dt.datetime, unit: str, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The local calendar day/week(Monday)/month containing ``at``, as aware UTC-comparable times.

    Built from local dates, so a day across a DST change is 23 or 25 hours long.
    """
    local = at.astimezone(tz)
    day = local.date()
    if unit == "day":
        start, end = day, day + dt.timedelta(days=1)
    elif unit == "week":
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
    elif unit == "month":
        start = day.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown calendar unit {unit!r}")
    return _local_midnight(start, tz), _local_midnight(end, tz)


def _local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    # Where midnight does not exist (a DST jump at 00:00), zoneinfo's fold=0 maps it to
    # the instant the clocks jumped from, which is the right start of that local day.
    # Returned in UTC: Python does arithmetic on two times of one zone by wall clock,
    # which would make every local day 24 hours long.
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(dt.UTC)


def _rule_matches(
    rule: Rule, *, channel: str, topic_id: int, journey: str, marketing: bool
) -> bool:
    if rule.applies_to == "marketing" and not marketing:
        return False
    if rule.scope == "channel":
        return channel == rule.channel
    if rule.scope == "topic":
        return topic_id == rule.topic_id
    if rule.scope == "journey":
        return bool(journey) and journey == rule.journey
    return True


class SendIndex:
    """Per rule, the sorted times of the sends it counts, for one customer.

    Built once per customer from the history and kept up to date as the batch lets
    messages through, so each rule check is a couple of binary searches rather than
    a scan of the history.
    """

    __slots__ = ("descriptions", "rules", "times")

    def __init__(self, rules: Sequence[Rule], history: Iterable[Sent]) -> None:
        history = list(history)
        self.rules = tuple(rules)
        self.descriptions = [_describe(rule) for rule in self.rules]
        #: Aligned with ``rules``.
        self.times: list[list[dt.datetime]] = [
            sorted(s.at for s in history if _counts(rule, s)) for rule in self.rules
        ]

    def add(self, sent: Sent) -> None:
        for rule, times in zip(self.rules, self.times, strict=True):
            if _counts(rule, sent):
                bisect.insort(times, sent.at)


def _counts(rule: Rule, sent: Sent) -> bool:
    return _rule_matches(
        rule,
        channel=sent.channel,
        topic_id=sent.topic_id,
        journey=sent.journey,
        marketing=sent.marketing,
    )


def earliest_under_rule(
    rule: Rule, times: Sequence[dt.datetime], at: dt.datetime, tz: ZoneInfo
) -> tuple[dt.datetime, dict[str, Any]]:
    """The earliest moment >= ``at`` this rule allows one more send, and what it counted.

    ``times``: the sorted send times the rule counts (``SendIndex.times``).
    """
    if rule.kind == "gap":
        i = bisect.bisect_right(times, at)
        last = times[i - 1] if i else None
        allowed = at if last is None or last + rule.window <= at else last + rule.window
        return allowed, {"last_sent": last.isoformat() if last else None}
    if rule.calendar:
        start, end = calendar_bounds(at, rule.calendar, tz)
        count = bisect.bisect_left(times, end) - bisect.bisect_left(times, start)
        allowed = at if count < rule.limit else end
        return allowed, {"count": count, "window_start": start.isoformat()}
    window = rule.window
    lo = bisect.bisect_right(times, at - window)
    count = bisect.bisect_right(times, at) - lo
    if count < rule.limit:
        return at, {"count": count}
    # One more is allowed once enough of the oldest sends age out of the window.
    return times[lo + count - rule.limit] + window, {"count": count}


def quiet_hours_end(
    at: dt.datetime, start: dt.time, end: dt.time, tz: ZoneInfo
) -> dt.datetime | None:
    """If ``at`` falls in the quiet window (local time, may wrap midnight), when it ends."""
    if start == end:
        return None
    local = at.astimezone(tz)
    now_t = local.timetz().replace(tzinfo=None)
    wraps = start > end
    inside = (now_t >= start or now_t < end) if wraps else (start <= now_t < end)
    if not inside:
        return None
    end_day = local.date()
    if wraps and now_t >= start:
        end_day += dt.timedelta(days=1)
    return dt.datetime.combine(end_day, end, tzinfo=tz).astimezone(dt.UTC)


# --- decisions -------------------------------------------------------------------


def decide(
    candidate: Candidate,
    *,
    history: Sequence[Sent],
    rules: Sequence[Rule],
    customer: CustomerPolicy,
    now: dt.datetime,
    default_quiet_hours: tuple[dt.time, dt.time] | None = None,
) -> Decision:
    """Decide one message. The most restrictive rule wins; a drop beats a deferral."""
    index = SendIndex((*rules, *customer.personal_rules), history)
    return _decide(candidate, index, customer, now.astimezone(dt.UTC), default_quiet_hours)


def _decide(
    candidate: Candidate,
    index: SendIndex,
    customer: CustomerPolicy,
    now: dt.datetime,
    default_quiet_hours: tuple[dt.time, dt.time] | None,
) -> Decision:
    tz = customer.tz
    trail: list[dict[str, Any]] = []
    rules, times, descriptions = index.rules, index.times, index.descriptions
    # Positions in ``index.rules`` of the rules that apply to this message.
    applicable = [
        i
        for i, r in enumerate(rules)
        if _rule_matches(
            r,
            channel=candidate.channel,
            topic_id=candidate.topic_id,
            journey=candidate.journey,
            marketing=candidate.marketing,
        )
    ]
    # Every applicable rule judged at the time asked, once: the trail shows these counts.
    at_now: dict[int, tuple[dt.datetime, dict[str, Any]]] = {}
    # Drops are judged at the time asked: a full window drops, it does not wait. Every
    # full one is a cause.
    full: list[int] = []
    for i in applicable:
        rule = rules[i]
        if rule.action != DROP:
            continue
        allowed, counts = at_now[i] = earliest_under_rule(rule, times[i], now, tz)
        trail.append(_rule_entry(rule, descriptions[i], counts, allowed, now))
        if allowed > now:
            full.append(i)
    if full:
        causes = [_rule_cause(rules[i], descriptions[i], *at_now[i], in_force=True) for i in full]
        reason = "dropped: " + "; ".join(descriptions[i] for i in full)
        return Decision(DROP, now, reason, rules[full[0]].id, trail, causes=causes)

    respect_quiet = (
        candidate.marketing
        if candidate.respect_quiet_hours is None
        else candidate.respect_quiet_hours
    )
    quiet = (
        (customer.quiet_start, customer.quiet_end)
        if customer.quiet_start is not None and customer.quiet_end is not None
        else default_quiet_hours
    )
    if not respect_quiet:
        quiet = None
    deferring = [i for i in applicable if rules[i].action != DROP]
    for i in deferring:
        at_now[i] = earliest_under_rule(rules[i], times[i], now, tz)
    quiet_now = quiet_hours_end(now, quiet[0], quiet[1], tz) if quiet is not None else None
    paused = candidate.marketing and customer.paused_until is not None
    quiet_figures: dict[str, Any] = {}
    if quiet is not None:
        quiet_figures = {
            "window": f"{quiet[0]:%H:%M}-{quiet[1]:%H:%M}",
            "timezone": customer.timezone,
            "local_time": now.astimezone(tz).strftime("%H:%M"),
        }
    quiet_label = (
        f"quiet hours {quiet_figures['window']} {customer.timezone}" if quiet is not None else ""
    )
    # Every constraint that holds the message at the time asked is a cause, each judged
    # on its own: none hides behind another.
    causes: dict[str, dict[str, Any]] = {}
    if paused and customer.paused_until > now:
        causes[PAUSED] = _cause(
            PAUSED, "paused by the customer", customer.paused_until, True,
            paused_until=customer.paused_until.isoformat(),
        )  # fmt: skip
    if quiet_now is not None:
        causes[QUIET_HOURS] = _cause(QUIET_HOURS, quiet_label, quiet_now, True, **quiet_figures)
    for i in deferring:
        allowed, counts = at_now[i]
        if allowed > now:
            causes[rules[i].code] = _rule_cause(
                rules[i], descriptions[i], allowed, counts, in_force=True
            )
    at = now
    # Each constraint can push the time into another's window, so iterate to a fixed
    # point; one that was not in force when asked but pushes the time further once the
    # others allow it is a cause too, marked as such (quiet hours at the local midnight
    # a daily cap waits for, say).
    for _round in range(8):
        moved = False
        if paused and customer.paused_until > at:
            at, moved = customer.paused_until, True
            if PAUSED not in causes:
                causes[PAUSED] = _cause(
                    PAUSED, "paused by the customer", at, False,
                    paused_until=customer.paused_until.isoformat(),
                )  # fmt: skip
        if quiet is not None:
            ends = quiet_now if at == now else quiet_hours_end(at, quiet[0], quiet[1], tz)
            if ends is not None and ends > at:
                at, moved = ends, True
                if QUIET_HOURS not in causes:
                    causes[QUIET_HOURS] = _cause(
                        QUIET_HOURS, quiet_label, ends, False, **quiet_figures
                    )
        for i in deferring:
            if at == now:
                allowed, counts = at_now[i]
            else:
                allowed, counts = earliest_under_rule(rules[i], times[i], at, tz)
            if allowed > at:
                at, moved = allowed, True
                if rules[i].code not in causes:
                    causes[rules[i].code] = _rule_cause(
                        rules[i], descriptions[i], allowed, counts, in_force=False
                    )
        if not moved:
            break
    for i in deferring:
        allowed, counts = at_now[i]
        trail.append(_rule_entry(rules[i], descriptions[i], counts, allowed, now))
    if quiet is not None:
        trail.append({"rule": "quiet_hours", **quiet_figures, "inside": quiet_now is not None})
    if at == now:
        return Decision(SEND, now, _WITHIN, None, trail)
    held = sorted(causes.values(), key=lambda c: not c["in_force"])
    rule_id = next((c["rule_id"] for c in held if c.get("rule_id") is not None), None)
    what = _held_by(held)
    if candidate.expires_at is not None and at >= candidate.expires_at:
        reason = f"expired: held by {what} until after its expiry"
        return Decision(EXPIRE, now, reason, rule_id, trail, causes=held)
    return Decision(DEFER, at, f"deferred: {what}", rule_id, trail, causes=held)


def _held_by(causes: Sequence[dict[str, Any]]) -> str:
    """The causes as prose: those in force, then those that only pushed the time further."""
    now_ = "; ".join(c["describe"] for c in causes if c["in_force"])
    later = "; ".join(c["describe"] for c in causes if not c["in_force"])
    return f"{now_}; then {later}" if later else now_


def _cause(
    code: str, describe: str, until: dt.datetime, in_force: bool, **figures: Any
) -> dict[str, Any]:
    return {
        "code": code,
        "describe": describe,
        "in_force": in_force,
        "until": until.isoformat(),
        **figures,
    }


def _rule_cause(
    rule: Rule, description: str, allowed: dt.datetime, counts: dict[str, Any], *, in_force: bool
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "rule_id": rule.id,
        "rule": rule.name,
        "kind": rule.kind,
        "limit": rule.limit,
        "personal": rule.personal,
        **counts,
    }
    if rule.calendar:
        figures["calendar"] = rule.calendar
    elif rule.window is not None:
        figures["window_seconds"] = int(rule.window.total_seconds())
    return _cause(rule.code, description, allowed, in_force, **figures)


def _open(candidate: Candidate, now: dt.datetime) -> Decision:
    return Decision(SEND, now, _WITHIN, None, [], candidate.channel)


_WITHIN = "within every cap and outside quiet hours"


@functools.lru_cache(maxsize=4096)
def _describe(rule: Rule) -> str:
    return rule.describe()


def _rule_entry(
    rule: Rule, description: str, counts: dict[str, Any], allowed: dt.datetime, now: dt.datetime
) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "rule_id": rule.id,
        "personal": rule.personal,
        "describe": description,
        "action": rule.action,
        "ok": allowed <= now,
        **counts,
        **({"allowed_at": allowed.isoformat()} if allowed > now else {}),
    }


def decide_for_customer(
    candidates: Sequence[Candidate],
    *,
    history: Sequence[Sent],
    rules: Sequence[Rule],
    customer: CustomerPolicy,
    now: dt.datetime,
    default_quiet_hours: tuple[dt.time, dt.time] | None = None,
) -> dict[int, Decision]:
    """Decide a customer's due messages together: higher priority first takes the room left."""
    now = now.astimezone(dt.UTC)
    quiet_set = customer.quiet_start is not None and customer.quiet_end is not None
    if (
        not rules
        and not customer.personal_rules
        and not quiet_set
        and default_quiet_hours is None
        and not (customer.paused_until and customer.paused_until > now)
    ):
        # Nothing can hold these messages: no rule, no quiet hours, no pause.
        return {c.message_id: _open(c, now) for c in candidates}
    index = SendIndex((*rules, *customer.personal_rules), history)
    decided: dict[int, Decision] = {}
    ordered = sorted(candidates, key=lambda c: (-c.priority, c.message_id))
    for candidate in ordered:
        decision = _decide(candidate, index, customer, now, default_quiet_hours)
        decision.channel = candidate.channel
        # "preferred": when the first channel is held by a channel-specific limit, the
        # next channel the customer can be reached on may still have room now.
        for channel in candidate.alternatives if decision.action != SEND else ():
            alternative = _decide(
                replace(candidate, channel=channel, alternatives=()),
                index,
                customer,
                now,
                default_quiet_hours,
            )
            if alternative.action == SEND:
                alternative.channel = channel
                alternative.reason = (
                    f"sent by {channel} instead of {candidate.channel}, which was held "
                    f"({decision.reason})"
                )
                alternative.trail = [
                    {
                        "channel": candidate.channel,
                        "held": decision.reason,
                        "causes": decision.causes,
                    },
                    *alternative.trail,
                ]
                decision = alternative
                break
        decided[candidate.message_id] = decision
        if decision.action == SEND:
            index.add(
                Sent(
                    now,
                    decision.channel,
                    candidate.topic_id,
                    candidate.marketing,
                    candidate.journey,
                )
            )
    return decided
