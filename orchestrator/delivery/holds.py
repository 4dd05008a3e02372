"""Holding messages for a digest: which ones, and the open digest each one joins.

A message is held (status ``held``, never claimed by the dispatcher) when its topic is
digestible and the customer chose a daily or weekly digest of it, or when a journey's
digest step queued it. ``messages_hold`` runs inside ``messages_queue``, in the
transaction that inserts the messages, so a message is held from its first row.
``digests`` builds and sends the digests.

When a customer changes a digest choice (or their time zone), ``digests_follow_choices``
moves what is already held, inside the preferences update's transaction: a new cadence
or time re-times the open digest, "as it happens" releases it (see ``_release``).
"""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import Count
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.translation import gettext as _

from orchestrator.audience.models import Customer
from orchestrator.consent.models import ConsentRecord, DigestPreference, Topic
from orchestrator.core.tasking import publish_on_commit
from orchestrator.delivery.models import Digest, Message, MessageEvent, MessageStatus
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
    # The senders have usually loaded the topic already (the API, a journey's step):
    # ask the database only about the topics no message carries.
    topic_field = Message._meta.get_field("topic")
    loaded = {m.topic_id: m.topic for m in candidates if topic_field.is_cached(m)}
    digestible = {pk for pk, topic in loaded.items() if topic is not None and topic.digestible}
    if unknown := topic_ids - loaded.keys():
        digestible |= set(
            Topic.objects.filter(id__in=unknown, digestible=True).values_list("id", flat=True)
        )
    candidates = [m for m in candidates if m.topic_id in digestible]
    if not candidates:
        return {}
    # Locked until the messages are inserted: a customer switching this topic at this
    # moment waits for the hold and then moves these messages with the rest, instead of
    # leaving them in a digest they no longer want. Same order as the preferences update
    # (choice, then digest), so neither waits on the other in a circle.
    choices = {
        (p.customer_id, p.topic_id): p
        for p in DigestPreference.objects.select_for_update(no_key=True, of=("self",))
        .filter(customer_id__in={m.customer_id for m in candidates}, topic_id__in=digestible)
        .exclude(cadence=DigestPreference.Cadence.IMMEDIATE)
        .select_related("customer", "topic")
        .order_by("id")
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


# --- following a changed choice ------------------------------------------------------------


def _append_to_trail(message_ids: Sequence[int], entry: dict, **fields) -> None:
    Message.objects.filter(id__in=message_ids).update(
        explanation=RawSQL("explanation || jsonb_build_array(%s::jsonb)", [json.dumps(entry)]),
        **fields,
    )


def _because(record: ConsentRecord | None) -> str:
    if record is None:
        return "the customer changed their digest"
    return f"the customer changed their digest ({record.source}, consent record #{record.pk})"


def _retime(
    digest: Digest,
    choice: DigestPreference,
    tz_name: str,
    record: ConsentRecord | None,
    now: dt.datetime,
) -> None:
    """The open digest goes at the new cadence's next time; its held messages say so."""
    due = next_digest_time(
        now, cadence=choice.cadence, at=choice.at, weekday=choice.weekday, tz_name=tz_name
    )
    if (due, choice.cadence) == (digest.due_at, digest.cadence):
        return
    digest.due_at, digest.cadence = due, choice.cadence
    digest.save(update_fields=["due_at", "cadence"])
    held = list(
        Message.objects.filter(digest=digest, status=MessageStatus.HELD).values_list(
            "id", flat=True
        )
    )
    describe = describe_cadence(choice.cadence, choice.weekday, choice.at)
    _append_to_trail(
        held,
        explain(
            "digest",
            MessageStatus.HELD,
            f"{_because(record)}: now held for {describe}, due {due.isoformat()}",
            digest=digest.pk,
            cadence=choice.cadence,
            due_at=due.isoformat(),
            at=choice.at.strftime("%H:%M"),
            weekday=choice.weekday,
            consent_record=record.pk if record else None,
        ),
        updated_at=now,
    )


def _release(digest: Digest, record: ConsentRecord | None, now: dt.datetime) -> None:
    """The customer wants this topic as it happens: what was held for it goes now.

    Several held messages go as one last digest, built at once by the digest sweep,
    rather than as a burst of separate messages, each already late: the customer asked
    for fewer interruptions when these arrived, and one message that lists them all
    honours that while getting them out now. A single held message goes on its own,
    as it would have come: a "digest" of one is noise. Nothing leaves this transaction
    half done: the digest made due now is built (and the one message dispatched) by the
    usual sweeps, which survive a worker dying mid-build.
    """
    held = list(
        Message.objects.filter(digest=digest, status=MessageStatus.HELD)
        .order_by("id")
        .values_list("id", "send_after")
    )
    because = _because(record)
    if len(held) == 1:
        ((message_id, send_after),) = held
        status = MessageStatus.SCHEDULED if send_after > now else MessageStatus.QUEUED
        reason = f"{because}: the topic is now sent as it happens, so this one goes on its own"
        _append_to_trail(
            [message_id],
            explain(
                "digest",
                status,
                reason,
                digest=digest.pk,
                released=True,
                consent_record=record.pk if record else None,
            ),
            status=status,
            updated_at=now,
        )
        MessageEvent.objects.create(
            message_id=message_id,
            status=status,
            occurred_at=now,
            reason=reason,
            code="digest_released",
        )
        publish_on_commit("delivery.dispatch")
    if len(held) <= 1:
        digest.status, digest.built_at = Digest.Status.EMPTY, now
        digest.save(update_fields=["status", "built_at"])
        return
    digest.due_at, digest.cadence = now, DigestPreference.Cadence.IMMEDIATE
    digest.save(update_fields=["due_at", "cadence"])
    _append_to_trail(
        [message_id for message_id, _send_after in held],
        explain(
            "digest",
            MessageStatus.HELD,
            f"{because}: the topic is now sent as it happens, so the {len(held)} held go "
            "now, together in one last digest",
            digest=digest.pk,
            cadence=DigestPreference.Cadence.IMMEDIATE,
            due_at=now.isoformat(),
            released=True,
            consent_record=record.pk if record else None,
        ),
        updated_at=now,
    )
    publish_on_commit("sweeps.build_digests")


def digests_follow_choices(
    customer: Customer, topic_ids: frozenset[int] | None, records: list[ConsentRecord]
) -> None:
    """Move the customer's open topic digests to their current choices (all of them when
    ``topic_ids`` is None: the time zone changed). Runs in the preferences update's
    transaction, which holds the customer row; ``records`` are its ledger rows, which
    the held messages' trails cite."""
    now = timezone.now()
    query = Digest.objects.select_for_update(of=("self",)).filter(
        customer_id=customer.pk, kind=Digest.Kind.TOPIC, status=Digest.Status.OPEN
    )
    if topic_ids is not None:
        query = query.filter(topic_id__in=topic_ids)
    digests = list(query.order_by("id"))
    if not digests:
        return
    choices = {
        p.topic_id: p
        for p in DigestPreference.objects.filter(
            customer_id=customer.pk, topic_id__in={d.topic_id for d in digests}
        ).exclude(cadence=DigestPreference.Cadence.IMMEDIATE)
    }
    by_topic = {r.topic_id: r for r in records if r.topic_id is not None}
    general = next((r for r in records if r.topic_id is None), None)
    for digest in digests:
        record = by_topic.get(digest.topic_id, general)
        choice = choices.get(digest.topic_id)
        if choice is None:
            _release(digest, record, now)
        else:
            _retime(digest, choice, customer.timezone, record, now)
