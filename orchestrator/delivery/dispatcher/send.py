"""The provider calls: one adapter call per channel in the batch, outside any transaction.

An adapter that raises leaves its messages "maybe sent" (unknown), never retried
into a duplicate; a message the adapter returned no result for is unknown too.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from channels.adapters import OutboundMessage, SendResult, get_adapter
from orchestrator.core.metrics import outcome_counts, provider_call_observe

logger = logging.getLogger("orchestrator.delivery.dispatcher")


def call_adapters(
    sendable: Sequence[OutboundMessage],
) -> list[tuple[SendResult, str]]:
    """Send grouped by channel; returns (result, provider) for every message."""
    by_channel: dict[str, list[OutboundMessage]] = defaultdict(list)
    for outbound in sendable:
        by_channel[outbound.channel].append(outbound)
    results: list[tuple[SendResult, str]] = []
    for channel, batch in by_channel.items():
        adapter = get_adapter(channel)
        provider = adapter.provider
        started = time.monotonic()
        try:
            channel_results = adapter.send(batch)
        except Exception as exc:
            # We cannot tell whether the request reached the provider, so these are
            # "maybe sent": left for reconciliation rather than retried into a duplicate.
            logger.exception("adapter %s failed for %d %s messages", provider, len(batch), channel)
            channel_results = [
                SendResult(
                    message_id=m.message_id,
                    accepted=False,
                    unknown=True,
                    error=f"{type(exc).__name__}: {exc}",
                    error_code="adapter_error",
                )
                for m in batch
            ]
        elapsed = time.monotonic() - started
        provider_call_observe(provider=provider, seconds=elapsed, **outcome_counts(channel_results))
        by_id = {r.message_id: r for r in channel_results}
        for outbound in batch:
            result = by_id.get(outbound.message_id) or SendResult(
                message_id=outbound.message_id,
                accepted=False,
                unknown=True,
                error="the adapter returned no result for this message",
                error_code="missing_result",
            )
            results.append((result, provider))
    return results
