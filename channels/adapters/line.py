"""LINE push messages through the official ``line-bot-sdk`` (``linebot.v3.messaging``).

Configuration::

    CHANNEL_ADAPTERS = {"line": {
        "BACKEND": "channels.adapters.line.LineAdapter",
        "OPTIONS": {
            "channel_access_token": "...",       # required
            "channel_secret": "...",             # optional here: webhooks verify with it
            "base_url": "https://api.line.me",   # tests: the local provider emulator
            "timeout": 10,                       # seconds per request, connect included
            "concurrency": 8,                    # requests in flight per batch
        },
    }}

Each message is one ``POST /v2/bot/message/push`` to one user; a batch's requests
run concurrently (``concurrency`` at a time) and the results come back in batch
order. One message's failure is a result, never an exception.

What is sent
------------

``OutboundMessage.to`` is a LINE user id (``U`` + 32 lowercase hex digits, as the
webhooks deliver it); anything else is refused before any request (permanent,
``line:invalid_to``, suppressed as ``"invalid"``: no such address can ever work).

``OutboundMessage.metadata["line"]`` chooses the kind of message:

* absent (or ``{"kind": "text"}``) - a text message with ``body``. LINE counts
  text in UTF-16 code units (an emoji is 2) and refuses more than 5000: such a
  body is a permanent failure (``line:text_too_long``), never cut short; an empty
  body is permanent too (``line:empty``).
* ``{"kind": "template", "alt_text", "title", "text", "actions"}`` - a Buttons
  template. ``actions`` holds 1 to 4 items, each ``{"label", "uri"}`` (opens a
  link) or ``{"label", "text"}`` (the user sends that text); ``title`` is
  optional.
* ``{"kind": "flex", "alt_text", "contents"}`` - a Flex message; ``contents`` is
  the Flex bubble or carousel JSON as designed in the Flex Message Simulator.
  A property the SDK does not know would be dropped from the request without a
  word, so such contents are refused instead (``line:invalid_message``).

``alt_text`` (what notifications and chat lists show) defaults to ``body`` and
may hold up to 400 characters. A message whose structure is wrong is refused
before any request (permanent, ``line:invalid_message``). LINE counts the
template's title, text and labels in grapheme clusters, which this adapter does
not compute: those limits (title 40, text 160 or 60 with a title, label 20) are
left to LINE, which answers 400 (permanent) when one is exceeded.

Retry keys
----------

Every push carries ``X-Line-Retry-Key``: ``metadata["retry_key"]`` (a UUID), which
the dispatcher draws at random for each attempt and stores with the message, else a
fresh random UUID. LINE executes a request only once per key for 24 hours after the
first attempt and answers a repeat with **409** and the original's request id in
``x-line-accepted-request-id``: that is an accepted result (``detail["duplicate"] =
True``). So a message whose outcome was unknown may be pushed again with the same
stored key within 24 hours without reaching the user twice. The key is in
``detail["retry_key"]`` of every result that made a request.

Keys are random, never derived from our ids: two installations pushing through one
channel (production and a staging copy, a rebuilt database whose ids restart) would
otherwise send the same keys, and LINE would drop one's messages as repeats of the
other's.

How outcomes map to ``SendResult``
----------------------------------

=======================================  =============================================
LINE's answer                            ``SendResult``
=======================================  =============================================
200                                      accepted; ``provider_message_id`` is the
                                         ``x-line-request-id`` header; ``detail`` has
                                         ``sent_message_id`` (``sentMessages[0].id``)
409 (retry key already accepted)         accepted, ``duplicate``; the provider id is
                                         ``x-line-accepted-request-id``
400 (invalid request; "Failed to send    permanent, ``line:400``; ``error`` is LINE's
messages" for a user id LINE does not    ``message`` and ``details``
know), 413, 415 and other 4xx
401 (token invalid, expired, revoked),   transient: the channel's credentials, plan or
403 (plan or permission), 404 (no such   our ``base_url``, not the message: messages
endpoint: a wrong ``base_url``)          wait with backoff for the fix
429 rate limit                           transient, ``line:429``; ``Retry-After`` as
                                         ``retry_after``, holding the channel until then
429 "You have reached your monthly       transient, ``line:monthly_limit``; ``detail``
limit."                                  has ``monthly_limit`` and a ``hint``: nothing
                                         goes out until the quota resets next month or
                                         the plan changes
5xx                                      transient, ``line:<status>``
connection refused, DNS, connect         transient, ``line:connect``: the request never
timeout, TLS handshake                   left
read timeout, connection lost after      ``unknown`` (``line:timeout``,
the request was written                  ``line:connection_lost``): LINE may have it;
                                         a resend with the same retry key is safe
=======================================  =============================================

LINE has no delivery receipts for pushes: ``provider_message_id`` names the
accepted request, and "accepted" is the last state a push reaches.

A push to a user who blocked the account is not an error: LINE answers 200 and
silently drops the message, so there is nothing to map here. Only the
``unfollow`` webhook tells, and that is where the user id gets suppressed.

The SDK passes ``_request_timeout`` to urllib3 as a total per request; it has no
default. Its urllib3 pool retries nothing here: a retry belongs to the
dispatcher, with the same retry key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from linebot.v3.messaging import (
    ApiClient,
    ApiException,
    Configuration,
    FlexContainer,
    FlexMessage,
    MessageAction,
    MessagingApi,
    PushMessageRequest,
    TemplateMessage,
    TextMessage,
    URIAction,
)
from linebot.v3.messaging.models import ButtonsTemplate
from linebot.v3.messaging.rest import RESTClientObject

from channels.adapters.base import (
    RATE_LIMIT_OPTIONS,
    TRANSPORT_ERRORS,
    TRANSPORT_OPTIONS,
    AdapterError,
    ChannelAdapter,
    OutboundMessage,
    SendResult,
    option_http_url,
)
from channels.adapters.http import fast_headers

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.line.me"
#: LINE's limit on a text message, in UTF-16 code units.
MAX_TEXT_LENGTH = 5000
#: LINE's limit on ``altText`` of template and Flex messages.
MAX_ALT_TEXT_LENGTH = 400
#: A Buttons template holds at most this many actions.
MAX_BUTTON_ACTIONS = 4
#: The user ids LINE gives a channel (webhooks' ``source.userId``).
USER_ID = re.compile(r"U[0-9a-f]{32}")
#: LINE's 429 ``message`` when the channel's monthly message quota is used up.
MONTHLY_LIMIT_MESSAGE = "You have reached your monthly limit."
MONTHLY_LIMIT_HINT = (
    "the LINE channel's monthly message quota is used up: pushes fail until it resets "
    "at the start of next month or the plan (or additional message allowance) is raised"
)
#: 4xx statuses worth retrying: the channel's credentials, plan or our configuration.
TRANSIENT_STATUSES = frozenset({401, 403, 404, 429})

#: ``MessagingApi.push_message_with_http_info`` without the SDK's argument validation
#: (the undecorated function pydantic's ``validate_arguments`` keeps as ``raw_function``).
_push_message = getattr(
    MessagingApi.push_message_with_http_info,
    "raw_function",
    MessagingApi.push_message_with_http_info,
)

_OPTIONS = (
    RATE_LIMIT_OPTIONS
    | TRANSPORT_OPTIONS
    | frozenset({"channel_access_token", "channel_secret", "base_url"})
)


def _invalid(message: str, code: str, *, suppress: str = "", **detail: Any) -> AdapterError:
    """A message the adapter will not send as it is (raised before any request)."""
    return AdapterError(message, permanent=True, code=code, suppress=suppress, detail=detail)


def utf16_length(text: str) -> int:
    """The length LINE counts for a text: UTF-16 code units (an emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def _where(alias: str) -> str:
    return f"CHANNEL_ADAPTERS[{alias!r}]['OPTIONS']"


class LineAdapter(ChannelAdapter):
    provider = "line"
    label = "LINE"
    connect_code = "line:connect"
    timeout_code = "line:timeout"
    lost_code = "line:connection_lost"
    unexpected_code = "line:unexpected"
    unknown_advice = "resend only with the same retry key"
    thread_name_prefix = "line"
    #: A resend with the attempt's stored retry key is executed at most once by LINE: the
    #: dispatcher reconciles a "maybe sent" push by resending it.
    idempotent_resend = True

    def __init__(self, *, alias: str, **options: Any) -> None:
        super().__init__(alias=alias, **options)
        where = _where(alias)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"{where}: unknown LINE option(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(_OPTIONS))}"
            )

        token = options.get("channel_access_token")
        if not token or not isinstance(token, str) or token != token.strip():
            raise ImproperlyConfigured(
                f"{where}: 'channel_access_token' is required for the LINE adapter "
                "(a non-empty string without surrounding spaces)"
            )
        self._access_token = token

        secret = options.get("channel_secret") or ""
        if not isinstance(secret, str):
            raise ImproperlyConfigured(f"{where}: 'channel_secret' must be a string")
        self.channel_secret: str = secret

        self.base_url = option_http_url(options, "base_url", DEFAULT_BASE_URL, where=where)
        self.configure_transport(options, where=where)

        self._configuration = Configuration(host=self.base_url, access_token=token)
        # No retries inside urllib3: a failed connect is reported as such (transient), a
        # failure after the request went out as unknown, and resending is the dispatcher's.
        self._configuration.retries = False
        self._configuration.connection_pool_maxsize = self.concurrency
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._rest: RESTClientObject | None = None
        self._idle: list[MessagingApi] = []

    # --- the SDK client ------------------------------------------------------------

    @contextmanager
    def _api(self) -> Iterator[MessagingApi]:
        """A ``MessagingApi`` lent to one request at a time, on the shared connection pool.

        urllib3's pool is thread-safe and shared by every thread; the ``ApiClient``
        keeps per-call state (``last_response``), so no client serves two requests
        at once. Idle ones are kept for the next request. After a fork the parent's
        clients and connections are left alone and a new pool is made.
        """
        with self._lock:
            if self._rest is None or self._pid != os.getpid():
                self._rest = RESTClientObject(self._configuration)
                fast_headers(self._rest.pool_manager)  # its answers' headers read directly
                self._idle.clear()
                self._pid = os.getpid()
            rest = self._rest
            api = self._idle.pop() if self._idle else None
        if api is None:
            client = ApiClient(self._configuration)
            client.rest_client = rest
            api = MessagingApi(client)
        api.api_client.last_response = None
        try:
            yield api
        finally:
            with self._lock:
                if api.api_client.rest_client is self._rest and len(self._idle) < self.concurrency:
                    self._idle.append(api)

    def close(self) -> None:
        """Close the pooled HTTP connections (the adapter stays usable)."""
        with self._lock:
            rest, self._rest = self._rest, None
            self._idle.clear()
            mine = self._pid == os.getpid()
        if rest is not None and mine:
            rest.pool_manager.clear()

    # --- sending -------------------------------------------------------------------

    @staticmethod
    def retry_key_for(message: OutboundMessage) -> str:
        """The attempt's stored key (``metadata["retry_key"]``), else a fresh random one.

        A stored key that is not a UUID is a bug upstream: replaced by a random key,
        with a warning, rather than sent for LINE to refuse.
        """
        stored = message.metadata.get("retry_key")
        if stored:
            try:
                return str(uuid.UUID(str(stored)))
            except ValueError:
                logger.warning(
                    "LINE message %s: retry key %r is not a UUID; a random one is used",
                    message.message_id,
                    stored,
                )
        return str(uuid.uuid4())

    def send_one(self, message: OutboundMessage) -> SendResult:
        """One push: never raises, whatever happens to the request."""
        try:
            request = self.build_request(message)
        except AdapterError as exc:
            logger.warning(
                "LINE message %s refused before sending: %s", message.message_id, exc.code
            )
            return self.failed([message], exc)[0]

        key = self.retry_key_for(message)
        self.throttle()
        return self.attempt(
            [message],
            lambda: [self._push(message, request, key)],
            unknown_detail={"retry_key": key},
        )[0]

    def _push(self, message: OutboundMessage, request: PushMessageRequest, key: str) -> SendResult:
        """One ``POST /v2/bot/message/push`` through the SDK; its outcome as a result."""
        with self._api() as api:
            client = api.api_client
            try:
                # The arguments are the SDK's own model and a string: the SDK's
                # re-validation of them (pydantic's validate_arguments) is skipped.
                response = _push_message(
                    api, request, x_line_retry_key=key, _request_timeout=self.timeout
                )
            except ApiException as exc:
                if not exc.status:
                    # The SDK's wrapping of a TLS failure: the connection was never made.
                    return self.not_sent([message], exc)[0]
                return self._refused(message, key, exc)
            except TRANSPORT_ERRORS:
                raise
            except Exception as exc:
                last = getattr(client, "last_response", None)
                if last is None or not 200 <= last.status <= 299:
                    raise
                # LINE took it; only its answer's body did not read as a PushMessageResponse.
                logger.warning(
                    "LINE accepted message %s with an unreadable body: %r", message.message_id, exc
                )
                return self._accepted(
                    message,
                    key,
                    last.status,
                    last.getheaders(),
                    None,
                    duplicate=False,
                    body=_json(last.data),
                )
        return self._accepted(
            message,
            key,
            response.status_code,
            response.headers or {},
            response.data,
            duplicate=False,
        )

    # --- building the request ------------------------------------------------------------

    def build_request(self, message: OutboundMessage) -> PushMessageRequest:
        """The SDK's ``PushMessageRequest`` for one message, or ``AdapterError``."""
        if not isinstance(message.to, str) or not USER_ID.fullmatch(message.to):
            raise _invalid(
                f"not a LINE user id (U followed by 32 lowercase hex digits): {message.to!r}",
                "line:invalid_to",
                suppress="invalid",
            )
        spec = message.metadata.get("line")
        if spec is None:
            spec = {"kind": "text"}
        if not isinstance(spec, Mapping):
            raise _invalid("metadata['line'] must be an object", "line:invalid_message")
        kind = spec.get("kind", "text")
        try:
            if kind == "text":
                line_message: Any = self._text(message.body)
            elif kind == "template":
                line_message = self._buttons(spec, message.body)
            elif kind == "flex":
                line_message = self._flex(spec, message.body)
            else:
                raise _invalid(
                    f"metadata['line']['kind'] must be 'text', 'template' or 'flex', got {kind!r}",
                    "line:invalid_message",
                )
            return PushMessageRequest(to=message.to, messages=[line_message])
        except AdapterError:
            raise
        except (ValueError, TypeError) as exc:  # the SDK's models refused a value
            reason = " ".join(str(exc).split())  # pydantic's report spans several lines
            raise _invalid(
                f"the LINE {kind} message is invalid: {reason}", "line:invalid_message"
            ) from exc

    @staticmethod
    def _text(body: str) -> TextMessage:
        if not body:
            raise _invalid("a LINE text message needs a non-empty body", "line:empty")
        length = utf16_length(body)
        if length > MAX_TEXT_LENGTH:
            raise _invalid(
                f"the text is {length} characters long (UTF-16 code units); "
                f"LINE takes at most {MAX_TEXT_LENGTH}",
                "line:text_too_long",
                length=length,
                limit=MAX_TEXT_LENGTH,
            )
        return TextMessage(text=body)

    @staticmethod
    def _alt_text(spec: Mapping[str, Any], body: str) -> str:
        alt_text = spec.get("alt_text") or body
        if not isinstance(alt_text, str) or not alt_text:
            raise _invalid(
                "a LINE template or Flex message needs 'alt_text' (or a body)",
                "line:invalid_message",
            )
        length = utf16_length(alt_text)
        if length > MAX_ALT_TEXT_LENGTH:
            raise _invalid(
                f"'alt_text' is {length} characters long; LINE takes at most {MAX_ALT_TEXT_LENGTH}",
                "line:invalid_message",
                length=length,
                limit=MAX_ALT_TEXT_LENGTH,
            )
        return alt_text

    def _buttons(self, spec: Mapping[str, Any], body: str) -> TemplateMessage:
        alt_text = self._alt_text(spec, body)
        text = spec.get("text")
        if not isinstance(text, str) or not text:
            raise _invalid(
                "a LINE buttons template needs a non-empty 'text'", "line:invalid_message"
            )
        title = spec.get("title")
        if title is not None and not isinstance(title, str):
            raise _invalid("'title' must be a string", "line:invalid_message")
        actions = spec.get("actions")
        if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_BUTTON_ACTIONS:
            raise _invalid(
                f"a LINE buttons template needs 1 to {MAX_BUTTON_ACTIONS} 'actions'",
                "line:invalid_message",
            )
        built: list[Any] = []
        for i, action in enumerate(actions):
            if not isinstance(action, Mapping) or not isinstance(action.get("label"), str):
                raise _invalid(f"actions[{i}] needs a string 'label'", "line:invalid_message")
            has_uri, has_text = "uri" in action, "text" in action
            if has_uri == has_text:
                raise _invalid(
                    f"actions[{i}] needs exactly one of 'uri' and 'text'", "line:invalid_message"
                )
            if has_uri:
                built.append(URIAction(label=action["label"], uri=action["uri"]))
            else:
                built.append(MessageAction(label=action["label"], text=action["text"]))
        template = ButtonsTemplate(title=title or None, text=text, actions=built)
        return TemplateMessage(alt_text=alt_text, template=template)

    def _flex(self, spec: Mapping[str, Any], body: str) -> FlexMessage:
        alt_text = self._alt_text(spec, body)
        contents = spec.get("contents")
        if not isinstance(contents, Mapping) or contents.get("type") not in ("bubble", "carousel"):
            raise _invalid(
                "a LINE Flex message needs 'contents' of type 'bubble' or 'carousel'",
                "line:invalid_message",
            )
        container = FlexContainer.from_dict(dict(contents))
        if container is None:
            raise _invalid("the Flex contents could not be read", "line:invalid_message")
        dropped = _dropped(contents, container.to_dict(), "contents")
        if dropped:
            raise _invalid(
                "the Flex contents have properties the LINE SDK does not know, which would "
                f"not be sent: {', '.join(dropped[:5])}",
                "line:invalid_message",
            )
        return FlexMessage(alt_text=alt_text, contents=container)

    # --- outcomes ------------------------------------------------------------------

    def _accepted(
        self,
        message: OutboundMessage,
        key: str,
        status: int,
        headers: Mapping[str, str],
        data: Any,
        *,
        duplicate: bool,
        body: Any = None,
    ) -> SendResult:
        request_id = _header(headers, "x-line-request-id")
        detail: dict[str, Any] = {"http_status": status, "retry_key": key}
        if request_id:
            detail["line_request_id"] = request_id
        provider_id = request_id
        if duplicate:
            accepted_id = _header(headers, "x-line-accepted-request-id")
            detail["duplicate"] = True
            if accepted_id:
                detail["accepted_request_id"] = accepted_id
                provider_id = accepted_id
        sent = getattr(data, "sent_messages", None) or []
        if sent:
            detail["sent_message_id"] = sent[0].id
            if sent[0].quote_token:
                detail["quote_token"] = sent[0].quote_token
        elif isinstance(body, Mapping):
            sent_json = body.get("sentMessages")
            first = sent_json[0] if isinstance(sent_json, list) and sent_json else None
            if isinstance(first, Mapping) and first.get("id"):
                detail["sent_message_id"] = str(first["id"])
        if duplicate:
            logger.info(
                "LINE already had message %s (retry key %s): accepted as %s",
                message.message_id,
                key,
                provider_id,
            )
        return self.sent(message, provider_id, detail)

    def _refused(self, message: OutboundMessage, key: str, exc: ApiException) -> SendResult:
        status = int(exc.status)
        headers = exc.headers or {}
        body = _json(exc.body)
        if status == 409:
            return self._accepted(message, key, status, headers, None, duplicate=True, body=body)

        text = body.get("message") if isinstance(body, dict) else None
        details = _details(body)
        detail: dict[str, Any] = {"http_status": status, "retry_key": key}
        request_id = _header(headers, "x-line-request-id")
        if request_id:
            detail["line_request_id"] = request_id
        if text:
            detail["line_message"] = text
        if details:
            detail["details"] = details
        error_code = f"line:{status}"
        if status == 429 and text == MONTHLY_LIMIT_MESSAGE:
            error_code = "line:monthly_limit"
            detail["monthly_limit"] = True
            detail["hint"] = MONTHLY_LIMIT_HINT
        retry_after = _header(headers, "retry-after")
        if retry_after:
            detail["retry_after"] = retry_after
        permanent = 400 <= status < 500 and status not in TRANSIENT_STATUSES
        summary = text or f"HTTP {status} {exc.reason or ''}".rstrip()
        if details:
            summary += (
                " ("
                + "; ".join(
                    f"{d['property']}: {d['message']}" if d.get("property") else str(d["message"])
                    for d in details
                )
                + ")"
            )
        logger.warning(
            "LINE refused message %s: HTTP %s (%s)",
            message.message_id,
            status,
            "permanent" if permanent else "transient",
        )
        raise AdapterError(
            f"LINE {status}: {summary}",
            permanent=permanent,
            code=error_code,
            detail=detail,
            retry_after=None if permanent else self.provider_reset(headers, status=status),
        )


def _header(headers: Any, name: str) -> str:
    """A response header, whatever the case of its name (urllib3's dict or a plain one)."""
    if headers is None:
        return ""
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == lowered), None)
    return str(value) if value else ""


def _json(body: Any) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, TypeError):
        return None


def _details(body: Any) -> list[dict[str, str]]:
    """LINE's ``details: [{"message", "property"}]`` as a list; [] if not that shape."""
    details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return []
    return [
        {k: str(d[k]) for k in ("message", "property") if d.get(k)}
        for d in details
        if isinstance(d, dict) and d.get("message")
    ]


def _dropped(original: Any, serialized: Any, path: str) -> list[str]:
    """Paths of ``original`` missing from ``serialized`` (what an SDK model left out)."""
    if isinstance(original, Mapping):
        if not isinstance(serialized, Mapping):
            return [path]
        missing: list[str] = []
        for key, value in original.items():
            if key not in serialized:
                if value is not None:
                    missing.append(f"{path}.{key}")
            else:
                missing.extend(_dropped(value, serialized[key], f"{path}.{key}"))
        return missing
    if isinstance(original, list):
        if not isinstance(serialized, list) or len(serialized) != len(original):
            return [path]
        missing = []
        for i, (a, b) in enumerate(zip(original, serialized, strict=True)):
            missing.extend(_dropped(a, b, f"{path}[{i}]"))
        return missing
    return []
