"""Holding messages for a digest: which ones, and the open digest each one joins.

A message is held (status ``held``, never claimed by the dispatcher) when its topic is
digestible and the customer chose a daily or weekly digest of it, or when a journey's
digest step queued it. ``messages_hold`` runs inside ``messages_queue``, in the
transaction that inserts the messages, so a message is held from its first row.
``digests`` builds and sends the digests.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import Count
from django.utils import timezone
from django.utils.translation import gettext as _

from orchestrator.consent.models import DigestPreference, Topic
from orchestrator.core.tasking import publish_on_commit
from orchestrator.delivery.models import Digest, Message, MessageStatus
from orchestrator.delivery.trail import explain

#: A journey digest step with a count and no window still goes after this long.
COUNT_BACKSTOP = dt.timedelta(days=7)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class StepDigest:
    """What a journey digest step asks of a message it queues."""

    key: str
    template_key: str
    window: dt.timedelta | None
    max_items: int | None


def step_digest_of(message: Message) -> StepDigest | None:
    return getattr(message, "_step_digest", None)


def hold_for_step(message: Message, spec: StepDigest) -> Message:
    """Mark a built, unsaved message as one for a journey digest step's digest."""
    message._step_digest = spec  # type: ignore[attr-defined]
    return message


# --- when a topic digest is due ------------------------------------------------------------


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def next_digest_time(
    now: dt.datetime, *, cadence: str, at: dt.time, weekday: int | None, tz_name: str
) -> dt.datetime:
    """The first ``at`` (local, in ``tz_name``) after ``now``; weekly: on ``weekday``."""
    tz = _zone(tz_name)
    local = now.astimezone(tz)
    for days in range(8):
        day = local.date() + dt.timedelta(days=days)
        if cadence == DigestPreference.Cadence.WEEKLY and day.weekday() != weekday:
            continue
        candidate = dt.datetime.combine(day, at, tzinfo=tz)
        if candidate > now:
            return candidate
    raise ValueError(f"no digest time for {cadence!r}")  # unreachable: 8 days cover a week


def describe_cadence(cadence: str, weekday: int | None, at: dt.time | str) -> str:
    """ "your daily digest (08:00)", in the active language."""
    at_text = at if isinstance(at, str) else at.strftime("%H:%M")
    if cadence == DigestPreference.Cadence.WEEKLY and weekday is not None:
        return _("your weekly digest (%(day)s %(at)s)") % {
            "day": _(WEEKDAYS[weekday].capitalize()),
            "at": at_text,
        }
    return _("your daily digest (%(at)s)") % {"at": at_text}


# --- holding ----------------------------------------------------------------------------


@dataclass
class _Want:
    customer_id: int
    key: str
    kind: str
    topic_id: int
    template_key: str
    cadence: str
    due_at: dt.datetime
    max_items: int | None
    describe: str
    at: str = ""
    weekday: int | None = None
    messages: list[Message] = field(default_factory=list)


def _topic_wants(messages: Sequence[Message], now: dt.datetime) -> dict[tuple[int, str], _Want]:
    """Holds asked by customers' digest choices, read in one query for the batch."""
    candidates = [m for m in messages if not m.data.get("digest") and step_digest_of(m) is None]
    topic_ids = {m.topic_id for m in candidates}
    if not topic_ids:
        return {}
    digestible = set(
        Topic.objects.filter(id__in=topic_ids, digestible=True).values_list("id", flat=True)
    )
    candidates = [m for m in candidates if m.topic_id in digestible]
    if not candidates:
        return {}
    choices = {
        (p.customer_id, p.topic_id): p
        for p in DigestPreference.objects.filter(
            customer_id__in={m.customer_id for m in candidates}, topic_id__in=digestible
        )
        .exclude(cadence=DigestPreference.Cadence.IMMEDIATE)
        .select_related("customer", "topic")
    }
    wants: dict[tuple[int, str], _Want] = {}
    for message in candidates:
        choice = choices.get((message.customer_id, message.topic_id))
        if choice is None:
            continue
        key = f"topic:{choice.topic.key}"
        want = wants.get((message.customer_id, key))
        if want is None:
            want = wants[(message.customer_id, key)] = _Want(
                customer_id=message.customer_id,
                key=key,
                kind=Digest.Kind.TOPIC,
                topic_id=message.topic_id,
                template_key="",
                cadence=choice.cadence,
                due_at=next_digest_time(
                    now,
                    cadence=choice.cadence,
                    at=choice.at,
                    weekday=choice.weekday,
                    tz_name=choice.customer.timezone,
                ),
                max_items=None,
                describe=describe_cadence(choice.cadence, choice.weekday, choice.at),
                at=choice.at.strftime("%H:%M"),
                weekday=choice.weekday,
            )
        want.messages.append(message)
    return wants


def _step_wants(messages: Sequence[Message], now: dt.datetime) -> dict[tuple[int, str], _Want]:
    wants: dict[tuple[int, str], _Want] = {}
    for message in messages:
        spec = step_digest_of(message)
        if spec is None:
            continue
        want = wants.get((message.customer_id, spec.key))
        if want is None:
            window = spec.window or COUNT_BACKSTOP
            describe = f"the digest of journey step {spec.key.split(':', 2)[-1]!r}"
            want = wants[(message.customer_id, spec.key)] = _Want(
                customer_id=message.customer_id,
                key=spec.key,
                kind=Digest.Kind.JOURNEY,
                topic_id=message.topic_id,
                template_key=spec.template_key,
                cadence="count" if spec.window is None else "window",
                due_at=now + window,
                max_items=spec.max_items,
                describe=describe,
            )
        want.messages.append(message)
    return wants


def _open_digests(wants: dict[tuple[int, str], _Want], now: dt.datetime) -> dict[tuple, Digest]:
    """The open digest of each (customer, key), created where there is none, locked.

    Locked (in id order) until the caller commits: a build that claimed one first makes
    us wait, and once it is sent it no longer matches ``open``, so a new one is opened.
    """
    found: dict[tuple, Digest] = {}
    for _attempt in range(5):
        missing = [w for k, w in wants.items() if k not in found]
        if not missing:
            return found
        Digest.objects.bulk_create(
            [
                Digest(
                    customer_id=w.customer_id,
                    kind=w.kind,
                    key=w.key,
                    topic_id=w.topic_id,
                    template_key=w.template_key,
                    cadence=w.cadence,
                    max_items=w.max_items,
                    due_at=w.due_at,
                )
                for w in missing
            ],
            ignore_conflicts=True,
        )
        customers = {w.customer_id for w in missing}
        keys = {w.key for w in missing}
        for digest in (
            Digest.objects.select_for_update()
            .filter(customer_id__in=customers, key__in=keys, status=Digest.Status.OPEN)
            .order_by("id")
        ):
            if (digest.customer_id, digest.key) in wants:
                found[(digest.customer_id, digest.key)] = digest
    raise RuntimeError("could not open a digest: it kept being built meanwhile")


def messages_hold(messages: Sequence[Message], *, now: dt.datetime | None = None) -> list[Digest]:
    """Hold the messages (built, unsaved) that belong in a digest; return the digests.

    Runs in the caller's transaction before the messages are inserted.
    """
    now = now or timezone.now()
    wants = _topic_wants(messages, now) | _step_wants(messages, now)
    if not wants:
        return []
    digests = _open_digests(wants, now)
    for pair, want in wants.items():
        digest = digests[pair]
        for message in want.messages:
            message.status = MessageStatus.HELD
            message.digest = digest
            message.explanation = [
                *message.explanation,
                explain(
                    "digest",
                    MessageStatus.HELD,
                    f"held for {want.describe}, due {digest.due_at.isoformat()}",
                    digest=digest.pk,
                    cadence=digest.cadence,
                    due_at=digest.due_at.isoformat(),
                    at=want.at,
                    weekday=want.weekday,
                ),
            ]
    return list(digests.values())


def digests_after_hold(digests: Sequence[Digest], *, now: dt.datetime | None = None) -> None:
    """Once held messages are inserted: a step digest that reached its count is due now."""
    counted = [d for d in digests if d.max_items]
    if not counted:
        return
    now = now or timezone.now()
    held = dict(
        Message.objects.filter(digest__in=counted, status=MessageStatus.HELD)
        .values("digest_id")
        .annotate(n=Count("id"))
        .values_list("digest_id", "n")
    )
    full = [d.pk for d in counted if held.get(d.pk, 0) >= d.max_items]
    if full:
        Digest.objects.filter(pk__in=full, due_at__gt=now).update(due_at=now)
        publish_on_commit("sweeps.build_digests")
