"""The preference center's per-IP request limit, counted in the shared Redis/Valkey store.

Counted in the store the send rates use (``RATE_LIMIT_URL``, else a Redis/Valkey
broker), so the limit holds across every web process rather than per process. A
fixed window per client address: the first request starts the window (the key's
expiry, on the store's clock), the count is one atomic script. Keys are client
addresses - unbounded - so each expires with its window and nothing is kept in
the process.

When no store is configured, or it cannot be reached, the count falls back to
Django's cache (per process unless ``CACHES`` is shared) and the store is tried
again after ``RETRY_INTERVAL`` seconds: the page stays up, the limit is then per
process.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis
from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from channels.adapters.ratelimit import is_store_url, redacted

logger = logging.getLogger(__name__)

KEY_PREFIX = "orchestrator:prefcenter:"
#: Requests per window (seconds) from one IP address, valid token or not.
DEFAULT_RATE_LIMIT = (60, 60)
#: Seconds before a store that failed is tried again.
RETRY_INTERVAL = 5.0
#: A page request must not wait long on a sick store.
SOCKET_TIMEOUT = 0.25

# KEYS[1]: the client's key; ARGV[1]: the window in seconds. Returns the count so far.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return n
"""


def store_url() -> str:
    """``RATE_LIMIT_URL``, else the Celery broker when it is Redis/Valkey; "" for none."""
    url = getattr(settings, "RATE_LIMIT_URL", None)
    if url is not None:
        return url if is_store_url(url) else ""
    broker = getattr(settings, "CELERY_BROKER_URL", None) or ""
    return broker if is_store_url(broker) and not broker.startswith("unix") else ""


class WindowLimiter:
    """At most ``limit`` requests per ``window`` seconds per client, on the store at
    ``url`` (every instance on one store shares the counts), else per process."""

    def __init__(self, *, url: str, limit: int, window: int) -> None:
        self.url = url
        self.limit = limit
        self.window = window
        self._script = None
        self._down = False
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def over_limit(self, client: str) -> bool:
        """Count one request from ``client``; whether it is beyond the limit."""
        count = self._store_count(client) if self.url else None
        if count is None:
            count = self._local_count(client)
        return count > self.limit

    def _store_count(self, client: str) -> int | None:
        """The count in the store, or None while the store is unreachable."""
        if self._down and time.monotonic() < self._retry_at:
            return None
        try:
            count = int(self._counter()(keys=[f"{KEY_PREFIX}{client}"], args=[self.window]))
        except RedisError as exc:
            with self._lock:
                first, self._down = not self._down, True
                self._retry_at = time.monotonic() + RETRY_INTERVAL
            if first:
                logger.warning(
                    "Preference center rate limit store %s unreachable (%s): counting per "
                    "process until it is back",
                    redacted(self.url),
                    exc,
                )
            return None
        if self._down:
            self._down = False
            logger.info("Preference center rate limit store %s is back", redacted(self.url))
        return count

    def _counter(self):
        with self._lock:
            if self._script is None or self._pid != os.getpid():
                # A forked process opens its own connections.
                scheme, rest = self.url.split("://", 1)
                scheme = {"valkey": "redis", "valkeys": "rediss"}.get(scheme.lower(), scheme)
                client = redis.Redis.from_url(
                    f"{scheme}://{rest}",
                    socket_timeout=SOCKET_TIMEOUT,
                    socket_connect_timeout=SOCKET_TIMEOUT,
                )
                self._script = client.register_script(_COUNT)
                self._pid = os.getpid()
            return self._script

    def _local_count(self, client: str) -> int:
        key = f"prefcenter:rate:{client}:{int(time.time() // self.window)}"
        cache.add(key, 0, timeout=self.window)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=self.window)
            return 1


_limiters: dict[tuple[str, int, int], WindowLimiter] = {}


def limiter() -> WindowLimiter:
    """The limiter for the current settings, one per process."""
    limit, window = getattr(settings, "PREFERENCE_CENTER_RATE_LIMIT", DEFAULT_RATE_LIMIT)
    key = (store_url(), limit, window)
    found = _limiters.get(key)
    if found is None:
        found = _limiters.setdefault(key, WindowLimiter(url=key[0], limit=limit, window=window))
    return found
