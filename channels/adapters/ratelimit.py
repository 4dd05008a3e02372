"""Send-rate limits shared by every worker: GCRA on Redis/Valkey, with a per-process fallback.

A provider sender (a Twilio number allowed 1 message per second, a SendGrid
account) is used at once by several Celery worker processes, each sending from
a thread pool. ``RateLimiter`` keeps one limit for all of them in the store.

The algorithm is GCRA (the generic cell rate algorithm). The store holds one
value per key, the *theoretical arrival time* (TAT) of the next permit, in
microseconds of the store's own clock. Taking ``n`` permits moves the TAT on by
``n / rate``; the caller may go ahead once ``TAT - burst / rate`` is not in the
future. Every call is one atomic Lua script that reads the clock with ``TIME``
on the server, so the clocks of the workers do not matter, and that *reserves*
its slot at once: the answer is how long to sleep before using it. A caller
sleeps exactly that long, once - no polling - and callers are served in the
order they asked. The key expires when its TAT has passed (an idle key carries
no state), so idle keys vanish by themselves.

Over any window of ``w`` seconds at most ``burst + w * rate`` permits are
handed out, however many processes and threads share the key. Every user of
one key must configure the same rate and burst.

When the store cannot be reached (or answers with an error), ``acquire`` logs a
warning and falls back to a ``LocalRateLimiter`` at the same rate: sending goes
on, but the limit is then only per process (N processes may send N times the
rate). The store is tried again every ``retry_interval`` seconds; the first
call that succeeds logs that the shared limit is back and the store is used
from then on.

``LocalRateLimiter`` is the same algorithm on ``time.monotonic()`` behind a
lock: thread-safe, per process. It is the fallback, and the limiter used when
no store is configured.

``SenderHold`` is the provider's own word on the same store: a "not before" time
per sender, set when the provider answers 429 with its reset (``Retry-After``,
``X-RateLimit-Reset``), read before every request by every worker, so a limited
provider is not hammered by the rest of the backlog until the reset.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

logger = logging.getLogger(__name__)

#: Every key the limiter writes starts with this.
KEY_PREFIX = "orchestrator:rate:"
#: URL schemes of a store the limiter can use (``valkey[s]://`` are read as ``redis[s]://``).
STORE_SCHEMES = frozenset({"redis", "rediss", "valkey", "valkeys", "unix"})
#: Seconds between attempts to get back to an unreachable store.
DEFAULT_RETRY_INTERVAL = 5.0
#: Socket timeouts towards the store: a dead store must not hold sending up for long.
DEFAULT_SOCKET_TIMEOUT = 1.0
DEFAULT_CONNECT_TIMEOUT = 0.5

_MICROS = 1_000_000

# KEYS[1]: the key. ARGV: interval (microseconds per permit), burst, n, max_wait in
# microseconds (negative: no limit). Returns {granted (1/0), wait in microseconds}.
# A refusal (the wait would exceed max_wait) reserves nothing.
_GCRA_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local new_tat = tat + n * interval
local wait = new_tat - burst * interval - now
if wait < 0 then wait = 0 end
wait = math.ceil(wait)
if max_wait >= 0 and wait > max_wait then
  return {0, wait}
end
local ttl = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
return {1, wait}
"""


class RateLimitExceeded(Exception):
    """The permits would come later than the caller's ``max_wait``; nothing was reserved."""

    def __init__(self, key: str, wait: float, max_wait: float) -> None:
        super().__init__(
            f"rate limit {key!r}: the next permit is {wait:.3f} s away, "
            f"more than max_wait={max_wait:g} s"
        )
        self.key = key
        #: Seconds until the permits would have been granted.
        self.wait = wait
        self.max_wait = max_wait


class Limiter(Protocol):
    def acquire(self, n: int = 1, *, max_wait: float | None = None) -> float: ...


def _check_rate(rate_per_second: float, burst: int) -> tuple[float, int]:
    if (
        isinstance(rate_per_second, bool)
        or not isinstance(rate_per_second, int | float)
        or not math.isfinite(rate_per_second)
        or rate_per_second <= 0
    ):
        raise ValueError(f"rate_per_second must be a number above 0, got {rate_per_second!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be an integer of at least 1, got {burst!r}")
    return float(rate_per_second), burst


def _check_acquire(n: int, max_wait: float | None) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if max_wait is not None and (
        isinstance(max_wait, bool) or not isinstance(max_wait, int | float) or max_wait < 0
    ):
        raise ValueError(f"max_wait must be None or a number of seconds >= 0, got {max_wait!r}")


# Locks of module state and of every limiter, re-created in a forked child: a lock
# another thread held at the moment of the fork would otherwise stay locked there.
_registry_lock = threading.Lock()
_with_locks: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for obj in list(_with_locks):
        obj._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class LocalRateLimiter:
    """GCRA in this process only: thread-safe, nothing shared with other processes.

    ``acquire`` reserves the next slot under a lock and sleeps (outside it) until
    the slot comes; threads are served in the order they asked.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        name: str = "",
    ) -> None:
        self.rate_per_second, self.burst = _check_rate(rate_per_second, burst)
        self.interval = 1.0 / self.rate_per_second
        self.name = name or f"local:{self.rate_per_second:g}/s"
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf
        self._lock = threading.Lock()
        _with_locks.add(self)

    def __repr__(self) -> str:
        return f"LocalRateLimiter({self.rate_per_second:g}/s, burst={self.burst})"

    def acquire(self, n: int = 1, *, max_wait: float | None = None) -> float:
        """Wait until ``n`` permits are granted; return the seconds waited.

        Raises ``RateLimitExceeded`` (reserving nothing) if that would take longer
        than ``max_wait`` seconds.
        """
        _check_acquire(n, max_wait)
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            new_tat = tat + n * self.interval
            wait = max(0.0, new_tat - self.burst * self.interval - now)
            if max_wait is not None and wait > max_wait:
                raise RateLimitExceeded(self.name, wait, max_wait)
            self._tat = new_tat
        if wait > 0:
            self._sleep(wait)
        return wait


_local_limiters: dict[tuple[str, float, int], LocalRateLimiter] = {}


def local_limiter(key: str, rate_per_second: float, burst: int = 1) -> LocalRateLimiter:
    """The process-wide ``LocalRateLimiter`` of ``key``: every user of one key in this
    process shares it (two adapters on one sender, or a ``RateLimiter``'s fallback)."""
    rate, burst = _check_rate(rate_per_second, burst)
    with _registry_lock:
        limiter = _local_limiters.get((key, rate, burst))
        if limiter is None:
            limiter = LocalRateLimiter(rate, burst, name=f"{KEY_PREFIX}{key}")
            _local_limiters[(key, rate, burst)] = limiter
        return limiter


def is_store_url(url: str) -> bool:
    """Whether ``url`` names a Redis/Valkey server the limiter can use."""
    return isinstance(url, str) and urlsplit(url).scheme.lower() in STORE_SCHEMES


def _redis_url(url: str) -> str:
    """redis-py does not know the ``valkey`` schemes; the protocol is the same."""
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    scheme = {"valkey": "redis", "valkeys": "rediss"}.get(scheme.lower(), scheme)
    return f"{scheme}://{rest}"


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


# One client (and connection pool) per store URL and process. A forked worker must
# never use its parent's connections, so the process id is part of the key.
_clients: dict[tuple[int, str, float, float], tuple[redis.Redis, Any]] = {}


def _client(url: str, socket_timeout: float, connect_timeout: float) -> tuple[redis.Redis, Any]:
    pid = os.getpid()
    cache_key = (pid, url, socket_timeout, connect_timeout)
    found = _clients.get(cache_key)
    if found is not None:
        return found
    with _registry_lock:
        found = _clients.get(cache_key)
        if found is None:
            for stale in [k for k in _clients if k[0] != pid]:
                # The parent's clients: dropped, never used (nor closed) here.
                del _clients[stale]
            client = redis.Redis.from_url(
                _redis_url(url),
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                # One immediate retry on a fresh connection (a pooled one may have been
                # cut by a store restart), no backoff: an outage goes to the fallback.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=30,
            )
            found = (client, client.register_script(_GCRA_SCRIPT))
            _clients[cache_key] = found
        return found


class RateLimiter:
    """A send-rate limit shared by every process and thread using ``key`` on one store.

    ``rate_per_second`` permits per second on average, up to ``burst`` at once after
    an idle spell. The store key is ``orchestrator:rate:<key>``; it expires once the
    limiter has been idle long enough to carry no state.

    If the store is unreachable, a warning is logged and a process-local limiter at
    the same rate takes over: sending continues, but the limit then holds only per
    process. The store is tried again every ``retry_interval`` seconds and used again
    as soon as it answers.

    Safe to share between threads, and to use in a forked child (the child opens its
    own connections).
    """

    def __init__(
        self,
        key: str,
        rate_per_second: float,
        burst: int = 1,
        *,
        url: str,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        if not is_store_url(url):
            raise ValueError(
                f"url must be a Redis/Valkey URL ({', '.join(sorted(STORE_SCHEMES))}), "
                f"got {redacted(str(url))!r}"
            )
        self.rate_per_second, self.burst = _check_rate(rate_per_second, burst)
        self.interval = 1.0 / self.rate_per_second
        self.key = f"{KEY_PREFIX}{key}"
        self.url = url
        self.retry_interval = float(retry_interval)
        self.socket_timeout = float(socket_timeout)
        self.connect_timeout = float(connect_timeout)
        self.fallback = local_limiter(key, self.rate_per_second, self.burst)
        self._args = (repr(self.interval * _MICROS), self.burst)
        self._down = False
        self._retry_at = 0.0
        self._lock = threading.Lock()
        _with_locks.add(self)

    def __repr__(self) -> str:
        return (
            f"RateLimiter({self.key!r}, {self.rate_per_second:g}/s, burst={self.burst}, "
            f"url={redacted(self.url)!r})"
        )

    @property
    def degraded(self) -> bool:
        """Whether the store is unreachable and the process-local fallback is in use."""
        return self._down

    def acquire(self, n: int = 1, *, max_wait: float | None = None) -> float:
        """Wait until ``n`` permits are granted; return the seconds waited.

        The wait is the one the store computed; the caller sleeps it once. Raises
        ``RateLimitExceeded`` (reserving nothing) if it would be longer than
        ``max_wait`` seconds. ``n`` may exceed ``burst``: the call then waits for
        the permits beyond the burst.
        """
        _check_acquire(n, max_wait)
        if not self._use_store():
            return self.fallback.acquire(n, max_wait=max_wait)
        max_wait_us = -1 if max_wait is None else math.floor(max_wait * _MICROS)
        try:
            _, script = _client(self.url, self.socket_timeout, self.connect_timeout)
            granted, wait_us = script(keys=[self.key], args=[*self._args, n, max_wait_us])
        except RedisError as exc:
            self._store_failed(exc)
            return self.fallback.acquire(n, max_wait=max_wait)
        if self._down:
            self._store_back()
        wait = int(wait_us) / _MICROS
        if not int(granted):
            raise RateLimitExceeded(self.key, wait, max_wait if max_wait is not None else 0.0)
        if wait > 0:
            time.sleep(wait)
        return wait

    # --- the store's health ---------------------------------------------------------

    def _use_store(self) -> bool:
        """False while the store is down, except for one caller per ``retry_interval``."""
        if not self._down:
            return True
        now = time.monotonic()
        with self._lock:
            if not self._down:
                return True
            if now >= self._retry_at:
                self._retry_at = now + self.retry_interval  # this caller probes the store
                return True
            return False

    def _store_failed(self, exc: RedisError) -> None:
        with self._lock:
            first = not self._down
            self._down = True
            self._retry_at = time.monotonic() + self.retry_interval
        if first:
            logger.warning(
                "Rate limit store %s unreachable (%s): %r falls back to a per-process "
                "limit of %g/s - the limit no longer holds across processes until the "
                "store is back",
                redacted(self.url),
                exc,
                self.key,
                self.rate_per_second,
            )
        else:
            logger.debug("Rate limit store %s still unreachable: %s", redacted(self.url), exc)

    def _store_back(self) -> None:
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            logger.info(
                "Rate limit store %s reachable again: %r is shared across processes again",
                redacted(self.url),
                self.key,
            )


# --- the provider's "not before" ---------------------------------------------------------

#: Every hold key starts with this (the rest is the sender's rate key).
HOLD_PREFIX = "orchestrator:hold:"

# KEYS[1]: the key. ARGV: the "not before" time (epoch seconds, the workers' clock, as
# text), the key's lifetime in milliseconds. A hold only ever moves later.
_HOLD_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class SenderHold:
    """Until when a sender must make no provider request, shared by every worker.

    The time is kept as epoch seconds of the workers' own (NTP-synchronized) clock,
    since the provider's reset is a wall-clock time too. Each process also keeps the
    latest hold it knows in memory: if the store is unreachable (or none is
    configured) the hold still applies to this process, and the store is tried again
    every ``retry_interval`` seconds.
    """

    def __init__(
        self,
        key: str,
        *,
        url: str = "",
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = f"{HOLD_PREFIX}{key}"
        self.url = url
        self.retry_interval = float(retry_interval)
        self._clock = clock
        self._local = 0.0
        self._retry_at = 0.0
        self._lock = threading.Lock()
        _with_locks.add(self)

    def __repr__(self) -> str:
        return f"SenderHold({self.key!r}, url={redacted(self.url)!r})"

    def hold(self, seconds: float) -> float:
        """No request before ``seconds`` from now (a later hold already set wins).

        Returns the "not before" time (epoch seconds).
        """
        until = self._clock() + max(float(seconds), 0.0)
        with self._lock:
            self._local = max(self._local, until)
        client = self._store()
        if client is not None:
            ttl_ms = max(math.ceil(seconds * 1000), 0) + 1000
            try:
                client.eval(_HOLD_SCRIPT, 1, self.key, repr(until), ttl_ms)
            except RedisError as exc:
                self._store_failed(exc)
        return until

    def remaining(self) -> float:
        """Seconds until requests may go out again; 0.0 when there is no hold."""
        until = self._local
        client = self._store()
        if client is not None:
            try:
                stored = client.get(self.key)
            except RedisError as exc:
                self._store_failed(exc)
            else:
                if stored is not None:
                    until = max(until, float(stored))
        return max(until - self._clock(), 0.0)

    def clear(self) -> None:
        """Lift the hold (tests, or an operator who knows the limit was raised)."""
        with self._lock:
            self._local = 0.0
        client = self._store()
        if client is not None:
            try:
                client.delete(self.key)
            except RedisError as exc:
                self._store_failed(exc)

    def _store(self) -> redis.Redis | None:
        if not self.url or time.monotonic() < self._retry_at:
            return None
        client, _script = _client(self.url, DEFAULT_SOCKET_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)
        return client

    def _store_failed(self, exc: RedisError) -> None:
        logger.warning(
            "Rate limit store %s unreachable (%s): the provider's hold %r is kept in this "
            "process only for now",
            redacted(self.url),
            exc,
            self.key,
        )
        self._retry_at = time.monotonic() + self.retry_interval


_holds: dict[tuple[str, str], SenderHold] = {}


def sender_hold(key: str, url: str = "") -> SenderHold:
    """The process-wide ``SenderHold`` of ``key`` on ``url`` ("": this process only)."""
    with _registry_lock:
        found = _holds.get((key, url))
        if found is None:
            found = _holds[(key, url)] = SenderHold(key, url=url)
        return found


def clear_holds() -> None:
    """Lift every hold this process knows of, in memory and in their stores."""
    with _registry_lock:
        holds = list(_holds.values())
    for hold in holds:
        hold.clear()
