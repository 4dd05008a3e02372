"""Twilio Programmable Messaging (SMS) through the official ``twilio`` SDK.

Configuration::

    CHANNEL_ADAPTERS = {"sms": {
        "BACKEND": "channels.adapters.twilio_sms.TwilioSmsAdapter",
        "OPTIONS": {
            "account_sid": "AC...", "auth_token": "...",
            "from_number": "+15017122661",        # or "messaging_service_sid": "MG..."
            "status_callback": "https://example.com/webhooks/twilio/status",  # optional
            "timeout": 10, "concurrency": 8,      # seconds; parallel API calls per batch
            "base_url": "http://127.0.0.1:8025",  # optional: the local provider emulator
        },
    }}

Exactly one of ``from_number`` and ``messaging_service_sid`` is configured. A
message's own ``sender`` wins over both: it is sent as ``From``.

Each message is one ``POST /2010-04-01/Accounts/{sid}/Messages.json``; a batch's
calls run concurrently (``concurrency`` at a time) and the results come back in
batch order. One message's failure is a result, never an exception.

How outcomes map to ``SendResult``:

* **201** - ``accepted``, ``provider_message_id`` is the Message SID (``SM...``);
  ``detail`` holds our own segment count and encoding (``channels.sms``) plus
  Twilio's ``twilio_num_segments`` and ``twilio_status``.
* **Twilio refused it** (``TwilioRestException``: ``.status``, ``.code``) -
  ``error_code`` is ``"twilio:<code>"`` and ``detail["twilio_code"]`` the code:

  - permanent: the codes in ``PERMANENT_CODES`` - a bad, dead or opted-out
    address (21211 invalid To, 21214, 21408 region not enabled, 21610 recipient
    replied STOP, 21612 unroutable, 21614 not a mobile number, 30005 unknown
    handset, 30006 landline, 30007 carrier filtering) - and every other 4xx;
  - transient: 429 and code 20429 (rate limited), 30001 (queue overflow),
    30003 (handset switched off or out of reach: it may come back), 5xx, and
    20003 (authentication): wrong or rotated credentials are the account's
    problem, not the message's, so messages wait with backoff for the fix
    instead of all failing for good.

  ``SendResult.suppress`` names a suppression reason for the codes in
  ``SUPPRESS_REASONS`` (21610 "stop"; 21211, 30005, 30006 "invalid"): the address
  itself is unusable, so the dispatcher suppresses it instead of merely failing
  this message.
* **No answer in time** (``requests.exceptions.ReadTimeout``), or the connection
  broke after the request went out (``requests.exceptions.ConnectionError``
  wrapping a urllib3 ``ProtocolError``) - ``unknown``: Twilio may have the
  message. The Messages API has no idempotency key, so it must be reconciled
  from status callbacks, never resent blindly.
* **Never sent** - the connection could not be made (refused, DNS, connect
  timeout, TLS handshake: ``requests.exceptions.ConnectionError`` wrapping a
  urllib3 ``MaxRetryError`` whose reason is a connect-phase error) - transient.

The SDK does not wrap ``requests`` exceptions, so they are caught as raised.
It has no base-URL option either: ``base_url`` is applied by an HTTP client
that re-points each request's scheme and host, keeping the path.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ProxyError
from urllib3.exceptions import SSLError as Urllib3SSLError

from channels.adapters.base import (
    RATE_LIMIT_OPTIONS,
    ChannelAdapter,
    OutboundMessage,
    SendResult,
)
from channels.sms import segments

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.twilio.com"
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 8

#: Refusals that will not change on retry, whatever the HTTP status.
PERMANENT_CODES = frozenset({21211, 21214, 21408, 21610, 21612, 21614, 30005, 30006, 30007})
#: Refusals worth retrying later, whatever the HTTP status.
TRANSIENT_CODES = frozenset({20003, 20429, 30001, 30003})
#: Refusals that say the address itself is unusable, and the suppression reason for each.
SUPPRESS_REASONS = {21610: "stop", 21211: "invalid", 30005: "invalid", 30006: "invalid"}

#: urllib3 errors raised before a request is written: the provider never saw it.
_CONNECT_PHASE_ERRORS = (ConnectTimeoutError, Urllib3SSLError, ProxyError)

_SDK_PREFIX = "Unable to create record"

_OPTIONS = RATE_LIMIT_OPTIONS | frozenset(
    {
        "account_sid",
        "auth_token",
        "from_number",
        "messaging_service_sid",
        "status_callback",
        "base_url",
        "timeout",
        "concurrency",
    }
)


class BaseUrlHttpClient(TwilioHttpClient):
    """A ``TwilioHttpClient`` that sends every request to ``base_url`` instead.

    The scheme and host of each URL the SDK builds (``https://api.twilio.com``)
    are replaced by those of ``base_url``; a path in ``base_url`` is prepended to
    the request's path, which is otherwise kept as is.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        parts = urlsplit(base_url)
        self.base_scheme = parts.scheme
        self.base_netloc = parts.netloc
        self.base_path = parts.path.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        url = urlunsplit(
            (
                self.base_scheme,
                self.base_netloc,
                self.base_path + parts.path,
                parts.query,
                parts.fragment,
            )
        )
        return super().request(method, url, *args, **kwargs)


class _ClientPool:
    """Twilio clients lent to one thread at a time, kept between batches.

    A ``requests.Session`` is not documented as thread-safe, so no client is
    shared by two threads at once; idle ones are reused so connections (and TLS
    sessions) survive from one batch to the next. After a fork the parent's
    clients are dropped: their sockets belong to the parent.
    """

    def __init__(
        self, account_sid: str, auth_token: str, *, base_url: str, timeout: float, max_idle: int
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._base_url = base_url
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle: list[Client] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # Proxy settings (HTTPS_PROXY, NO_PROXY) are read from the environment once, here:
        # requests would otherwise re-read the environment and ~/.netrc on every call,
        # which cost about a millisecond of CPU per message.
        host = urlsplit(base_url).hostname or ""
        self._proxies = {} if urllib.request.proxy_bypass(host) else urllib.request.getproxies()

    def _new_client(self) -> Client:
        if self._base_url.rstrip("/") == DEFAULT_BASE_URL:
            http_client: TwilioHttpClient = TwilioHttpClient(timeout=self._timeout)
        else:
            http_client = BaseUrlHttpClient(self._base_url, timeout=self._timeout)
        session = getattr(http_client, "session", None)
        if session is not None:
            session.trust_env = False
            session.proxies.update(self._proxies)
        return Client(self._account_sid, self._auth_token, http_client=http_client)

    @contextmanager
    def client(self) -> Iterator[Client]:
        with self._lock:
            if self._pid != os.getpid():
                self._idle.clear()
                self._pid = os.getpid()
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._new_client()
        try:
            yield client
        finally:
            with self._lock:
                keep = self._pid == os.getpid() and len(self._idle) < self._max_idle
                if keep:
                    self._idle.append(client)
            if not keep:
                _close(client)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            _close(client)


def _close(client: Client) -> None:
    session = getattr(client.http_client, "session", None)
    if session is not None:
        session.close()


def _require(options: dict[str, Any], alias: str, name: str) -> str:
    value = options.get(name)
    if not value or not isinstance(value, str):
        raise ImproperlyConfigured(
            f"CHANNEL_ADAPTERS[{alias!r}]: the Twilio option {name!r} is required"
        )
    return value


class TwilioSmsAdapter(ChannelAdapter):
    provider = "twilio"
    #: How refusal codes are classified; subclasses for other Twilio channels extend them.
    permanent_codes: frozenset[int] = PERMANENT_CODES
    transient_codes: frozenset[int] = TRANSIENT_CODES
    suppress_reasons: dict[int, str] = SUPPRESS_REASONS
    thread_name_prefix = "twilio-sms"

    def __init__(self, *, alias: str, **options: Any) -> None:
        super().__init__(alias=alias, **options)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"CHANNEL_ADAPTERS[{alias!r}]: unknown Twilio option(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(_OPTIONS))}"
            )
        self.account_sid = _require(options, alias, "account_sid")
        auth_token = _require(options, alias, "auth_token")
        self.from_number: str = options.get("from_number") or ""
        self.messaging_service_sid: str = options.get("messaging_service_sid") or ""
        if bool(self.from_number) == bool(self.messaging_service_sid):
            raise ImproperlyConfigured(
                f"CHANNEL_ADAPTERS[{alias!r}]: set exactly one of the Twilio options "
                "'from_number' and 'messaging_service_sid'"
            )
        self.status_callback: str = options.get("status_callback") or ""
        self.base_url: str = options.get("base_url") or DEFAULT_BASE_URL
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImproperlyConfigured(
                f"CHANNEL_ADAPTERS[{alias!r}]: the Twilio option 'base_url' must be an "
                f"http(s) URL, got {self.base_url!r}"
            )
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ImproperlyConfigured(
                f"CHANNEL_ADAPTERS[{alias!r}]: the Twilio option 'timeout' must be a "
                f"positive number of seconds, got {timeout!r}"
            )
        self.timeout = float(timeout)
        concurrency = options.get("concurrency", DEFAULT_CONCURRENCY)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ImproperlyConfigured(
                f"CHANNEL_ADAPTERS[{alias!r}]: the Twilio option 'concurrency' must be a "
                f"positive integer, got {concurrency!r}"
            )
        self.concurrency = concurrency
        self._clients = _ClientPool(
            self.account_sid,
            auth_token,
            base_url=self.base_url,
            timeout=self.timeout,
            max_idle=concurrency,
        )

    def close(self) -> None:
        """Close the pooled HTTP connections (the adapter stays usable)."""
        self._clients.close()

    # --- sending -------------------------------------------------------------------

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        workers = min(self.concurrency, len(batch))
        if workers <= 1:
            return [self._send_one(message) for message in batch]
        with ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=self.thread_name_prefix
        ) as pool:
            return list(pool.map(self._send_one, batch))

    def _create_params(self, message: OutboundMessage) -> dict[str, Any]:
        params: dict[str, Any] = {"to": message.to, "body": message.body}
        if message.sender or self.from_number:
            params["from_"] = message.sender or self.from_number
        else:
            params["messaging_service_sid"] = self.messaging_service_sid
        if self.status_callback:
            params["status_callback"] = self.callback_url(message)
        return params

    def callback_url(self, message: OutboundMessage) -> str:
        """The status callback URL naming our message (``m``), so a report can be matched
        even when the send's outcome was unknown and Twilio's message sid never reached us.
        """
        separator = "&" if "?" in self.status_callback else "?"
        return f"{self.status_callback}{separator}{urlencode({'m': message.message_id})}"

    def _send_one(self, message: OutboundMessage) -> SendResult:
        """Send one message; every outcome, including an unexpected error, is a result."""
        self.throttle()
        outcome = self._create(message, self._create_params(message))
        if isinstance(outcome, SendResult):
            return outcome
        detail: dict[str, Any] = {**segments(message.body).as_dict()}
        if outcome.num_segments is not None:
            num = str(outcome.num_segments)
            detail["twilio_num_segments"] = int(num) if num.isdigit() else num
        return self._accepted(message, outcome, detail)

    def _create(
        self, message: OutboundMessage, params: dict[str, Any]
    ) -> MessageInstance | SendResult:
        """One Messages API call: the created Message, or the failure as a result."""
        try:
            with self._clients.client() as client:
                instance = client.messages.create(**params)
        except (TwilioRestException, TwilioServiceException) as exc:
            return self._refused(message, exc)
        except requests.exceptions.ConnectTimeout as exc:
            return self._not_sent(message, exc)
        except requests.exceptions.ConnectionError as exc:
            reason = exc.args[0] if exc.args else None
            if isinstance(reason, MaxRetryError) and isinstance(
                reason.reason, _CONNECT_PHASE_ERRORS
            ):
                return self._not_sent(message, exc)
            return self._unknown(message, "twilio:connection_lost", exc)
        except requests.exceptions.Timeout as exc:
            return self._unknown(message, "twilio:timeout", exc)
        except Exception as exc:  # a malformed answer, a bug: the request may have gone out
            logger.exception("Twilio send of message %s failed unexpectedly", message.message_id)
            return self._unknown(message, "twilio:unexpected", exc)

        if not instance.sid:
            return self._unknown(
                message, "twilio:no_sid", ValueError("Twilio answered 2xx without a Message SID")
            )
        return instance

    def _accepted(
        self, message: OutboundMessage, instance: MessageInstance, detail: dict[str, Any]
    ) -> SendResult:
        if instance.status:
            detail["twilio_status"] = instance.status
        return SendResult(
            message_id=message.message_id,
            accepted=True,
            provider_message_id=instance.sid,
            detail=detail,
        )

    # --- failures --------------------------------------------------------------------

    def _refused(
        self, message: OutboundMessage, exc: TwilioRestException | TwilioServiceException
    ) -> SendResult:
        status = int(exc.status)
        # Without a JSON error body the SDK reports the HTTP status as the code.
        code = exc.code if isinstance(exc.code, int) and exc.code != status else None
        if code in self.permanent_codes:
            permanent = True
        elif code in self.transient_codes or status == 429 or status >= 500:
            permanent = False
        else:
            permanent = 400 <= status < 500
        text = exc.msg if isinstance(exc, TwilioRestException) else exc.detail or exc.title
        # The SDK prefixes the provider's message with its own "Unable to create record: ".
        text = (text or "").removeprefix(_SDK_PREFIX).removeprefix(": ") or f"HTTP {status}"
        detail: dict[str, Any] = {"http_status": status, "twilio_code": code}
        logger.warning(
            "Twilio refused message %s: HTTP %s, code %s (%s)",
            message.message_id,
            status,
            code,
            "permanent" if permanent else "transient",
        )
        return SendResult(
            message_id=message.message_id,
            accepted=False,
            error=f"Twilio {code}: {text}" if code is not None else f"Twilio: {text}",
            error_code=f"twilio:{code}" if code is not None else f"twilio:http_{status}",
            permanent=permanent,
            detail=detail,
            suppress=self.suppress_reasons.get(code, "") if permanent and code else "",
        )

    def _not_sent(self, message: OutboundMessage, exc: Exception) -> SendResult:
        logger.warning("Twilio unreachable for message %s: %s", message.message_id, exc)
        return SendResult(
            message_id=message.message_id,
            accepted=False,
            error=f"could not connect to Twilio: {exc}",
            error_code="twilio:connect",
            permanent=False,
        )

    def _unknown(self, message: OutboundMessage, error_code: str, exc: Exception) -> SendResult:
        logger.warning(
            "Twilio outcome unknown for message %s (%s): %s", message.message_id, error_code, exc
        )
        return SendResult(
            message_id=message.message_id,
            accepted=False,
            unknown=True,
            error=f"no answer from Twilio after the request was sent: {exc}",
            error_code=error_code,
            permanent=False,
        )
