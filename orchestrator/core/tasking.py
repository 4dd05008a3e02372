"""Waking a worker once a transaction commits: the one way domain code queues a task.

The outbox rows (messages, pending events, stored webhooks) are the truth; a task
only says "there is work now" so a worker does not wait for beat's next sweep. So:

- the task is published by name, never by importing its module, which keeps the
  code that queues work free of the entry points that do it (no import circles);
- it goes out only after commit, so the worker sees the rows that caused it;
- one kick per task name per transaction, however many rows the transaction wrote;
- kicks coalesce across transactions and processes too: a "kick pending" marker
  (``SET NX`` with a TTL on the Redis/Valkey store of the broker or ``RATE_LIMIT_URL``)
  lets only the first commit publish, and the task clears it when it starts, so at
  most one kick per task name waits in the broker however many commits want one
  (a backlog of thousands of stale kicks would starve beat's own periodic task);
- a broker that is down is logged, not raised: beat's periodic sweep still finds
  the rows. A store that is down (or none configured) means publishing every kick,
  as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from celery.signals import task_prerun, worker_init
from django.db import transaction

logger = logging.getLogger(__name__)

#: Every "kick pending" marker starts with this.
KICK_PREFIX = "orchestrator:kick:"
#: URL schemes of a store that can hold the markers.
_STORE_SCHEMES = frozenset({"redis", "rediss", "valkey", "valkeys", "unix"})
#: Seconds before an unreachable store is tried again (kicks are published meanwhile).
_RETRY_INTERVAL = 5.0
_SOCKET_TIMEOUT = 0.5


class _Kick:
    """The on-commit callback for one or more task names; equal kicks coalesce."""

    __slots__ = ("expires", "kwargs", "names")

    def __init__(
        self, names: tuple[str, ...], expires: float, kwargs: dict[str, Any] | None
    ) -> None:
        self.names = names
        self.expires = expires
        self.kwargs = kwargs

    def __call__(self) -> None:
        marked = _mark_pending(self.names, self.kwargs, self.expires)
        for name, pending in zip(self.names, marked, strict=True):
            if pending:
                publish_now(name, expires=self.expires, kwargs=self.kwargs)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Kick) and other.names == self.names and other.kwargs == self.kwargs
        )

    def __hash__(self) -> int:
        return hash(self.names)


def publish_now(name: str, *, expires: float = 30, kwargs: dict[str, Any] | None = None) -> None:
    """Publish the task ``name`` at once (routing by name, see ``orchestrator.celery``)."""
    from orchestrator.celery import app

    try:
        app.send_task(name, kwargs=kwargs or {}, expires=expires, retry=False)
    except Exception:  # the broker is unreachable: the periodic sweep will do the work
        logger.warning("could not publish %s; the periodic sweep will run it", name)
        # No kick is waiting after all: the next commit must be free to publish one.
        _clear_pending(name, kwargs)


def publish_on_commit(
    *names: str, expires: float = 30, kwargs: dict[str, Any] | None = None
) -> None:
    """Publish the tasks ``names`` once the current transaction commits (at once outside
    one).

    Repeated calls in one transaction queue a single publish. Django keeps the
    pending callbacks per connection, savepoints included (a rolled-back savepoint
    drops its callbacks), so looking there is exact; this is the only place that does.
    After the commit, each task is published only if no kick of it is already waiting
    in the broker (see the module docstring); the markers of several names are asked
    for in one round trip.
    """
    kick = _Kick(names, expires, kwargs)
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        func == kick for _sids, func, _robust in connection.run_on_commit
    ):
        return
    transaction.on_commit(kick)


# --- the "kick pending" markers ------------------------------------------------------


def marker_key(name: str, kwargs: dict[str, Any] | None = None) -> str:
    """The store key of the marker for a kick of ``name`` with ``kwargs``."""
    if not kwargs:
        return f"{KICK_PREFIX}{name}"
    digest = hashlib.sha1(  # noqa: S324 - a key, not security
        json.dumps(kwargs, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return f"{KICK_PREFIX}{name}:{digest}"


class _Store:
    """The markers' Redis/Valkey client, per process; None while unreachable or unset."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: Any = None
        self._key: tuple[int, str] | None = None
        self._retry_at = 0.0

    def client(self) -> Any:
        if time.monotonic() < self._retry_at:
            return None
        url = _store_url()
        if not url:
            return None
        key = (os.getpid(), url)
        if self._key != key:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            with self._lock:
                if self._key != key:
                    scheme, rest = url.split("://", 1)
                    scheme = {"valkey": "redis", "valkeys": "rediss"}.get(scheme.lower(), scheme)
                    self._client = redis.Redis.from_url(
                        f"{scheme}://{rest}",
                        socket_timeout=_SOCKET_TIMEOUT,
                        socket_connect_timeout=_SOCKET_TIMEOUT,
                        retry=Retry(NoBackoff(), 1),
                    )
                    self._key = key
        return self._client

    def failed(self, exc: Exception) -> None:
        if self._retry_at <= time.monotonic():
            logger.warning("kick marker store unreachable (%s): publishing every kick", exc)
        self._retry_at = time.monotonic() + _RETRY_INTERVAL


_store = _Store()


def _store_url() -> str:
    """``RATE_LIMIT_URL`` when set, else the Celery broker's URL if it is Redis/Valkey."""
    from django.conf import settings

    url = getattr(settings, "RATE_LIMIT_URL", None)
    if url is None:
        url = getattr(settings, "CELERY_BROKER_URL", None) or ""
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in _STORE_SCHEMES:
        return ""
    return "" if url.startswith("unix") else url


def _mark_pending(
    names: tuple[str, ...], kwargs: dict[str, Any] | None, expires: float
) -> list[bool]:
    """Set each name's marker unless set; True for each name this caller should publish.

    The marker lives as long as the kick may wait in the broker (``expires``): a kick
    that expired unrun leaves no marker behind to silence the next one.
    """
    client = _store.client()
    if client is None:
        return [True] * len(names)
    from redis.exceptions import RedisError

    ttl = max(int(expires * 1000), 1)
    try:
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.set(marker_key(name, kwargs), "1", nx=True, px=ttl)
        return [bool(marked) for marked in pipe.execute()]
    except RedisError as exc:
        _store.failed(exc)
        return [True] * len(names)


def _clear_pending(name: str, kwargs: dict[str, Any] | None = None) -> None:
    client = _store.client()
    if client is None:
        return
    from redis.exceptions import RedisError

    try:
        client.delete(marker_key(name, kwargs))
    except RedisError as exc:
        _store.failed(exc)


def clear_kick_markers() -> None:
    """Forget every pending-kick marker (a worker starting, or a purged broker)."""
    client = _store.client()
    if client is None:
        return
    from redis.exceptions import RedisError

    try:
        keys = list(client.scan_iter(match=f"{KICK_PREFIX}*", count=500))
        if keys:
            client.delete(*keys)
    except RedisError as exc:
        _store.failed(exc)


@task_prerun.connect(weak=False)
def _task_started(sender: Any = None, task: Any = None, kwargs: Any = None, **_: Any) -> None:
    # The kick is being served: work committed from now on needs a kick of its own.
    # (Cleared before the task's work, so nothing committed meanwhile is missed.)
    name = getattr(task, "name", None) or getattr(sender, "name", None)
    if name:
        _clear_pending(name, kwargs or None)


@worker_init.connect(weak=False)
def _worker_starting(**_: Any) -> None:
    # A marker may outlive its kick (a purged queue, a broker that lost its messages):
    # a starting worker drains the queue anyway, so the next commit may kick afresh.
    clear_kick_markers()
