"""The accounting every fault test ends with: what was promised, and what happened.

A fault test builds an ``Accounting`` from the database and from what the provider
emulator received on the wire, prints its line (``pytest -s`` or ``-rA`` shows it) and
calls ``assert_kept()``: nothing lost, nothing duplicated, nothing sent after an
opt-out or an erasure, no 5xx. The figures come from independent sources (our
outbox on one side, the emulator's request log on the other), so a bug on our side
cannot make both agree by accident.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from orchestrator.delivery.models import Message, MessageStatus

#: Where a message rests for good: it was handed over, refused, or will never be tried.
SETTLED = frozenset(
    {
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.BOUNCED,
        MessageStatus.FAILED,
        MessageStatus.OPENED,
        MessageStatus.CLICKED,
        MessageStatus.REPLIED,
        MessageStatus.SUPPRESSED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELED,
    }
)


@dataclass
class Accounting:
    accepted: int
    provider_calls: int
    #: Accepted messages not settled (still waiting or ``sending``) at the end.
    lost: int
    #: Messages the provider received more than once.
    duplicated: int
    after_opt_out: int = 0
    after_erasure: int = 0
    http_5xx: int = 0
    notes: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        figures = {
            "accepted": self.accepted,
            "provider_calls": self.provider_calls,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "after_opt_out": self.after_opt_out,
            "after_erasure": self.after_erasure,
            "http_5xx": self.http_5xx,
            **self.notes,
        }
        return "accounting: " + " ".join(f"{k}={v}" for k, v in figures.items())

    def assert_kept(self) -> None:
        print(self.line())
        assert (self.lost, self.duplicated) == (0, 0), self.line()
        assert (self.after_opt_out, self.after_erasure, self.http_5xx) == (0, 0, 0), self.line()


def unsettled(message_ids: Iterable[int]) -> int:
    """How many of these messages are not in a settled state."""
    return (
        Message.objects.filter(id__in=list(message_ids)).exclude(status__in=list(SETTLED)).count()
    )


def message_ids_on_the_wire(received: Iterable) -> Counter[int]:
    """Our message id of every provider request that names one, counted.

    Twilio requests carry it in the status callback URL (``?m=<id>``), SendGrid in each
    personalization's ``custom_args``. A request naming no message id of ours (a
    LINE push: see the caller's own mapping of its retry keys) is not counted here.
    """
    counts: Counter[int] = Counter()
    for request in received:
        if request.method != "POST":
            continue
        if "/Messages.json" in request.path:
            callback = (request.form().get("StatusCallback") or [""])[0]
            ids = parse_qs(urlsplit(callback).query).get("m")
            if ids:
                counts[int(ids[0])] += 1
        elif request.path.startswith("/v3/mail/send"):
            try:
                body = json.loads(request.body or b"{}")
            except ValueError:
                continue
            # A message sent alone carries its id in the request's own custom_args.
            shared = (body.get("custom_args") or {}).get("message_id")
            for personalization in body.get("personalizations") or []:
                message_id = (personalization.get("custom_args") or {}).get("message_id") or shared
                if message_id:
                    counts[int(message_id)] += 1
    return counts


def duplicated(calls: Counter[int]) -> int:
    return sum(1 for n in calls.values() if n > 1)


def accepted_requests(received: Iterable) -> list:
    """The requests the provider answered 2xx: what it took (a refused request is not a
    delivery, so a message refused then accepted is not a duplicate)."""
    return [r for r in received if r.status is not None and 200 <= r.status < 300]
