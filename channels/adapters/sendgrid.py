"""Email through SendGrid's v3 Mail Send API, with the official ``sendgrid`` SDK.

Configuration::

    CHANNEL_ADAPTERS = {"email": {
        "BACKEND": "channels.adapters.sendgrid.SendGridAdapter",
        "OPTIONS": {
            "api_key": "SG....",                              # required
            "from_email": "Stride Running <hello@example.com>",  # default sender
            "base_url": "https://api.sendgrid.com",           # tests: the emulator
            "timeout": 10,                                    # seconds per request
            "concurrency": 8,                                 # requests in flight per batch
            "categories": ["marketing"],                      # optional
            "sandbox": False,                                 # mail_settings.sandbox_mode
        },
    }}

Each message is one ``POST /v3/mail/send`` with one personalization; a batch's
requests run concurrently on a small thread pool and the results come back in
batch order. The request carries ``custom_args = {"message_id": "<our id>"}``
and nothing else there: custom args come back on every event webhook, so they
must never hold personal data.

Outcomes, one ``SendResult`` per message, never an exception:

========================================  ==========================================
SendGrid's answer                         ``SendResult``
========================================  ==========================================
202 Accepted (200 in sandbox mode)        accepted; ``provider_message_id`` is the
                                          ``X-Message-Id`` response header
400, 404, 413 and other 4xx               permanent; ``error`` is SendGrid's
                                          ``errors[].message``, ``error_code``
                                          ``sendgrid:<status>``
401, 403 (key, sender identity), 408,     transient (``permanent=False``): retried
429, 5xx                                  with backoff; a 429 carries
                                          ``X-RateLimit-Reset`` in ``detail``
connection refused, DNS failure, connect  transient: the request never left, so a
timeout                                   retry cannot duplicate
timeout or dropped connection while       ``unknown``: SendGrid may have queued it and
waiting for the response                  has no idempotency key, so reconcile from
                                          the event webhook, never resend blindly
a message we can not express (no sender,  permanent, refused before any request
invalid address, line break in a header)
========================================  ==========================================

The SDK makes the request: its client gives the URL (``/v3/mail/send`` under
``base_url``) and the headers (``Authorization: Bearer``, its ``User-Agent``,
``Accept``; ``Content-Type: application/json``), taken once when the adapter is
made, and the body is serialized as python_http_client serializes it. Its
exception classes report refusals: any answer outside 2xx is raised as
python_http_client's ``HTTPError`` subclass for the status
(``BadRequestsError``, ``TooManyRequestsError``, ...), with the status, reason,
body and headers, as the SDK raises it. The HTTP itself does not go through the
SDK's urllib opener (a new TCP connection, an opener and a proxy lookup per
request) but through one urllib3 connection pool per adapter: kept alive between
messages and batches, shared by the sending threads, with urllib3's retries off
so nothing is ever resent behind the adapter's back. A connection SendGrid
closed while it was idle is replaced before it is used; only a close that
crosses a request on its way makes that request's outcome unknown. A proxy
(``HTTPS_PROXY``/``HTTP_PROXY``, ``ALL_PROXY``, honouring ``NO_PROXY``) is read
from the environment once, when the adapter is made.

``timeout`` applies to the connect and to every socket read. A failure while
connecting (refused, DNS, connect timeout, TLS handshake, proxy: urllib3's
``NewConnectionError``, ``ConnectTimeoutError``, ``SSLError``, ``ProxyError``)
means the request never left; a read timeout (``ReadTimeoutError``) or a
connection lost once the request was written (``ProtocolError``) is "outcome
unknown".
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parseaddr
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.core.exceptions import ImproperlyConfigured
from python_http_client.client import Response
from python_http_client.exceptions import HTTPError, err_dict
from sendgrid import SendGridAPIClient
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    MaxRetryError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError

from channels.adapters.base import (
    ChannelAdapter,
    OutboundMessage,
    SendResult,
    option_count,
    option_seconds,
)
from channels.adapters.http import NO_RETRIES, environment_proxy, pool_manager

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.sendgrid.com"
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 8
#: SendGrid's limits on categories: at most 10 per message, each up to 255 characters.
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
#: 4xx statuses worth retrying; every other 4xx is a request SendGrid will never take.
#: 401 and 403 (a revoked key, an unverified sender) are the account's problem, not the
#: message's: messages wait with backoff for the fix instead of all failing for good.
TRANSIENT_STATUSES = frozenset({401, 403, 408, 429})

#: urllib3 errors raised before a request is written: SendGrid never saw it.
#: (``NewConnectionError`` - refused, DNS - is a ``ConnectTimeoutError``; a pool closed
#: by ``close()`` under a request that had not yet taken a connection is a ``ClosedPoolError``.)
_CONNECT_PHASE_ERRORS = (ConnectTimeoutError, Urllib3SSLError, ProxyError, ClosedPoolError)


class _Answer:
    """A urllib3 response seen through the interface python_http_client's ``Response``
    reads (that of a urllib response)."""

    __slots__ = ("_response",)

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def getcode(self) -> int:
        return self._response.status

    def read(self) -> bytes:
        return self._response.data

    def info(self) -> Any:
        return self._response.headers


class _Transport:
    """The SDK's requests over one urllib3 connection pool, per process.

    urllib3's pool is thread-safe and keeps connections alive; it retries
    nothing. After a fork the child makes a pool of its own and leaves the
    parent's connections alone.
    """

    def __init__(self, url: str, *, maxsize: int) -> None:
        self.url = url
        self.proxy = environment_proxy(url)  # read from the environment once, here
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pool: urllib3.HTTPConnectionPool | None = None
        self._manager: urllib3.PoolManager | None = None
        parts = urlsplit(url)
        self._path = parts.path or "/"
        if parts.query:
            self._path += "?" + parts.query

    def _connections(self) -> tuple[urllib3.PoolManager, urllib3.HTTPConnectionPool | None]:
        manager, pool = self._manager, self._pool
        if manager is None or self._pid != os.getpid():
            with self._lock:
                if self._manager is None or self._pid != os.getpid():
                    self._manager = self._new_manager()
                    # Without a proxy, each request goes straight to the one host's pool.
                    self._pool = None if self.proxy else self._manager.connection_from_url(self.url)
                    self._pid = os.getpid()
                manager, pool = self._manager, self._pool
        return manager, pool

    def _new_manager(self) -> urllib3.PoolManager:
        return pool_manager(self.proxy, self._maxsize)

    def post(self, body: bytes, headers: Mapping[str, str], timeout: urllib3.Timeout) -> Response:
        """POST ``body``; the SDK's ``Response``, or the SDK's ``HTTPError`` outside 2xx."""
        manager, pool = self._connections()
        if pool is not None:
            answer = pool.urlopen(
                "POST",
                self._path,
                body=body,
                headers=headers,
                retries=NO_RETRIES,
                redirect=False,
                timeout=timeout,
                assert_same_host=False,
            )
        else:
            answer = manager.urlopen(
                "POST",
                self.url,
                body=body,
                headers=headers,
                retries=NO_RETRIES,
                redirect=False,
                timeout=timeout,
            )
        status = answer.status
        if not 200 <= status <= 299:
            error = err_dict.get(status, HTTPError)
            raise error(status, answer.reason, answer.data, answer.headers)
        return Response(_Answer(answer))

    def close(self) -> None:
        with self._lock:
            manager, self._manager, self._pool = self._manager, None, None
            mine = self._pid == os.getpid()
        if manager is not None and mine:
            manager.clear()


class _Refused(Exception):
    """A message the adapter will not send as it is (raised before any request)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _parse_address(value: str) -> dict[str, str] | None:
    """``"Name <a@example.com>"`` or ``"a@example.com"`` as SendGrid's ``{"email", "name"}``."""
    if "\r" in value or "\n" in value:
        return None
    name, address = parseaddr(value)
    if "@" not in address or any(ch.isspace() for ch in address):
        return None
    parsed = {"email": address}
    if name:
        parsed["name"] = name
    return parsed


class SendGridAdapter(ChannelAdapter):
    provider = "sendgrid"

    def __init__(self, *, alias: str, **options: Any) -> None:
        super().__init__(alias=alias, **options)
        where = f"CHANNEL_ADAPTERS[{alias!r}]['OPTIONS']"

        api_key = options.get("api_key")
        if not api_key or not isinstance(api_key, str):
            raise ImproperlyConfigured(f"{where}: 'api_key' is required for the SendGrid adapter")
        self.api_key: str = api_key

        from_email = options.get("from_email") or ""
        self.from_address: dict[str, str] | None = None
        if from_email:
            self.from_address = _parse_address(from_email)
            if self.from_address is None:
                raise ImproperlyConfigured(
                    f"{where}: 'from_email' is not an email address: {from_email!r}"
                )

        self.base_url: str = (options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

        self.timeout = option_seconds(options, "timeout", DEFAULT_TIMEOUT, where=where)
        self.concurrency = option_count(options, "concurrency", DEFAULT_CONCURRENCY, where=where)

        categories = list(options.get("categories") or ())
        if len(categories) > MAX_CATEGORIES or not all(
            isinstance(c, str) and 0 < len(c) <= MAX_CATEGORY_LENGTH for c in categories
        ):
            raise ImproperlyConfigured(
                f"{where}: 'categories' must be at most {MAX_CATEGORIES} non-empty strings "
                f"of up to {MAX_CATEGORY_LENGTH} characters"
            )
        self.categories: list[str] = categories
        self.sandbox = bool(options.get("sandbox", False))

        # The SDK builds the request: its URL and headers are the same for every message.
        client = SendGridAPIClient(api_key=self.api_key, host=self.base_url).client
        self._headers: dict[str, str] = {
            **client.request_headers,
            "Content-Type": "application/json",
        }
        self._transport = _Transport(client.mail.send._build_url(None), maxsize=self.concurrency)
        self._timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)

    def close(self) -> None:
        """Close the pooled HTTP connections (the adapter stays usable)."""
        self._transport.close()

    # --- sending -------------------------------------------------------------------

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        if len(batch) == 1 or self.concurrency == 1:
            return [self.send_one(message) for message in batch]
        workers = min(self.concurrency, len(batch))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sendgrid") as pool:
            return list(pool.map(self.send_one, batch))

    def send_one(self, message: OutboundMessage) -> SendResult:
        """One ``POST /v3/mail/send``: never raises, whatever happens to the request."""
        try:
            payload = self.build_payload(message)
        except _Refused as exc:
            return SendResult(
                message_id=message.message_id,
                accepted=False,
                permanent=True,
                error=str(exc),
                error_code=exc.code,
            )
        self.throttle()
        try:
            # Serialized as python_http_client serializes a request body.
            body = json.dumps(payload).encode("utf-8")
            response = self._transport.post(body, self._headers, self._timeout)
        except HTTPError as exc:
            return self._http_error(message, exc)
        except _CONNECT_PHASE_ERRORS as exc:
            # Raised while connecting: SendGrid has nothing to act on.
            return self._unreachable(message, exc)
        except MaxRetryError as exc:  # not raised with retries off; classified all the same
            if isinstance(exc.reason, _CONNECT_PHASE_ERRORS):
                return self._unreachable(message, exc.reason)
            return self._lost(message, exc, "sendgrid:disconnected")
        except ReadTimeoutError as exc:
            # The request went out; the response did not come in time.
            return self._lost(message, exc, "sendgrid:timeout")
        except (ProtocolError, HTTPException, OSError) as exc:
            # The request went out; the connection broke before the response.
            return self._lost(message, exc, "sendgrid:disconnected")
        except Exception as exc:
            logger.exception("SendGrid send failed unexpectedly for message %s", message.message_id)
            return self._unknown(
                message, f"unexpected error while sending: {exc!r}", "sendgrid:error"
            )

        return SendResult(
            message_id=message.message_id,
            accepted=True,
            provider_message_id=response.headers.get("X-Message-Id") or "",
            detail={"status": response.status_code, **({"sandbox": True} if self.sandbox else {})},
        )

    def build_payload(self, message: OutboundMessage) -> dict[str, Any]:
        """The v3 Mail Send request body for one message."""
        to = _parse_address(message.to)
        if to is None:
            raise _Refused(f"not an email address: {message.to!r}", "sendgrid:invalid_to")
        if message.sender:
            sender = _parse_address(message.sender)
            if sender is None:
                raise _Refused(
                    f"sender is not an email address: {message.sender!r}",
                    "sendgrid:invalid_sender",
                )
        elif self.from_address is not None:
            sender = self.from_address
        else:
            raise _Refused(
                "no sender: set OPTIONS['from_email'] or OutboundMessage.sender",
                "sendgrid:no_sender",
            )
        for name, value in message.headers.items():
            if any(ch in f"{name}{value}" for ch in "\r\n") or not name.strip():
                raise _Refused(f"invalid header {name!r}", "sendgrid:invalid_header")

        # SendGrid requires text/plain before text/html; an empty value is rejected.
        content = []
        if message.body:
            content.append({"type": "text/plain", "value": message.body})
        if message.html:
            content.append({"type": "text/html", "value": message.html})

        payload: dict[str, Any] = {
            "personalizations": [{"to": [to]}],
            "from": sender,
            "subject": message.subject,
            "content": content,
            "custom_args": {"message_id": str(message.message_id)},
        }
        if message.headers:
            payload["headers"] = dict(message.headers)
        if self.categories:
            payload["categories"] = list(self.categories)
        if self.sandbox:
            payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return payload

    # --- helpers -------------------------------------------------------------------

    def _unreachable(self, message: OutboundMessage, exc: Exception) -> SendResult:
        return SendResult(
            message_id=message.message_id,
            accepted=False,
            permanent=False,
            error=f"SendGrid unreachable, request not sent: {exc}",
            error_code="sendgrid:unreachable",
        )

    def _lost(self, message: OutboundMessage, exc: Exception, code: str) -> SendResult:
        logger.warning("SendGrid outcome unknown for message %s: %s", message.message_id, exc)
        return self._unknown(
            message,
            f"no response from SendGrid after the request was sent ({exc!r}); "
            "it may have been queued: reconcile, do not resend",
            code,
        )

    def _http_error(self, message: OutboundMessage, exc: HTTPError) -> SendResult:
        status = int(exc.status_code)
        errors = _error_list(exc.body)
        detail: dict[str, Any] = {"status": status}
        if errors:
            detail["errors"] = errors
        headers: Mapping[str, str] | None = getattr(exc, "headers", None)
        reset = headers.get("X-RateLimit-Reset") if headers is not None else None
        if reset:
            detail["rate_limit_reset"] = reset
        text = (
            "; ".join(
                f"{e['message']} (field: {e['field']})" if e.get("field") else str(e["message"])
                for e in errors
            )
            or f"HTTP {status} {getattr(exc, 'reason', '')}".rstrip()
        )
        return SendResult(
            message_id=message.message_id,
            accepted=False,
            permanent=400 <= status < 500 and status not in TRANSIENT_STATUSES,
            error=f"SendGrid {status}: {text}",
            error_code=f"sendgrid:{status}",
            detail=detail,
        )

    @staticmethod
    def _unknown(message: OutboundMessage, error: str, code: str) -> SendResult:
        return SendResult(
            message_id=message.message_id,
            accepted=False,
            permanent=False,
            unknown=True,
            error=error,
            error_code=code,
        )


def _error_list(body: bytes | str | None) -> list[dict[str, Any]]:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}`` as a list; [] if not that shape."""
    if not body:
        return []
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return []
    return [
        {"message": e.get("message") or "", "field": e.get("field")}
        for e in errors
        if isinstance(e, dict)
    ]
