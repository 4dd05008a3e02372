"""The Twilio WhatsApp adapter, through the real ``twilio`` SDK over HTTP to the emulator.

Nothing is mocked: each test starts an emulator with the Twilio routes, points
the adapter's ``base_url`` at it and checks both what the adapter returned and
what arrived on the wire. The emulator's status callbacks are switched off here
(they are covered in ``test_twilio_emulator``); its lifecycle still runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from channels.adapters.base import OutboundMessage
from channels.adapters.twilio_whatsapp import TwilioWhatsAppAdapter
from tests.emulator import ProviderEmulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.twilio import ACCOUNT_SID, AUTH_TOKEN

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
FROM = "+14155238886"
CUSTOMER = "+14155550100"
CALLBACK = "https://hooks.example.com/twilio/status"
TEMPLATE = "HX" + "0123456789abcdef" * 2
VARIABLES = {"1": "Alex", "2": "Trail shoe"}


class CountingAdapter(TwilioWhatsAppAdapter):
    """Counts the throttle calls, one per provider request."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.throttled = 0

    def throttle(self, n: int = 1) -> None:
        self.throttled += n


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    server = ProviderEmulator()
    twilio_emulator.install(server)
    twilio_emulator.state(server).callbacks = "off"
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_adapter(emulator: ProviderEmulator) -> Iterator[Callable[..., CountingAdapter]]:
    adapters: list[CountingAdapter] = []

    def make(**overrides: Any) -> CountingAdapter:
        options: dict[str, Any] = {
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": FROM,
            "status_callback": CALLBACK,
            "base_url": emulator.url,
            "timeout": 2,
        }
        options.update(overrides)
        adapter = CountingAdapter(alias="whatsapp", **{k: v for k, v in options.items() if v})
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        adapter.close()


def wa(
    to: str = CUSTOMER,
    body: str = "Your order shipped.",
    *,
    session_open: bool | None = True,
    content_sid: str = "",
    content_variables: dict[str, str] | None = None,
    **fields: Any,
) -> OutboundMessage:
    metadata = fields.pop("metadata", None)
    if metadata is None:
        metadata = {"whatsapp": {"content_sid": content_sid}}
        if session_open is not None:
            metadata["whatsapp"]["session_open"] = session_open
        if content_variables is not None:
            metadata["whatsapp"]["content_variables"] = content_variables
    return OutboundMessage(
        message_id=fields.pop("message_id", 1),
        channel="whatsapp",
        to=to,
        body=body,
        metadata=metadata,
        **fields,
    )


def forms(emulator: ProviderEmulator) -> list[dict[str, list[str]]]:
    return [request.form() for request in emulator.requests_to(MESSAGES)]


# --- session messages -------------------------------------------------------------------


def test_a_session_message_is_sent_as_free_form_text(emulator, make_adapter):
    twilio_emulator.open_session(emulator, CUSTOMER, FROM)
    adapter = make_adapter()

    [result] = adapter.send([wa(message_id=42)])

    assert result.accepted and not result.unknown
    assert result.message_id == 42
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    assert result.detail == {"whatsapp_mode": "session", "twilio_status": "queued"}
    assert forms(emulator) == [
        {
            "To": [f"whatsapp:{CUSTOMER}"],
            "From": [f"whatsapp:{FROM}"],
            "Body": ["Your order shipped."],
            "StatusCallback": [f"{CALLBACK}?m=42"],
        }
    ]
    assert adapter.throttled == 1
    twilio_emulator.wait_idle(emulator)
    [created] = twilio_emulator.state(emulator).messages
    assert created["sid"] == result.provider_message_id
    assert (created["status"], created["error_code"]) == ("read", None)


@pytest.mark.parametrize(
    ("configured", "to", "sender"),
    [
        (FROM, CUSTOMER, ""),
        (f"whatsapp:{FROM}", f"whatsapp:{CUSTOMER}", ""),
        (FROM, CUSTOMER, "+15017122661"),
        (FROM, CUSTOMER, "whatsapp:+15017122661"),
    ],
    ids=["plain", "prefixed", "sender", "prefixed-sender"],
)
def test_to_and_from_carry_the_whatsapp_prefix_once(make_adapter, emulator, configured, to, sender):
    [result] = make_adapter(from_number=configured).send([wa(to=to, sender=sender)])

    assert result.accepted
    [form] = forms(emulator)
    assert form["To"] == [f"whatsapp:{CUSTOMER}"]
    assert form["From"] == [f"whatsapp:{sender.removeprefix('whatsapp:') or FROM}"]


def test_a_messaging_service_sends_with_a_prefixed_to_and_no_from(emulator, make_adapter):
    service = "MG" + "a" * 32
    twilio_emulator.open_session(emulator, CUSTOMER, FROM)

    [result] = make_adapter(from_number="", messaging_service_sid=service).send([wa()])

    assert result.accepted and result.detail["twilio_status"] == "accepted"
    [form] = forms(emulator)
    assert form["MessagingServiceSid"] == [service]
    assert form["To"] == [f"whatsapp:{CUSTOMER}"]
    assert "From" not in form


def test_without_metadata_a_session_message_is_tried_and_twilio_decides(emulator, make_adapter):
    """Twilio accepts a free-form message outside the window and fails it afterwards."""
    [result] = make_adapter().send([wa(metadata={})])

    assert result.accepted and result.detail["whatsapp_mode"] == "session"
    assert "Body" in forms(emulator)[0]
    twilio_emulator.wait_idle(emulator)
    [created] = twilio_emulator.state(emulator).messages
    assert (created["status"], created["error_code"]) == ("failed", 63016)


# --- templates --------------------------------------------------------------------------


def test_outside_the_window_the_template_goes_with_its_variables(emulator, make_adapter):
    twilio_emulator.state(emulator).templates[TEMPLATE] = "Hi {{1}}, your {{2}} shipped."
    adapter = make_adapter()

    [result] = adapter.send(
        [wa(session_open=False, content_sid=TEMPLATE, content_variables=VARIABLES)]
    )

    assert result.accepted
    assert result.detail == {
        "whatsapp_mode": "template",
        "content_sid": TEMPLATE,
        "twilio_status": "queued",
    }
    [form] = forms(emulator)
    assert "Body" not in form
    assert form["ContentSid"] == [TEMPLATE]
    assert json.loads(form["ContentVariables"][0]) == VARIABLES
    assert form["To"] == [f"whatsapp:{CUSTOMER}"] and form["From"] == [f"whatsapp:{FROM}"]
    assert adapter.throttled == 1
    twilio_emulator.wait_idle(emulator)
    [created] = twilio_emulator.state(emulator).messages
    assert created["body"] == "Hi Alex, your Trail shoe shipped."
    assert created["status"] == "read"


def test_a_template_without_variables_sends_no_content_variables(emulator, make_adapter):
    [result] = make_adapter().send([wa(session_open=False, content_sid=TEMPLATE)])

    assert result.accepted
    assert "ContentVariables" not in forms(emulator)[0]


def test_non_ascii_variables_arrive_intact(emulator, make_adapter):
    variables = {"1": "アレックス", "2": "Trail shoe 👟"}

    [result] = make_adapter().send(
        [wa(session_open=False, content_sid=TEMPLATE, content_variables=variables)]
    )

    assert result.accepted
    assert json.loads(forms(emulator)[0]["ContentVariables"][0]) == variables


def test_inside_the_window_an_empty_body_sends_the_template(emulator, make_adapter):
    [result] = make_adapter().send([wa(body="", content_sid=TEMPLATE)])

    assert result.accepted and result.detail["whatsapp_mode"] == "template"
    assert "Body" not in forms(emulator)[0]


def test_outside_the_window_without_a_template_twilio_is_not_called(emulator, make_adapter):
    adapter = make_adapter()

    [result] = adapter.send([wa(session_open=False)])

    assert not result.accepted and result.permanent and not result.unknown
    assert result.error_code == "twilio:63016"
    assert "24-hour" in result.error and "template" in result.error
    assert result.detail["whatsapp_mode"] == "none"
    assert result.suppress == ""
    assert emulator.requests_to("/") == []
    assert adapter.throttled == 0


def test_a_template_twilio_refuses_is_permanent(emulator, make_adapter):
    [result] = make_adapter().send([wa(session_open=False, content_sid="HX-not-a-sid")])

    assert result.permanent and result.error_code == "twilio:21655"
    assert result.detail["whatsapp_mode"] == "template"


# --- the stale window: 63016 from Twilio ------------------------------------------------


@pytest.mark.parametrize("how", ["window", "fault"])
def test_a_refused_session_message_is_resent_at_once_as_the_template(emulator, make_adapter, how):
    if how == "window":
        twilio_emulator.state(emulator).out_of_window = "reject"
    else:
        twilio_emulator.refuse_next(emulator, 63016)
    adapter = make_adapter()

    [result] = adapter.send([wa(content_sid=TEMPLATE, content_variables=VARIABLES)])

    assert result.accepted and not result.permanent
    assert result.detail["whatsapp_mode"] == "template"
    assert result.detail["whatsapp_fallback"] == "twilio:63016"
    assert result.detail["content_sid"] == TEMPLATE
    first, second = forms(emulator)
    assert first["Body"] == ["Your order shipped."] and "ContentSid" not in first
    assert second["ContentSid"] == [TEMPLATE] and "Body" not in second
    assert json.loads(second["ContentVariables"][0]) == VARIABLES
    [created] = twilio_emulator.state(emulator).messages
    assert created["sid"] == result.provider_message_id
    assert adapter.throttled == 2


def test_a_refused_session_message_without_a_template_fails_for_good(emulator, make_adapter):
    twilio_emulator.state(emulator).out_of_window = "reject"

    [result] = make_adapter().send([wa()])

    assert not result.accepted and result.permanent and not result.unknown
    assert result.error_code == "twilio:63016"
    assert result.detail["twilio_code"] == 63016
    assert result.detail["whatsapp_mode"] == "session"
    assert "no approved template" in result.error
    assert result.suppress == ""
    assert len(emulator.requests_to(MESSAGES)) == 1


def test_a_fallback_template_that_fails_reports_both(emulator, make_adapter):
    twilio_emulator.refuse_next(emulator, 63016)
    twilio_emulator.refuse_next(emulator, 20500, status=500, message="Internal Server Error")

    [result] = make_adapter().send([wa(content_sid=TEMPLATE)])

    assert not result.accepted and not result.permanent
    assert result.error_code == "twilio:20500"
    assert result.detail["whatsapp_mode"] == "template"
    assert result.detail["whatsapp_fallback"] == "twilio:63016"
    assert len(emulator.requests_to(MESSAGES)) == 2


# --- refusals and the network -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error_code"),
    [
        (429, 20429, "twilio:20429"),
        (429, None, "twilio:http_429"),
        (500, 20500, "twilio:20500"),
        (503, None, "twilio:http_503"),
        (400, 63018, "twilio:63018"),
    ],
)
def test_rate_limits_and_server_errors_are_transient(
    emulator, make_adapter, status, code, error_code
):
    if code is None:
        emulator.fail_next("/2010-04-01/", status=status)
    else:
        twilio_emulator.refuse_next(emulator, code, status=status)

    [result] = make_adapter().send([wa(content_sid=TEMPLATE)])

    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == error_code
    assert result.detail["http_status"] == status
    assert result.detail["whatsapp_mode"] == "session"
    assert result.suppress == ""
    assert len(emulator.requests_to(MESSAGES)) == 1  # no template fallback for these


@pytest.mark.parametrize(
    ("code", "suppress"), [(63003, "invalid"), (63024, "invalid"), (63032, ""), (21211, "invalid")]
)
def test_recipient_errors_are_permanent_and_invalid_ones_suppressed(
    emulator, make_adapter, code, suppress
):
    twilio_emulator.refuse_next(emulator, code)

    [result] = make_adapter().send([wa()])

    assert not result.accepted and result.permanent
    assert result.error_code == f"twilio:{code}"
    assert result.suppress == suppress


def test_an_invalid_number_is_refused_by_twilio_and_suppressed(emulator, make_adapter):
    [result] = make_adapter().send([wa(to="090-1234-5678")])

    assert result.permanent and result.error_code == "twilio:21211"
    assert result.suppress == "invalid"
    assert forms(emulator)[0]["To"] == ["whatsapp:090-1234-5678"]


def test_a_timeout_is_unknown_and_never_falls_back(emulator, make_adapter):
    emulator.fail_next("/2010-04-01/", timeout=True, delay=0.8)

    started = time.monotonic()
    [result] = make_adapter(timeout=0.3).send([wa(content_sid=TEMPLATE)])

    assert time.monotonic() - started < 0.75
    assert result.unknown and not result.accepted and not result.permanent
    assert result.error_code == "twilio:timeout"
    assert result.detail["whatsapp_mode"] == "session"
    assert len(emulator.requests_to(MESSAGES)) == 1


def test_a_batch_mixes_modes_and_keeps_its_order(emulator, make_adapter):
    twilio_emulator.open_session(emulator, "+14155550101", FROM)
    batch = [
        wa(to="+14155550101", message_id=1),
        wa(to="+14155550102", message_id=2, session_open=False, content_sid=TEMPLATE),
        wa(to="+14155550103", message_id=3, session_open=False),
        wa(to="+14155550104", message_id=4, metadata={"whatsapp": "yes"}),
    ]
    adapter = make_adapter(concurrency=4)

    results = adapter.send(batch)

    assert [r.message_id for r in results] == [1, 2, 3, 4]
    assert [r.accepted for r in results] == [True, True, False, False]
    assert [r.detail["whatsapp_mode"] for r in results] == ["session", "template", "none", "none"]
    assert results[2].error_code == "twilio:63016"
    assert results[3].error_code == "whatsapp:invalid_metadata" and results[3].permanent
    assert len(emulator.requests_to(MESSAGES)) == 2
    assert adapter.throttled == 2


@pytest.mark.parametrize(
    "whatsapp",
    [
        "open",
        {"session_open": "yes"},
        {"session_open": False, "content_sid": 7},
        {"session_open": False, "content_sid": TEMPLATE, "content_variables": {"1": 2}},
        {"session_open": False, "content_sid": TEMPLATE, "content_variables": ["Alex"]},
    ],
)
def test_malformed_metadata_is_permanent_and_calls_nobody(emulator, make_adapter, whatsapp):
    [result] = make_adapter().send([wa(metadata={"whatsapp": whatsapp})])

    assert not result.accepted and result.permanent
    assert result.error_code == "whatsapp:invalid_metadata"
    assert emulator.requests_to("/") == []


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("from_number", ["14155238886", "whatsapp:4155238886", "Stride"])
def test_a_from_number_must_be_e164(make_adapter, from_number):
    with pytest.raises(ImproperlyConfigured, match="from_number"):
        make_adapter(from_number=from_number)


def test_a_sender_is_required(make_adapter):
    with pytest.raises(ImproperlyConfigured, match="from_number"):
        make_adapter(from_number="")


def test_unknown_options_are_improperly_configured():
    with pytest.raises(ImproperlyConfigured, match="template_sid"):
        TwilioWhatsAppAdapter(
            alias="whatsapp",
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            from_number=FROM,
            template_sid=TEMPLATE,
        )
