"""The Twilio Messages API on the emulator: ``POST /2010-04-01/Accounts/{sid}/Messages.json``.

It checks a request the way Twilio does, in Twilio's order, and answers with
Twilio's JSON error shape (``code``, ``message``, ``more_info``, ``status``):

* HTTP Basic auth: the account SID of the URL and a token, else 401 code 20003.
  An account in ``TwilioState.accounts`` (``ACCOUNT_SID`` with ``AUTH_TOKEN`` by
  default) takes only its own token; any other ``AC...`` account any non-empty one.
* a form-encoded body (anything else reads as no parameters, as on Twilio);
  ``To`` present (21604) and E.164 (21211); exactly one of ``From`` and
  ``MessagingServiceSid`` (21603); ``Body`` present (21602) and at most 1600
  characters (21617).
* opted-out recipients (``TwilioState.opted_out``) → 400 code 21610, as after
  the recipient replied STOP.
* Twilio's documented test-credential magic numbers: To ``+15005550001``
  invalid (21211), ``+15005550002`` unroutable (21612), ``+15005550003`` no
  geo permission (21408), ``+15005550004`` blocked/unsubscribed (21610),
  ``+15005550009`` not SMS-capable (21614); From ``+15005550001`` invalid
  (21212), ``+15005550007`` not owned (21606), ``+15005550008`` queue full (21611).

A valid request is answered 201 with a Message resource (status ``queued``, or
``accepted`` through a Messaging Service) and kept in ``TwilioState.messages``;
``GET .../Messages/{sid}.json`` fetches it back, as a reconciler would. Every
request, valid or not, is also in the emulator's ``received`` log::

    install(emulator)
    state(emulator).opted_out.add("+15551234567")
    emulator.requests_to("/2010-04-01/")[-1].form()["Body"]

WhatsApp
--------
``To`` and ``From`` carry the ``whatsapp:`` prefix and must be E.164 after it
(21211 / 21212). A ``From`` and ``To`` of different channels (one prefixed, one
not) is 21910 "Invalid From and To pair". Through a Messaging Service only ``To``
is given, prefixed. A message is either free-form (``Body``) or a Content
template: ``ContentSid`` (``^HX[0-9a-fA-F]{32}$``, else 21655) with optional
``ContentVariables`` (a JSON object string of non-empty string values, else
21656; without ``ContentSid`` it is 21654). Neither ``Body`` nor ``ContentSid``
is 21619. ``TwilioState.templates`` may hold the text of approved templates
(``{{1}}`` placeholders), rendered into the stored body; any well-formed HX SID
is accepted.

The 24-hour customer-care window: ``TwilioState.sessions`` keeps, per (sender,
customer) pair of plain E.164 numbers, when the customer last wrote in
(``open_session`` or ``send_inbound(..., channel="whatsapp")`` set it;
``TwilioState.clock`` is the time source). Templates may be sent at any time.
A free-form message outside the window is handled as Twilio does: the API call is
**accepted (201, status queued)** and the message then fails asynchronously,
reported by a ``failed`` status callback with ``ErrorCode`` 63016 (and the
fetched resource turns ``failed``). ``TwilioState.out_of_window = "reject"``
makes the create call itself answer 400 code 63016 instead; ``refuse_next``
does it for the next request only, whatever the window. Through a Messaging
Service the window counts a message from the customer to any sender.

Delivery and status callbacks
-----------------------------
Each accepted message runs a lifecycle in a background thread, starting
``TwilioState.callback_delay`` seconds after it was accepted (by then the API
response has gone out; with 0 the callbacks race the response, as they can on
Twilio): SMS ``sent`` → ``delivered``; WhatsApp ``sent`` → ``delivered`` →
``read``. A number in ``TwilioState.undeliverable`` (plain E.164 → error code)
fails: codes in ``FAILED_CODES`` (never sent: WhatsApp 63xxx, queue/account
errors) give a single ``failed``, carrier codes (30003, 30005...) ``sent`` then
``undelivered``; both carry ``ErrorCode``. The stored resource follows each step.
No callback is made for the first status (``queued``/``accepted``).

When the create request carried ``StatusCallback``, each step is POSTed to it
form-encoded, with the parameters Twilio sends (``MessageSid``, ``SmsSid``,
``AccountSid``, ``MessageStatus``, ``SmsStatus``, ``To``, ``From``, ``ApiVersion``,
``ErrorCode`` on failures, ``RawDlrDoneDate`` on an SMS ``delivered``,
``MessagingServiceSid``; for WhatsApp ``ChannelPrefix``, ``ChannelToAddress``,
``ChannelInstallSid``, ``StructuredMessage``), signed in ``X-Twilio-Signature``
with the account's auth token (``RequestValidator(token).compute_signature``)
and carrying an ``I-Twilio-Idempotency-Token``. Knobs on the state:

* ``callbacks``: ``"deliver"`` (default), ``"hold"`` (queued until
  ``release_callbacks``; the lifecycle waits too) or ``"off"`` (the lifecycle
  runs, nothing is POSTed);
* ``callback_order = "reversed"``: each message's callbacks in reverse order
  (``delivered`` before ``sent``);
* ``duplicate_callbacks = True``: each callback is delivered twice, same
  idempotency token;
* ``callback_timeout``: seconds to wait for our answer.

Every attempt is recorded in ``TwilioState.callback_attempts`` (URL, parameters,
signature, HTTP status or the error); a refused connection or a non-2xx answer is
recorded, never raised. A URL on a reserved example domain (``example.com``,
``*.example``, ``*.invalid``: RFC 2606) is never called, only recorded as failed, so
tests with placeholder URLs stay off the network. ``wait_for_callbacks`` and
``wait_idle`` poll for them. ``emulator.stop()`` stops the callback thread and drops
what is still pending.

Inbound messages
----------------
``send_inbound`` POSTs a signed inbound-message webhook the way Twilio does and
returns our answer. For SMS the keywords of Twilio's Advanced Opt-Out (STOP...,
START/YES/UNSTOP) update ``TwilioState.opted_out`` and add ``OptOutType``; for
WhatsApp the message opens the customer-care window for the pair.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import http.client
import itertools
import json
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from twilio.request_validator import RequestValidator

from channels.adapters.sms import segments
from tests.emulator.server import (
    POLL_INTERVAL,
    ProviderEmulator,
    Received,
    Response,
    wait_until,
)

API_VERSION = "2010-04-01"
#: The account the emulator knows by default (any AC + 32 hex would do).
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "emulator-auth-token"
MAX_BODY = 1600
WHATSAPP = "whatsapp:"
#: The customer-care window: free-form WhatsApp messages only this long after the
#: customer last wrote.
SESSION_WINDOW = 24 * 3600.0

E164 = re.compile(r"\+[1-9]\d{6,14}")
CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
MESSAGES_PATH = rf"/{API_VERSION}/Accounts/(?P<account_sid>AC\w+)/Messages\.json"
MESSAGE_PATH = rf"/{API_VERSION}/Accounts/(?P<account_sid>AC\w+)/Messages/(?P<sid>SM\w+)\.json"

#: Printed by ``python -m tests.emulator`` ({url} is the emulator's).
CAPABILITIES = f"""\
twilio: POST {{url}}/{API_VERSION}/Accounts/<AccountSid>/Messages.json
  account {ACCOUNT_SID}, auth token {AUTH_TOKEN} (other AC... accounts take any token)
  SMS and WhatsApp (whatsapp:+E164; Body, or ContentSid + ContentVariables); a free-form
  WhatsApp message outside the 24-hour window fails with 63016 in its status callback
  StatusCallback: sent, delivered (+ read for WhatsApp), signed with X-Twilio-Signature"""

#: Twilio's magic To numbers for test credentials: (code, message).
MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number: {to}, is not currently reachable."),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by "
        "the 'To' number: {to}.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number {to} is not a valid mobile number"),
}
#: Twilio's magic From numbers for test credentials: (code, message).
MAGIC_FROM = {
    "+15005550001": (21212, "The 'From' number {from_} is not a valid phone number."),
    "+15005550007": (
        21606,
        "The 'From' phone number provided is not a valid message-capable Twilio phone "
        "number for this destination/account.",
    ),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
}

#: Twilio's wording for the codes the emulator produces or a test may inject.
ERROR_MESSAGES = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    21610: "Attempt to send to unsubscribed recipient",
    21619: "A text message body or media urls must be specified.",
    21654: "ContentSid Required",
    21655: "The ContentSid is Invalid",
    21656: "The ContentVariables Parameter is invalid",
    21910: "Invalid From and To pair. From and To should be of the same channel",
    30001: "Queue overflow",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    63003: "Channel could not find To address",
    63016: (
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template."
    ),
    63018: "Rate limit exceeded for Channel",
    63024: "Invalid message recipient",
    63032: "We cannot send this message to this user because of a WhatsApp limitation.",
}
#: Codes with which a message fails before it is ever sent: one ``failed`` callback.
#: Any other code in ``undeliverable`` is a delivery failure: ``sent``, then
#: ``undelivered``.
FAILED_CODES = frozenset({21610, 30001, 30002, 63003, 63016, 63018, 63024, 63032})
#: Twilio's Advanced Opt-Out keywords (single word, any case).
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


@dataclass(frozen=True)
class CallbackAttempt:
    """One webhook POST the emulator made, and what came of it."""

    url: str
    params: dict[str, str]
    signature: str
    idempotency_token: str
    #: Our HTTP status, or None when there was no answer (see ``error``).
    status: int | None
    error: str = ""
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Step:
    """One step of a message's lifecycle, with the callback to make for it."""

    sid: str
    status: str
    error_code: int | None
    url: str
    params: dict[str, str]
    auth_token: str
    idempotency_token: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass
class TwilioState:
    """What the Twilio emulator knows and how it behaves; see the module docstring."""

    #: Account SID → the one auth token accepted for it. An account not listed here
    #: accepts any non-empty token, so a test may use any ``AC...`` SID of its own.
    accounts: dict[str, str] = field(default_factory=lambda: {ACCOUNT_SID: AUTH_TOKEN})
    #: E.164 numbers that replied STOP: SMS to them are refused with 21610.
    opted_out: set[str] = field(default_factory=set)
    #: Every Message resource created, in order.
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: The same resources by Message SID (the lifecycle and fetches find them here).
    by_sid: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    # --- WhatsApp ---------------------------------------------------------------------
    #: (sender, customer) plain E.164 numbers → ``clock()`` time the customer last wrote.
    sessions: dict[tuple[str, str], float] = field(default_factory=dict)
    session_window: float = SESSION_WINDOW
    #: A free-form WhatsApp message outside the window: "callback" (201, then a
    #: ``failed`` callback with 63016, as Twilio does) or "reject" (400 code 63016).
    out_of_window: str = "callback"
    #: Content SID → the template's text, e.g. "Hi {{1}}, your {{2}} shipped".
    templates: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    # --- delivery and status callbacks ------------------------------------------------
    #: Plain E.164 number → the error code its messages fail with.
    undeliverable: dict[str, int] = field(default_factory=dict)
    #: "deliver", "hold" (until ``release_callbacks``) or "off".
    callbacks: str = "deliver"
    #: "in_order" or "reversed" (each message's callbacks last to first).
    callback_order: str = "in_order"
    #: Deliver every callback twice.
    duplicate_callbacks: bool = False
    #: Seconds between a message's acceptance and its first lifecycle step.
    callback_delay: float = 0.05
    #: Seconds to wait for our answer to a callback.
    callback_timeout: float = 2.0
    #: Every callback POST made, in order.
    callback_attempts: list[CallbackAttempt] = field(default_factory=list)

    # --- inbound ----------------------------------------------------------------------
    #: The parameters of every inbound message ``send_inbound`` posted.
    inbound: list[dict[str, str]] = field(default_factory=list)

    #: Identifies the emulated WhatsApp sender in callbacks (``ChannelInstallSid``).
    channel_install_sid: str = field(default_factory=lambda: "XE" + secrets.token_hex(16))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    worker: _CallbackWorker = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.worker = _CallbackWorker(self)


_states: weakref.WeakKeyDictionary[ProviderEmulator, TwilioState] = weakref.WeakKeyDictionary()


def state(emulator: ProviderEmulator) -> TwilioState:
    """The Twilio state of ``emulator`` (``install`` creates it)."""
    return _states[emulator]


def install(emulator: ProviderEmulator) -> None:
    """Register the Twilio Messages routes on ``emulator``; its state is ``state(emulator)``.

    ``emulator.stop()`` also stops the callback thread.
    """
    twilio = _states[emulator] = TwilioState()
    emulator.route("POST", MESSAGES_PATH, lambda request: _create_message(twilio, request))
    emulator.route("GET", MESSAGE_PATH, lambda request: _fetch_message(twilio, request))
    stop_server = emulator.stop

    def stop() -> None:
        try:
            stop_server()
        finally:
            twilio.worker.close()

    emulator.stop = stop  # type: ignore[method-assign]


def error(status: int, code: int, message: str) -> Response:
    """An error answer in Twilio's JSON shape."""
    return status, {}, error_body(code, message, status=status)


def error_body(code: int, message: str | None = None, *, status: int = 400) -> dict[str, Any]:
    """Twilio's JSON error body; ``message`` defaults to Twilio's wording for ``code``."""
    return {
        "code": code,
        "message": message if message is not None else ERROR_MESSAGES.get(code, f"Error {code}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def refuse_next(
    emulator: ProviderEmulator,
    code: int,
    *,
    status: int = 400,
    message: str | None = None,
    times: int = 1,
) -> None:
    """Make the next ``times`` Twilio requests answer ``status`` with error ``code``.

    E.g. ``refuse_next(emulator, 63016)``: the create call itself refuses a
    free-form WhatsApp message as outside the window.
    """
    emulator.fail_next(
        f"/{API_VERSION}/",
        times=times,
        status=status,
        body=error_body(code, message, status=status),
    )


# --- WhatsApp sessions ------------------------------------------------------------------


def _split(address: str) -> tuple[str, str]:
    """("whatsapp", "+1...") for a prefixed address, else ("sms", address)."""
    if address.startswith(WHATSAPP):
        return "whatsapp", address.removeprefix(WHATSAPP)
    return "sms", address


def open_session(
    emulator: ProviderEmulator, customer: str, sender: str, *, at: float | None = None
) -> None:
    """Record that ``customer`` wrote to ``sender`` at ``at`` (default: now, per ``clock``).

    Either number may carry the ``whatsapp:`` prefix.
    """
    twilio = state(emulator)
    when = twilio.clock() if at is None else at
    with twilio.lock:
        twilio.sessions[(_split(sender)[1], _split(customer)[1])] = when


def close_session(emulator: ProviderEmulator, customer: str, sender: str) -> None:
    """Forget that ``customer`` wrote to ``sender``: the window is closed."""
    twilio = state(emulator)
    with twilio.lock:
        twilio.sessions.pop((_split(sender)[1], _split(customer)[1]), None)


def _session_open(twilio: TwilioState, sender: str, customer: str) -> bool:
    now = twilio.clock()
    with twilio.lock:
        if sender:
            last = twilio.sessions.get((sender, customer))
        else:  # a Messaging Service: any of its senders may answer
            last = max(
                (at for (_s, c), at in twilio.sessions.items() if c == customer), default=None
            )
    return last is not None and now - last < twilio.session_window


# --- requests ---------------------------------------------------------------------------


def _authenticated(twilio: TwilioState, request: Received) -> str | None:
    """The auth token the request authenticated with, or None."""
    scheme, _, encoded = request.header("authorization").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not password or username != request.params["account_sid"]:
        return None
    expected = twilio.accounts.get(username)
    if expected is not None and not hmac.compare_digest(password.encode(), expected.encode()):
        return None
    return password


def _params(request: Received) -> dict[str, str]:
    content_type = request.header("content-type").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    return {name: values[-1] for name, values in request.form().items()}


def _now() -> str:
    return format_datetime(datetime.now(UTC))


def _content_variables(raw: str) -> dict[str, str] | None:
    """The parsed ``ContentVariables``, or None when Twilio would refuse them (21656)."""
    try:
        variables = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(variables, dict):
        return None
    rendered: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        if str(value) == "":
            return None
        rendered[name] = str(value)
    return rendered


def _render(template: str, variables: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: variables.get(m.group(1), m.group(0)), template)


def _create_message(twilio: TwilioState, request: Received) -> Response:
    token = _authenticated(twilio, request)
    if token is None:
        return error(401, 20003, "Authenticate")
    params = _params(request)
    to_address = params.get("To", "")
    from_address = params.get("From", "")
    service = params.get("MessagingServiceSid", "")
    body = params.get("Body", "")
    content_sid = params.get("ContentSid", "")
    raw_variables = params.get("ContentVariables")
    has_media = bool(params.get("MediaUrl"))

    if not to_address:
        return error(400, 21604, "A 'To' phone number is required.")
    channel, to = _split(to_address)
    if not E164.fullmatch(to):
        return error(400, 21211, f"The 'To' number {to_address} is not a valid phone number.")
    if bool(from_address) == bool(service):
        return error(
            400,
            21603,
            "Specify either a 'From' phone number or a 'MessagingServiceSid', not both."
            if from_address
            else "A 'From' phone number is required.",
        )
    from_channel, from_ = _split(from_address) if from_address else (channel, "")
    if from_channel != channel:
        return error(400, 21910, ERROR_MESSAGES[21910])
    if channel == "whatsapp" and from_ and not E164.fullmatch(from_):
        return error(400, 21212, f"The 'From' number {from_address} is not a valid phone number.")
    if from_ in MAGIC_FROM:
        code, text = MAGIC_FROM[from_]
        return error(400, code, text.format(from_=from_address))
    variables: dict[str, str] = {}
    if raw_variables is not None and not content_sid:
        return error(400, 21654, ERROR_MESSAGES[21654])
    if content_sid and not CONTENT_SID.fullmatch(content_sid):
        return error(400, 21655, ERROR_MESSAGES[21655])
    if content_sid and raw_variables is not None:
        parsed = _content_variables(raw_variables)
        if parsed is None:
            return error(400, 21656, ERROR_MESSAGES[21656])
        variables = parsed
    if not body and not content_sid and not has_media:
        if channel == "whatsapp":
            return error(400, 21619, ERROR_MESSAGES[21619])
        return error(400, 21602, "Message body is required.")
    if len(body) > MAX_BODY:
        return error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    if to in MAGIC_TO:
        code, text = MAGIC_TO[to]
        return error(400, code, text.format(to=to_address))
    if channel == "sms" and to in twilio.opted_out:
        return error(400, 21610, ERROR_MESSAGES[21610])
    failure: int | None = None
    if channel == "whatsapp" and not content_sid and not _session_open(twilio, from_, to):
        if twilio.out_of_window == "reject":
            return error(400, 63016, ERROR_MESSAGES[63016])
        failure = 63016

    if content_sid:
        body = _render(twilio.templates.get(content_sid, ""), variables)
    account_sid = request.params["account_sid"]
    sid = "SM" + secrets.token_hex(16)
    now = _now()
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
    message = {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_address or None,
        "messaging_service_sid": service or None,
        "num_media": "1" if has_media else "0",
        "num_segments": "1" if channel == "whatsapp" else str(segments(body).segments),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if service else "queued",
        "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
        "to": to_address,
        "uri": uri,
    }
    steps = _lifecycle(
        twilio,
        message,
        channel=channel,
        failure=failure or twilio.undeliverable.get(to),
        url=params.get("StatusCallback", ""),
        auth_token=token,
    )
    with twilio.lock:
        twilio.messages.append(message)
        twilio.by_sid[sid] = message
        answer = dict(message)
    twilio.worker.schedule(steps, twilio.callback_delay)
    return 201, {}, answer


def _fetch_message(twilio: TwilioState, request: Received) -> Response:
    if _authenticated(twilio, request) is None:
        return error(401, 20003, "Authenticate")
    with twilio.lock:
        message = twilio.by_sid.get(request.params["sid"])
        if message is not None and message["account_sid"] == request.params["account_sid"]:
            return 200, {}, dict(message)
    return error(404, 20404, f"The requested resource {request.path} was not found")


# --- the lifecycle and its callbacks -----------------------------------------------------


def _lifecycle(
    twilio: TwilioState,
    message: dict[str, Any],
    *,
    channel: str,
    failure: int | None,
    url: str,
    auth_token: str,
) -> list[_Step]:
    if failure is not None:
        if failure in FAILED_CODES:
            statuses: list[tuple[str, int | None]] = [("failed", failure)]
        else:
            statuses = [("sent", None), ("undelivered", failure)]
    elif channel == "whatsapp":
        statuses = [("sent", None), ("delivered", None), ("read", None)]
    else:
        statuses = [("sent", None), ("delivered", None)]
    if twilio.callback_order == "reversed":
        statuses.reverse()
    steps = []
    for status, code in statuses:
        params = {
            "AccountSid": message["account_sid"],
            "ApiVersion": API_VERSION,
            "MessageSid": message["sid"],
            "MessageStatus": status,
            "SmsSid": message["sid"],
            "SmsStatus": status,
            "To": message["to"],
        }
        if message["from"]:
            params["From"] = message["from"]
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if code is not None:
            params["ErrorCode"] = str(code)
        if channel == "whatsapp":
            params["ChannelPrefix"] = "whatsapp"
            params["ChannelToAddress"] = _split(message["to"])[1]
            params["ChannelInstallSid"] = twilio.channel_install_sid
            params["StructuredMessage"] = "false"
        elif status == "delivered":
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        steps.append(_Step(message["sid"], status, code, url, params, auth_token))
    return steps


class ReservedHost(OSError):
    """The URL's host is a documentation name (RFC 2606): nothing is sent there."""


def _reserved(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith((".example", ".invalid")) or any(
        host == domain or host.endswith("." + domain)
        for domain in ("example.com", "example.net", "example.org")
    )


def _post_form(
    url: str, params: dict[str, str], *, auth_token: str, idempotency_token: str, timeout: float
) -> tuple[str, int, bytes]:
    """POST ``params`` to ``url`` signed as Twilio signs: (signature, status, body)."""
    signature = RequestValidator(auth_token).compute_signature(url, params)
    parts = urlsplit(url)
    if _reserved(parts.hostname or ""):
        raise ReservedHost(f"{parts.hostname} is a reserved example domain: not called")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            "POST",
            path,
            body=urlencode(params).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1",
                "Accept": "*/*",
                "X-Twilio-Signature": signature,
                "I-Twilio-Idempotency-Token": idempotency_token,
            },
        )
        response = connection.getresponse()
        return signature, response.status, response.read()
    finally:
        connection.close()


class _CallbackWorker:
    """Runs lifecycle steps in one background thread, in due order."""

    def __init__(self, twilio: TwilioState) -> None:
        self._twilio = twilio
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, _Step]] = []
        self._seq = itertools.count()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def schedule(self, steps: list[_Step], delay: float) -> None:
        with self._cond:
            if self._closed:
                return
            due = time.monotonic() + delay
            for step in steps:
                heapq.heappush(self._queue, (due, next(self._seq), step))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="twilio-emulator-callbacks", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        return wait_until(self._idle, timeout)

    def _idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def close(self) -> None:
        """Drop pending steps and stop the thread, waiting for a callback in flight."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            wait_until(lambda: not thread.is_alive(), self._twilio.callback_timeout + 1)

    def _next(self) -> _Step | None:
        while True:
            with self._cond:
                if self._closed:
                    return None
                if not self._queue:
                    # Nothing scheduled: an untimed wait, ``schedule`` and ``close`` notify.
                    self._cond.wait()
                    continue
                if self._twilio.callbacks != "hold" and self._queue[0][0] <= time.monotonic():
                    self._busy = True
                    return heapq.heappop(self._queue)[2]
            # A step not yet due, or held: look again shortly (see ``wait_until`` for why
            # not ``self._cond.wait(seconds)``).
            time.sleep(POLL_INTERVAL)

    def _run(self) -> None:
        while (step := self._next()) is not None:
            try:
                self._process(step)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _process(self, step: _Step) -> None:
        twilio = self._twilio
        with twilio.lock:
            message = twilio.by_sid.get(step.sid)
            if message is not None:
                message["status"] = step.status
                message["date_updated"] = _now()
                if step.status == "sent":
                    message["date_sent"] = message["date_updated"]
                if step.error_code is not None:
                    message["error_code"] = step.error_code
                    message["error_message"] = ERROR_MESSAGES.get(step.error_code)
        if not step.url or twilio.callbacks == "off":
            return
        for _ in range(2 if twilio.duplicate_callbacks else 1):
            if self._closed:
                return
            try:
                signature, status, body = _post_form(
                    step.url,
                    step.params,
                    auth_token=step.auth_token,
                    idempotency_token=step.idempotency_token,
                    timeout=twilio.callback_timeout,
                )
                attempt = CallbackAttempt(
                    step.url, step.params, signature, step.idempotency_token, status, body=body
                )
            except Exception as exc:  # refused, unresolvable, timed out: recorded, not raised
                attempt = CallbackAttempt(
                    step.url,
                    step.params,
                    RequestValidator(step.auth_token).compute_signature(step.url, step.params),
                    step.idempotency_token,
                    None,
                    error=f"{type(exc).__name__}: {exc}",
                )
            with twilio.lock:
                twilio.callback_attempts.append(attempt)


def release_callbacks(emulator: ProviderEmulator) -> None:
    """Deliver the callbacks held with ``state.callbacks = "hold"`` (and later ones)."""
    twilio = state(emulator)
    # The worker looks at held steps every POLL_INTERVAL: it sees the switch by itself.
    twilio.callbacks = "deliver"


def wait_for_callbacks(
    emulator: ProviderEmulator, count: int, *, timeout: float = 2.0
) -> list[CallbackAttempt]:
    """The callback attempts, once there are at least ``count`` (else TimeoutError)."""
    twilio = state(emulator)
    deadline = time.monotonic() + timeout
    while True:
        with twilio.lock:
            attempts = list(twilio.callback_attempts)
        if len(attempts) >= count:
            return attempts
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{len(attempts)} callback attempt(s) after {timeout}s, expected {count}"
            )
        time.sleep(0.01)


def wait_idle(emulator: ProviderEmulator, *, timeout: float = 2.0) -> None:
    """Wait until every lifecycle step scheduled so far has run (else TimeoutError)."""
    if not state(emulator).worker.wait_idle(timeout):
        raise TimeoutError(f"Twilio emulator callbacks still pending after {timeout}s")


# --- inbound messages ------------------------------------------------------------------


def send_inbound(
    emulator: ProviderEmulator,
    *,
    url: str,
    from_: str,
    to: str,
    body: str,
    channel: str = "sms",
    auth_token: str | None = None,
    account_sid: str = ACCOUNT_SID,
    profile_name: str = "Alex",
    messaging_service_sid: str = "",
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """POST a signed inbound-message webhook from customer ``from_`` to our number ``to``.

    Returns our (HTTP status, body); a connection failure is raised. ``auth_token``
    defaults to the account's (``AUTH_TOKEN`` for ``ACCOUNT_SID``). For WhatsApp
    the numbers get the ``whatsapp:`` prefix (given or not) and the customer-care
    window for the pair opens, whatever we answer: the customer did write.
    """
    if channel not in ("sms", "whatsapp"):
        raise ValueError(f"channel must be 'sms' or 'whatsapp', got {channel!r}")
    twilio = state(emulator)
    customer, ours = _split(from_)[1], _split(to)[1]
    prefix = WHATSAPP if channel == "whatsapp" else ""
    sid = "SM" + secrets.token_hex(16)
    params = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "AccountSid": account_sid,
        "From": prefix + customer,
        "To": prefix + ours,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1" if channel == "whatsapp" else str(segments(body).segments),
        "SmsStatus": "received",
        "ApiVersion": API_VERSION,
    }
    if messaging_service_sid:
        params["MessagingServiceSid"] = messaging_service_sid
    if channel == "whatsapp":
        params |= {
            "ProfileName": profile_name,
            "WaId": customer.removeprefix("+"),
            "MessageType": "text",
            "ReferralNumMedia": "0",
        }
        open_session(emulator, customer, ours)
    else:
        keyword = body.strip().upper()
        if keyword in OPT_OUT_KEYWORDS:
            params["OptOutType"] = "STOP"
            with twilio.lock:
                twilio.opted_out.add(customer)
        elif keyword in OPT_IN_KEYWORDS:
            params["OptOutType"] = "START"
            with twilio.lock:
                twilio.opted_out.discard(customer)
        elif keyword in HELP_KEYWORDS:
            params["OptOutType"] = "HELP"
    with twilio.lock:
        twilio.inbound.append(params)
        token = auth_token if auth_token is not None else twilio.accounts.get(account_sid, "")
    if not token:
        raise ValueError(f"no auth token known for {account_sid}: pass auth_token")
    _signature, status, answer = _post_form(
        url, params, auth_token=token, idempotency_token=secrets.token_hex(16), timeout=timeout
    )
    return status, answer
