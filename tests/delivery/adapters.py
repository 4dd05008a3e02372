"""Adapters that stand in for a worker dying mid-send (the process edge, not our code)."""

from __future__ import annotations

import os

from channels.devinbox.adapter import DevInboxAdapter


class DieAfterAcceptAdapter(DevInboxAdapter):
    """The provider takes the batch (rows land in the dev inbox), then the worker is killed."""

    def send_batch(self, batch):
        super().send_batch(batch)
        os._exit(137)
