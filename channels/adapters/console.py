"""An adapter that prints each message to stdout (or a given stream) and accepts it."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Sequence
from typing import TextIO

from channels.adapters.base import ChannelAdapter, OutboundMessage, SendResult

_write_lock = threading.Lock()


class ConsoleAdapter(ChannelAdapter):
    provider = "console"

    def __init__(self, *, alias: str, stream: TextIO | None = None, **options) -> None:
        super().__init__(alias=alias, **options)
        self.stream = stream

    def format(self, message: OutboundMessage) -> str:
        lines = [f"--- {message.channel} #{message.message_id} to {message.to}"]
        if message.sender:
            lines.append(f"From: {message.sender}")
        if message.subject:
            lines.append(f"Subject: {message.subject}")
        lines.append("")
        lines.append(message.body)
        if message.html:
            lines.append(f"[html part: {len(message.html)} characters]")
        return "\n".join(lines) + "\n"

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        # Resolved per call, so pytest's capsys and redirect_stdout see the output.
        stream = self.stream or sys.stdout
        text = "".join(self.format(m) for m in batch)
        with _write_lock:  # keep one batch's lines together across worker threads
            stream.write(text)
            stream.flush()
        return [
            SendResult(
                message_id=m.message_id,
                accepted=True,
                provider_message_id=f"console-{uuid.uuid4().hex}",
            )
            for m in batch
        ]
