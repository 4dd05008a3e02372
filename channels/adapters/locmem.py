"""An in-memory adapter for tests: sends land in ``outbox``, like ``django.core.mail.outbox``.

Failures are configured per address, so a test can exercise every outcome the
dispatcher handles without mocking it::

    CHANNEL_ADAPTERS = {"sms": {"BACKEND": "channels.adapters.locmem.LocmemAdapter",
                                "OPTIONS": {"fail": {"+15005550009": "transient"}}}}

``"permanent"`` and ``"transient"`` are refusals; ``"unknown"`` stands for a
timeout after the request went out (the provider may have it). Only accepted
messages are appended to the outbox: it is what a provider would have taken.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence

from channels.adapters.base import ChannelAdapter, OutboundMessage, SendResult

#: Every accepted message, in order, across all locmem adapters of the process.
outbox: list[OutboundMessage] = []
#: Every send attempt, accepted or not: (alias, message, outcome).
attempts: list[tuple[str, OutboundMessage, str]] = []

_lock = threading.Lock()
OUTCOMES = ("permanent", "transient", "unknown")


def clear() -> None:
    """Empty the outbox and the attempt log (tests call this between cases)."""
    with _lock:
        outbox.clear()
        attempts.clear()


class LocmemAdapter(ChannelAdapter):
    provider = "locmem"

    def __init__(self, *, alias: str, fail: Mapping[str, str] | None = None, **options) -> None:
        super().__init__(alias=alias, **options)
        self.fail = dict(fail or {})
        for address, outcome in self.fail.items():
            if outcome not in OUTCOMES:
                raise ValueError(f"fail[{address!r}]: expected one of {OUTCOMES}, got {outcome!r}")

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        results = []
        for message in batch:
            self.throttle()
            outcome = self.fail.get(message.to, "accepted")
            with _lock:
                attempts.append((self.alias, message, outcome))
                if outcome == "accepted":
                    outbox.append(message)
            if outcome == "accepted":
                results.append(
                    SendResult(
                        message_id=message.message_id,
                        accepted=True,
                        provider_message_id=f"locmem-{uuid.uuid4().hex}",
                    )
                )
            elif outcome == "unknown":
                results.append(
                    SendResult(
                        message_id=message.message_id,
                        accepted=False,
                        unknown=True,
                        error="timed out after the request was sent",
                        error_code="timeout",
                    )
                )
            else:
                permanent = outcome == "permanent"
                results.append(
                    SendResult(
                        message_id=message.message_id,
                        accepted=False,
                        permanent=permanent,
                        error=f"locmem refused {message.to} ({outcome})",
                        error_code="refused" if permanent else "try_again",
                    )
                )
        return results
