"""The status machine of a message: forward only, our own final decisions never move.

Provider reports, clicks and replies arrive duplicated and out of order, so a report
moves a message only to a status ranked higher than the one it has: a "sent" arriving
after "delivered" is kept in the history and changes nothing. Statuses of one rank
(delivered, undelivered, bounced, failed) are outcomes of the same step and do not
replace each other. ``suppressed``, ``canceled`` and ``expired`` are our decisions,
not the provider's: no report changes them. ``held`` waits for a digest: the
dispatcher never claims it; the digest build folds it (``canceled``, code ``digested``,
pointing at the digest message).
"""

from __future__ import annotations

from orchestrator.delivery.models import MessageStatus

S = MessageStatus

#: How far along a message is. A report only ever moves a message to a higher rank.
RANK: dict[str, int] = {
    S.QUEUED: 0,
    S.SCHEDULED: 0,
    S.DEFERRED: 0,
    S.HELD: 0,
    S.SENDING: 1,
    S.SENT: 2,
    S.DELIVERED: 3,
    S.UNDELIVERED: 3,
    S.BOUNCED: 3,
    S.FAILED: 3,
    S.OPENED: 4,
    S.CLICKED: 5,
    S.REPLIED: 6,
}
#: Our own final decisions: no report changes them.
FINAL: frozenset[str] = frozenset({S.SUPPRESSED, S.CANCELED, S.EXPIRED})
#: Waiting for a digest: only the digest build moves it (to canceled, code "digested").
DIGEST_HELD: frozenset[str] = frozenset({S.HELD})
#: A delivery outcome that failed: the report's reason becomes the message's last error.
FAILED_OUTCOMES: frozenset[str] = frozenset({S.FAILED, S.UNDELIVERED, S.BOUNCED})


def may_move(current: str, new: str | None) -> bool:
    """Whether a report of ``new`` moves a message that is ``current`` (None: no status)."""
    return (
        new is not None
        and current not in FINAL
        and current not in DIGEST_HELD
        and RANK.get(new, 0) > RANK.get(current, 0)
    )


def sent_statuses_below(new: str) -> tuple[str, ...]:
    """The statuses of a message the provider took (``sent`` and on) that ``new`` moves
    forward, for a conditional UPDATE. Not ``sending``: its dispatcher may still be
    recording the provider's answer, and an unknown outcome is reconciled from the
    provider's own report."""
    return tuple(
        status
        for status in MessageStatus.values
        if RANK[S.SENT] <= RANK.get(status, -1) and may_move(status, new)
    )
