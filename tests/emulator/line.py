"""The LINE Messaging API on the emulator: ``POST /v2/bot/message/push``, and LINE's webhooks.

A push is checked the way LINE checks it, in LINE's order, and answered with
LINE's error shape ``{"message": ..., "details": [{"message", "property"}]}``:

* ``Authorization: Bearer <channel access token>``: missing, or a token not in
  ``LineState.access_tokens``, is a 401.
* ``X-Line-Retry-Key``: must be a hexadecimal UUID (else 400); a key already
  accepted is a **409** ``{"message": "The retry key is already accepted"}``
  with the original's request id in ``x-line-accepted-request-id``. Keys are
  remembered only for accepted pushes, as on LINE.
* a JSON body (``application/json``; else 400 as LINE answers it), then
  ``to`` present and a user id (``U`` + 32 hex), ``messages`` 1 to 5 items of a
  known ``type``; text non-empty and at most 5000 UTF-16 code units; template
  and Flex messages with ``altText`` of at most 400 characters; a Buttons
  template with a ``text`` (160 characters, 60 with a title or image), a
  ``title`` of at most 40 and 1 to 4 actions, each with a ``label`` of at most
  20 and a ``uri`` (http, https, line, tel) or a ``text``; a Flex ``contents``
  that is a bubble or a carousel of 1 to 12 bubbles. Violations are collected
  into one 400 "The request body has N error(s)" with ``details``. Template
  texts are counted in (approximate) grapheme clusters, as LINE does.
* a user id in ``LineState.unknown_users`` is a 400 "Failed to send messages"
  (LINE's answer for a user it does not know); once ``LineState.monthly_limit``
  pushes were accepted, a 429 "You have reached your monthly limit.".

A valid push is answered 200 ``{"sentMessages": [{"id", "quoteToken"?}...]}``
with an ``x-line-request-id`` header, and kept in ``LineState.pushes``. A push to
a user in ``LineState.blocked_users`` is answered the same 200 (LINE does not
tell) but kept with ``delivered=False``. Every request, valid or not, is also in
the emulator's ``received`` log; faults come from ``emulator.fail_next(PUSH_PATH, ...)``
(``RATE_LIMITED`` and ``error_body`` build LINE's error bodies)::

    install(emulator)
    state(emulator).unknown_users.add("U" + "0" * 32)
    emulator.fail_next(PUSH_PATH, status=429, body=RATE_LIMITED)

Webhooks go the other way: ``send_webhook`` POSTs a LINE webhook body to a URL,
signed with ``X-Line-Signature`` exactly as LINE signs it; ``message_event``,
``follow_event`` and ``unfollow_event`` build its events::

    status, body = send_webhook(
        emulator, url=url, channel_secret=CHANNEL_SECRET,
        events=[message_event(user_id, "停止"), unfollow_event(user_id)],
    )
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import unicodedata
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from tests.emulator.server import ProviderEmulator, Received, Response

PUSH_PATH = "/v2/bot/message/push"
#: The channel the emulator knows by default.
CHANNEL_ACCESS_TOKEN = "emulator-line-channel-access-token"
CHANNEL_SECRET = "emulator-line-channel-secret"
#: The bot's own user id: a webhook's ``destination``.
BOT_USER_ID = "U" + "b0" * 16

#: What ``python -m tests.emulator`` prints about LINE (``{url}``: the emulator's URL).
CAPABILITIES = f"""\
line: POST {{url}}{PUSH_PATH}
  Authorization: Bearer {CHANNEL_ACCESS_TOKEN}; X-Line-Retry-Key dedupes (409)
  text, Buttons template and Flex messages validated as LINE does; channel secret for
  webhooks built with tests.emulator.line.send_webhook: {CHANNEL_SECRET}"""

MAX_MESSAGES = 5
MAX_TEXT = 5000
MAX_ALT_TEXT = 400
MAX_BUTTONS_TITLE = 40
MAX_BUTTONS_TEXT = 160
MAX_BUTTONS_TEXT_WITH_TITLE = 60
MAX_BUTTONS_ACTIONS = 4
MAX_ACTION_LABEL = 20
MAX_MESSAGE_ACTION_TEXT = 300
MAX_URI = 1000
MAX_CAROUSEL_BUBBLES = 12
MESSAGE_TYPES = (
    "text",
    "image",
    "video",
    "audio",
    "location",
    "sticker",
    "imagemap",
    "template",
    "flex",
)
TEMPLATE_TYPES = ("buttons", "confirm", "carousel", "image_carousel")
ACTION_TYPES = ("uri", "message", "postback", "datetimepicker", "camera", "cameraRoll", "location")
URI_SCHEMES = ("http", "https", "line", "tel")
USER_ID = re.compile(r"U[0-9a-f]{32}")
RETRY_KEY = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

AUTH_HEADER_REQUIRED = (
    "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'"
)
AUTH_FAILED = (
    "Authentication failed due to the following reason: invalid token. "
    "Confirm that the access token in the authorization header is valid."
)
RETRY_KEY_ACCEPTED = "The retry key is already accepted"
FAILED_TO_SEND = "Failed to send messages"
MONTHLY_LIMIT = "You have reached your monthly limit."
RATE_LIMIT = "The API rate limit has been exceeded. Try again later."


def error_body(message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """LINE's error body: ``details`` is left out when empty, as LINE does."""
    body: dict[str, Any] = {"message": message}
    if details:
        body["details"] = details
    return body


#: Ready-made bodies for ``emulator.fail_next``.
RATE_LIMITED = error_body(RATE_LIMIT)
MONTHLY_LIMIT_REACHED = error_body(MONTHLY_LIMIT)
INTERNAL_ERROR = error_body("An error occurred in the internal server.")


@dataclass
class Push:
    """One push the emulator accepted."""

    request_id: str
    to: str
    messages: list[dict[str, Any]]
    sent_messages: list[dict[str, str]]
    retry_key: str
    #: False for a user who blocked the account: LINE answered 200 and dropped it.
    delivered: bool


@dataclass
class LineState:
    """What the LINE emulator knows: tokens, users, accepted pushes, retry keys, webhooks."""

    #: Channel access tokens accepted in ``Authorization: Bearer``.
    access_tokens: set[str] = field(default_factory=lambda: {CHANNEL_ACCESS_TOKEN})
    #: Well-formed user ids LINE does not know: pushes get 400 "Failed to send messages".
    unknown_users: set[str] = field(default_factory=set)
    #: Users who blocked the account: pushes get 200 and are not delivered.
    blocked_users: set[str] = field(default_factory=set)
    #: After this many accepted pushes, 429 "You have reached your monthly limit.".
    monthly_limit: int | None = None
    #: Every push accepted, in order.
    pushes: list[Push] = field(default_factory=list)
    #: Accepted retry keys → the request id of the push that used them.
    retry_keys: dict[str, str] = field(default_factory=dict)
    #: Every webhook sent with ``send_webhook``: (url, headers, raw body, status).
    webhooks: list[tuple[str, dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def delivered_to(self, user_id: str) -> list[Push]:
        with self.lock:
            return [p for p in self.pushes if p.to == user_id and p.delivered]


_states: weakref.WeakKeyDictionary[ProviderEmulator, LineState] = weakref.WeakKeyDictionary()


def state(emulator: ProviderEmulator) -> LineState:
    """The LINE state of ``emulator`` (``install`` creates it)."""
    return _states[emulator]


def install(emulator: ProviderEmulator) -> None:
    """Register the LINE push route on ``emulator``; its state is ``state(emulator)``."""
    line = _states[emulator] = LineState()
    emulator.route("POST", PUSH_PATH, lambda request: _push(line, request))


# --- ids, lengths ----------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_request_id() -> str:
    """An ``x-line-request-id`` (LINE's are UUIDs)."""
    return str(uuid.uuid4())


def new_message_id() -> str:
    """A LINE message id: a string of 18 digits."""
    return str(secrets.randbelow(9 * 10**17) + 10**17)


def new_quote_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(96)).rstrip(b"=").decode()


def new_webhook_event_id(timestamp_ms: int | None = None) -> str:
    """A ``webhookEventId``: a ULID (48-bit ms time + 80 random bits, Crockford base32)."""
    ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def grapheme_length(text: str) -> int:
    """Grapheme clusters, approximately: combining marks, variation selectors, emoji
    modifiers and ZWJ sequences join the character before; flag pairs count once."""
    count = 0
    joined = False
    regional = 0
    for ch in text:
        code = ord(ch)
        if joined:
            joined = False
            continue
        if ch == "\u200d":
            joined = True
            continue
        if (
            unicodedata.combining(ch)
            or 0xFE00 <= code <= 0xFE0F
            or 0x1F3FB <= code <= 0x1F3FF
            or 0xE0020 <= code <= 0xE007F
        ):
            continue
        if 0x1F1E6 <= code <= 0x1F1FF:
            regional += 1
            if regional % 2 == 0:
                continue
        else:
            regional = 0
        count += 1
    return count


# --- the push endpoint -------------------------------------------------------------------


def _error(status: int, message: str, details: list[dict[str, str]] | None = None) -> Response:
    return status, {"x-line-request-id": new_request_id()}, error_body(message, details)


def _authenticated(line: LineState, request: Received) -> bool | None:
    """None: no usable Authorization header; else whether the token is known."""
    scheme, _, token = request.header("authorization").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    token = token.strip()
    return any(hmac.compare_digest(token.encode(), known.encode()) for known in line.access_tokens)


def _push(line: LineState, request: Received) -> Response:
    authenticated = _authenticated(line, request)
    if authenticated is None:
        return _error(401, AUTH_HEADER_REQUIRED)
    if not authenticated:
        return _error(401, AUTH_FAILED)

    retry_key = request.header("x-line-retry-key")
    if retry_key and not RETRY_KEY.fullmatch(retry_key):
        return _error(400, "The value for the 'X-Line-Retry-Key' header is invalid")
    if retry_key:
        with line.lock:
            accepted = line.retry_keys.get(retry_key.lower())
        if accepted is not None:
            status, headers, body = _error(409, RETRY_KEY_ACCEPTED)
            return status, {**headers, "x-line-accepted-request-id": accepted}, body

    content_type = request.header("content-type").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _error(400, f"The content type, {content_type or '(none)'}, is not supported")
    try:
        payload = json.loads(request.body.decode("utf-8"))
    except UnicodeDecodeError:
        return _error(400, "The request body could not be parsed as JSON (line: 1, column: 1)")
    except json.JSONDecodeError as exc:
        return _error(
            400,
            f"The request body could not be parsed as JSON (line: {exc.lineno}, "
            f"column: {exc.colno})",
        )
    if not isinstance(payload, dict):
        return _error(400, "The request body could not be parsed as JSON (line: 1, column: 1)")

    to = payload.get("to")
    if to is not None and not (isinstance(to, str) and USER_ID.fullmatch(to)):
        return _error(
            400, "The property, 'to', in the request body is invalid (line: -, column: -)"
        )
    details = validate_push(payload)
    if details:
        return _error(400, f"The request body has {len(details)} error(s)", details)
    if to in line.unknown_users:
        return _error(400, FAILED_TO_SEND)

    messages = payload["messages"]
    request_id = new_request_id()
    sent = []
    for message in messages:
        item = {"id": new_message_id()}
        if message.get("type") in ("text", "sticker", "image", "video"):
            item["quoteToken"] = new_quote_token()
        sent.append(item)
    with line.lock:
        if retry_key and retry_key.lower() in line.retry_keys:
            # Two requests with one key raced: the first one in wins.
            status, headers, body = _error(409, RETRY_KEY_ACCEPTED)
            accepted_id = line.retry_keys[retry_key.lower()]
            return status, {**headers, "x-line-accepted-request-id": accepted_id}, body
        if line.monthly_limit is not None and len(line.pushes) >= line.monthly_limit:
            return _error(429, MONTHLY_LIMIT)
        line.pushes.append(
            Push(
                request_id=request_id,
                to=to,
                messages=messages,
                sent_messages=sent,
                retry_key=retry_key,
                delivered=to not in line.blocked_users,
            )
        )
        if retry_key:
            line.retry_keys[retry_key.lower()] = request_id
    return 200, {"x-line-request-id": request_id}, {"sentMessages": sent}


def validate_push(payload: dict[str, Any]) -> list[dict[str, str]]:
    """The ``details`` LINE would list for a push body; [] when it is valid."""
    details: list[dict[str, str]] = []

    def problem(prop: str, message: str) -> None:
        details.append({"message": message, "property": prop})

    if not payload.get("to"):
        problem("to", "Must be specified")
    messages = payload.get("messages")
    if messages is None:
        problem("messages", "Must be specified")
        return details
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        problem("messages", f"Size must be between 1 and {MAX_MESSAGES}")
        return details
    for i, message in enumerate(messages):
        _validate_message(message, f"messages[{i}]", problem)
    return details


def _validate_message(message: Any, prop: str, problem: Any) -> None:
    if not isinstance(message, dict):
        problem(prop, "Must be an object")
        return
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        problem(
            f"{prop}.type", f"Must be one of the following values: [{', '.join(MESSAGE_TYPES)}]"
        )
        return
    if kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text:
            problem(f"{prop}.text", "May not be empty")
        elif utf16_length(text) > MAX_TEXT:
            problem(f"{prop}.text", f"Length must be between 0 and {MAX_TEXT}")
    elif kind in ("template", "flex"):
        alt_text = message.get("altText")
        if not isinstance(alt_text, str) or not alt_text:
            problem(f"{prop}.altText", "May not be empty")
        elif utf16_length(alt_text) > MAX_ALT_TEXT:
            problem(f"{prop}.altText", f"Length must be between 0 and {MAX_ALT_TEXT}")
        if kind == "template":
            _validate_template(message.get("template"), f"{prop}.template", problem)
        else:
            _validate_flex(message.get("contents"), f"{prop}.contents", problem)


def _validate_template(template: Any, prop: str, problem: Any) -> None:
    if not isinstance(template, dict):
        problem(prop, "Must be specified")
        return
    kind = template.get("type")
    if kind not in TEMPLATE_TYPES:
        problem(
            f"{prop}.type", f"Must be one of the following values: [{', '.join(TEMPLATE_TYPES)}]"
        )
        return
    if kind != "buttons":
        return  # only the Buttons template is checked in depth
    title = template.get("title")
    if title is not None and (
        not isinstance(title, str) or grapheme_length(title) > MAX_BUTTONS_TITLE
    ):
        problem(f"{prop}.title", f"Length must be between 0 and {MAX_BUTTONS_TITLE}")
    text = template.get("text")
    limit = (
        MAX_BUTTONS_TEXT_WITH_TITLE
        if title or template.get("thumbnailImageUrl")
        else MAX_BUTTONS_TEXT
    )
    if not isinstance(text, str) or not text:
        problem(f"{prop}.text", "May not be empty")
    elif grapheme_length(text) > limit:
        problem(f"{prop}.text", f"Length must be between 0 and {limit}")
    actions = template.get("actions")
    if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_BUTTONS_ACTIONS:
        problem(f"{prop}.actions", f"Size must be between 1 and {MAX_BUTTONS_ACTIONS}")
        return
    for i, action in enumerate(actions):
        _validate_action(action, f"{prop}.actions[{i}]", problem)


def _validate_action(action: Any, prop: str, problem: Any) -> None:
    if not isinstance(action, dict):
        problem(prop, "Must be an object")
        return
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        problem(f"{prop}.type", f"Must be one of the following values: [{', '.join(ACTION_TYPES)}]")
        return
    label = action.get("label")
    if not isinstance(label, str) or not label:
        problem(f"{prop}.label", "May not be empty")
    elif grapheme_length(label) > MAX_ACTION_LABEL:
        problem(f"{prop}.label", f"Length must be between 0 and {MAX_ACTION_LABEL}")
    if kind == "uri":
        uri = action.get("uri")
        if not isinstance(uri, str) or not uri:
            problem(f"{prop}.uri", "May not be empty")
        elif len(uri) > MAX_URI:
            problem(f"{prop}.uri", f"Length must be between 0 and {MAX_URI}")
        elif uri.split(":", 1)[0].lower() not in URI_SCHEMES or ":" not in uri:
            problem(f"{prop}.uri", "Invalid uri scheme")
    elif kind == "message":
        text = action.get("text")
        if not isinstance(text, str) or not text:
            problem(f"{prop}.text", "May not be empty")
        elif grapheme_length(text) > MAX_MESSAGE_ACTION_TEXT:
            problem(f"{prop}.text", f"Length must be between 0 and {MAX_MESSAGE_ACTION_TEXT}")


def _validate_flex(contents: Any, prop: str, problem: Any) -> None:
    if not isinstance(contents, dict):
        problem(prop, "Must be specified")
        return
    kind = contents.get("type")
    if kind == "bubble":
        _validate_bubble(contents, prop, problem)
    elif kind == "carousel":
        bubbles = contents.get("contents")
        if not isinstance(bubbles, list) or not 1 <= len(bubbles) <= MAX_CAROUSEL_BUBBLES:
            problem(f"{prop}.contents", f"Size must be between 1 and {MAX_CAROUSEL_BUBBLES}")
            return
        for i, bubble in enumerate(bubbles):
            if not isinstance(bubble, dict) or bubble.get("type") != "bubble":
                problem(
                    f"{prop}.contents[{i}].type", "Must be one of the following values: [bubble]"
                )
            else:
                _validate_bubble(bubble, f"{prop}.contents[{i}]", problem)
    else:
        problem(f"{prop}.type", "Must be one of the following values: [bubble, carousel]")


def _validate_bubble(bubble: dict[str, Any], prop: str, problem: Any) -> None:
    blocks = [name for name in ("header", "hero", "body", "footer") if name in bubble]
    if not blocks:
        problem(prop, "A bubble needs at least one of header, hero, body and footer")
    for name in blocks:
        block = bubble[name]
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problem(f"{prop}.{name}.type", "May not be empty")


# --- webhooks ----------------------------------------------------------------------------


def sign(channel_secret: str, body: bytes) -> str:
    """``X-Line-Signature``: base64 of HMAC-SHA256 over the raw body, keyed by the secret."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _event_base(kind: str, user_id: str, *, timestamp: int | None, redelivery: bool) -> dict:
    ms = int(time.time() * 1000) if timestamp is None else timestamp
    return {
        "type": kind,
        "mode": "active",
        "timestamp": ms,
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": new_webhook_event_id(ms),
        "deliveryContext": {"isRedelivery": redelivery},
    }


def message_event(
    user_id: str, text: str, *, timestamp: int | None = None, redelivery: bool = False
) -> dict[str, Any]:
    """A user sent the account a text message."""
    event = _event_base("message", user_id, timestamp=timestamp, redelivery=redelivery)
    event["replyToken"] = secrets.token_hex(16)
    event["message"] = {
        "id": new_message_id(),
        "type": "text",
        "quoteToken": new_quote_token(),
        "text": text,
    }
    return event


def follow_event(
    user_id: str,
    *,
    unblocked: bool = False,
    timestamp: int | None = None,
    redelivery: bool = False,
) -> dict[str, Any]:
    """A user added the account as a friend (``unblocked``: after blocking it)."""
    event = _event_base("follow", user_id, timestamp=timestamp, redelivery=redelivery)
    event["replyToken"] = secrets.token_hex(16)
    event["follow"] = {"isUnblocked": unblocked}
    return event


def unfollow_event(
    user_id: str, *, timestamp: int | None = None, redelivery: bool = False
) -> dict[str, Any]:
    """A user blocked the account (there is no reply token)."""
    return _event_base("unfollow", user_id, timestamp=timestamp, redelivery=redelivery)


def webhook_body(events: list[dict[str, Any]], *, destination: str = BOT_USER_ID) -> bytes:
    """The raw webhook body LINE sends: compact JSON, UTF-8, not ASCII-escaped."""
    return json.dumps(
        {"destination": destination, "events": events}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")


def send_webhook(
    emulator: ProviderEmulator,
    *,
    url: str,
    channel_secret: str,
    events: list[dict[str, Any]],
    destination: str = BOT_USER_ID,
    signature: str | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """POST a LINE webhook to ``url``, signed as LINE signs it; returns (status, body).

    ``signature`` overrides the computed ``X-Line-Signature`` (a forged request).
    The call is recorded in ``state(emulator).webhooks``.
    """
    body = webhook_body(events, destination=destination)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "LineBotWebhook/2.0",
        "X-Line-Signature": signature if signature is not None else sign(channel_secret, body),
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read()
    line = _states.get(emulator)
    if line is not None:
        with line.lock:
            line.webhooks.append((url, headers, body, status))
    return status, answer
