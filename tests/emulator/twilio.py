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
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from channels.sms import segments
from tests.emulator.server import ProviderEmulator, Received, Response

API_VERSION = "2010-04-01"
#: The account the emulator knows by default (any AC + 32 hex would do).
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "emulator-auth-token"
MAX_BODY = 1600

E164 = re.compile(r"\+[1-9]\d{6,14}")
MESSAGES_PATH = rf"/{API_VERSION}/Accounts/(?P<account_sid>AC\w+)/Messages\.json"
MESSAGE_PATH = rf"/{API_VERSION}/Accounts/(?P<account_sid>AC\w+)/Messages/(?P<sid>SM\w+)\.json"

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


@dataclass
class TwilioState:
    """What the Twilio emulator knows: accounts, opted-out numbers, created messages."""

    #: Account SID → the one auth token accepted for it. An account not listed here
    #: accepts any non-empty token, so a test may use any ``AC...`` SID of its own.
    accounts: dict[str, str] = field(default_factory=lambda: {ACCOUNT_SID: AUTH_TOKEN})
    #: E.164 numbers that replied STOP: sends to them are refused with 21610.
    opted_out: set[str] = field(default_factory=set)
    #: Every Message resource created, in order.
    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


_states: weakref.WeakKeyDictionary[ProviderEmulator, TwilioState] = weakref.WeakKeyDictionary()


def state(emulator: ProviderEmulator) -> TwilioState:
    """The Twilio state of ``emulator`` (``install`` creates it)."""
    return _states[emulator]


def install(emulator: ProviderEmulator) -> None:
    """Register the Twilio Messages routes on ``emulator``; its state is ``state(emulator)``."""
    twilio = _states[emulator] = TwilioState()
    emulator.route("POST", MESSAGES_PATH, lambda request: _create_message(twilio, request))
    emulator.route("GET", MESSAGE_PATH, lambda request: _fetch_message(twilio, request))


def error(status: int, code: int, message: str) -> Response:
    """An error answer in Twilio's JSON shape."""
    return (
        status,
        {},
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def _authenticated(twilio: TwilioState, request: Received) -> bool:
    scheme, _, encoded = request.header("authorization").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    if not password or username != request.params["account_sid"]:
        return False
    expected = twilio.accounts.get(username)
    return expected is None or hmac.compare_digest(password.encode(), expected.encode())


def _params(request: Received) -> dict[str, str]:
    content_type = request.header("content-type").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    return {name: values[-1] for name, values in request.form().items()}


def _now() -> str:
    return format_datetime(datetime.now(UTC))


def _create_message(twilio: TwilioState, request: Received) -> Response:
    if not _authenticated(twilio, request):
        return error(401, 20003, "Authenticate")
    params = _params(request)
    to = params.get("To", "")
    from_ = params.get("From", "")
    service = params.get("MessagingServiceSid", "")
    body = params.get("Body", "")

    if not to:
        return error(400, 21604, "A 'To' phone number is required.")
    if not E164.fullmatch(to):
        return error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if bool(from_) == bool(service):
        return error(
            400,
            21603,
            "Specify either a 'From' phone number or a 'MessagingServiceSid', not both."
            if from_
            else "A 'From' phone number is required.",
        )
    if from_ in MAGIC_FROM:
        code, text = MAGIC_FROM[from_]
        return error(400, code, text.format(from_=from_))
    if not body:
        return error(400, 21602, "Message body is required.")
    if len(body) > MAX_BODY:
        return error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    if to in MAGIC_TO:
        code, text = MAGIC_TO[to]
        return error(400, code, text.format(to=to))
    if to in twilio.opted_out:
        return error(400, 21610, "Attempt to send to unsubscribed recipient")

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
        "from": from_ or None,
        "messaging_service_sid": service or None,
        "num_media": "0",
        "num_segments": str(segments(body).segments),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if service else "queued",
        "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
        "to": to,
        "uri": uri,
    }
    with twilio.lock:
        twilio.messages.append(message)
    return 201, {}, message


def _fetch_message(twilio: TwilioState, request: Received) -> Response:
    if not _authenticated(twilio, request):
        return error(401, 20003, "Authenticate")
    with twilio.lock:
        for message in twilio.messages:
            if (
                message["sid"] == request.params["sid"]
                and message["account_sid"] == request.params["account_sid"]
            ):
                return 200, {}, message
    return error(404, 20404, f"The requested resource {request.path} was not found")
