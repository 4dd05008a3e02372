"""Adapters that stand in for a worker dying mid-send (the process edge, not our code)."""

from __future__ import annotations

import os

from channels.adapters.locmem import LocmemAdapter
from channels.devinbox.adapter import DevInboxAdapter


class DieAfterAcceptAdapter(DevInboxAdapter):
    """The provider takes the batch (rows land in the dev inbox), then the worker is killed."""

    def send_batch(self, batch):
        super().send_batch(batch)
        os._exit(137)


class ArrivalDuringSendAdapter(LocmemAdapter):
    """Locmem; while the provider takes the first request, ``arrive`` runs once (another
    process queuing a triggered send, say, while this batch is under way)."""

    def __init__(self, *, alias: str, arrive=None, **options) -> None:
        super().__init__(alias=alias, **options)
        self.arrive = arrive

    def send_batch(self, batch):
        results = super().send_batch(batch)
        arrive, self.arrive = self.arrive, None
        if arrive is not None:
            arrive()
        return results
