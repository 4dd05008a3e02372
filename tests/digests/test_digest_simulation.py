"""The simulation counts a digest step as one message per digest: arrivals within
the window (per key) join it, and it goes at the window's end."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from journeys.simulation import _digest_send_at

T0 = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.UTC)


def _arrive(world, minutes, order, step):
    entrant = SimpleNamespace(customer_id=1, replica=0)
    return _digest_send_at(
        world, entrant, step, {"order_id": order}, T0 + dt.timedelta(minutes=minutes)
    )


def test_arrivals_within_the_window_per_order_make_one_message_each():
    world = SimpleNamespace(notes=set(), digests={})
    step = {"key": "updates", "config": {"window_minutes": 30, "key": "order_id"}}
    sends = [
        _arrive(world, m, order, step) for m, order in [(0, "A"), (10, "A"), (20, "B"), (40, "A")]
    ]
    assert sends == [
        T0 + dt.timedelta(minutes=30),
        None,
        T0 + dt.timedelta(minutes=50),
        T0 + dt.timedelta(minutes=70),
    ]
    assert any("digest" in note for note in world.notes)


def test_a_count_closes_the_digest():
    world = SimpleNamespace(notes=set(), digests={})
    step = {"key": "updates", "config": {"window_minutes": 600, "count": 2}}
    sends = [_arrive(world, m, "A", step) for m in (0, 1, 2, 3)]
    assert [s is not None for s in sends] == [True, False, True, False]
