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

Batching
--------

SendGrid takes up to 1,000 personalizations in one request, and at most 1,000
recipients (to + cc + bcc) in all; a request with more is a 400 ("The
personalization block is limited to 1000 personalizations per API request", "There
is a limit of 1000 total recipients (to + cc + bcc) per request": SendGrid's Mail
Send errors page). A personalization may carry its own ``to``, ``subject``,
``headers``, ``substitutions``, ``custom_args`` and ``send_at``, which override the
request's (SendGrid's Personalizations page; keys of ``custom_args`` and
``headers`` are merged, the personalization's winning), while ``from``,
``content``, ``categories`` and ``mail_settings`` belong to the whole request.
Custom args take string values, 10,000 bytes at most in all (the figure SendGrid's
Mail Send reference gives; its errors page, checked for this, does not list it);
the emulator enforces it per personalization with the top-level args merged in.
Ours are ``{"message_id": "<id>"}``, far below it. One address may appear only
once across a request's personalizations ("Each unique email address in the
personalizations array should only be included once"): a 400 otherwise.

So ``send_batch`` groups the messages of a batch whose requests would be the same
but for the personalization - the same sender, the same rendered text and HTML
(categories and mail settings are the adapter's, the same for all) - into one
request of up to ``max_personalizations`` (default and maximum 1,000; more is
clamped to 1,000, and 1 sends every message alone). Each message is one
personalization with its recipient, its ``custom_args`` message id and its
headers (``List-Unsubscribe`` and ``List-Unsubscribe-Post`` point at that
customer's one-click link, so they are per personalization); the subject is the
request's when every message has the same one, else each personalization's. A
recipient already in a group starts or joins another, and a message SendGrid would
refuse anyway (no subject, or neither text nor HTML) is not grouped but sent
alone. A group of one is sent exactly as a message alone.

When it helps: the content is rendered per customer (Liquid), so two messages
share content only when the template's text and HTML use no customer data -
broadcasts, announcements, identical notices (a personalized subject alone still
groups; links unique to the recipient do not prevent it, see Substitutions). Most
real sends are personalized (``Hi {{ customer.first_name }}``) and still make one
request per message, as before; grouping then costs a dictionary lookup per
message (and the search for its personal strings) and nothing else.

Substitutions
-------------

Marketing email is never quite the same for two recipients: each copy carries
its own one-click unsubscribe and preference-center links (signed per customer)
and its own tracked links (``/r/<signed token>`` per message and link). The
dispatcher lists those strings in ``metadata["personal"]``. Each one that occurs
in the text, the HTML or the subject is replaced by a substitution tag
(``[%p0%]``, ``[%p1%]``, ... numbered in order of first appearance: text, HTML,
subject), longer strings first so that one containing another is matched whole,
and the HTML-escaped form of a string is matched too (a tag of its own). Messages
whose templated content is the same group as above, and in a group request the
content (and the subject, when all are the same) is the templated one while each
personalization carries ``"substitutions": {tag: its own string}``; SendGrid puts
the strings back into the text, the HTML, the subject (and reply-to, custom args,
which hold no tag of ours) of that personalization's mail, so every recipient gets
exactly the content it was rendered with. Substituting back is the exact inverse
of templating as long as nothing else looks like a tag: a message whose subject,
content or headers already hold ``[%p`` is not templated (it still groups, with
messages of identical content only). Nor is one whose substitutions would pass
``MAX_SUBSTITUTION_BYTES`` (10,000 bytes, keys and values in UTF-8: SendGrid's
older documented limit, the current one being 50,000), so its content names its
recipient and it goes alone in practice. A message alone, by design or when a
refused group is sent again message by message, is sent exactly as before: its
own content, no tags, no substitutions.

Every message of a group gets the group's outcome. Accepted: all accepted, with the
same ``X-Message-Id`` as ``provider_message_id``; SendGrid's events for each
recipient carry ``sg_message_id = "<X-Message-Id>.<per recipient>"`` and that
personalization's ``custom_args``, so the event webhook finds the message by its
``message_id`` and checks the ``X-Message-Id`` prefix, one to one as before
(``channels.webhooks.processing``). Transient or unknown: all of them the same, and
for the same reason (the request never left / may have been queued). A 400 or 413
refuses the whole request and queues none of it, so one bad address among 1,000
would fail 999 good messages: when SendGrid's errors name a personalization (or no
field at all), each message of the group is sent again alone, in a second round
after the batch's other requests, and only the bad one fails; when they name a
shared part (``from``, ``content``, ``subject``) every message would fail alone the
same way, so they fail together without a second round. Addresses are checked
before grouping only as far as ``_parse_address`` does (one ``@``, no white space),
which SendGrid's own check is stricter than; the resend alone is what isolates
the rest. Sending again after a 400 cannot duplicate anything: nothing of the
request was queued.

With ``rate_per_second`` set, a request of N messages draws N permits (the rate is
in messages); the messages of a refused group draw again when sent alone.

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

import html as html_lib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
#: SendGrid's limit: at most 1,000 personalizations (and 1,000 recipients, to + cc + bcc)
#: in one Mail Send request. Each of ours has one recipient.
MAX_PERSONALIZATIONS = 1000
#: SendGrid's limits on categories: at most 10 per message, each up to 255 characters.
MAX_CATEGORIES = 10
MAX_CATEGORY_LENGTH = 255
#: 4xx statuses worth retrying; every other 4xx is a request SendGrid will never take.
#: 401 and 403 (a revoked key, an unverified sender) are the account's problem, not the
#: message's: messages wait with backoff for the fix instead of all failing for good.
TRANSIENT_STATUSES = frozenset({401, 403, 408, 429})
#: The most a message's substitutions may take (tags and values, UTF-8 bytes) for it to
#: be grouped by substitution. SendGrid documents 50,000 bytes per personalization
#: (10,000 in older documents): the lower figure, to be safe.
MAX_SUBSTITUTION_BYTES = 10_000
#: How each substitution tag starts (``[%p0%]``, ``[%p1%]``, ...). Content that holds it
#: already is never templated, so every tag in a templated text is one of ours.
_TAG_START = "[%p"
#: Statuses for which SendGrid refused a request's contents and queued none of it: a
#: refused group is sent again one message at a time (see the module docstring).
_ISOLATE_STATUSES = frozenset({400, 413})

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
        requests: list[list[tuple[int, _Prepared]]] = []
        # Templating for substitutions is worth it only where messages may be grouped.
        groupable = self.max_personalizations > 1 and len(batch) > 1
        for index, prepared in self._prepared(batch, results, template=groupable):
            requests.append([(index, prepared)])
        requests = self._grouped(requests)

        # Phase one: every request, a group or a single message.
        outcomes = self._run(requests)
        isolate: list[list[tuple[int, _Prepared]]] = []
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
            for request, (answers, _rejected) in zip(isolate, self._run(isolate), strict=True):
                results[request[0][0]] = answers[0]
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value]

    def send_one(self, message: OutboundMessage) -> SendResult:
        """One ``POST /v3/mail/send`` for one message: never raises."""
        return self.send_batch([message])[0]

    def build_payload(self, message: OutboundMessage) -> dict[str, Any]:
        """The v3 Mail Send request body for one message alone."""
        return self._payload([self._prepare(message, template=False)])

    # --- grouping --------------------------------------------------------------------

    def _prepared(
        self,
        batch: Sequence[OutboundMessage],
        results: list[SendResult | None],
        *,
        template: bool,
    ) -> Iterator[tuple[int, _Prepared]]:
        """The batch's sendable messages; the refused ones get their result here."""
        for index, message in enumerate(batch):
            try:
                yield index, self._prepare(message, template=template)
            except _Refused as exc:
                results[index] = SendResult(
                    message_id=message.message_id,
                    accepted=False,
                    permanent=True,
                    error=str(exc),
                    error_code=exc.code,
                )

    def _grouped(
        self, singles: list[list[tuple[int, _Prepared]]]
    ) -> list[list[tuple[int, _Prepared]]]:
        """Messages whose requests would differ only in their personalization, in
        requests of up to ``max_personalizations``; the rest one request each.

        A recipient address appears at most once in a request (SendGrid refuses a
        repeated one), and a message SendGrid would refuse anyway (no subject, no
        content) is never grouped, so that it fails alone.
        """
        if self.max_personalizations == 1 or len(singles) <= 1:
            return singles
        requests: list[list[tuple[int, _Prepared]]] = []
        open_groups: dict[tuple[Any, ...], list[tuple[list[tuple[int, _Prepared]], set[str]]]] = {}
        for request in singles:
            index, prepared = request[0]
            if prepared.shared is None:
                requests.append(request)
                continue
            address = prepared.to["email"].lower()
            candidates = open_groups.setdefault(prepared.shared, [])
            for members, addresses in candidates:
                if len(members) < self.max_personalizations and address not in addresses:
                    members.append((index, prepared))
                    addresses.add(address)
                    break
            else:
                members = [(index, prepared)]
                candidates.append((members, {address}))
                requests.append(members)
        return requests

    def _run(
        self, requests: list[list[tuple[int, _Prepared]]]
    ) -> list[tuple[list[SendResult], bool]]:
        """Make the requests, concurrently, in order: (results, refused as a group)."""
        if len(requests) <= 1 or self.concurrency == 1:
            return [self._send(request) for request in requests]
        workers = min(self.concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sendgrid") as pool:
            return list(pool.map(self._send, requests))

    def _send(self, request: list[tuple[int, _Prepared]]) -> tuple[list[SendResult], bool]:
        """One ``POST /v3/mail/send`` for one or more messages: never raises.

        The second value is True when SendGrid refused a request of several messages
        for its contents (400, 413) in a way a message alone might not be: the caller
        then sends them one by one.
        """
        messages = [prepared.message for _index, prepared in request]
        group = len(messages) > 1
        self.throttle(len(messages))
        try:
            # Serialized as python_http_client serializes a request body.
            body = json.dumps(self._payload([prepared for _index, prepared in request]))
            response = self._transport.post(body.encode("utf-8"), self._headers, self._timeout)
        except HTTPError as exc:
            results = self._http_error(messages, exc)
            if group and int(exc.status_code) in _ISOLATE_STATUSES:
                return results, _isolable(results[0].detail.get("errors") or [])
            return results, False
        except _CONNECT_PHASE_ERRORS as exc:
            # Raised while connecting: SendGrid has nothing to act on.
            return self._unreachable(messages, exc), False
        except MaxRetryError as exc:  # not raised with retries off; classified all the same
            if isinstance(exc.reason, _CONNECT_PHASE_ERRORS):
                return self._unreachable(messages, exc.reason), False
            return self._lost(messages, exc, "sendgrid:disconnected"), False
        except ReadTimeoutError as exc:
            # The request went out; the response did not come in time.
            return self._lost(messages, exc, "sendgrid:timeout"), False
        except (ProtocolError, HTTPException, OSError) as exc:
            # The request went out; the connection broke before the response.
            return self._lost(messages, exc, "sendgrid:disconnected"), False
        except Exception as exc:
            logger.exception(
                "SendGrid send failed unexpectedly for message(s) %s",
                ", ".join(str(m.message_id) for m in messages),
            )
            error = f"unexpected error while sending: {exc!r}"
            return [self._unknown(m, error, "sendgrid:error") for m in messages], False

        provider_message_id = response.headers.get("X-Message-Id") or ""
        detail: dict[str, Any] = {"status": response.status_code}
        if self.sandbox:
            detail["sandbox"] = True
        if group:
            detail["personalizations"] = len(messages)
        return [
            SendResult(
                message_id=message.message_id,
                accepted=True,
                provider_message_id=provider_message_id,
                detail=dict(detail),
            )
            for message in messages
        ], False

    def _prepare(self, message: OutboundMessage, *, template: bool = True) -> _Prepared:
        """Check a message and split it into what a request shares and what is its own;
        with ``template``, its personal strings (``metadata["personal"]``) made tags."""
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
        if not (message.subject and (message.body or message.html)):
            # SendGrid refuses it (no subject, or no content): alone, so it fails alone.
            return _Prepared(message=message, to=to, sender=sender, shared=None)
        subject, body, html = message.subject, message.body, message.html
        substitutions: dict[str, str] = {}
        personal = message.metadata.get("personal") if template and message.metadata else None
        if personal and isinstance(personal, list | tuple):
            templated = _templated(personal, (body, html, subject), message.headers.values())
            if templated is not None:
                (body, html, subject), substitutions = templated
        return _Prepared(
            message=message,
            to=to,
            sender=sender,
            # Templated content groups only with templated content: a message not
            # templated has no tag of ours in it, whatever its text.
            shared=(sender["email"], sender.get("name"), body, html, bool(substitutions)),
            subject=subject,
            body=body,
            html=html,
            substitutions=substitutions,
        )

    def _payload(self, members: Sequence[_Prepared]) -> dict[str, Any]:
        """The request body for one message, or for several as personalizations.

        Alone, a message's subject, ``custom_args`` and headers are at the top level,
        with its own content (never templated). Together, the content is the group's
        (templated, if the messages were) and each personalization holds its recipient,
        its ``custom_args``, its headers, its substitutions if any, and its subject
        unless all the subjects are the same.
        """
        first = members[0].message
        alone = len(members) == 1
        body, html = (first.body, first.html) if alone else (members[0].body, members[0].html)
        # SendGrid requires text/plain before text/html; an empty value is rejected.
        content = []
        if body:
            content.append({"type": "text/plain", "value": body})
        if html:
            content.append({"type": "text/html", "value": html})

        if alone:
            payload: dict[str, Any] = {
                "personalizations": [{"to": [members[0].to]}],
                "from": members[0].sender,
                "subject": first.subject,
                "content": content,
                "custom_args": {"message_id": str(first.message_id)},
            }
            if first.headers:
                payload["headers"] = dict(first.headers)
        else:
            # Templated subjects (those of messages with substitutions) are compared as
            # templated; when they differ, each personalization has its own subject as
            # written, which holds no tag, so that substituting leaves it alone.
            subject = members[0].subject
            same_subject = all(m.subject == subject for m in members)
            personalizations = []
            for member in members:
                message = member.message
                personalization: dict[str, Any] = {
                    "to": [member.to],
                    "custom_args": {"message_id": str(message.message_id)},
                }
                if not same_subject:
                    personalization["subject"] = message.subject
                if message.headers:
                    personalization["headers"] = dict(message.headers)
                if member.substitutions:
                    personalization["substitutions"] = dict(member.substitutions)
                personalizations.append(personalization)
            payload = {"personalizations": personalizations, "from": members[0].sender}
            if same_subject:
                payload["subject"] = subject
            payload["content"] = content
        if self.categories:
            payload["categories"] = list(self.categories)
        if self.sandbox:
            payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return payload

    # --- helpers -------------------------------------------------------------------

    def _unreachable(self, messages: Sequence[OutboundMessage], exc: Exception) -> list[SendResult]:
        return [
            SendResult(
                message_id=message.message_id,
                accepted=False,
                permanent=False,
                error=f"SendGrid unreachable, request not sent: {exc}",
                error_code="sendgrid:unreachable",
            )
            for message in messages
        ]

    def _lost(
        self, messages: Sequence[OutboundMessage], exc: Exception, code: str
    ) -> list[SendResult]:
        ids = ", ".join(str(m.message_id) for m in messages)
        logger.warning("SendGrid outcome unknown for message(s) %s: %s", ids, exc)
        error = (
            f"no response from SendGrid after the request was sent ({exc!r}); "
            "it may have been queued: reconcile, do not resend"
        )
        return [self._unknown(message, error, code) for message in messages]

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
        return [
            SendResult(
                message_id=message.message_id,
                accepted=False,
                permanent=400 <= status < 500 and status not in TRANSIENT_STATUSES,
                error=f"SendGrid {status}: {text}",
                error_code=f"sendgrid:{status}",
                detail=dict(detail),
            )
            for message in messages
        ]

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


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A message checked for sending: its recipient and sender as SendGrid takes them,
    and ``shared``, what its request has in common with another message's that may
    share it (None: it goes alone).

    ``subject``, ``body`` and ``html`` are what a group request carries for it: the
    message's own, or templated (each personal string a tag) when ``substitutions``
    (tag -> string) is not empty. A request of this message alone never uses them.
    """

    message: OutboundMessage
    to: dict[str, str]
    sender: dict[str, str]
    shared: tuple[Any, ...] | None
    subject: str = ""
    body: str = ""
    html: str = ""
    substitutions: dict[str, str] = field(default_factory=dict)


def _templated(
    personal: Sequence[Any], texts: Sequence[str], others: Iterable[str] = ()
) -> tuple[list[str], dict[str, str]] | None:
    """``texts`` with each occurrence of a personal string replaced by a substitution
    tag, and the substitutions (tag -> string) that put them back; None when there is
    nothing to substitute, or when it cannot be done safely.

    Matches are leftmost-longest and never overlap (a string that contains another is
    matched whole), so substituting back gives the texts exactly. Tags are numbered in
    order of first appearance across ``texts``: two messages rendered from the same
    template get the same templated texts whatever order their strings are listed in.
    Not templated: texts or ``others`` (the headers: SendGrid might substitute there
    too) that hold a tag-like ``[%p`` already, and substitutions over
    ``MAX_SUBSTITUTION_BYTES``.
    """
    wanted = [value for value in personal if isinstance(value, str) and value]
    if not wanted:
        return None
    for text in texts:
        if _TAG_START in text:
            return None
    for text in others:
        if _TAG_START in text:
            return None
    # An HTML template may hold a string escaped ("&" as "&amp;"): that form too.
    wanted += [html_lib.escape(value) for value in wanted]
    strings = sorted(dict.fromkeys(wanted), key=len, reverse=True)
    prefix = _common_prefix(strings)
    if len(prefix) >= _MIN_ANCHOR:
        # At each occurrence of the prefix, the longest string there: one set lookup per
        # length (personal strings come in few lengths), longest first.
        by_length: dict[int, set[str]] = {}
        for string in strings:
            by_length.setdefault(len(string), set()).add(string)
        lengths: list[tuple[int, set[str]]] | None = sorted(by_length.items(), reverse=True)
    else:
        lengths = None

    tags: dict[str, str] = {}  # personal string -> its tag
    templated: list[str] = []
    for text in texts:
        found = _matches(text, strings, prefix, lengths)
        if not found:
            templated.append(text)
            continue
        pieces: list[str] = []
        last = 0
        for at, string in found:
            tag = tags.get(string)
            if tag is None:
                tag = tags[string] = f"{_TAG_START}{len(tags)}%]"
            pieces.append(text[last:at])
            pieces.append(tag)
            last = at + len(string)
        pieces.append(text[last:])
        templated.append("".join(pieces))
    if not tags:
        return None
    substitutions = {tag: string for string, tag in tags.items()}
    if substitution_bytes(substitutions) > MAX_SUBSTITUTION_BYTES:
        return None
    return templated, substitutions


#: A common prefix at least this long (``https://`` and more, as links have) is searched
#: for instead of each string: one pass over the text, not one per string.
_MIN_ANCHOR = 8


def _matches(
    text: str,
    strings: Sequence[str],
    prefix: str,
    lengths: Sequence[tuple[int, set[str]]] | None,
) -> list[tuple[int, str]]:
    """The leftmost-longest non-overlapping occurrences of ``strings`` (longest first,
    all starting with ``prefix``) in ``text``: (position, string), in order. With
    ``lengths`` (the strings by length, longest first) the prefix is searched for."""
    found: list[tuple[int, str]] = []
    if lengths is not None:
        at = text.find(prefix)
        while at != -1:
            for length, same_length in lengths:
                string = text[at : at + length]
                if string in same_length:
                    found.append((at, string))
                    at = text.find(prefix, at + length)
                    break
            else:
                at = text.find(prefix, at + 1)
        return found
    candidates: list[tuple[int, int, str]] = []
    for string in strings:
        at = text.find(string)
        while at != -1:
            candidates.append((at, -len(string), string))
            at = text.find(string, at + 1)
    candidates.sort()
    end = 0
    for at, minus_length, string in candidates:
        if at >= end:
            found.append((at, string))
            end = at - minus_length
    return found


def _common_prefix(strings: Sequence[str]) -> str:
    """The longest prefix of every one of ``strings`` (those of the least and the
    greatest), found by halving with C-speed comparisons."""
    if len(strings) == 1:
        return strings[0]
    first, last = min(strings), max(strings)
    low, high = 0, len(first)
    while low < high:
        middle = (low + high + 1) // 2
        if last.startswith(first[:middle]):
            low = middle
        else:
            high = middle - 1
    return first[:low]


def substitution_bytes(substitutions: Mapping[str, str]) -> int:
    """The size of a personalization's substitutions: tags and values, UTF-8 bytes."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())


def _isolable(errors: list[dict[str, Any]]) -> bool:
    """Whether a group's 400 may be one message's fault: it names no field, or names a
    personalization. An error in a shared part (``from``, ``content``, ``subject``)
    would come back for every message alone, so they are not sent again."""
    if not errors:
        return True
    return any(not e.get("field") or str(e["field"]).startswith("personalizations") for e in errors)


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
