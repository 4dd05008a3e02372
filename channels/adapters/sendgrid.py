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
            "max_personalizations": 1000,                     # messages per request; 1: one each
            "categories": ["marketing"],                      # optional
            "sandbox": False,                                 # mail_settings.sandbox_mode
        },
    }}

A message alone is one ``POST /v3/mail/send`` with one personalization. The
request carries ``custom_args = {"message_id": "<our id>"}`` and nothing else
there: custom args come back on every event webhook, so they must never hold
personal data. A batch's requests run concurrently on a small thread pool and the
results come back in batch order.

Messages whose requests would be the same but for the recipient (a broadcast,
copies that differ only in their own links) go out as one request of several
personalizations: how they are grouped and substituted is
``channels.adapters.sendgrid_batching``; this module sends the requests.

Outcomes, one ``SendResult`` per message, never an exception:

========================================  ==========================================
SendGrid's answer                         ``SendResult``
========================================  ==========================================
202 Accepted (200 in sandbox mode)        accepted; ``provider_message_id`` is the
                                          ``X-Message-Id`` response header (one for
                                          all the messages of a group, whose
                                          ``detail["personalizations"]`` is its size)
400, 404, 413 and other 4xx               permanent; ``error`` is SendGrid's
                                          ``errors[].message``, ``error_code``
                                          ``sendgrid:<status>``; a 400 or 413 for a
                                          group is first retried message by message
                                          (above), each getting its own answer
401, 403 (key, sender identity), 408,     transient (``permanent=False``): retried
429, 5xx                                  with backoff; a 429 carries
                                          ``X-RateLimit-Reset`` in ``detail``, and
                                          as ``retry_after`` (also ``Retry-After``),
                                          holding the sender until the reset
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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.core.exceptions import ImproperlyConfigured
from python_http_client.client import Response
from python_http_client.exceptions import HTTPError, err_dict
from sendgrid import SendGridAPIClient

from channels.adapters.base import (
    AdapterError,
    ChannelAdapter,
    OutboundMessage,
    SendResult,
    option_count,
)
from channels.adapters.http import NO_RETRIES, environment_proxy, pool_manager
from channels.adapters.sendgrid_batching import (
    MAX_PERSONALIZATIONS,
    Prepared,
    grouped,
    isolable,
    parse_address,
    payload,
    prepare,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.sendgrid.com"
#: SendGrid's limits on categories: at most 10 per message, each up to 255 characters.
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
#: 4xx statuses worth retrying; every other 4xx is a request SendGrid will never take.
#: 401 and 403 (a revoked key, an unverified sender) are the account's problem, not the
#: message's: messages wait with backoff for the fix instead of all failing for good.
TRANSIENT_STATUSES = frozenset({401, 403, 408, 429})
#: Statuses for which SendGrid refused a request's contents and queued none of it: a
#: refused group is sent again one message at a time (``sendgrid_batching``).
_ISOLATE_STATUSES = frozenset({400, 413})


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


class SendGridAdapter(ChannelAdapter):
    provider = "sendgrid"
    label = "SendGrid"
    connect_code = "sendgrid:unreachable"
    timeout_code = "sendgrid:timeout"
    lost_code = "sendgrid:disconnected"
    unexpected_code = "sendgrid:error"
    unknown_advice = "reconcile from the event webhook, do not resend"
    thread_name_prefix = "sendgrid"

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
            self.from_address = parse_address(from_email)
            if self.from_address is None:
                raise ImproperlyConfigured(
                    f"{where}: 'from_email' is not an email address: {from_email!r}"
                )

        self.base_url: str = (options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

        self.configure_transport(options, where=where)
        # More than SendGrid takes is clamped to its limit; 1 sends every message alone.
        self.max_personalizations = min(
            option_count(options, "max_personalizations", MAX_PERSONALIZATIONS, where=where),
            MAX_PERSONALIZATIONS,
        )

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
        results: list[SendResult | None] = [None] * len(batch)
        # Templating for substitutions is worth it only where messages may be grouped.
        groupable = self.max_personalizations > 1 and len(batch) > 1
        requests = [[member] for member in self._prepared(batch, results, template=groupable)]
        if groupable:
            requests = grouped(requests, max_personalizations=self.max_personalizations)

        # Phase one: every request, a group or a single message.
        outcomes = self.fan_out(self._send, requests)
        isolate: list[list[tuple[int, Prepared]]] = []
        for request, (answers, rejected) in zip(requests, outcomes, strict=True):
            if rejected:
                # SendGrid refused the group as a whole and queued none of it: each
                # message goes again alone, so one bad personalization fails alone.
                isolate.extend([member] for member in request)
            else:
                for (index, _prepared), result in zip(request, answers, strict=True):
                    results[index] = result
        # Phase two: the members of refused groups, one request each.
        if isolate:
            logger.info(
                "SendGrid refused a multi-personalization request: sending its %d "
                "messages one by one",
                len(isolate),
            )
            for request, (answers, _rejected) in zip(
                isolate, self.fan_out(self._send, isolate), strict=True
            ):
                results[request[0][0]] = answers[0]
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    def send_one(self, message: OutboundMessage) -> SendResult:
        """One ``POST /v3/mail/send`` for one message: never raises."""
        return self.send_batch([message])[0]

    def build_payload(self, message: OutboundMessage) -> dict[str, Any]:
        """The v3 Mail Send request body for one message alone."""
        return self._payload([self._prepare(message, template=False)])

    def _prepare(self, message: OutboundMessage, *, template: bool) -> Prepared:
        return prepare(message, default_sender=self.from_address, template=template)

    def _payload(self, members: Sequence[Prepared]) -> dict[str, Any]:
        return payload(members, categories=self.categories, sandbox=self.sandbox)

    def _prepared(
        self,
        batch: Sequence[OutboundMessage],
        results: list[SendResult | None],
        *,
        template: bool,
    ) -> Iterator[tuple[int, Prepared]]:
        """The batch's sendable messages; the refused ones get their result here."""
        for index, message in enumerate(batch):
            try:
                yield index, self._prepare(message, template=template)
            except AdapterError as exc:
                results[index] = self.failed([message], exc)[0]

    def _send(self, request: list[tuple[int, Prepared]]) -> tuple[list[SendResult], bool]:
        """One ``POST /v3/mail/send`` for one or more messages: never raises.

        The second value is True when SendGrid refused a request of several messages
        for its contents (400, 413) in a way a message alone might not be: the caller
        then sends them one by one.
        """
        messages = [prepared.message for _index, prepared in request]
        group = len(messages) > 1
        refused_as_group = False

        def post() -> list[SendResult]:
            nonlocal refused_as_group
            # Serialized as python_http_client serializes a request body.
            body = json.dumps(self._payload([prepared for _index, prepared in request]))
            try:
                response = self._transport.post(body.encode("utf-8"), self._headers, self._timeout)
            except HTTPError as exc:
                results = self._http_error(messages, exc)
                if group and int(exc.status_code) in _ISOLATE_STATUSES:
                    refused_as_group = isolable(results[0].detail.get("errors") or [])
                return results
            provider_message_id = response.headers.get("X-Message-Id") or ""
            detail: dict[str, Any] = {"status": response.status_code}
            if self.sandbox:
                detail["sandbox"] = True
            if group:
                detail["personalizations"] = len(messages)
            return [self.sent(message, provider_message_id, dict(detail)) for message in messages]

        self.throttle(len(messages))
        return self.attempt(messages, post), refused_as_group

    # --- answers -----------------------------------------------------------------------

    def _http_error(self, messages: Sequence[OutboundMessage], exc: HTTPError) -> list[SendResult]:
        status = int(exc.status_code)
        errors = _error_list(exc.body)
        detail: dict[str, Any] = {"status": status}
        if errors:
            detail["errors"] = errors
        headers: Mapping[str, str] | None = getattr(exc, "headers", None)
        reset = headers.get("X-RateLimit-Reset") if headers is not None else None
        if reset:
            detail["rate_limit_reset"] = reset
        if len(messages) > 1:
            detail["personalizations"] = len(messages)
        text = (
            "; ".join(
                f"{e['message']} (field: {e['field']})" if e.get("field") else str(e["message"])
                for e in errors
            )
            or f"HTTP {status} {getattr(exc, 'reason', '')}".rstrip()
        )
        permanent = 400 <= status < 500 and status not in TRANSIENT_STATUSES
        refused = AdapterError(
            f"SendGrid {status}: {text}",
            permanent=permanent,
            code=f"sendgrid:{status}",
            detail=detail,
            retry_after=None if permanent else self.provider_reset(headers, status=status),
        )
        return self.failed(messages, refused)


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
