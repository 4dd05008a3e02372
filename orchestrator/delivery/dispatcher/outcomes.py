"""What a dispatch attempt did to each message, and writing it down.

A provider's answer (``SendResult``) becomes a status here: sent, "maybe sent"
(left ``sending`` for reconciliation), a fallback, a retry with backoff (never
before the provider's reset), a failure, or expired when the next try would come
after the message's expiry; refused addresses are suppressed with the outcome. Every outcome is one
row of one set-based statement that updates the messages and inserts their
history rows, guarded by the claim (see ``record``).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings

from channels.adapters import OutboundMessage, SendResult
from orchestrator.consent.suppressions import suppressions_add
from orchestrator.delivery.models import MessageStatus
from orchestrator.delivery.trail import explain

#: Provider attempts before a transiently failing message is given up as ``failed``.
MAX_ATTEMPTS = getattr(settings, "DISPATCH_MAX_ATTEMPTS", 5)
#: Backoff after the n-th transient failure: BASE * 2**(n-1), at most MAX, with jitter.
BACKOFF_BASE = dt.timedelta(seconds=getattr(settings, "DISPATCH_BACKOFF_BASE_SECONDS", 30))
BACKOFF_MAX = dt.timedelta(seconds=getattr(settings, "DISPATCH_BACKOFF_MAX_SECONDS", 3600))
#: The longest wait for a provider's reset (``SendResult.retry_after``): a reset further
#: away is tried at this distance (and refused again, if the provider means it).
RETRY_AFTER_MAX = dt.timedelta(
    seconds=getattr(settings, "DISPATCH_RETRY_AFTER_MAX_SECONDS", 6 * 3600)
)
#: Jitter on top of a provider's reset: a share of the wait, at least a second and at
#: most BACKOFF_BASE, so the messages held by one reset do not all come back at once.
RESET_JITTER = 0.1


@dataclass
class DispatchStats:
    """What one or more batches did, counted by what became of each message."""

    batches: int = 0
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    expired: int = 0
    retrying: int = 0
    deferred: int = 0
    unknown: int = 0
    #: Rows this worker claimed but lost before handing off (reclaimed elsewhere).
    lost: int = 0
    #: Claimed but left due for a later batch: another dispatcher was deciding for the
    #: same customer.
    busy: int = 0
    #: Claimed by the priority lane, ahead of the rest of a batch already under way.
    overtaken: int = 0
    #: Wall time spent in the fatigue policy stage (locks, history, decisions, writes).
    policy_seconds: float = 0.0

    def add(self, other: DispatchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Outcome:
    """What to write for one message: new status, history reason, trail entry, columns."""

    message_id: int
    status: str
    reason: str
    entry: dict[str, Any]
    provider: str | None = None
    provider_message_id: str | None = None
    sent_at: dt.datetime | None = None
    last_error: str | None = None
    send_after: dt.datetime | None = None
    keep_handed_off: bool = True
    #: Machine code for the history row (e.g. rule:<key>, quiet_hours, consent:...).
    code: str = ""
    #: Move the message to this channel (a fallback after a permanent failure).
    channel: str | None = None
    address: str | None = None
    #: No request was made for it (the sender was held): the try is not an attempt.
    refund_attempt: bool = False


# Each batch statement takes its rows as one JSON document (``jsonb_to_recordset``): one
# parameter to quote instead of thousands of array elements, which the driver would
# otherwise escape one by one in Python.

#: Rows still waiting: locked by this transaction and not yet handed off.
_WAITING = "m.status IN ('queued', 'scheduled', 'deferred')"

# The outcome update and its history rows in one statement: history is written only
# for the rows the update matched - rows still locked and waiting (before the hand-off)
# or still under this worker's attempt id (after the provider call).
_RECORD_CTES = """
u AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(
        id bigint, status text, reason text, entry jsonb, provider text,
        provider_message_id text, sent_at timestamptz, last_error text,
        send_after timestamptz, keep_handed_off boolean, code text, channel text,
        address text, refund_attempt boolean)
), updated AS (
    UPDATE delivery_message AS m SET
        status = u.status,
        provider = COALESCE(u.provider, m.provider),
        provider_message_id = COALESCE(u.provider_message_id, m.provider_message_id),
        sent_at = COALESCE(u.sent_at, m.sent_at),
        last_error = COALESCE(u.last_error, m.last_error),
        send_after = COALESCE(u.send_after, m.send_after),
        handed_off_at = CASE WHEN u.keep_handed_off THEN m.handed_off_at END,
        channel = COALESCE(u.channel, m.channel),
        to_address = COALESCE(u.address, m.to_address),
        attempts = m.attempts - CASE WHEN u.refund_attempt THEN 1 ELSE 0 END,
        -- A fallback is used once: moving to it clears it.
        fallback_channel = CASE WHEN u.channel IS NULL THEN m.fallback_channel ELSE '' END,
        decided_at = CASE WHEN u.channel IS NULL THEN m.decided_at END,
        explanation = m.explanation || jsonb_build_array(u.entry),
        updated_at = %(now)s
    FROM u
    WHERE m.id = u.id AND {guard}
    RETURNING m.id, u.status, u.reason, u.code
), recorded AS (
    INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code)
    SELECT id, status, %(now)s, reason, COALESCE(code, '') FROM updated
    RETURNING message_id
)"""


def _json_default(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def as_json(rows: Any) -> str:
    return json.dumps(rows, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def insert_events(cursor, rows: Sequence[tuple[int, str, str]], now: dt.datetime) -> None:
    if not rows:
        return
    cursor.execute(
        "INSERT INTO delivery_messageevent (message_id, status, occurred_at, reason, code) "
        "SELECT u.id, u.status, %(now)s, u.reason, '' "
        "FROM jsonb_to_recordset(%(rows)s::jsonb) AS u(id bigint, status text, reason text)",
        {
            "now": now,
            "rows": as_json([{"id": i, "status": st, "reason": r} for i, st, r in rows]),
        },
    )


_RECORDED = "WITH {ctes} SELECT message_id FROM recorded"
_RECORD_LOCKED_SQL = _RECORDED.format(ctes=_RECORD_CTES.format(guard=_WAITING))
#: The outcomes of provider calls, as common table expressions ending in ``recorded``
#: (the ids written): a statement may write more after them (``claim.record_and_hand_off``).
RECORD_SENT_CTES = _RECORD_CTES.format(
    guard="m.attempt_id = %(attempt_id)s AND m.status = 'sending'"
)
_RECORD_SENT_SQL = _RECORDED.format(ctes=RECORD_SENT_CTES)


def record(
    cursor,
    outcomes: Sequence[Outcome],
    attempt_id: uuid.UUID | None,
    now: dt.datetime,
    *,
    locked: bool = False,
) -> set:
    """Write outcomes with their history; returns the ids written.

    ``locked``: rows this transaction holds (not yet handed off); otherwise only rows
    still under ``attempt_id`` (a reclaimed row is not overwritten by a late worker).
    """
    if not outcomes:
        return set()
    sql = _RECORD_LOCKED_SQL if locked else _RECORD_SENT_SQL
    cursor.execute(sql, record_params(outcomes, attempt_id, now))
    return {row[0] for row in cursor.fetchall()}


def record_params(
    outcomes: Sequence[Outcome], attempt_id: uuid.UUID | None, now: dt.datetime
) -> dict[str, Any]:
    """The parameters of the record statements (``rows``, ``attempt_id``, ``now``)."""
    rows = [
        {
            "id": o.message_id,
            "status": str(o.status),
            "reason": o.reason,
            "entry": o.entry,
            "provider": o.provider,
            "provider_message_id": o.provider_message_id,
            "sent_at": o.sent_at,
            "last_error": o.last_error,
            "send_after": o.send_after,
            "keep_handed_off": o.keep_handed_off,
            "code": o.code,
            "channel": o.channel,
            "address": o.address,
            "refund_attempt": o.refund_attempt,
        }
        for o in outcomes
    ]
    return {"rows": as_json(rows), "attempt_id": attempt_id, "now": now}


def backoff(attempts: int) -> dt.timedelta:
    """Delay before the next try after ``attempts`` tries: exponential, capped, jittered.

    The jitter (50-100% of the delay) spreads a burst of failures over time so a
    recovering provider is not hit by the whole batch again at once.
    """
    exponent = max(attempts - 1, 0)
    delay = min(BACKOFF_BASE * (2**exponent), BACKOFF_MAX)
    return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not security


def reset_delay(retry_after: float) -> dt.timedelta:
    """Delay before trying again after the provider asked for ``retry_after`` seconds:
    the reset (at most RETRY_AFTER_MAX) and a jitter on top, never before the reset."""
    reset = min(dt.timedelta(seconds=max(retry_after, 0.0)), RETRY_AFTER_MAX)
    spread = min(max(reset * RESET_JITTER, dt.timedelta(seconds=1)), BACKOFF_BASE)
    return reset + spread * random.random()  # noqa: S311 - jitter, not security


def retry_delay(attempts: int, retry_after: float | None = None) -> dt.timedelta:
    """Delay before the next try: the backoff, and never before the provider's reset."""
    delay = backoff(attempts)
    if retry_after is not None:
        delay = max(delay, reset_delay(retry_after))
    return delay


def result_outcome(
    result: SendResult,
    *,
    provider: str,
    attempts: int,
    now: dt.datetime,
    fallback: tuple[str, str] | None = None,
    expires_at: dt.datetime | None = None,
) -> Outcome:
    """What a provider's answer means for the message. ``fallback``: (channel, address);
    ``expires_at``: the message's expiry (a retry due after it expires the message now)."""
    mid = result.message_id
    if result.accepted:
        reason = f"accepted by {provider}"
        return Outcome(
            mid,
            MessageStatus.SENT,
            reason,
            explain(
                "send",
                MessageStatus.SENT,
                reason,
                provider=provider,
                provider_message_id=result.provider_message_id,
                attempt=attempts,
                **({"provider_detail": result.detail} if result.detail else {}),
            ),
            provider=provider,
            provider_message_id=result.provider_message_id,
            sent_at=now,
        )
    error = result.error or "refused without a reason"
    code = result.error_code
    if result.unknown:
        reason = f"outcome unknown ({error}); awaiting provider status, not resent"
        return Outcome(
            mid,
            MessageStatus.SENDING,
            reason,
            explain("send", "unknown", reason, provider=provider, code=result.error_code),
            provider=provider,
            last_error=error,
        )
    if result.permanent and fallback is not None:
        channel, address = fallback
        reason = f"{provider} refused it permanently ({error}); trying the fallback, {channel}"
        return Outcome(
            mid,
            MessageStatus.QUEUED,
            reason,
            explain("send", "fallback", reason, provider=provider, code=code, fallback=channel),
            provider=provider,
            last_error=error,
            send_after=now,
            keep_handed_off=False,
            code="fallback",
            channel=channel,
            address=address,
        )
    if result.permanent:
        reason = f"{provider} refused it permanently: {error}"
        if result.suppress:
            reason += f"; the address is suppressed from now on ({result.suppress})"
        return Outcome(
            mid,
            MessageStatus.FAILED,
            reason,
            explain("send", MessageStatus.FAILED, reason, provider=provider, code=code),
            provider=provider,
            last_error=error,
            keep_handed_off=False,
        )
    if result.attempted and attempts >= MAX_ATTEMPTS:
        reason = f"gave up after {attempts} attempts; last error from {provider}: {error}"
        return Outcome(
            mid,
            MessageStatus.FAILED,
            reason,
            explain("send", MessageStatus.FAILED, reason, provider=provider, code=code),
            provider=provider,
            last_error=error,
            keep_handed_off=False,
            code=code,
        )
    if result.attempted:
        retry_at = now + retry_delay(attempts, result.retry_after)
        why = f"{provider} failed transiently ({error})"
        if result.retry_after is not None:
            why += f"; its reset is in {result.retry_after:.0f} s"
        step, next_attempt = "retry", attempts + 1
    else:
        # No request was made (the sender is held until the provider's reset): the same
        # attempt comes again after the reset.
        retry_at = now + reset_delay(result.retry_after or 0.0)
        why = f"held: {error}"
        step, next_attempt = "held", attempts
    if expires_at is not None and retry_at >= expires_at:
        reason = (
            f"{why}; the next try ({retry_at:%Y-%m-%d %H:%M:%S} UTC) would come after "
            f"its expiry ({expires_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
        return Outcome(
            mid,
            MessageStatus.EXPIRED,
            reason,
            explain(
                "send",
                MessageStatus.EXPIRED,
                reason,
                provider=provider,
                code=code,
                expires_at=expires_at.isoformat(),
            ),
            provider=provider,
            last_error=error,
            keep_handed_off=False,
            code="expired",
            refund_attempt=not result.attempted,
        )
    reason = (
        f"{why}; attempt {next_attempt} of {MAX_ATTEMPTS} at {retry_at:%Y-%m-%d %H:%M:%S} UTC"
        if step == "held"
        else f"{why}; retry {next_attempt} of {MAX_ATTEMPTS} at {retry_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    return Outcome(
        mid,
        MessageStatus.QUEUED,
        reason,
        explain(
            "send",
            step,
            reason,
            provider=provider,
            code=code,
            attempt=attempts,
            retry_at=retry_at.isoformat(),
            **({"retry_after": result.retry_after} if result.retry_after is not None else {}),
        ),
        provider=provider,
        last_error=error,
        send_after=retry_at,
        # The provider said no (or was not asked): it does not have it, so a resend is safe.
        keep_handed_off=False,
        code="held" if step == "held" else "",
        refund_attempt=not result.attempted,
    )


def suppress_refused_addresses(
    results: Sequence[tuple[SendResult, str]],
    sent: dict[int, OutboundMessage],
    written: set,
) -> None:
    """Suppress the addresses a provider called unusable, with the recorded outcome.

    The address itself is unusable (an opt-out at the carrier, a dead number): no
    later send of any kind should try it again. Only the provider's code goes in the
    detail: its text may quote the address.
    """
    suppressions_add(
        (
            sent[r.message_id].channel,
            sent[r.message_id].to,
            r.suppress,
            f"{provider} {r.error_code}".strip(),
        )
        for r, provider in results
        if r.suppress and not r.accepted and r.message_id in written
    )


#: The counter each recorded outcome adds to; any other status counts as failed.
_COUNTER_FOR_STATUS = {
    MessageStatus.SENT: "sent",
    MessageStatus.QUEUED: "retrying",  # a transient failure, tried again later
    MessageStatus.SENDING: "unknown",  # the provider may have it: awaiting its status
    MessageStatus.DEFERRED: "deferred",
    MessageStatus.EXPIRED: "expired",
    MessageStatus.SUPPRESSED: "suppressed",
}


def tally(stats: DispatchStats, outcomes: Sequence[Outcome], written: set) -> None:
    for outcome in outcomes:
        counter = (
            _COUNTER_FOR_STATUS.get(outcome.status, "failed")
            if outcome.message_id in written
            else "lost"
        )
        setattr(stats, counter, getattr(stats, counter) + 1)
