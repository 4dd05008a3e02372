"""An adapter that accepts everything at once and keeps nothing: for benchmarks.

It measures the dispatcher itself - claim, consent, render, record - with a
provider of zero latency.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Sequence

from channels.adapters.base import ChannelAdapter, OutboundMessage, SendResult

# A per-process prefix plus a counter: unique ids without a uuid per message.
_prefix = f"null-{uuid.uuid4().hex[:12]}-{os.getpid()}-"
_counter = itertools.count(1)


class NullAdapter(ChannelAdapter):
    provider = "null"

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        return [
            SendResult(
                message_id=m.message_id,
                accepted=True,
                provider_message_id=f"{_prefix}{next(_counter)}",
            )
            for m in batch
        ]
