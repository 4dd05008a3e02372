"""The Twilio emulator's WhatsApp rules, status callbacks and inbound webhooks.

Requests go to the emulator over HTTP with ``requests``; callbacks and inbound
webhooks land on a small local receiver, which checks each signature the way our
webhook views do, with the SDK's ``RequestValidator``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from twilio.request_validator import RequestValidator

from tests.channels.test_twilio_sms_adapter import closed_port
from tests.emulator import ProviderEmulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.twilio import ACCOUNT_SID, AUTH_TOKEN

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
SENDER = "+14155238886"
CUSTOMER = "+14155550100"
TEMPLATE = "HX" + "0123456789abcdef" * 2


@dataclass
class Arrived:
    path: str
    headers: dict[str, str]
    params: dict[str, str]


class Receiver:
    """A local HTTP server standing in for our webhook endpoints."""

    def __init__(self) -> None:
        self.arrived: list[Arrived] = []
        self.status = 200
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                params = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
                receiver.arrived.append(
                    Arrived(self.path, {k.lower(): v for k, v in self.headers.items()}, params)
                )
                time.sleep(receiver.delay)
                try:
                    self.send_response(receiver.status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the emulator gave up waiting (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str = "/webhooks/twilio/status") -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def signed(self, arrived: Arrived, token: str = AUTH_TOKEN) -> bool:
        url = self.url(arrived.path)
        signature = arrived.headers.get("x-twilio-signature", "")
        return RequestValidator(token).validate(url, arrived.params, signature)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    server = ProviderEmulator()
    twilio_emulator.install(server)
    twilio_emulator.state(server).callback_delay = 0.0
    server.start()
    try:
        yield server
    finally:
        server.stop()


def create(emulator: ProviderEmulator, **params: Any) -> requests.Response:
    return requests.post(
        emulator.url + MESSAGES, data=params, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=5
    )


def whatsapp(emulator: ProviderEmulator, **params: Any) -> requests.Response:
    params = {"To": f"whatsapp:{CUSTOMER}", "From": f"whatsapp:{SENDER}", **params}
    return create(emulator, **params)


def statuses(emulator: ProviderEmulator) -> list[str]:
    return [a.params["MessageStatus"] for a in twilio_emulator.state(emulator).callback_attempts]


# --- WhatsApp on the Messages API -------------------------------------------------------


def test_a_whatsapp_message_in_the_window_is_created_with_its_prefixes(emulator):
    twilio_emulator.open_session(emulator, CUSTOMER, SENDER)

    response = whatsapp(emulator, Body="Your order shipped.")

    assert response.status_code == 201
    message = response.json()
    assert message["to"] == f"whatsapp:{CUSTOMER}"
    assert message["from"] == f"whatsapp:{SENDER}"
    assert (message["status"], message["num_segments"]) == ("queued", "1")


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"To": f"whatsapp:{CUSTOMER}", "From": SENDER, "Body": "x"}, 400, 21910),
        ({"To": CUSTOMER, "From": f"whatsapp:{SENDER}", "Body": "x"}, 400, 21910),
        ({"To": "whatsapp:4155550100", "From": f"whatsapp:{SENDER}", "Body": "x"}, 400, 21211),
        ({"To": f"whatsapp:{CUSTOMER}", "From": "whatsapp:Stride", "Body": "x"}, 400, 21212),
        ({"To": f"whatsapp:{CUSTOMER}", "From": f"whatsapp:{SENDER}"}, 400, 21619),
        (
            {"To": f"whatsapp:{CUSTOMER}", "From": f"whatsapp:{SENDER}", "ContentSid": "HX12"},
            400,
            21655,
        ),
        (
            {
                "To": f"whatsapp:{CUSTOMER}",
                "From": f"whatsapp:{SENDER}",
                "ContentVariables": '{"1": "Alex"}',
                "Body": "x",
            },
            400,
            21654,
        ),
    ],
    ids=[
        "prefixed-to-plain-from",
        "plain-to-prefixed-from",
        "to-not-e164",
        "from-not-e164",
        "no-body-no-template",
        "bad-content-sid",
        "variables-without-template",
    ],
)
def test_whatsapp_requests_are_checked_as_twilio_does(emulator, params, status, code):
    response = create(emulator, **params)

    assert response.status_code == status
    assert response.json()["code"] == code
    assert twilio_emulator.state(emulator).messages == []


@pytest.mark.parametrize(
    "variables", ["not json", '["Alex"]', '{"1": ""}', '{"1": null}', "{"], ids=repr
)
def test_content_variables_must_be_a_json_object_of_values(emulator, variables):
    response = whatsapp(emulator, ContentSid=TEMPLATE, ContentVariables=variables)

    assert response.status_code == 400
    assert response.json()["code"] == 21656


def test_a_template_is_rendered_into_the_stored_body(emulator):
    twilio_emulator.state(emulator).templates[TEMPLATE] = "Hi {{1}}, your {{2}} shipped."

    response = whatsapp(
        emulator, ContentSid=TEMPLATE, ContentVariables=json.dumps({"1": "Alex", "2": "shoe"})
    )

    assert response.status_code == 201
    assert response.json()["body"] == "Hi Alex, your shoe shipped."


def test_a_messaging_service_takes_a_prefixed_to(emulator):
    twilio_emulator.open_session(emulator, CUSTOMER, SENDER)

    response = create(
        emulator, To=f"whatsapp:{CUSTOMER}", MessagingServiceSid="MG" + "a" * 32, Body="Hi"
    )

    assert response.status_code == 201
    assert response.json()["status"] == "accepted"


# --- the 24-hour window -----------------------------------------------------------------


def test_free_form_outside_the_window_is_accepted_then_fails_with_63016(emulator, receiver):
    response = whatsapp(emulator, Body="Hi", StatusCallback=receiver.url())

    assert response.status_code == 201 and response.json()["status"] == "queued"
    [attempt] = twilio_emulator.wait_for_callbacks(emulator, 1)
    assert attempt.params["MessageStatus"] == "failed"
    assert attempt.params["ErrorCode"] == "63016"
    twilio_emulator.wait_idle(emulator)
    fetched = requests.get(
        emulator.url + MESSAGES.removesuffix(".json") + f"/{response.json()['sid']}.json",
        auth=(ACCOUNT_SID, AUTH_TOKEN),
        timeout=5,
    ).json()
    assert (fetched["status"], fetched["error_code"]) == ("failed", 63016)
    assert statuses(emulator) == ["failed"]


def test_the_reject_mode_refuses_the_create_call_itself(emulator):
    twilio_emulator.state(emulator).out_of_window = "reject"

    response = whatsapp(emulator, Body="Hi")

    assert response.status_code == 400
    assert response.json()["code"] == 63016
    assert whatsapp(emulator, ContentSid=TEMPLATE).status_code == 201


def test_a_template_goes_out_whatever_the_window(emulator, receiver):
    response = whatsapp(emulator, ContentSid=TEMPLATE, StatusCallback=receiver.url())

    assert response.status_code == 201
    twilio_emulator.wait_for_callbacks(emulator, 3)
    assert statuses(emulator) == ["sent", "delivered", "read"]


def test_the_window_closes_24_hours_after_the_customer_wrote(emulator):
    twilio = twilio_emulator.state(emulator)
    twilio.out_of_window = "reject"
    now = time.time()
    twilio.clock = lambda: now

    twilio_emulator.open_session(emulator, CUSTOMER, SENDER, at=now - 24 * 3600 + 5)
    assert whatsapp(emulator, Body="Hi").status_code == 201
    twilio.clock = lambda: now + 10
    assert whatsapp(emulator, Body="Hi").json()["code"] == 63016
    twilio_emulator.open_session(emulator, f"whatsapp:{CUSTOMER}", f"whatsapp:{SENDER}")
    assert whatsapp(emulator, Body="Hi").status_code == 201
    twilio_emulator.close_session(emulator, CUSTOMER, SENDER)
    assert whatsapp(emulator, Body="Hi").status_code == 400


def test_the_window_is_per_sender(emulator):
    twilio_emulator.state(emulator).out_of_window = "reject"
    twilio_emulator.open_session(emulator, CUSTOMER, "+15017122661")

    assert whatsapp(emulator, Body="Hi").json()["code"] == 63016


# --- status callbacks -------------------------------------------------------------------


def test_sms_callbacks_are_sent_then_delivered_signed_with_twilio_params(emulator, receiver):
    url = receiver.url("/webhooks/twilio/status?tenant=7")
    response = create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=url)
    sid = response.json()["sid"]

    attempts = twilio_emulator.wait_for_callbacks(emulator, 2)

    assert [a.params["MessageStatus"] for a in attempts] == ["sent", "delivered"]
    assert all(a.ok and a.status == 200 and a.url == url for a in attempts)
    sent, delivered = receiver.arrived
    assert sent.path == "/webhooks/twilio/status?tenant=7"
    assert sent.params == {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": sid,
        "MessageStatus": "sent",
        "SmsSid": sid,
        "SmsStatus": "sent",
        "To": CUSTOMER,
    }
    assert delivered.params["SmsStatus"] == "delivered"
    assert len(delivered.params["RawDlrDoneDate"]) == 10
    for arrived in receiver.arrived:
        assert receiver.signed(arrived)
        assert not receiver.signed(arrived, token="another-token")
        assert arrived.headers["content-type"] == "application/x-www-form-urlencoded"
        assert arrived.headers["i-twilio-idempotency-token"]
    twilio_emulator.wait_idle(emulator)
    assert twilio_emulator.state(emulator).messages[0]["status"] == "delivered"


def test_whatsapp_callbacks_add_read_and_the_channel_params(emulator, receiver):
    twilio_emulator.open_session(emulator, CUSTOMER, SENDER)
    whatsapp(emulator, Body="Hi", StatusCallback=receiver.url())

    attempts = twilio_emulator.wait_for_callbacks(emulator, 3)

    assert [a.params["MessageStatus"] for a in attempts] == ["sent", "delivered", "read"]
    params = receiver.arrived[-1].params
    assert params["To"] == f"whatsapp:{CUSTOMER}" and params["From"] == f"whatsapp:{SENDER}"
    assert params["ChannelPrefix"] == "whatsapp"
    assert params["ChannelToAddress"] == CUSTOMER
    assert params["ChannelInstallSid"].startswith("XE")
    assert all(receiver.signed(a) for a in receiver.arrived)


def test_another_account_is_signed_with_the_token_it_used(emulator, receiver):
    account = "AC" + "1" * 32
    requests.post(
        f"{emulator.url}/2010-04-01/Accounts/{account}/Messages.json",
        data={
            "To": CUSTOMER,
            "From": "+15005550006",
            "Body": "Hi",
            "StatusCallback": receiver.url(),
        },
        auth=(account, "secret-token"),
        timeout=5,
    )

    twilio_emulator.wait_for_callbacks(emulator, 2)

    assert all(receiver.signed(a, token="secret-token") for a in receiver.arrived)
    assert receiver.arrived[0].params["AccountSid"] == account


@pytest.mark.parametrize(
    ("channel", "code", "expected"),
    [
        ("sms", 30003, ["sent", "undelivered"]),
        ("sms", 30006, ["sent", "undelivered"]),
        ("whatsapp", 63024, ["failed"]),
        ("whatsapp", 63003, ["failed"]),
    ],
)
def test_undeliverable_numbers_fail_with_their_error_code(
    emulator, receiver, channel, code, expected
):
    twilio_emulator.state(emulator).undeliverable[CUSTOMER] = code
    twilio_emulator.open_session(emulator, CUSTOMER, SENDER)
    if channel == "sms":
        create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url())
    else:
        whatsapp(emulator, Body="Hi", StatusCallback=receiver.url())

    attempts = twilio_emulator.wait_for_callbacks(emulator, len(expected))

    assert [a.params["MessageStatus"] for a in attempts] == expected
    assert attempts[-1].params["ErrorCode"] == str(code)
    assert "ErrorCode" not in attempts[0].params or len(expected) == 1
    twilio_emulator.wait_idle(emulator)
    message = twilio_emulator.state(emulator).messages[0]
    assert (message["status"], message["error_code"]) == (expected[-1], code)


def test_reversed_callbacks_deliver_before_sent(emulator, receiver):
    twilio_emulator.state(emulator).callback_order = "reversed"

    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url())

    twilio_emulator.wait_for_callbacks(emulator, 2)
    assert [a.params["MessageStatus"] for a in receiver.arrived] == ["delivered", "sent"]


def test_duplicated_callbacks_arrive_twice_with_one_idempotency_token(emulator, receiver):
    twilio_emulator.state(emulator).duplicate_callbacks = True

    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url())

    twilio_emulator.wait_for_callbacks(emulator, 4)
    arrived = receiver.arrived
    assert [a.params["MessageStatus"] for a in arrived] == [
        "sent",
        "sent",
        "delivered",
        "delivered",
    ]
    tokens = [a.headers["i-twilio-idempotency-token"] for a in arrived]
    assert tokens[0] == tokens[1] != tokens[2] == tokens[3]
    assert all(receiver.signed(a) for a in arrived)


def test_held_callbacks_wait_for_release(emulator, receiver):
    twilio = twilio_emulator.state(emulator)
    twilio.callbacks = "hold"
    response = create(
        emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url()
    )

    time.sleep(0.1)
    assert receiver.arrived == [] and twilio.callback_attempts == []
    assert twilio.messages[0]["status"] == "queued"
    with pytest.raises(TimeoutError):
        twilio_emulator.wait_idle(emulator, timeout=0.05)

    twilio_emulator.release_callbacks(emulator)

    twilio_emulator.wait_for_callbacks(emulator, 2)
    assert twilio.messages[0]["sid"] == response.json()["sid"]
    assert statuses(emulator) == ["sent", "delivered"]


def test_switched_off_callbacks_post_nothing_but_the_message_is_delivered(emulator, receiver):
    twilio = twilio_emulator.state(emulator)
    twilio.callbacks = "off"

    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url())

    twilio_emulator.wait_idle(emulator)
    assert receiver.arrived == [] and twilio.callback_attempts == []
    assert twilio.messages[0]["status"] == "delivered"


def test_failed_callbacks_are_recorded_not_raised(emulator, receiver):
    receiver.status = 500
    dead = f"http://127.0.0.1:{closed_port()}/status"

    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url())
    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=dead)

    attempts = twilio_emulator.wait_for_callbacks(emulator, 4)
    answered = [a for a in attempts if a.url != dead]
    refused = [a for a in attempts if a.url == dead]
    assert [(a.status, a.ok) for a in answered] == [(500, False), (500, False)]
    assert [a.status for a in refused] == [None, None]
    assert all("ConnectionRefused" in a.error for a in refused)


def test_reserved_example_domains_are_recorded_but_never_called(emulator):
    url = "https://hooks.example.com/twilio/status"

    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=url)

    attempts = twilio_emulator.wait_for_callbacks(emulator, 2)
    assert [(a.url, a.status) for a in attempts] == [(url, None), (url, None)]
    assert all("reserved" in a.error for a in attempts)


def test_a_slow_receiver_times_out_and_is_recorded(emulator, receiver):
    twilio_emulator.state(emulator).callback_timeout = 0.2
    receiver.delay = 0.5

    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url())

    [first, *_] = twilio_emulator.wait_for_callbacks(emulator, 1)
    assert first.status is None and "timed out" in first.error


def test_without_a_status_callback_nothing_is_posted(emulator, receiver):
    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi")

    twilio_emulator.wait_idle(emulator)
    assert twilio_emulator.state(emulator).callback_attempts == []
    assert twilio_emulator.state(emulator).messages[0]["status"] == "delivered"


def test_stop_ends_the_callback_thread_and_drops_what_is_pending(receiver):
    emulator = ProviderEmulator()
    twilio_emulator.install(emulator)
    emulator.start()
    twilio_emulator.state(emulator).callbacks = "hold"
    create(emulator, To=CUSTOMER, From="+15005550006", Body="Hi", StatusCallback=receiver.url())
    assert any(t.name == "twilio-emulator-callbacks" for t in threading.enumerate())

    started = time.monotonic()
    emulator.stop()

    assert time.monotonic() - started < 1
    assert not any(t.name == "twilio-emulator-callbacks" for t in threading.enumerate())
    twilio_emulator.release_callbacks(emulator)
    time.sleep(0.05)
    assert receiver.arrived == []


# --- inbound messages -------------------------------------------------------------------


def test_an_inbound_sms_is_posted_signed_as_twilio_does(emulator, receiver):
    url = receiver.url("/webhooks/twilio/inbound")

    status, body = twilio_emulator.send_inbound(
        emulator, url=url, from_=CUSTOMER, to="+15005550006", body="Hello there"
    )

    assert (status, body) == (200, b"ok")
    [arrived] = receiver.arrived
    assert receiver.signed(arrived)
    params = arrived.params
    assert params["MessageSid"].startswith("SM") and params["SmsSid"] == params["MessageSid"]
    assert params["SmsMessageSid"] == params["MessageSid"]
    assert (params["From"], params["To"], params["Body"]) == (
        CUSTOMER,
        "+15005550006",
        "Hello there",
    )
    assert (params["AccountSid"], params["ApiVersion"]) == (ACCOUNT_SID, "2010-04-01")
    assert (params["NumMedia"], params["NumSegments"], params["SmsStatus"]) == (
        "0",
        "1",
        "received",
    )
    assert "OptOutType" not in params
    assert twilio_emulator.state(emulator).inbound == [params]


def test_an_inbound_whatsapp_message_has_prefixes_profile_and_opens_the_window(emulator, receiver):
    twilio_emulator.state(emulator).out_of_window = "reject"
    assert whatsapp(emulator, Body="Hi").status_code == 400

    twilio_emulator.send_inbound(
        emulator,
        url=receiver.url("/webhooks/twilio/inbound"),
        from_=CUSTOMER,
        to=f"whatsapp:{SENDER}",
        body="Where is my order?",
        channel="whatsapp",
        profile_name="Alex",
    )

    [arrived] = receiver.arrived
    assert receiver.signed(arrived)
    assert arrived.params["From"] == f"whatsapp:{CUSTOMER}"
    assert arrived.params["To"] == f"whatsapp:{SENDER}"
    assert arrived.params["ProfileName"] == "Alex"
    assert arrived.params["WaId"] == CUSTOMER.removeprefix("+")
    assert whatsapp(emulator, Body="It ships today.").status_code == 201


def test_the_window_opens_even_when_our_endpoint_fails(emulator, receiver):
    receiver.status = 500
    twilio_emulator.state(emulator).out_of_window = "reject"

    status, _ = twilio_emulator.send_inbound(
        emulator, url=receiver.url(), from_=CUSTOMER, to=SENDER, body="Hi", channel="whatsapp"
    )

    assert status == 500
    assert whatsapp(emulator, Body="Hello").status_code == 201


def test_a_wrong_token_signs_an_inbound_message_our_side_must_refuse(emulator, receiver):
    twilio_emulator.send_inbound(
        emulator, url=receiver.url(), from_=CUSTOMER, to=SENDER, body="Hi", auth_token="forged"
    )

    [arrived] = receiver.arrived
    assert not receiver.signed(arrived)
    assert receiver.signed(arrived, token="forged")


@pytest.mark.parametrize("keyword", ["STOP", "stop", " Unsubscribe "])
def test_an_inbound_stop_opts_the_number_out_until_start(emulator, receiver, keyword):
    twilio_emulator.send_inbound(
        emulator, url=receiver.url(), from_=CUSTOMER, to="+15005550006", body=keyword
    )

    assert receiver.arrived[-1].params["OptOutType"] == "STOP"
    refused = create(emulator, To=CUSTOMER, From="+15005550006", Body="Sale!")
    assert (refused.status_code, refused.json()["code"]) == (400, 21610)

    twilio_emulator.send_inbound(
        emulator, url=receiver.url(), from_=CUSTOMER, to="+15005550006", body="START"
    )

    assert receiver.arrived[-1].params["OptOutType"] == "START"
    assert create(emulator, To=CUSTOMER, From="+15005550006", Body="Sale!").status_code == 201


def test_an_unknown_channel_is_refused(emulator, receiver):
    with pytest.raises(ValueError, match="channel"):
        twilio_emulator.send_inbound(
            emulator, url=receiver.url(), from_=CUSTOMER, to=SENDER, body="Hi", channel="line"
        )
