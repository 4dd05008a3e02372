"""Waking a worker once a transaction commits: the one way domain code queues a task.

The outbox rows (messages, pending events, stored webhooks) are the truth; a task
only says "there is work now" so a worker does not wait for beat's next sweep. So:

- the task is published by name, never by importing its module, which keeps the
  code that queues work free of the entry points that do it (no import circles);
- it goes out only after commit, so the worker sees the rows that caused it;
- one kick per task name per transaction, however many rows the transaction wrote;
- a broker that is down is logged, not raised: beat's periodic sweep still finds
  the rows.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)


class _Kick:
    """The on-commit callback for one task name; equal kicks coalesce."""

    __slots__ = ("expires", "kwargs", "name")

    def __init__(self, name: str, expires: float, kwargs: dict[str, Any] | None) -> None:
        self.name = name
        self.expires = expires
        self.kwargs = kwargs

    def __call__(self) -> None:
        publish_now(self.name, expires=self.expires, kwargs=self.kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Kick) and other.name == self.name and other.kwargs == self.kwargs

    def __hash__(self) -> int:
        return hash(self.name)


def publish_now(name: str, *, expires: float = 30, kwargs: dict[str, Any] | None = None) -> None:
    """Publish the task ``name`` at once (routing by name, see ``orchestrator.celery``)."""
    from orchestrator.celery import app

    try:
        app.send_task(name, kwargs=kwargs or {}, expires=expires, retry=False)
    except Exception:  # the broker is unreachable: the periodic sweep will do the work
        logger.warning("could not publish %s; the periodic sweep will run it", name)


def publish_on_commit(
    name: str, *, expires: float = 30, kwargs: dict[str, Any] | None = None
) -> None:
    """Publish the task ``name`` once the current transaction commits (at once outside one).

    Repeated calls in one transaction queue a single publish. Django keeps the
    pending callbacks per connection, savepoints included (a rolled-back savepoint
    drops its callbacks), so looking there is exact; this is the only place that does.
    """
    kick = _Kick(name, expires, kwargs)
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        func == kick for _sids, func, _robust in connection.run_on_commit
    ):
        return
    transaction.on_commit(kick)
