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
  ``detail`` holds our own segment count and encoding (``channels.adapters.sms``) plus
  Twilio's ``twilio_num_segments`` and ``twilio_status``.
* **Twilio refused it** (``TwilioRestException``: ``.status``, ``.code``) -
  ``error_code`` is ``"twilio:<code>"`` and ``detail["twilio_code"]`` the code:

  - permanent: the codes in ``PERMANENT_CODES`` - a bad, dead or opted-out
    address (21211 invalid To, 21214, 21408 region not enabled, 21610 recipient
    replied STOP, 21612 unroutable, 21614 not a mobile number, 30005 unknown
    handset, 30006 landline, 30007 carrier filtering) - and every other 4xx;
  - transient: 429 and code 20429 (rate limited: ``retry_after`` is Twilio's
    ``Retry-After`` when it sends one, and holds the sender until then), 30001 (queue overflow),
    30003 (handset switched off or out of reach: it may come back), 5xx, and
    20003 (authentication): wrong or rotated credentials are the account's
    problem, not the message's, so messages wait with backoff for the fix
    instead of all failing for good.

  ``SendResult.suppress`` names a suppression reason for the codes in
  ``SUPPRESS_REASONS`` (21610 "stop"; 21211, 30005, 30006 "invalid"): the address
  itself is unusable, so the dispatcher suppresses it instead of merely failing
  this message.
* **No answer in time** (urllib3's ``ReadTimeoutError``), or the connection
  broke after the request went out (``ProtocolError``) - ``unknown``: Twilio may
  have the message. The Messages API has no idempotency key, so it must be
  reconciled from status callbacks, never resent blindly.
* **Never sent** - the connection could not be made (refused, DNS, connect
  timeout, TLS handshake, proxy: ``NewConnectionError``, ``ConnectTimeoutError``,
  ``SSLError``, ``ProxyError``) - transient.

The SDK builds each request (parameters, headers, credentials) and reads each
answer (the Message, ``TwilioRestException``); the HTTP itself goes through
``PooledHttpClient``, the SDK's documented extension point (a
``twilio.http.HttpClient``), on one urllib3 connection pool per adapter: kept
alive between messages and batches, shared by the sending threads, with urllib3's
retries off so that nothing is ever resent behind the adapter's back. A
connection Twilio closed while it was idle is replaced before it is used; only a
close that crosses a request on its way makes that request's outcome unknown.
urllib3's exceptions reach the adapter as urllib3 raised them. The SDK has no base-URL
option: ``base_url`` is applied by that client, which re-points each request's
scheme and host, keeping the path. A proxy (``HTTPS_PROXY``/``HTTP_PROXY``,
``ALL_PROXY``, honouring ``NO_PROXY``) is read from the environment once, when
the adapter is made.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from base64 import b64encode
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from channels.adapters.base import (
    DEFAULT_CONCURRENCY,
    RATE_LIMIT_OPTIONS,
    TRANSPORT_OPTIONS,
    AdapterError,
    ChannelAdapter,
    OutboundMessage,
    SendResult,
    option_http_url,
)
from channels.adapters.http import NO_RETRIES, environment_proxy, pool_manager
from channels.adapters.sms import segments

logger = logging.getLogger(__name__)
#: The logger the SDK's own HTTP client logs requests to (at INFO).
http_logger = logging.getLogger("twilio.http_client")

DEFAULT_BASE_URL = "https://api.twilio.com"

#: Refusals that will not change on retry, whatever the HTTP status.
PERMANENT_CODES = frozenset({21211, 21214, 21408, 21610, 21612, 21614, 30005, 30006, 30007})
#: Refusals worth retrying later, whatever the HTTP status.
TRANSIENT_CODES = frozenset({20003, 20429, 30001, 30003})
#: Refusals that say the address itself is unusable, and the suppression reason for each.
SUPPRESS_REASONS = {21610: "stop", 21211: "invalid", 30005: "invalid", 30006: "invalid"}

_SDK_PREFIX = "Unable to create record"

_OPTIONS = (
    RATE_LIMIT_OPTIONS
    | TRANSPORT_OPTIONS
    | frozenset(
        {
            "account_sid",
            "auth_token",
            "from_number",
            "messaging_service_sid",
            "status_callback",
            "base_url",
        }
    )
)

_JSON_TYPES = ("application/json", "application/scim+json")


def _basic_auth(username: str, password: str) -> str:
    """An ``Authorization: Basic`` value, encoded as ``requests`` does (latin-1)."""
    credentials = f"{username}:{password}".encode("latin1")
    return "Basic " + b64encode(credentials).decode("ascii")


class PooledHttpClient(HttpClient):
    """The Twilio SDK's HTTP client on one shared urllib3 connection pool.

    It takes the SDK's requests as ``TwilioHttpClient`` does (form-encoded
    ``data``, or JSON for a JSON ``Content-Type``; query ``params``; Basic
    ``auth``; one ``timeout`` for the connect and for each read) and answers
    with the SDK's ``Response``. Unlike ``TwilioHttpClient`` it keeps no state
    per request, so one instance serves any number of threads at once.

    With ``base_url``, the scheme and host of each URL the SDK builds
    (``https://api.twilio.com``) are replaced by those of ``base_url``; a path in
    ``base_url`` is prepended to the request's path, which is otherwise kept.

    urllib3 retries nothing (a resent message could reach the recipient twice),
    and its exceptions are raised as they are: a connect-phase error
    (``NewConnectionError``, ``ConnectTimeoutError``, ``SSLError``,
    ``ProxyError``) means the request never left; ``ReadTimeoutError`` and
    ``ProtocolError`` mean it may have been received.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float | None = None,
        maxsize: int = DEFAULT_CONCURRENCY,
        proxy: str = "",
        logger: logging.Logger = http_logger,
    ) -> None:
        super().__init__(logger, False, timeout)
        self.base_url = base_url
        parts = urlsplit(base_url)
        self._base_prefix = f"{parts.scheme}://{parts.netloc}" if base_url else ""
        self._base_path = parts.path.rstrip("/")
        self.proxy = proxy
        self._maxsize = maxsize
        # Without a proxy, requests to the usual host go straight to its connection pool.
        self._origin = "" if proxy else self._base_prefix or DEFAULT_BASE_URL
        self._manager, self._pool = self._connections()
        self._auth: tuple[tuple[str, str], str] | None = None
        self._timeout = urllib3.Timeout(timeout, timeout) if timeout is not None else None
        # The SDK's exceptions carry no headers: each thread's last answer keeps them, so a
        # refusal's reset (``Retry-After``) can be read.
        self._answers = threading.local()

    def _connections(self) -> tuple[urllib3.PoolManager, urllib3.HTTPConnectionPool | None]:
        manager = pool_manager(self.proxy, self._maxsize)
        return manager, manager.connection_from_url(self._origin) if self._origin else None

    def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        method = method.upper()
        if self._base_prefix:
            scheme_end = url.find("://")
            path_start = url.find("/", scheme_end + 3) if scheme_end >= 0 else 0
            path = url[path_start:] if path_start >= 0 else "/"
            url = self._base_prefix + self._base_path + path
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request({"method": method, "url": url, "params": params, "headers": headers})
        if params:
            query = _form(params)
            if query:
                url += ("&" if "?" in url else "?") + query

        send_headers = dict(headers) if headers else {}
        body: bytes | None = None
        if data is not None:
            content_type = send_headers.get("Content-Type", "")
            if content_type in _JSON_TYPES:
                body = json.dumps(data, allow_nan=False).encode()
            elif data:
                body = _form(data).encode()
                send_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth is not None:
            cached = self._auth
            if cached is None or cached[0] != auth:
                cached = self._auth = (tuple(auth), _basic_auth(*auth))  # type: ignore[assignment]
            send_headers["Authorization"] = cached[1]

        if timeout == self.timeout:
            request_timeout = self._timeout
        else:
            request_timeout = None if timeout is None else urllib3.Timeout(timeout, timeout)
        pool = self._pool
        if pool is not None and not allow_redirects and url.startswith(self._origin):
            path = url[len(self._origin) :]
            if path.startswith("/"):
                response = pool.urlopen(
                    method,
                    path,
                    body=body,
                    headers=send_headers,
                    retries=NO_RETRIES,
                    redirect=False,
                    timeout=request_timeout,
                    assert_same_host=False,
                )
                return self._response(response)
        response = self._manager.urlopen(
            method,
            url,
            body=body,
            headers=send_headers,
            retries=urllib3.Retry(total=False, redirect=30 if allow_redirects else False),
            redirect=allow_redirects,
            timeout=request_timeout,
        )
        return self._response(response)

    def _response(self, response: urllib3.BaseHTTPResponse) -> Response:
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(response.status, response)  # type: ignore[arg-type]
        self._answers.headers = response.headers
        return Response(response.status, _text(response), response.headers)

    def last_headers(self) -> Mapping[str, str]:
        """The headers of the last answer this thread received ({} before any)."""
        return getattr(self._answers, "headers", None) or {}

    def close(self) -> None:
        """Close the pooled connections; the client stays usable, on new ones."""
        manager = self._manager
        self._manager, self._pool = self._connections()
        manager.clear()


def _form(values: Mapping[str, object]) -> str:
    """``values`` form-encoded as ``requests`` encodes ``data``: a list repeats its key and
    ``None`` is left out."""
    pairs: list[tuple[str, object]] = []
    for key, value in values.items():
        if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
            if value is not None:
                pairs.append((key, value))
        else:
            pairs.extend((key, item) for item in value if item is not None)  # type: ignore[union-attr]
    if all(type(k) is str and type(v) is str and k.isascii() and v.isascii() for k, v in pairs):
        return "&".join(
            f"{k.translate(_PLUS_QUOTED)}={v.translate(_PLUS_QUOTED)}" for k, v in pairs
        )
    return urlencode(pairs)


#: ``quote_plus`` for ASCII text as one ``str.translate``: the same bytes, without
#: ``urlencode``'s per-character Python work (most parameters are ASCII).
_PLUS_QUOTED = {
    code: (
        "+"
        if code == 0x20
        else chr(code)
        if chr(code).isalnum() or chr(code) in "_.-~"
        else f"%{code:02X}"
    )
    for code in range(128)
}


def _text(response: urllib3.BaseHTTPResponse) -> str:
    """The response body as text, in the charset the response names (UTF-8 otherwise)."""
    data = response.data
    if not data:
        return ""
    charset = "utf-8"
    content_type = response.headers.get("Content-Type", "")
    if "charset=" in content_type:
        charset = content_type.split("charset=", 1)[1].split(";", 1)[0].strip().strip("\"'")
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


class _ClientPool:
    """Twilio clients lent to one thread at a time, all on one pooled HTTP client.

    The HTTP client (and its connections) is shared by every thread; the SDK's
    ``Client`` objects are cheap but keep lazily built state, so no client is used
    by two threads at once and idle ones are kept for the next batch. After a fork
    the parent's clients and connections are dropped: the sockets belong to the
    parent.
    """

    def __init__(
        self, account_sid: str, auth_token: str, *, base_url: str, timeout: float, max_idle: int
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._base_url = "" if base_url.rstrip("/") == DEFAULT_BASE_URL else base_url
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle: list[Client] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # Proxy settings (HTTPS_PROXY, NO_PROXY) are read from the environment once, here.
        self._proxy = environment_proxy(base_url)
        self._http = self._new_http_client()

    def _new_http_client(self) -> PooledHttpClient:
        return PooledHttpClient(
            self._base_url, timeout=self._timeout, maxsize=self._max_idle, proxy=self._proxy
        )

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's clients and connections (lock held)."""
        if self._pid != os.getpid():
            self._idle.clear()
            self._http = self._new_http_client()
            self._pid = os.getpid()

    @contextmanager
    def client(self) -> Iterator[Client]:
        with self._lock:
            self._after_fork()
            client = self._idle.pop() if self._idle else None
            http = self._http
        if client is None:
            client = Client(self._account_sid, self._auth_token, http_client=http)
        try:
            yield client
        finally:
            with self._lock:
                if (
                    self._pid == os.getpid()
                    and client.http_client is self._http
                    and len(self._idle) < self._max_idle
                ):
                    self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
            http = self._http
        http.close()


def _require(options: dict[str, Any], alias: str, name: str) -> str:
    value = options.get(name)
    if not value or not isinstance(value, str):
        raise ImproperlyConfigured(
            f"CHANNEL_ADAPTERS[{alias!r}]: the Twilio option {name!r} is required"
        )
    return value


class TwilioSmsAdapter(ChannelAdapter):
    provider = "twilio"
    label = "Twilio"
    connect_code = "twilio:connect"
    timeout_code = "twilio:timeout"
    lost_code = "twilio:connection_lost"
    unexpected_code = "twilio:unexpected"
    unknown_advice = "reconcile from status callbacks, do not resend"
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
        where = f"CHANNEL_ADAPTERS[{alias!r}] (Twilio)"
        self.base_url = option_http_url(options, "base_url", DEFAULT_BASE_URL, where=where)
        self.configure_transport(options, where=where)
        assert self.timeout is not None
        self._clients = _ClientPool(
            self.account_sid,
            auth_token,
            base_url=self.base_url,
            timeout=self.timeout,
            max_idle=self.concurrency,
        )

    def close(self) -> None:
        """Close the pooled HTTP connections (the adapter stays usable)."""
        self._clients.close()

    # --- sending -------------------------------------------------------------------

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

    def send_one(self, message: OutboundMessage) -> SendResult:
        """Send one message; every outcome, including an unexpected error, is a result."""
        self.throttle()
        return self.attempt([message], lambda: [self._send_sms(message)])[0]

    def _send_sms(self, message: OutboundMessage) -> SendResult:
        instance = self._create(message, self._create_params(message))
        detail: dict[str, Any] = {**segments(message.body).as_dict()}
        if instance.num_segments is not None:
            num = str(instance.num_segments)
            detail["twilio_num_segments"] = int(num) if num.isdigit() else num
        return self._accepted(message, instance, detail)

    def _create(self, message: OutboundMessage, params: dict[str, Any]) -> MessageInstance:
        """One Messages API call: the created Message; a refusal raises ``AdapterError``."""
        with self._clients.client() as client:
            try:
                instance = client.messages.create(**params)
            except (TwilioRestException, TwilioServiceException) as exc:
                headers = client.http_client.last_headers()  # type: ignore[attr-defined]
                raise self._refused(message, exc, headers) from exc
        if not instance.sid:
            raise AdapterError(
                "Twilio answered 2xx without a Message SID",
                permanent=False,
                unknown=True,
                code="twilio:no_sid",
            )
        return instance

    def _accepted(
        self, message: OutboundMessage, instance: MessageInstance, detail: dict[str, Any]
    ) -> SendResult:
        if instance.status:
            detail["twilio_status"] = instance.status
        return self.sent(message, instance.sid, detail)

    # --- failures --------------------------------------------------------------------

    def _refused(
        self,
        message: OutboundMessage,
        exc: TwilioRestException | TwilioServiceException,
        headers: Mapping[str, str] | None = None,
    ) -> AdapterError:
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
        logger.warning(
            "Twilio refused message %s: HTTP %s, code %s (%s)",
            message.message_id,
            status,
            code,
            "permanent" if permanent else "transient",
        )
        return AdapterError(
            f"Twilio {code}: {text}" if code is not None else f"Twilio: {text}",
            permanent=permanent,
            code=f"twilio:{code}" if code is not None else f"twilio:http_{status}",
            suppress=self.suppress_reasons.get(code, "") if permanent and code else "",
            detail={"http_status": status, "twilio_code": code},
            retry_after=None if permanent else self.provider_reset(headers, status=status),
        )
