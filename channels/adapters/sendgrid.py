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

The SDK (python_http_client over urllib) has no timeout by default. The adapter
sets ``timeout`` on the SDK's ``Client`` (clients derived from it, such as
``client.mail.send``, inherit it) and passes it to every ``post`` call; urllib
applies it to the connect and to every socket read. urllib wraps any failure
while connecting or writing the request in ``URLError``, while a failure while
reading the response surfaces as ``TimeoutError``, ``OSError`` or an
``http.client.HTTPException``: that is the line between "never sent" and
"outcome unknown".
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parseaddr
from typing import Any
from urllib.error import URLError

from django.core.exceptions import ImproperlyConfigured
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from channels.adapters.base import ChannelAdapter, OutboundMessage, SendResult

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

        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ImproperlyConfigured(f"{where}: 'timeout' must be a positive number of seconds")
        self.timeout = float(timeout)

        concurrency = options.get("concurrency", DEFAULT_CONCURRENCY)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ImproperlyConfigured(f"{where}: 'concurrency' must be a positive integer")
        self.concurrency: int = concurrency

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
            response = self._client().client.mail.send.post(
                request_body=payload, timeout=self.timeout
            )
        except HTTPError as exc:
            return self._http_error(message, exc)
        except URLError as exc:
            # Raised while connecting or writing the request: SendGrid has nothing to act on.
            return SendResult(
                message_id=message.message_id,
                accepted=False,
                permanent=False,
                error=f"SendGrid unreachable, request not sent: {exc.reason}",
                error_code="sendgrid:unreachable",
            )
        except (OSError, http.client.HTTPException) as exc:
            # The request went out; the response timed out or the connection broke.
            logger.warning("SendGrid outcome unknown for message %s: %s", message.message_id, exc)
            code = "sendgrid:timeout" if isinstance(exc, TimeoutError) else "sendgrid:disconnected"
            return self._unknown(
                message,
                f"no response from SendGrid after the request was sent ({exc!r}); "
                "it may have been queued: reconcile, do not resend",
                code,
            )
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

    def _client(self) -> SendGridAPIClient:
        """A fresh SDK client: cheap, and python_http_client mutates its headers per call,
        so clients are not shared between threads."""
        client = SendGridAPIClient(api_key=self.api_key, host=self.base_url)
        client.client.timeout = self.timeout
        return client

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
