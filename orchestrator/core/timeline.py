"""The shape of one line on a customer's timeline.

Plain data, so that every app contributing lines (journeys) and the read model that
merges them (``orchestrator.analytics.timeline``) share it without importing each other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: dt.datetime
    kind: str  # event, message, status, consent, journey
    title: str
    detail: str = ""
    url: str = ""
