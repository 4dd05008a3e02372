"""Adapters for the metrics tests: a slow provider and one whose call blows up."""

from __future__ import annotations

import time

from channels.adapters.locmem import LocmemAdapter


class SlowAdapter(LocmemAdapter):
    """The locmem adapter, taking ``delay`` seconds per call."""

    provider = "slow"

    def __init__(self, *, alias: str, delay: float = 0.3, **options) -> None:
        super().__init__(alias=alias, **options)
        self.delay = delay

    def send_batch(self, batch):
        time.sleep(self.delay)
        return super().send_batch(batch)


class ExplodingAdapter(LocmemAdapter):
    """A provider call that raises: the dispatcher cannot tell whether it was sent."""

    provider = "exploding"

    def send_batch(self, batch):
        raise ConnectionResetError("connection reset by peer")
