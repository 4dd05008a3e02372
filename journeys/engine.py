"""The engine: claims due enrollments in batches and moves each through as many steps
as it can right now, until it waits, leaves or finishes.

A tick claims with ``FOR UPDATE SKIP LOCKED`` so any number of workers share the work
without double-stepping anyone. Enrollments of a paused journey are not claimed: they
hold where they are until it resumes. Each enrollment runs on the version of the
journey it started on.

Sends create outbox Messages in the tick's transaction (the dispatcher applies
consent, quiet hours and caps when it sends). Webhook steps are called after the
transaction commits, never inside it, and their outcome is recorded in a second one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
import zoneinfo
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from journeys.models import (
    MESSAGE_KINDS,
    Enrollment,
    Journey,
    JourneyVersion,
    StepKind,
    StepRun,
)
from orchestrator.audience.models import Customer, Event
from orchestrator.consent.models import Topic
from orchestrator.core.tasking import publish_on_commit
from orchestrator.delivery import holds
from orchestrator.delivery.models import Message, MessageTemplate
from orchestrator.delivery.services import (
    SendRefused,
    message_build,
    messages_cancel,
    messages_queue,
)
from orchestrator.segments import conditions
from orchestrator.segments.selectors import SegmentMissing, members_among

logger = logging.getLogger(__name__)

#: Most steps one enrollment may take in one go (validation forbids loops without a
#: wait; this is the belt to that brace).
MAX_STEPS_PER_RUN = 100
#: With "skip" on hold and no TTL on the step, a message that cannot go within this
#: long is dropped rather than sent late.
SKIP_TTL = dt.timedelta(hours=1)
#: A webhook step's claim: if the worker dies mid-call, the step is retried after this.
WEBHOOK_LEASE = dt.timedelta(minutes=2)
#: ``waiting_for`` while a webhook call is in flight (no event name has parentheses).
WEBHOOK_IN_FLIGHT = "(webhook call)"


@dataclass
class TickStats:
    claimed: int = 0
    steps: int = 0
    messages: int = 0
    completed: int = 0
    exited: int = 0
    waiting: int = 0
    webhooks: int = 0

    def add(self, other: TickStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# --- waking ----------------------------------------------------------------------------


def kick_engine() -> None:
    """Run a tick once the current transaction commits (once per transaction)."""
    publish_on_commit("journeys.tick")


# --- the run ---------------------------------------------------------------------------

_versions: dict[int, dict[str, Any]] = {}


def _steps_of(version_id: int) -> dict[str, Any]:
    """A version's definition with steps indexed by key (versions never change: cached)."""
    cached = _versions.get(version_id)
    if cached is None:
        definition = JourneyVersion.objects.values_list("definition", flat=True).get(pk=version_id)
        cached = {**definition, "by_key": {s["key"]: s for s in definition["steps"]}}
        _versions[version_id] = cached
    return cached


@dataclass
class _Call:
    enrollment_id: int
    journey_id: int
    step: dict[str, Any]
    payload: dict[str, Any]


@dataclass
class _Batch:
    now: dt.datetime
    journeys: dict[int, Journey]
    customers: dict[int, Customer]
    topics: dict[int, Topic] = field(default_factory=dict)
    templates: dict[str, MessageTemplate | None] = field(default_factory=dict)
    variants: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    runs: list[StepRun] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)
    #: Messages built by send steps, inserted together at the end of the batch.
    sends: list[tuple[Enrollment, StepRun, Message]] = field(default_factory=list)
    #: Saved segment key -> the batch's customers in it (one statement per segment).
    segment_members: dict[str, set[int]] = field(default_factory=dict)
    stats: TickStats = field(default_factory=TickStats)


def _claim(cursor, limit: int, now: dt.datetime) -> list[int]:
    cursor.execute(
        """
        SELECT e.id FROM journeys_enrollment e
        JOIN journeys_journey j ON j.id = e.journey_id
        WHERE e.status = 'active' AND e.due_at <= %s AND j.status = 'active'
        ORDER BY e.due_at
        LIMIT %s
        FOR UPDATE OF e SKIP LOCKED
        """,
        [now, limit],
    )
    return [row[0] for row in cursor.fetchall()]


def advance_batch(*, batch_size: int = 200, now: dt.datetime | None = None) -> TickStats:
    """Claim up to ``batch_size`` due enrollments and advance each as far as it goes."""
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        ids = _claim(cursor, batch_size, now)
        if not ids:
            return TickStats()
        enrollments = list(Enrollment.objects.filter(id__in=ids).order_by("due_at", "id"))
        journeys = Journey.objects.in_bulk({e.journey_id for e in enrollments})
        customers = Customer.objects.select_related("preference").in_bulk(
            {e.customer_id for e in enrollments}
        )
        batch = _Batch(now=now, journeys=journeys, customers=customers)
        batch.stats.claimed = len(enrollments)
        for enrollment in enrollments:
            _run(enrollment, batch)
        messages_queue([message for _e, _run, message in batch.sends])
        for enrollment, run, message in batch.sends:
            run.message_id = message.id
            enrollment.context = {**enrollment.context, "_last_message_id": message.id}
        _save(cursor, enrollments)
        StepRun.objects.bulk_create(batch.runs)
    if batch.calls:
        _call_webhooks(batch.calls)
        batch.stats.webhooks = len(batch.calls)
    return batch.stats


def _save(cursor, enrollments: Sequence[Enrollment]) -> None:
    """Write the batch's enrollments back in one statement (Django's bulk_update builds a
    CASE per row and field, which cost more than all the steps themselves)."""
    cursor.execute(
        """
        UPDATE journeys_enrollment e SET
            status = u.status, step = u.step, due_at = u.due_at, waiting = u.waiting,
            waiting_for = u.waiting_for, context = u.context, arm = u.arm,
            finished_at = u.finished_at, exit_reason = u.exit_reason
        FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::boolean[],
                    %s::text[], %s::jsonb[], %s::text[], %s::timestamptz[], %s::text[])
            AS u(id, status, step, due_at, waiting, waiting_for, context, arm, finished_at,
                 exit_reason)
        WHERE e.id = u.id
        """,
        [
            [e.id for e in enrollments],
            [e.status for e in enrollments],
            [e.step for e in enrollments],
            [e.due_at for e in enrollments],
            [e.waiting for e in enrollments],
            [e.waiting_for for e in enrollments],
            [json.dumps(e.context, default=str) for e in enrollments],
            [e.arm for e in enrollments],
            [e.finished_at for e in enrollments],
            [e.exit_reason[:200] for e in enrollments],
        ],
    )


def tick(*, batch_size: int = 200, time_budget: float = 20.0) -> tuple[TickStats, bool]:
    """Advance everything due, batch by batch, for at most ``time_budget`` seconds.

    Returns the totals and whether work was left when time ran out.
    """
    total = TickStats()
    started = time.monotonic()
    while True:
        stats = advance_batch(batch_size=batch_size)
        total.add(stats)
        if stats.claimed < batch_size:
            return total, False
        if time.monotonic() - started > time_budget:
            return total, True


def _log(batch: _Batch, e: Enrollment, step: dict, outcome: str, **detail: Any) -> StepRun:
    run = StepRun(
        enrollment_id=e.id,
        journey_id=e.journey_id,
        step=step["key"],
        kind=step["kind"],
        outcome=outcome,
        detail=detail,
        message_id=detail.pop("message_id", None),
        at=batch.now,
    )
    batch.runs.append(run)
    batch.stats.steps += 1
    return run


def _finish(e: Enrollment, batch: _Batch, status: str, reason: str = "") -> None:
    e.status = status
    e.finished_at = batch.now
    e.exit_reason = reason
    e.due_at = None
    e.waiting = False
    e.waiting_for = ""
    if status == Enrollment.Status.COMPLETED:
        batch.stats.completed += 1
    else:
        batch.stats.exited += 1


def _go(e: Enrollment, batch: _Batch, target: str) -> bool:
    """Move to ``target``; an empty target completes the journey. True to keep going."""
    e.waiting = False
    e.waiting_for = ""
    if not target:
        _finish(e, batch, Enrollment.Status.COMPLETED, "end of the journey")
        return False
    e.step = target
    e.due_at = batch.now
    return True


def _run(e: Enrollment, batch: _Batch) -> None:
    definition = _steps_of(e.version_id)
    steps = definition["by_key"]
    for _ in range(MAX_STEPS_PER_RUN):
        step = steps.get(e.step)
        if step is None:
            logger.error("enrollment %s is at unknown step %r", e.id, e.step)
            _finish(e, batch, Enrollment.Status.FAILED, f"unknown step {e.step!r}")
            return
        if not _execute(e, step, definition, batch):
            return
    _finish(e, batch, Enrollment.Status.FAILED, "too many steps without a wait")


def _execute(e: Enrollment, step: dict, definition: dict, batch: _Batch) -> bool:
    kind = step["kind"]
    config = step.get("config") or {}
    if kind in MESSAGE_KINDS:
        _send(e, step, definition, batch)
        return _go(e, batch, step["next"])
    if kind == StepKind.WAIT:
        if e.waiting:
            return _go(e, batch, step["next"])
        until, why = _wait_until(e, config, batch)
        if until is None or until <= batch.now:
            _log(batch, e, step, why)
            return _go(e, batch, step["next"])
        _log(batch, e, step, "waiting", until=until.isoformat())
        e.waiting = True
        e.due_at = until
        batch.stats.waiting += 1
        return False
    if kind == StepKind.WAIT_FOR_EVENT:
        if e.waiting:
            matched = e.context.pop("_matched_event", None)
            e.context.pop("_wait_filter", None)
            if matched:
                _log(batch, e, step, "event", event_id=matched.get("id"))
                return _go(e, batch, step["next"])
            _log(batch, e, step, "timeout")
            return _go(e, batch, step["alt_next"])
        e.waiting = True
        e.waiting_for = config["event"]
        e.context = {**e.context, "_wait_filter": config.get("filter") or []}
        e.due_at = batch.now + dt.timedelta(minutes=float(config["timeout_minutes"]))
        _log(batch, e, step, "waiting", event=config["event"], until=e.due_at.isoformat())
        batch.stats.waiting += 1
        return False
    if kind == StepKind.BRANCH:
        yes = conditions.all_hold(
            config.get("conditions") or [], _facts(e, batch), match=config.get("match", "all")
        )
        _log(batch, e, step, "yes" if yes else "no")
        return _go(e, batch, step["next"] if yes else step["alt_next"])
    if kind == StepKind.SPLIT:
        arm = "A" if _bucket(e.id, step["key"]) < int(config["percent"]) else "B"
        e.arm = arm if not e.arm else f"{e.arm},{arm}"
        e.context = {**e.context, "_arms": {**e.context.get("_arms", {}), step["key"]: arm}}
        _log(batch, e, step, f"arm {arm}", arm=arm)
        return _go(e, batch, step["next"] if arm == "A" else step["alt_next"])
    if kind == StepKind.UPDATE_ATTRIBUTE:
        _update_attribute(e, config, batch)
        _log(batch, e, step, "updated", name=config["name"])
        return _go(e, batch, step["next"])
    if kind == StepKind.WEBHOOK:
        if e.waiting and e.waiting_for != WEBHOOK_IN_FLIGHT:
            return _go(e, batch, step["next"])  # the call was made and its outcome logged
        customer = batch.customers[e.customer_id]
        batch.calls.append(
            _Call(
                enrollment_id=e.id,
                journey_id=e.journey_id,
                step=step,
                payload={
                    "journey": definition["key"],
                    "step": step["key"],
                    "customer": customer.external_id,
                    "attributes": customer.attributes,
                    "context": {k: v for k, v in e.context.items() if not k.startswith("_")},
                    "enrollment": e.id,
                },
            )
        )
        # If this worker dies before recording the call, the lease runs out and the next
        # tick calls again: at least once, like any webhook.
        e.waiting = True
        e.waiting_for = WEBHOOK_IN_FLIGHT
        e.due_at = batch.now + WEBHOOK_LEASE
        return False
    if kind == StepKind.EXIT:
        _log(batch, e, step, "exit")
        _finish(e, batch, Enrollment.Status.EXITED, step.get("label") or "exit step")
        return False
    _finish(e, batch, Enrollment.Status.FAILED, f"unknown step kind {kind!r}")
    return False


def _bucket(enrollment_id: int, step_key: str) -> int:
    """A stable 0-99 draw per enrollment and step: reruns land in the same arm."""
    digest = hashlib.blake2b(f"{enrollment_id}:{step_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def _template(batch: _Batch, key: str) -> MessageTemplate | None:
    if key not in batch.templates:
        batch.templates[key] = MessageTemplate.objects.filter(key=key).first()
    return batch.templates[key]


def _send(e: Enrollment, step: dict, definition: dict, batch: _Batch) -> None:
    config = step.get("config") or {}
    journey = batch.journeys[e.journey_id]
    template = _template(batch, config["template"])
    if template is None:
        _log(batch, e, step, "skipped", reason=f"template {config['template']!r} is gone")
        return
    topic = batch.topics.get(journey.topic_id)
    if topic is None:
        topic = batch.topics[journey.topic_id] = Topic.objects.get(pk=journey.topic_id)
    if template.id not in batch.variants:
        batch.variants[template.id] = list(template.variants.values_list("channel", "locale"))
    ttl = config.get("ttl_hours")
    expires_at = None
    if ttl:
        expires_at = batch.now + dt.timedelta(hours=float(ttl))
    elif definition.get("on_hold") == Journey.OnHold.SKIP:
        expires_at = batch.now + SKIP_TTL
    data = {k: v for k, v in e.context.items() if not k.startswith("_")}
    data.update(config.get("data") or {})
    data["journey"] = definition["key"]
    try:
        message = message_build(
            customer=batch.customers[e.customer_id],
            template=template,
            topic=topic,
            channel=config.get("channel") or "preferred",
            fallback_channel=config.get("fallback_channel") or "",
            data=data,
            expires_at=expires_at,
            priority=definition.get("priority", 5),
            source=Message.Source.JOURNEY,
            journey=definition["key"],
            enrollment_id=e.id,
            journey_step=step["key"],
            idempotency_key=f"journey:{e.id}:{step['key']}:{_visit(e, step)}",
            variants=batch.variants[template.id],
        )
    except SendRefused as refused:
        _log(batch, e, step, "skipped", reason=str(refused), code=refused.code)
        return
    if step["kind"] == StepKind.DIGEST:
        holds.hold_for_step(message, _step_digest(e, step, definition, config))
    batch.stats.messages += 1
    run = _log(batch, e, step, "queued", channel=message.channel)
    batch.sends.append((e, run, message))


def _step_digest(e: Enrollment, step: dict, definition: dict, config: dict) -> holds.StepDigest:
    """A digest step: enrollments that reach it while the customer's digest (per value
    of ``config.key``, e.g. per order) is open join it."""
    key = f"journey:{definition['key']}:{step['key']}"
    if config.get("key"):
        key += f":{e.context.get(config['key'], '')}"
    minutes = config.get("window_minutes")
    return holds.StepDigest(
        key=key[:300],
        template_key=config["template"],
        window=dt.timedelta(minutes=float(minutes)) if minutes else None,
        max_items=int(config["count"]) if config.get("count") else None,
    )


def _visit(e: Enrollment, step: dict) -> int:
    """How many times this enrollment has reached this step (loops send again)."""
    visits = e.context.get("_visits", {})
    count = visits.get(step["key"], 0) + 1
    e.context = {**e.context, "_visits": {**visits, step["key"]: count}}
    return count


def _local_tz(customer: Customer) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(customer.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def parse_instant(value: Any, tz: zoneinfo.ZoneInfo) -> dt.datetime | None:
    """An ISO date or date-time; a bare date is midnight in ``tz``."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day, dt.time(), tzinfo=tz)
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def next_local_time(now: dt.datetime, at: dt.time, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The next moment after ``now`` that the customer's clock shows ``at``."""
    local = now.astimezone(tz)
    candidate = dt.datetime.combine(local.date(), at, tzinfo=tz)
    if candidate <= local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=tz)
    # Round-trip through UTC: a time skipped by a DST change lands just after the gap.
    return candidate.astimezone(dt.UTC)


def _wait_until(e: Enrollment, config: dict, batch: _Batch) -> tuple[dt.datetime | None, str]:
    mode = config.get("mode", "duration")
    customer = batch.customers[e.customer_id]
    if mode == "duration":
        return batch.now + dt.timedelta(minutes=float(config["minutes"])), "waiting"
    tz = _local_tz(customer)
    if mode == "time_of_day":
        hour, minute = map(int, config["time"].split(":"))
        return next_local_time(batch.now, dt.time(hour, minute), tz), "waiting"
    source = customer.attributes if config.get("from", "attribute") == "attribute" else e.context
    present, value = conditions.lookup(source, config["attribute"])
    when = parse_instant(value, tz) if present else None
    if when is None:
        return None, "no date"
    until = when + dt.timedelta(minutes=int(config.get("offset_minutes", 0)))
    return until, "date passed" if until <= batch.now else "waiting"


def _facts(e: Enrollment, batch: _Batch) -> conditions.Facts:
    customer = batch.customers[e.customer_id]

    def had_event(name: str, since: dt.datetime | None) -> bool:
        events = Event.objects.filter(customer_id=e.customer_id, name=name)
        if since is not None:
            events = events.filter(occurred_at__gte=since)
        return events.exists()

    def last_message_status() -> str | None:
        # A message this batch built is not inserted yet: it is the latest.
        for enrollment, _run, message in reversed(batch.sends):
            if enrollment is e:
                return message.status
        return (
            Message.objects.filter(enrollment_id=e.id)
            .order_by("-id")
            .values_list("status", flat=True)
            .first()
        )

    def last_reply() -> str | None:
        properties = (
            Event.objects.filter(
                customer_id=e.customer_id, name="message.replied", occurred_at__gte=e.entered_at
            )
            .order_by("-occurred_at", "-id")
            .values_list("properties", flat=True)
            .first()
        )
        if properties is None:
            return None
        body = properties.get("body")
        return body if isinstance(body, str) else None

    def in_segment(key: str) -> bool:
        members = batch.segment_members.get(key)
        if members is None:
            try:
                members = members_among(key, list(batch.customers), now=batch.now)
            except SegmentMissing:
                logger.warning("branch names segment %r, which no longer exists", key)
                members = set()
            batch.segment_members[key] = members
        return e.customer_id in members

    return conditions.Facts(
        attributes=customer.attributes,
        context=e.context,
        entered_at=e.entered_at,
        now=batch.now,
        had_event=had_event,
        last_message_status=last_message_status,
        last_reply=last_reply,
        in_segment=in_segment,
    )


def _update_attribute(e: Enrollment, config: dict, batch: _Batch) -> None:
    from orchestrator.audience.services import customer_attributes_merge

    if config.get("from_context"):
        _present, value = conditions.lookup(e.context, config["from_context"])
    else:
        value = config.get("value")
    customer = batch.customers[e.customer_id]
    customer.attributes = customer_attributes_merge(
        customer_id=e.customer_id, changes={config["name"]: value}
    )


# --- webhooks, outside the transaction -------------------------------------------------


def _post(call: _Call) -> tuple[str, dict[str, Any]]:
    config = call.step.get("config") or {}
    body = json.dumps(call.payload, default=str).encode()
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked by validation
        config["url"],
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "orchestrator-journeys"},
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=float(config.get("timeout_seconds", 5))
        ) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return "failed", {"error": str(getattr(exc, "reason", exc))[:200]}
    elapsed = round((time.monotonic() - started) * 1000)
    outcome = "ok" if 200 <= status < 300 else "failed"
    return outcome, {"status": status, "ms": elapsed}


def _call_webhooks(calls: Sequence[_Call]) -> None:
    with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
        results = list(pool.map(_post, calls))
    now = timezone.now()
    with transaction.atomic():
        StepRun.objects.bulk_create(
            StepRun(
                enrollment_id=call.enrollment_id,
                journey_id=call.journey_id,
                step=call.step["key"],
                kind=call.step["kind"],
                outcome=outcome,
                detail=detail,
                at=now,
            )
            for call, (outcome, detail) in zip(calls, results, strict=True)
        )
        # Due now, call made: the next tick moves them on.
        Enrollment.objects.filter(
            id__in=[c.enrollment_id for c in calls],
            status=Enrollment.Status.ACTIVE,
            waiting_for=WEBHOOK_IN_FLIGHT,
        ).update(due_at=now, waiting_for="")
    kick_engine()


# --- leaving -----------------------------------------------------------------------------


def enrollments_exit(exits: Sequence[tuple[Enrollment, str]], *, now: dt.datetime) -> None:
    """Take enrollments out now and cancel the messages they queued that have not gone."""
    if not exits:
        return
    ids = [e.id for e, _ in exits]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE journeys_enrollment e SET
                status = 'exited', finished_at = %s, exit_reason = u.reason, due_at = NULL,
                waiting = FALSE, waiting_for = ''
            FROM unnest(%s::bigint[], %s::text[]) AS u(id, reason)
            WHERE e.id = u.id
            """,
            [now, ids, [reason[:200] for _e, reason in exits]],
        )
    StepRun.objects.bulk_create(
        StepRun(
            enrollment_id=e.id,
            journey_id=e.journey_id,
            step=e.step,
            kind="exit",
            outcome="exited",
            detail={"reason": reason},
            at=now,
        )
        for e, reason in exits
    )
    pending = list(
        Message.objects.filter(
            enrollment_id__in=ids, status__in=["queued", "scheduled", "deferred"]
        ).values_list("id", flat=True)
    )
    if pending:
        messages_cancel(message_ids=pending, reason="the customer left the journey")
