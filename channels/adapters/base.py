"""The adapter contract: frozen dataclasses in, frozen dataclasses out.

Adapters know no models. The dispatcher hands a batch of ``OutboundMessage`` to
``ChannelAdapter.send`` outside any database transaction and gets one
``SendResult`` per message back, in the same order. A failure of one message is
a result, not an exception; an exception from ``send`` means the whole batch
failed the same way (e.g. the provider is unreachable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class AdapterError(Exception):
    """A provider failure. ``permanent`` failures are never retried."""

    def __init__(self, message: str, *, permanent: bool, code: str = "") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    message_id: int
    channel: str
    to: str
    body: str
    subject: str = ""
    html: str = ""
    sender: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: int
    accepted: bool
    provider_message_id: str = ""
    error: str = ""
    error_code: str = ""
    permanent: bool = False
    #: The provider may have accepted it (e.g. a timeout after the request went out):
    #: reconcile from status webhooks, never resend blindly.
    unknown: bool = False
    #: The failure says the address itself is unusable: a ``Suppression.Reason``
    #: ("stop", "invalid", "bounce", "complaint") to suppress it with, else empty.
    suppress: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class ChannelAdapter:
    """Base class. Subclasses set ``provider`` and implement ``send_batch``."""

    provider = "base"

    def __init__(self, *, alias: str, **options: Any) -> None:
        self.alias = alias
        self.options = options

    def send(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        if not batch:
            return []
        try:
            results = self.send_batch(batch)
        except AdapterError as exc:
            return [
                SendResult(
                    message_id=m.message_id,
                    accepted=False,
                    error=str(exc),
                    error_code=exc.code,
                    permanent=exc.permanent,
                )
                for m in batch
            ]
        if len(results) != len(batch):
            raise RuntimeError(
                f"{type(self).__name__} returned {len(results)} results for {len(batch)} messages"
            )
        return results

    def throttle(self, n: int = 1) -> None:
        """Block until ``n`` more provider calls fit this sender's configured send rate.

        Adapters call it just before each provider request. Without a configured rate
        it returns at once.
        """

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        raise NotImplementedError  # abstract: each adapter implements it
