"""The demo's saved segments (the demo broadcast addresses ``recent-buyers``)."""

from __future__ import annotations

from orchestrator.segments.services import segment_save

RECENT_BUYERS = {
    "all": [
        # Every demo customer is a runner with a favourite shoe; an imported one may not be.
        {"type": "attribute", "name": "favourite_shoe", "op": "exists"},
        {"type": "event", "name": "order.completed", "op": "happened", "within_days": 90},
    ]
}


def load_segments() -> int:
    """Create (or reset) the demo's segments; returns how many there are."""
    segment_save(
        key="recent-buyers",
        name="Runners who bought in the last 90 days",
        description="Customers with a favourite shoe who completed an order in the last 90 days.",
        conditions=RECENT_BUYERS,
    )
    return 1
