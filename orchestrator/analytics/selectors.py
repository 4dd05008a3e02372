"""Journey analytics and channel health, read from the daily rollups.

A journey's page is one indexed range read of ``analytics_journeyday`` (a few hundred
rows for a month) plus one count of who is waiting at each step now, from a partial
index; channel health is one range read of ``analytics_channelday``. Neither touches
the message history or the step log, however large they grow.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from journeys.models import Enrollment, Journey
from orchestrator.analytics.models import ChannelDay, JourneyDay
from orchestrator.analytics.rollups import LATENCY_BUCKETS

#: The longest range a page or an API call may ask for.
MAX_RANGE_DAYS = 400
DEFAULT_RANGE_DAYS = 30

#: Message outcomes that mean it went out (the provider took it).
WENT_OUT = ("sent",)


class RangeInvalid(ValueError):
    """A date range a person asked for that cannot be shown; the message says why."""


def today() -> dt.date:
    return timezone.now().astimezone(zoneinfo.ZoneInfo(settings.ANALYTICS_TIME_ZONE)).date()


def date_range(start: str | None, end: str | None) -> tuple[dt.date, dt.date]:
    """Parse ``from``/``to`` (ISO dates, inclusive); the last 30 days when absent."""

    def parse(value: str | None, name: str) -> dt.date | None:
        if value in (None, ""):
            return None
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise RangeInvalid(f"{name}: expected a date as YYYY-MM-DD, got {value!r}.") from None

    last = parse(end, "to") or today()
    first = parse(start, "from") or last - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if first > last:
        raise RangeInvalid("from: must be on or before to.")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise RangeInvalid(f"The range may cover at most {MAX_RANGE_DAYS} days.")
    return first, last


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- significance --------------------------------------------------------------------

#: Fewer customers than this in an arm and no verdict is offered.
MIN_ARM_SIZE = 30


@dataclass(frozen=True)
class Comparison:
    """An arm's conversion rate against the first arm's: a two-proportion z-test."""

    baseline: str
    arm: str
    lift: float | None  # relative difference of conversion rates
    p_value: float | None
    significant: bool
    verdict: str


def compare(baseline: str, a: tuple[int, int], arm: str, b: tuple[int, int]) -> Comparison:
    """Two-sided two-proportion z-test of ``b`` (converted, entered) against ``a``."""
    (ca, na), (cb, nb) = a, b
    if na < MIN_ARM_SIZE or nb < MIN_ARM_SIZE:
        return Comparison(
            baseline,
            arm,
            None,
            None,
            False,
            f"Too few customers to tell: at least {MIN_ARM_SIZE} in each arm are needed.",
        )
    pa, pb = ca / na, cb / nb
    lift = (pb - pa) / pa if pa else None
    pooled = (ca + cb) / (na + nb)
    se = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    if se == 0:
        return Comparison(baseline, arm, lift, 1.0, False, "No difference: both arms are equal.")
    z = (pb - pa) / se
    p_value = math.erfc(abs(z) / math.sqrt(2))
    if p_value < 0.05:
        better = arm if pb > pa else baseline
        worse = baseline if pb > pa else arm
        verdict = f"{better} converts better than {worse} (95% confidence, p = {p_value:.3f})."
        return Comparison(baseline, arm, lift, p_value, True, verdict)
    return Comparison(
        baseline,
        arm,
        lift,
        p_value,
        False,
        f"No significant difference yet (p = {p_value:.2f}; 0.05 or less is needed).",
    )


# --- journeys ------------------------------------------------------------------------


@dataclass
class StepFigures:
    key: str
    kind: str
    label: str
    entered: int = 0
    waiting: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    exited: int = 0
    held: int = 0
    #: Still in the log under this key, but no longer a step of the published version.
    removed: bool = False

    @property
    def click_rate(self) -> float | None:
        return _rate(self.clicked, self.delivered or self.sent)

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.converted, self.entered)


@dataclass
class ArmFigures:
    arm: str
    entered: int = 0
    sent: int = 0
    clicked: int = 0
    converted: int = 0

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.converted, self.entered)

    @property
    def click_rate(self) -> float | None:
        return _rate(self.clicked, self.sent)


@dataclass
class SplitFigures:
    step: str
    label: str
    arms: list[ArmFigures]
    comparisons: list[Comparison]


@dataclass(frozen=True)
class Hold:
    kind: str  # deferred or suppressed
    group: str  # cap, quiet hours, consent, paused, other
    code: str
    count: int


@dataclass
class DayFigures:
    day: dt.date
    enrolled: int = 0
    sent: int = 0
    clicked: int = 0
    converted: int = 0


@dataclass
class JourneyAnalytics:
    journey: Journey
    start: dt.date
    end: dt.date
    enrolled: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    exited: int = 0
    waiting: int = 0
    steps: list[StepFigures] = field(default_factory=list)
    splits: list[SplitFigures] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    days: list[DayFigures] = field(default_factory=list)

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.converted, self.enrolled)

    @property
    def click_rate(self) -> float | None:
        return _rate(self.clicked, self.delivered or self.sent)

    @property
    def holds_by_group(self) -> dict[str, int]:
        groups: dict[str, int] = defaultdict(int)
        for hold in self.holds:
            groups[hold.group] += hold.count
        return dict(sorted(groups.items(), key=lambda item: -item[1]))


def hold_group(code: str) -> str:
    """The reason family of a hold code written by the dispatcher (fatigue.hold_code)."""
    if code.startswith("rule:") or code in ("personal_cap", "cap"):
        return "frequency cap"
    if code == "quiet_hours":
        return "quiet hours"
    if code.startswith("consent:"):
        return "consent"
    if code == "paused":
        return "paused by the customer"
    return "other"


_STEP_METRICS = ("entered", "sent", "delivered", "opened", "clicked", "converted", "exited")


def waiting_by_step(journey: Journey) -> dict[str, int]:
    """Who is on the journey now, per step. COUNT(*), not COUNT(id): the partial
    (journey, step) index of active enrollments answers alone, an index-only scan."""
    return dict(
        Enrollment.objects.filter(journey=journey, status=Enrollment.Status.ACTIVE)
        .values_list("step")
        .annotate(n=Count("*"))
        .order_by()
    )


def journey_analytics(journey: Journey, start: dt.date, end: dt.date) -> JourneyAnalytics:
    """Everything the analytics page and ``GET /journeys/{key}/analytics`` show."""
    result = JourneyAnalytics(journey=journey, start=start, end=end)
    definition = journey.current_version.definition if journey.current_version else None
    steps: dict[str, StepFigures] = {}
    if definition:
        for step in definition.get("steps", []):
            steps[step["key"]] = StepFigures(
                key=step["key"], kind=step.get("kind", ""), label=step.get("label", "")
            )
    else:
        for step in journey.steps.order_by("position"):
            steps[step.key] = StepFigures(key=step.key, kind=step.kind, label=step.label)

    def step(key: str) -> StepFigures:
        if key not in steps:
            steps[key] = StepFigures(key=key, kind="", label="", removed=True)
        return steps[key]

    days = {
        start + dt.timedelta(days=n): DayFigures(start + dt.timedelta(days=n))
        for n in range((end - start).days + 1)
    }
    arms: dict[str, dict[str, ArmFigures]] = defaultdict(dict)
    holds: dict[tuple[str, str], int] = defaultdict(int)
    rows = JourneyDay.objects.filter(journey=journey, day__range=(start, end)).values_list(
        "day", "step", "metric", "reason", "arm", "count"
    )
    for day, key, metric, reason, arm, count in rows:
        if metric.startswith("arm_"):
            figures = arms[key].setdefault(arm, ArmFigures(arm))
            name = metric[4:]
            setattr(figures, name, getattr(figures, name) + count)
            continue
        if not key:  # journey level: enrolled, converted
            if metric == "enrolled":
                result.enrolled += count
                days[day].enrolled += count
            elif metric == "converted":
                result.converted += count
                days[day].converted += count
            continue
        if metric in ("deferred", "suppressed"):
            # One row per cause: a hold with two causes counts under each.
            holds[(metric, reason)] += count
            continue
        if metric == "held":  # once per held message
            step(key).held += count
            continue
        if metric in _STEP_METRICS:
            figures = step(key)
            setattr(figures, metric, getattr(figures, metric) + count)
            if metric in ("sent", "delivered", "opened", "clicked", "exited"):
                setattr(result, metric, getattr(result, metric) + count)
            if metric == "sent":
                days[day].sent += count
            elif metric == "clicked":
                days[day].clicked += count
    for key, n in waiting_by_step(journey).items():
        step(key).waiting = n
        result.waiting += n
    result.steps = list(steps.values())
    for key, by_arm in arms.items():
        ordered = [by_arm[a] for a in sorted(by_arm)]
        comparisons = []
        if ordered:
            base = ordered[0]
            comparisons = [
                compare(
                    base.arm,
                    (base.converted, base.entered),
                    other.arm,
                    (other.converted, other.entered),
                )
                for other in ordered[1:]
            ]
        label = steps[key].label if key in steps else ""
        result.splits.append(SplitFigures(key, label, ordered, comparisons))
    result.holds = sorted(
        (Hold(kind, hold_group(code), code, n) for (kind, code), n in holds.items()),
        key=lambda h: -h.count,
    )
    result.days = list(days.values())
    return result


# --- channels ------------------------------------------------------------------------

#: Deliverability thresholds (warn, bad). Complaints: the spam rate mailbox providers
#: such as Gmail and Yahoo ask bulk senders to stay under (0.1%) and never reach
#: (0.3%). Bounces: the usual guidance for a healthy list (2%), and the level at which
#: providers start throttling or suspending senders (5%).
COMPLAINT_THRESHOLDS = (0.001, 0.003)
BOUNCE_THRESHOLDS = (0.02, 0.05)
#: Delivery rate below these (as a share of what went out) is worth a look, then bad.
DELIVERY_THRESHOLDS = (0.95, 0.90)

_FAILURES = ("failed", "bounced", "undelivered")
#: The outcomes a ChannelHealth row counts, each a field of it.
_COUNTED = ("sent", "delivered", "opened", "clicked", "complained", *_FAILURES)


def level(value: float | None, thresholds: tuple[float, float], *, low_is_bad=False) -> str:
    """ "ok", "warn" or "bad" for a rate against its (warn, bad) thresholds."""
    if value is None:
        return "none"
    warn, bad = thresholds
    if low_is_bad:
        return "bad" if value < bad else "warn" if value < warn else "ok"
    return "bad" if value >= bad else "warn" if value >= warn else "ok"


@dataclass
class ChannelHealth:
    channel: str
    provider: str
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    bounced: int = 0
    complained: int = 0
    failed: int = 0
    undelivered: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    latency: dict[str, int] = field(default_factory=dict)
    latency_ms: int = 0

    @property
    def reports_delivery(self) -> bool:
        """Whether the provider reported any delivery outcome (the dev inbox never does)."""
        return bool(self.delivered or self.undelivered or self.bounced)

    @property
    def delivery_rate(self) -> float | None:
        return _rate(self.delivered, self.sent) if self.reports_delivery else None

    @property
    def bounce_rate(self) -> float | None:
        return _rate(self.bounced, self.sent)

    @property
    def complaint_rate(self) -> float | None:
        return _rate(self.complained, self.delivered)

    @property
    def delivery_level(self) -> str:
        return level(self.delivery_rate, DELIVERY_THRESHOLDS, low_is_bad=True)

    @property
    def bounce_level(self) -> str:
        return level(self.bounce_rate, BOUNCE_THRESHOLDS)

    @property
    def complaint_level(self) -> str:
        return level(self.complaint_rate, COMPLAINT_THRESHOLDS)

    @property
    def top_failures(self) -> list[tuple[str, int]]:
        return sorted(self.failures.items(), key=lambda item: -item[1])[:10]

    @property
    def latency_count(self) -> int:
        return sum(self.latency.values())

    @property
    def latency_mean_seconds(self) -> float | None:
        count = self.latency_count
        return self.latency_ms / count / 1000 if count else None

    def latency_percentile(self, share: float) -> str | None:
        """The bucket bound under which ``share`` of deliveries fell, e.g. "≤ 5 s"."""
        count = self.latency_count
        if not count:
            return None
        seen = 0
        for bound in (*(str(b) for b in LATENCY_BUCKETS), "inf"):
            seen += self.latency.get(bound, 0)
            if seen >= share * count:
                return _bound_label(bound)
        return None

    @property
    def latency_p50(self) -> str | None:
        return self.latency_percentile(0.5)

    @property
    def latency_p95(self) -> str | None:
        return self.latency_percentile(0.95)


def _bound_label(bound: str) -> str:
    if bound == "inf":
        return f"> {_duration(LATENCY_BUCKETS[-1])}"
    return f"≤ {_duration(int(bound))}"


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


@dataclass
class HealthDay:
    day: dt.date
    sent: int = 0
    delivered: int = 0
    failed: int = 0


@dataclass
class ChannelReport:
    start: dt.date
    end: dt.date
    rows: list[ChannelHealth]
    days: list[HealthDay]
    #: Messages held before sending, by (channel, reason code).
    holds: list[tuple[str, str, int]]

    @property
    def has_failures(self) -> bool:
        return any(row.failures for row in self.rows)


def channel_health(start: dt.date, end: dt.date) -> ChannelReport:
    """Per channel and provider: rates with their thresholds, failures, latency."""
    rows: dict[tuple[str, str], ChannelHealth] = {}
    days = {
        start + dt.timedelta(days=n): HealthDay(start + dt.timedelta(days=n))
        for n in range((end - start).days + 1)
    }
    holds: dict[tuple[str, str], int] = defaultdict(int)
    # Grouped in the database: a year of days folds to a few hundred rows.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT channel, provider, metric, code, day, sum(count)
            FROM {ChannelDay._meta.db_table}
            WHERE day BETWEEN %s AND %s
            GROUP BY channel, provider, metric, code, day
            """,  # noqa: S608 - the table name is our own constant
            [start, end],
        )
        fetched = cursor.fetchall()
    for channel, provider, metric, code, day, count in fetched:
        count = int(count)
        if metric in ("deferred", "suppressed"):
            holds[(channel, code)] += count
            continue
        if not provider:
            continue  # never handed to a provider: queued, canceled, expired
        health = rows.get((channel, provider))
        if health is None:
            health = rows[(channel, provider)] = ChannelHealth(channel, provider)
        if metric == "latency":
            health.latency[code] = health.latency.get(code, 0) + count
        elif metric == "latency_ms":
            health.latency_ms += count
        elif metric in _COUNTED:
            setattr(health, metric, getattr(health, metric) + count)
        if metric in _FAILURES:
            label = code or metric
            health.failures[label] = health.failures.get(label, 0) + count
        if metric == "sent":
            days[day].sent += count
        elif metric == "delivered":
            days[day].delivered += count
        elif metric in _FAILURES:
            days[day].failed += count
    return ChannelReport(
        start=start,
        end=end,
        rows=sorted(rows.values(), key=lambda h: (h.channel, h.provider)),
        days=list(days.values()),
        holds=sorted(((c, code, n) for (c, code), n in holds.items()), key=lambda h: -h[2]),
    )
