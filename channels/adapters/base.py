"""The adapter contract: frozen dataclasses in, frozen dataclasses out.

Adapters know no models. The dispatcher hands a batch of ``OutboundMessage`` to
``ChannelAdapter.send`` outside any database transaction and gets one
``SendResult`` per message back, in the same order. A failure of one message is
a result, not an exception; an exception from ``send`` means the whole batch
failed the same way (e.g. the provider is unreachable).

The fixed sequence
------------------

``ChannelAdapter`` runs what every provider shares: the fan-out of a batch over
``concurrency`` threads (``fan_out``), the send rate (``throttle``), the
``timeout`` and ``concurrency`` options, and every outcome (``attempt``): sent,
failed permanently, failed for now (the request never left: a connect-phase error
of ``CONNECT_PHASE_ERRORS``), and "maybe sent" (``SendResult.unknown``: a read
timeout or a connection lost once the request was written, or an unexpected
error). A provider module fills only the middle - build the payload, post it,
read the per-recipient status - and reports a refusal by raising ``AdapterError``.
A provider is this module's subclass in one module plus its webhook module
(``channels.webhooks.providers``) and a registry line there.

Send rate
---------

Every adapter accepts these ``OPTIONS`` (``RATE_LIMIT_OPTIONS``) on top of its own,
and calls ``self.throttle()`` just before each provider request::

    "OPTIONS": {
        "rate_per_second": 1,      # messages per second for this sender, all workers
        "rate_burst": 1,           # permits at once after an idle spell (default 1)
        "rate_key": "twilio:+15017122661",  # default "<provider>:<alias>"
        "rate_limit_url": "redis://127.0.0.1:6379/0",  # default: see below
    }

Without ``rate_per_second`` nothing is throttled. The limit is shared by every
Celery worker process and every sending thread through a Redis/Valkey store
(``channels.adapters.ratelimit.RateLimiter``): ``rate_limit_url``, else the
``RATE_LIMIT_URL`` setting, else ``CELERY_BROKER_URL`` when it is a
``redis://``, ``rediss://``, ``valkey://`` or ``valkeys://`` URL. Without any of
them (or with ``rate_limit_url`` or ``RATE_LIMIT_URL`` set to ``""``) the limit is
kept per process only. If the store becomes unreachable, sending goes on with a
per-process limit at the same rate (a warning is logged) until it is back.

The limit belongs to the *sender*, not the alias: two aliases that send through
one sender (the same Twilio number, the same SendGrid account) must set the same
``rate_key``, and the same ``rate_per_second`` and ``rate_burst``, so that they
draw from one budget.

The provider's reset
--------------------

A refusal that names when to come back (``Retry-After`` in seconds or as an HTTP
date, ``X-RateLimit-Reset`` in epoch seconds) is reported the same way by every
adapter: ``SendResult.retry_after``, in seconds (``provider_reset``). A 429 with a
reset is the sender's limit, not the message's: it also *holds the sender*
(``channels.adapters.ratelimit.SenderHold``, on the same store as the send rate,
keyed by ``rate_key``) so that until the reset ``attempt`` makes no request for any
message of any worker and reports them ``held`` (``SendResult.attempted`` False,
``retry_after`` the time left) instead of spending their attempts on certain 429s.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    MaxRetryError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError

if TYPE_CHECKING:
    from channels.adapters.ratelimit import Limiter, SenderHold

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

#: The options every adapter accepts for its send rate (see the module docstring).
RATE_LIMIT_OPTIONS = frozenset({"rate_per_second", "rate_burst", "rate_key", "rate_limit_url"})
#: The options of an adapter that calls a provider over HTTP (``configure_transport``).
TRANSPORT_OPTIONS = frozenset({"timeout", "concurrency"})
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 8
#: The longest hold a provider's reset sets on a sender: a reset further away (or a
#: garbled one) is cut to this, and the messages' own retries take it from there.
MAX_HOLD_SECONDS = 6 * 3600.0
#: An ``X-RateLimit-Reset`` above this is an epoch time; below, a number of seconds.
_EPOCH_THRESHOLD = 1_000_000_000

#: urllib3 errors raised before a request is written: the provider never saw it.
#: (``NewConnectionError`` - refused, DNS - is a ``ConnectTimeoutError``; a pool closed
#: by ``close()`` under a request that had not yet taken a connection is a ``ClosedPoolError``.)
CONNECT_PHASE_ERRORS = (ConnectTimeoutError, Urllib3SSLError, ProxyError, ClosedPoolError)
#: Errors once the request may have been written: the provider may have it.
CONNECTION_LOST_ERRORS = (ProtocolError, HTTPException, OSError)
#: Everything the transport raises that ``attempt`` classifies.
TRANSPORT_ERRORS = (
    *CONNECT_PHASE_ERRORS,
    MaxRetryError,
    ReadTimeoutError,
    *CONNECTION_LOST_ERRORS,
)


class AdapterError(Exception):
    """The one error a provider's middle step raises: the provider refused, or we will
    not send as it is. ``attempt`` makes it the result of every message of the request.

    ``permanent`` failures are never retried; ``unknown`` means the provider may have
    taken it after all (reconcile, never resend blindly). ``suppress`` names a
    ``Suppression.Reason`` when the address itself is unusable.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: str,
        unknown: bool = False,
        suppress: str = "",
        detail: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        self.unknown = unknown
        self.suppress = suppress
        self.detail = detail or {}
        #: Seconds until the provider's reset, when it named one (``provider_reset``).
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    message_id: int
    channel: str
    to: str
    body: str
    subject: str = ""
    html: str = ""
    sender: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: int
    accepted: bool
    provider_message_id: str = ""
    error: str = ""
    error_code: str = ""
    permanent: bool = False
    #: The provider may have accepted it (e.g. a timeout after the request went out):
    #: reconcile from status webhooks, never resend blindly.
    unknown: bool = False
    #: The failure says the address itself is unusable: a ``Suppression.Reason``
    #: ("stop", "invalid", "bounce", "complaint") to suppress it with, else empty.
    suppress: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    #: Seconds from now before which the provider asked not to be tried again
    #: (``Retry-After``, ``X-RateLimit-Reset``); None when it did not say.
    retry_after: float | None = None
    #: False when no request was made for it (the sender is held until the provider's
    #: reset): the try does not count as an attempt.
    attempted: bool = True


def provider_reset(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds until the reset a provider's answer names; None if it names none.

    ``Retry-After`` is read as seconds or as an HTTP date, ``X-RateLimit-Reset`` as
    epoch seconds (SendGrid) or, when small, as seconds; with both, the later wins.
    A reset already past is 0.0. Header names are matched case-insensitively.
    """
    if not headers:
        return None
    now = time.time() if now is None else now
    found: list[float] = []
    retry_after = _header(headers, "retry-after")
    if retry_after:
        seconds = _number(retry_after)
        if seconds is None:
            try:
                when = email.utils.parsedate_to_datetime(retry_after)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=dt.UTC)
                seconds = when.timestamp() - now
        if seconds is not None:
            found.append(seconds)
    reset = _number(_header(headers, "x-ratelimit-reset"))
    if reset is not None:
        found.append(reset - now if reset > _EPOCH_THRESHOLD else reset)
    if not found:
        return None
    return max(0.0, max(found))


def _header(headers: Any, name: str) -> str:
    value = headers.get(name) if hasattr(headers, "get") else None
    if value is None and hasattr(headers, "items"):
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return str(value).strip() if value is not None else ""


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# Guards the lazy creation of adapters' limiters; re-created in a forked child, where
# a lock held by another thread of the parent at the fork would stay locked.
_limiter_lock = threading.Lock()


def _reset_limiter_lock() -> None:
    global _limiter_lock
    _limiter_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_limiter_lock)


def _default_rate_limit_url() -> str:
    """The store from the settings: ``RATE_LIMIT_URL``, else a Redis/Valkey Celery broker.

    ``""`` means a per-process limit.
    """
    from django.conf import settings

    from channels.adapters.ratelimit import is_store_url, redacted

    url = getattr(settings, "RATE_LIMIT_URL", None)
    if url is not None:
        if url != "" and not is_store_url(url):
            raise ImproperlyConfigured(
                "RATE_LIMIT_URL must be a redis://, rediss://, valkey://, valkeys:// or "
                f"unix:// URL, or empty for a per-process limit; got {redacted(str(url))!r}"
            )
        return url
    broker = getattr(settings, "CELERY_BROKER_URL", None) or ""
    return broker if is_store_url(broker) and not broker.startswith("unix") else ""


class ChannelAdapter:
    """Base class. Subclasses set ``provider`` and implement ``send_one`` (one request
    per message, fanned out by the default ``send_batch``) or ``send_batch``."""

    provider = "base"
    #: The provider's name in error texts and logs.
    label = "the provider"
    #: ``error_code`` of the outcomes the base builds: the request never left, no answer
    #: in time, the connection lost after the request was written, an unexpected error.
    connect_code = "connect"
    timeout_code = "timeout"
    lost_code = "connection_lost"
    unexpected_code = "unexpected"
    #: What to do about a "maybe sent" message, said in its error.
    unknown_advice = "reconcile from the provider's reports, do not resend"
    #: Requests in flight per batch; adapters that call a provider read it from OPTIONS.
    concurrency = 1
    timeout: float | None = None
    thread_name_prefix = ""
    #: The send rate from ``OPTIONS``; None: not throttled.
    rate_per_second: float | None = None
    _limiter: Limiter | None = None
    _hold: SenderHold | None = None

    def __init__(self, *, alias: str, **options: Any) -> None:
        self.alias = alias
        self.options = options
        self._configure_rate_limit(options)

    def send(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        if not batch:
            return []
        try:
            results = self.send_batch(batch)
        except AdapterError as exc:
            return self.failed(batch, exc)
        if len(results) != len(batch):
            raise RuntimeError(
                f"{type(self).__name__} returned {len(results)} results for {len(batch)} messages"
            )
        return results

    def throttle(self, n: int = 1) -> None:
        """Block until ``n`` more provider calls fit this sender's configured send rate.

        Adapters call it just before each provider request. Without a configured rate
        it returns at once. The limit holds across all threads and worker processes
        that share the store (see the module docstring).
        """
        limiter = self.rate_limiter()
        if limiter is not None:
            limiter.acquire(n)

    def rate_limiter(self) -> Limiter | None:
        """The limiter ``throttle`` uses, created on first use; None without a rate.

        It can be used from any thread, and after a fork (the shared limiter opens
        connections of its own in each process).
        """
        if self.rate_per_second is None:
            return None
        limiter = self._limiter
        if limiter is None:
            with _limiter_lock:
                limiter = self._limiter
                if limiter is None:
                    limiter = self._limiter = self._make_limiter()
        return limiter

    # --- the provider's reset --------------------------------------------------------

    def sender_hold(self) -> SenderHold:
        """This sender's hold (``rate_key``), on the rate limit's store if there is one."""
        hold = self._hold
        if hold is None:
            from channels.adapters.ratelimit import sender_hold

            url = self.rate_limit_url if self.rate_per_second is not None else None
            if url is None:
                url = _default_rate_limit_url()
            hold = self._hold = sender_hold(self.rate_key, url)
        return hold

    def provider_reset(self, headers: Any, *, status: int) -> float | None:
        """Seconds until the reset the answer's headers name (``provider_reset``).

        A 429 with a reset is the sender's limit: every worker holds back all requests
        for this sender until then.
        """
        seconds = provider_reset(headers)
        if seconds is not None and status == 429 and seconds > 0:
            self.sender_hold().hold(min(seconds, MAX_HOLD_SECONDS))
            logger.warning(
                "%s rate limited %s: no requests for %.0f s", self.label, self.rate_key, seconds
            )
        return seconds

    def _make_limiter(self) -> Limiter:
        from channels.adapters.ratelimit import RateLimiter, local_limiter

        assert self.rate_per_second is not None
        if not self.rate_limit_url:
            return local_limiter(self.rate_key, self.rate_per_second, self.rate_burst)
        return RateLimiter(
            self.rate_key, self.rate_per_second, self.rate_burst, url=self.rate_limit_url
        )

    def _configure_rate_limit(self, options: dict[str, Any]) -> None:
        from channels.adapters.ratelimit import is_store_url, redacted

        where = f"CHANNEL_ADAPTERS[{self.alias!r}]['OPTIONS']"
        self._limiter = None
        self.rate_per_second = None
        self.rate_burst = 1
        self.rate_key = f"{self.provider}:{self.alias}"
        self.rate_limit_url = ""

        rate = options.get("rate_per_second")
        if rate is None:
            extra = sorted(name for name in RATE_LIMIT_OPTIONS if options.get(name) is not None)
            if extra:
                raise ImproperlyConfigured(
                    f"{where}: {', '.join(repr(n) for n in extra)} only apply with "
                    "'rate_per_second', which is not set"
                )
            return
        if (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise ImproperlyConfigured(
                f"{where}: 'rate_per_second' must be a number of messages per second "
                f"above 0, got {rate!r}"
            )

        burst = options.get("rate_burst", 1)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ImproperlyConfigured(
                f"{where}: 'rate_burst' must be an integer of at least 1, got {burst!r}"
            )

        key = options.get("rate_key", self.rate_key)
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise ImproperlyConfigured(
                f"{where}: 'rate_key' must be a non-empty string without surrounding "
                f"spaces, got {key!r}"
            )

        if "rate_limit_url" in options and options["rate_limit_url"] is not None:
            url = options["rate_limit_url"]
            if not isinstance(url, str) or (url != "" and not is_store_url(url)):
                raise ImproperlyConfigured(
                    f"{where}: 'rate_limit_url' must be a redis://, rediss://, valkey://, "
                    'valkeys:// or unix:// URL, or "" for a per-process limit; got '
                    f"{redacted(str(url))!r}"
                )
        else:
            url = _default_rate_limit_url()

        self.rate_per_second = float(rate)
        self.rate_burst = burst
        self.rate_key = key
        self.rate_limit_url = url

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        """One ``send_one`` per message, ``concurrency`` at a time, in batch order."""
        return self.fan_out(self.send_one, batch)

    def send_one(self, message: OutboundMessage) -> SendResult:
        raise NotImplementedError  # abstract: or the adapter implements send_batch

    # --- the fixed sequence ----------------------------------------------------------

    def configure_transport(self, options: dict[str, Any], *, where: str) -> None:
        """Read ``timeout`` (seconds, connect and each read) and ``concurrency``."""
        self.timeout = option_seconds(options, "timeout", DEFAULT_TIMEOUT, where=where)
        self.concurrency = option_count(options, "concurrency", DEFAULT_CONCURRENCY, where=where)

    def fan_out(self, call: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
        """``call`` on each item, up to ``concurrency`` at once; results in item order.

        ``concurrency`` threads (named after the provider) each take the next item
        not yet taken until none is left: no future, queue or lock per item, so the
        fan-out costs next to nothing beside the requests. If a call raises, no
        further item is started, the calls in flight finish, and the first exception
        is raised.
        """
        workers = min(self.concurrency, len(items))
        if workers <= 1:
            return [call(item) for item in items]
        results: list[Any] = [None] * len(items)
        failures: list[BaseException] = []
        # ``next`` on an ``itertools.count`` is atomic: each index goes to one thread.
        indexes = itertools.count()
        end = len(items)

        def work() -> None:
            while not failures:
                index = next(indexes)
                if index >= end:
                    return
                try:
                    results[index] = call(items[index])
                except BaseException as exc:
                    failures.append(exc)
                    return

        prefix = self.thread_name_prefix or self.provider
        threads = [
            threading.Thread(target=work, name=f"{prefix}_{i}", daemon=True) for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return results

    def attempt(
        self,
        messages: Sequence[OutboundMessage],
        request: Callable[[], list[SendResult]],
        *,
        unknown_detail: dict[str, Any] | None = None,
    ) -> list[SendResult]:
        """Run one provider request for ``messages`` (the provider's build, post and
        parse); whatever it raises becomes their results, never an exception.

        While the sender is held until the provider's reset, no request is made: the
        messages come back ``held``.
        """
        wait = self.sender_hold().remaining()
        if wait > 0:
            return self.held(messages, wait)
        try:
            return request()
        except AdapterError as exc:
            return self.failed(messages, exc)
        except CONNECT_PHASE_ERRORS as exc:
            return self.not_sent(messages, exc)
        except MaxRetryError as exc:  # only with redirects followed: retries are off
            if isinstance(exc.reason, CONNECT_PHASE_ERRORS):
                return self.not_sent(messages, exc)
            return self.maybe_sent(messages, self.lost_code, exc, unknown_detail)
        except ReadTimeoutError as exc:
            return self.maybe_sent(messages, self.timeout_code, exc, unknown_detail)
        except CONNECTION_LOST_ERRORS as exc:
            return self.maybe_sent(messages, self.lost_code, exc, unknown_detail)
        except Exception as exc:  # a malformed answer, a bug: the request may have gone out
            logger.exception(
                "%s send of message(s) %s failed unexpectedly", self.label, _ids(messages)
            )
            return self.maybe_sent(messages, self.unexpected_code, exc, unknown_detail)

    # --- outcomes ----------------------------------------------------------------------

    @staticmethod
    def sent(
        message: OutboundMessage, provider_message_id: str, detail: dict[str, Any] | None = None
    ) -> SendResult:
        return SendResult(
            message_id=message.message_id,
            accepted=True,
            provider_message_id=provider_message_id,
            detail=detail or {},
        )

    @staticmethod
    def failed(messages: Sequence[OutboundMessage], exc: AdapterError) -> list[SendResult]:
        return [
            SendResult(
                message_id=message.message_id,
                accepted=False,
                permanent=exc.permanent and not exc.unknown,
                unknown=exc.unknown,
                error=str(exc),
                error_code=exc.code,
                suppress=exc.suppress,
                detail=dict(exc.detail),
                retry_after=exc.retry_after,
            )
            for message in messages
        ]

    def held(self, messages: Sequence[OutboundMessage], wait: float) -> list[SendResult]:
        """Not sent: the provider asked for no requests from this sender for ``wait`` s."""
        until = dt.datetime.fromtimestamp(time.time() + wait, tz=dt.UTC)
        error = (
            f"{self.label} rate limited this sender until {until:%Y-%m-%d %H:%M:%S} UTC; "
            "no request made"
        )
        return [
            SendResult(
                message_id=message.message_id,
                accepted=False,
                error=error,
                error_code=f"{self.provider}:held",
                retry_after=wait,
                attempted=False,
            )
            for message in messages
        ]

    def not_sent(self, messages: Sequence[OutboundMessage], exc: Exception) -> list[SendResult]:
        """The request never left: a transient failure, safe to retry."""
        logger.warning("%s unreachable for message(s) %s: %s", self.label, _ids(messages), exc)
        error = f"could not connect to {self.label}, request not sent: {exc}"
        return self.failed(messages, AdapterError(error, permanent=False, code=self.connect_code))

    def maybe_sent(
        self,
        messages: Sequence[OutboundMessage],
        code: str,
        exc: Exception,
        detail: dict[str, Any] | None = None,
    ) -> list[SendResult]:
        """The provider may have it: reconciled from its reports, never resent blindly."""
        logger.warning(
            "%s outcome unknown for message(s) %s (%s): %s", self.label, _ids(messages), code, exc
        )
        error = (
            f"no answer from {self.label} after the request was sent ({exc!r}); it may "
            f"have been accepted: {self.unknown_advice}"
        )
        return self.failed(
            messages,
            AdapterError(error, permanent=False, unknown=True, code=code, detail=detail),
        )


def _ids(messages: Sequence[OutboundMessage]) -> str:
    return ", ".join(str(m.message_id) for m in messages)


# --- option checks shared by the provider adapters ---------------------------------


def option_seconds(options: dict[str, Any], name: str, default: float, *, where: str) -> float:
    """A positive number of seconds, or ImproperlyConfigured naming ``where`` and ``name``."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ImproperlyConfigured(
            f"{where}: {name!r} must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def option_count(options: dict[str, Any], name: str, default: int, *, where: str) -> int:
    """A positive integer, or ImproperlyConfigured naming ``where`` and ``name``."""
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"{where}: {name!r} must be a positive integer, got {value!r}")
    return value


def option_http_url(options: dict[str, Any], name: str, default: str, *, where: str) -> str:
    """An http(s) URL without its trailing slash (``None`` or empty means ``default``)."""
    value = str(options.get(name) or default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImproperlyConfigured(f"{where}: {name!r} must be an http(s) URL, got {value!r}")
    return value
