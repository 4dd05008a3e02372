"""The LINE adapter, through the real ``line-bot-sdk`` over HTTP to the emulator.

Nothing is mocked: each test starts an emulator with the LINE routes, points the
adapter's ``base_url`` at it and checks both what the adapter returned and what
arrived on the wire. The last tests check the emulator's signed webhooks with
the SDK's own ``WebhookParser``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from linebot.v3 import WebhookParser
from linebot.v3.exceptions import InvalidSignatureError
from linebot.v3.webhooks import (
    FollowEvent,
    MessageEvent,
    TextMessageContent,
    UnfollowEvent,
    UserSource,
)

from channels.adapters.base import OutboundMessage
from channels.adapters.line import LineAdapter
from tests.emulator import ProviderEmulator
from tests.emulator import line as line_emulator
from tests.emulator.line import (
    BOT_USER_ID,
    CHANNEL_ACCESS_TOKEN,
    CHANNEL_SECRET,
    PUSH_PATH,
    follow_event,
    message_event,
    send_webhook,
    unfollow_event,
)

USER = "U" + "4af4980629" + "0123456789abcdef" + "012345"
OTHER_USER = "U" + "f" * 32


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    server = ProviderEmulator()
    line_emulator.install(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_adapter(emulator: ProviderEmulator) -> Iterator[Callable[..., LineAdapter]]:
    adapters: list[LineAdapter] = []

    def make(**overrides: Any) -> LineAdapter:
        options: dict[str, Any] = {
            "channel_access_token": CHANNEL_ACCESS_TOKEN,
            "channel_secret": CHANNEL_SECRET,
            "base_url": emulator.url,
            "timeout": 2,
        }
        options.update(overrides)
        adapter = LineAdapter(alias="line", **options)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        adapter.close()


def line_message(to: str = USER, body: str = "ご注文の商品を発送しました。", **fields: Any):
    return OutboundMessage(
        message_id=fields.pop("message_id", 1), channel="line", to=to, body=body, **fields
    )


def pushes(emulator: ProviderEmulator):
    return emulator.requests_to(PUSH_PATH)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


BUTTONS = {
    "kind": "template",
    "alt_text": "春のセールが始まりました",
    "title": "春のセール",
    "text": "全品20%オフ。今週末まで。",
    "actions": [
        {"label": "商品を見る", "uri": "https://shop.example.com/sale?utm_source=line"},
        {"label": "配信停止", "text": "停止"},
    ],
}

BUBBLE = {
    "type": "bubble",
    "hero": {
        "type": "image",
        "url": "https://shop.example.com/img/sale.png",
        "size": "full",
        "aspectRatio": "20:13",
        "aspectMode": "cover",
    },
    "body": {
        "type": "box",
        "layout": "vertical",
        "contents": [
            {"type": "text", "text": "春のセール", "weight": "bold", "size": "xl"},
            {"type": "text", "text": "全品20%オフ", "wrap": True, "color": "#666666"},
        ],
    },
    "footer": {
        "type": "box",
        "layout": "vertical",
        "spacing": "sm",
        "contents": [
            {
                "type": "button",
                "style": "primary",
                "action": {"type": "uri", "label": "見る", "uri": "https://shop.example.com"},
            }
        ],
    },
}


# --- success ----------------------------------------------------------------------------


def test_a_text_push_carries_token_retry_key_and_body(emulator, make_adapter):
    [result] = make_adapter().send([line_message(message_id=42, body="Your order shipped.")])

    assert result.accepted and not result.unknown and not result.permanent
    assert result.message_id == 42
    [request] = pushes(emulator)
    assert request.method == "POST"
    assert request.header("authorization") == f"Bearer {CHANNEL_ACCESS_TOKEN}"
    assert request.header("content-type") == "application/json"
    assert request.header("user-agent").startswith("line-bot-sdk-python/")
    key = request.header("x-line-retry-key")
    assert key == result.detail["retry_key"]
    assert uuid.UUID(key).version == 4  # random: no other installation sends it
    assert request.json() == {
        "to": USER,
        "messages": [{"type": "text", "text": "Your order shipped."}],
        "notificationDisabled": False,
    }
    [push] = line_emulator.state(emulator).pushes
    assert result.provider_message_id == push.request_id
    assert result.detail["line_request_id"] == push.request_id
    assert result.detail["sent_message_id"] == push.sent_messages[0]["id"]
    assert result.detail["quote_token"] == push.sent_messages[0]["quoteToken"]
    assert result.detail["http_status"] == 200


@pytest.mark.parametrize(
    "body",
    [
        "ご注文の商品を発送しました。お届け予定日は3月14日です。",
        "ｶﾀｶﾅ 半角と全角ＡＢＣ、絵文字も🍎👋🏻",
        "あ" * 5000,  # 5000 UTF-16 code units: exactly LINE's limit
        "🍎" * 2500,  # an emoji counts 2
    ],
    ids=["japanese", "mixed", "5000-kana", "2500-emoji"],
)
def test_japanese_and_emoji_text_arrives_unchanged(emulator, make_adapter, body):
    [result] = make_adapter().send([line_message(body=body)])

    assert result.accepted, result.error
    assert pushes(emulator)[0].json()["messages"] == [{"type": "text", "text": body}]


def test_a_buttons_template_message(emulator, make_adapter):
    [result] = make_adapter().send([line_message(metadata={"line": BUTTONS})])

    assert result.accepted, result.error
    assert "quote_token" not in result.detail  # template messages can not be quoted
    [message] = pushes(emulator)[0].json()["messages"]
    assert message == {
        "type": "template",
        "altText": "春のセールが始まりました",
        "template": {
            "type": "buttons",
            "title": "春のセール",
            "text": "全品20%オフ。今週末まで。",
            "actions": [
                {
                    "type": "uri",
                    "label": "商品を見る",
                    "uri": "https://shop.example.com/sale?utm_source=line",
                },
                {"type": "message", "label": "配信停止", "text": "停止"},
            ],
        },
    }


def test_a_template_without_alt_text_or_title_uses_the_body(emulator, make_adapter):
    spec = {
        "kind": "template",
        "text": "確認しますか?",
        "actions": [{"label": "はい", "text": "はい"}],
    }

    [result] = make_adapter().send([line_message(body="確認のお願い", metadata={"line": spec})])

    assert result.accepted, result.error
    [message] = pushes(emulator)[0].json()["messages"]
    assert message["altText"] == "確認のお願い"
    assert "title" not in message["template"]


def test_a_flex_message_sends_the_bubble_as_designed(emulator, make_adapter):
    spec = {"kind": "flex", "alt_text": "春のセール", "contents": BUBBLE}

    [result] = make_adapter().send([line_message(metadata={"line": spec})])

    assert result.accepted, result.error
    [message] = pushes(emulator)[0].json()["messages"]
    assert message["type"] == "flex" and message["altText"] == "春のセール"
    contents = message["contents"]
    # The SDK adds its defaults (e.g. "animated": false on images) and drops nothing.
    assert contents["body"] == BUBBLE["body"]
    assert contents["footer"] == BUBBLE["footer"]
    assert {k: v for k, v in contents["hero"].items() if k != "animated"} == BUBBLE["hero"]


def test_a_flex_carousel(emulator, make_adapter):
    carousel = {"type": "carousel", "contents": [BUBBLE, BUBBLE]}

    [result] = make_adapter().send(
        [line_message(metadata={"line": {"kind": "flex", "contents": carousel}})]
    )

    assert result.accepted, result.error
    assert len(pushes(emulator)[0].json()["messages"][0]["contents"]["contents"]) == 2


def test_a_blocked_user_is_accepted_and_silently_not_delivered(emulator, make_adapter):
    line_emulator.state(emulator).blocked_users.add(USER)

    [result] = make_adapter().send([line_message()])

    assert result.accepted  # LINE does not say: only the unfollow webhook does
    assert line_emulator.state(emulator).delivered_to(USER) == []


def test_a_batch_runs_concurrently_and_keeps_its_order(emulator, make_adapter):
    delay, size = 0.3, 6
    emulator.fail_next(PUSH_PATH, timeout=True, delay=delay, times=size)
    users = [f"U{i:032x}" for i in range(size)]
    batch = [line_message(to=user, message_id=100 + i) for i, user in enumerate(users)]

    started = time.monotonic()
    results = make_adapter(concurrency=size).send(batch)
    elapsed = time.monotonic() - started

    assert elapsed < delay * size / 2, f"{elapsed:.2f}s: the calls did not overlap"
    assert [r.message_id for r in results] == [m.message_id for m in batch]
    assert all(r.accepted for r in results)
    to_by_request = {p.request_id: p.to for p in line_emulator.state(emulator).pushes}
    assert [to_by_request[r.provider_message_id] for r in results] == users


def test_one_failure_in_a_batch_does_not_spoil_the_others(emulator, make_adapter):
    line_emulator.state(emulator).unknown_users.add(OTHER_USER)
    batch = [
        line_message(message_id=1),
        line_message(to=OTHER_USER, message_id=2),
        line_message(to="not-a-user", message_id=3),
        line_message(message_id=4),
    ]

    results = make_adapter(concurrency=4).send(batch)

    assert [(r.message_id, r.accepted) for r in results] == [
        (1, True),
        (2, False),
        (3, False),
        (4, True),
    ]
    assert results[1].error_code == "line:400" and results[2].error_code == "line:invalid_to"
    assert len(pushes(emulator)) == 3


def test_throttle_is_called_before_each_request(emulator, make_adapter):
    calls: list[int] = []
    adapter = make_adapter(concurrency=1)
    adapter.throttle = lambda n=1: calls.append(n)  # type: ignore[method-assign]

    adapter.send([line_message(message_id=1), line_message(message_id=2), line_message(to="x")])

    assert calls == [1, 1]  # none for the message refused before any request
    assert len(pushes(emulator)) == 2


# --- refused before any request ---------------------------------------------------------------


@pytest.mark.parametrize(
    "to",
    [
        "",
        "U" + "a" * 31,
        "U" + "A" * 32,  # LINE's ids are lowercase hex
        "u" + "a" * 32,
        "C" + "a" * 32,  # a group id: this adapter pushes to users only
        " U" + "a" * 32,
        "+819012345678",
    ],
)
def test_a_malformed_user_id_is_permanent_without_a_request(emulator, make_adapter, to):
    [result] = make_adapter().send([line_message(to=to)])

    assert not result.accepted and result.permanent and not result.unknown
    assert result.error_code == "line:invalid_to"
    assert result.suppress == "invalid"
    assert pushes(emulator) == []


@pytest.mark.parametrize(
    ("body", "length"),
    [("a" * 5001, 5001), ("あ" * 4999 + "🍎", 5001), ("🍎" * 2501, 5002)],
    ids=["ascii", "kana+emoji", "emoji"],
)
def test_a_too_long_text_is_permanent_and_never_truncated(emulator, make_adapter, body, length):
    [result] = make_adapter().send([line_message(body=body)])

    assert not result.accepted and result.permanent
    assert result.error_code == "line:text_too_long"
    assert result.detail == {"length": length, "limit": 5000}
    assert pushes(emulator) == []


def test_an_empty_text_is_permanent_without_a_request(emulator, make_adapter):
    [result] = make_adapter().send([line_message(body="")])

    assert result.permanent and result.error_code == "line:empty"
    assert pushes(emulator) == []


@pytest.mark.parametrize(
    "spec",
    [
        "template",
        {"kind": "carousel"},
        {**BUTTONS, "actions": []},
        {**BUTTONS, "actions": [{"label": "x", "text": "y"}] * 5},
        {**BUTTONS, "actions": [{"label": "both", "text": "y", "uri": "https://e.com"}]},
        {**BUTTONS, "actions": [{"text": "no label"}]},
        {**BUTTONS, "text": ""},
        {**BUTTONS, "alt_text": "a" * 401},
        {"kind": "flex", "alt_text": "x", "contents": {"type": "box"}},
        {"kind": "flex", "alt_text": "x", "contents": {**BUBBLE, "newFeature": {"on": True}}},
        {"kind": "flex", "alt_text": "x", "contents": {"type": "bubble", "size": 3}},
    ],
    ids=[
        "not-an-object",
        "unknown-kind",
        "no-actions",
        "five-actions",
        "uri-and-text",
        "no-label",
        "no-text",
        "alt-text-too-long",
        "not-bubble-or-carousel",
        "unknown-flex-property",
        "wrong-type",
    ],
)
def test_an_invalid_rich_message_is_permanent_without_a_request(emulator, make_adapter, spec):
    [result] = make_adapter().send([line_message(body="", metadata={"line": spec})])

    assert not result.accepted and result.permanent and not result.unknown
    assert result.error_code == "line:invalid_message", result.error
    assert pushes(emulator) == []


# --- LINE's refusals --------------------------------------------------------------------------


def test_a_template_line_rejects_is_permanent_with_line_details(emulator, make_adapter):
    spec = {**BUTTONS, "title": "タ" * 41}

    [result] = make_adapter().send([line_message(metadata={"line": spec})])

    assert not result.accepted and result.permanent and not result.unknown
    assert result.error_code == "line:400"
    assert result.error == (
        "LINE 400: The request body has 1 error(s) "
        "(messages[0].template.title: Length must be between 0 and 40)"
    )
    assert result.detail["details"] == [
        {"message": "Length must be between 0 and 40", "property": "messages[0].template.title"}
    ]
    assert len(pushes(emulator)) == 1


def test_a_user_line_does_not_know_is_permanent(emulator, make_adapter):
    line_emulator.state(emulator).unknown_users.add(USER)

    [result] = make_adapter().send([line_message()])

    assert result.permanent and result.error_code == "line:400"
    assert result.error == "LINE 400: Failed to send messages"
    assert result.suppress == ""  # LINE's message is not specific enough to suppress on


def test_a_wrong_token_is_retried_not_failed_for_good(make_adapter):
    [result] = make_adapter(channel_access_token="revoked-token").send([line_message()])

    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == "line:401"
    assert result.detail["http_status"] == 401
    assert result.error.startswith("LINE 401: Authentication failed")


@pytest.mark.parametrize(
    ("status", "body", "error_code"),
    [
        (403, {"message": "Access to this API is not available for your account"}, "line:403"),
        (404, {"message": "Not found"}, "line:404"),
        (429, line_emulator.RATE_LIMITED, "line:429"),
        (500, line_emulator.INTERNAL_ERROR, "line:500"),
        (503, None, "line:503"),
    ],
)
def test_plan_rate_limit_and_server_errors_are_transient(
    emulator, make_adapter, status, body, error_code
):
    emulator.fail_next(PUSH_PATH, status=status, body=body)

    [result] = make_adapter().send([line_message()])

    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == error_code
    assert result.detail["http_status"] == status
    if body:
        assert result.error == f"LINE {status}: {body['message']}"
    assert "monthly_limit" not in result.detail


def test_the_monthly_limit_is_transient_with_a_hint(emulator, make_adapter):
    line_emulator.state(emulator).monthly_limit = 1
    adapter = make_adapter()
    [first] = adapter.send([line_message(message_id=1)])

    [result] = adapter.send([line_message(message_id=2)])

    assert first.accepted
    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == "line:monthly_limit"
    assert result.error == "LINE 429: You have reached your monthly limit."
    assert result.detail["monthly_limit"] is True
    assert "next month" in result.detail["hint"]


@pytest.mark.parametrize("status", [400, 413, 415])
def test_other_client_errors_are_permanent(emulator, make_adapter, status):
    emulator.fail_next(PUSH_PATH, status=status, body={"message": "nope"})

    [result] = make_adapter().send([line_message()])

    assert result.permanent and result.error_code == f"line:{status}"


# --- retry keys -------------------------------------------------------------------------------


def test_a_resend_with_the_same_retry_key_is_accepted_once(emulator, make_adapter):
    adapter = make_adapter()
    key = {"retry_key": str(uuid.uuid4())}
    [first] = adapter.send([line_message(message_id=7, metadata=key)])

    [again] = adapter.send([line_message(message_id=7, metadata=key)])

    assert first.accepted and again.accepted
    assert again.detail["duplicate"] is True and again.detail["http_status"] == 409
    assert again.provider_message_id == first.provider_message_id
    assert again.detail["accepted_request_id"] == first.provider_message_id
    keys = [r.header("x-line-retry-key") for r in pushes(emulator)]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert len(line_emulator.state(emulator).pushes) == 1


def test_the_stored_retry_key_decides_the_retry_key(emulator, make_adapter):
    adapter = make_adapter(concurrency=1)  # one after the other: the first one wins
    a, b = str(uuid.uuid4()), str(uuid.uuid4())

    results = adapter.send(
        [
            line_message(message_id=8, metadata={"retry_key": a}),
            line_message(message_id=8, metadata={"retry_key": a}),
            line_message(message_id=8, metadata={"retry_key": b}),
        ]
    )

    assert [r.accepted for r in results] == [True, True, True]
    assert [r.detail.get("duplicate", False) for r in results] == [False, True, False]
    keys = [r.header("x-line-retry-key") for r in pushes(emulator)]
    assert keys == [a, a, b]
    assert len(line_emulator.state(emulator).pushes) == 2


def test_without_a_stored_key_each_push_gets_a_fresh_random_one(emulator, make_adapter):
    """The same message id from two installations is two messages, never a repeat."""
    [production] = make_adapter().send([line_message(message_id=9)])
    [staging] = make_adapter().send([line_message(message_id=9, to=OTHER_USER)])

    assert production.accepted and staging.accepted and not staging.detail.get("duplicate")
    assert production.detail["retry_key"] != staging.detail["retry_key"]
    assert [p.to for p in line_emulator.state(emulator).pushes] == [USER, OTHER_USER]


def test_a_retry_after_a_failed_push_goes_through(emulator, make_adapter):
    """A key is only spent on an accepted push: after a 500 the same key still sends."""
    emulator.fail_next(PUSH_PATH, status=500, body=line_emulator.INTERNAL_ERROR)
    adapter = make_adapter()
    key = {"retry_key": str(uuid.uuid4())}
    [failed] = adapter.send([line_message(message_id=10, metadata=key)])

    [retried] = adapter.send([line_message(message_id=10, metadata=key)])

    assert not failed.accepted and retried.accepted and not retried.detail.get("duplicate")
    assert failed.detail["retry_key"] == retried.detail["retry_key"]


# --- the network ------------------------------------------------------------------------------


def test_a_timeout_is_unknown_and_a_resend_is_deduplicated(emulator, make_adapter):
    emulator.fail_next(PUSH_PATH, timeout=True, delay=0.8)
    adapter = make_adapter(timeout=0.3)
    key = {"retry_key": str(uuid.uuid4())}

    started = time.monotonic()
    [result] = adapter.send([line_message(message_id=11, metadata=key)])

    assert time.monotonic() - started < 0.75, "the timeout did not apply"
    assert result.unknown and not result.accepted and not result.permanent
    assert result.error_code == "line:timeout"
    # ...and LINE took it after all.
    state = line_emulator.state(emulator)
    deadline = time.monotonic() + 2
    while not state.pushes and time.monotonic() < deadline:
        time.sleep(0.02)
    [push] = state.pushes

    [resent] = adapter.send([line_message(message_id=11, metadata=key)])

    assert resent.accepted and resent.detail["duplicate"] is True
    assert resent.provider_message_id == push.request_id
    assert resent.detail["retry_key"] == result.detail["retry_key"] == push.retry_key
    assert len(state.pushes) == 1


def test_a_refused_connection_is_transient_not_unknown(make_adapter):
    adapter = make_adapter(base_url=f"http://127.0.0.1:{closed_port()}", timeout=0.5)

    [result] = adapter.send([line_message()])

    assert not result.accepted and not result.permanent and not result.unknown
    assert result.error_code == "line:connect"


def test_a_connection_dropped_after_the_request_is_unknown(make_adapter):
    """A server that reads the whole request and hangs up without answering."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    arrived: list[bytes] = []

    def read_and_hang_up() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            arrived.append(data)

    thread = threading.Thread(target=read_and_hang_up, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        [result] = make_adapter(base_url=f"http://127.0.0.1:{port}").send([line_message()])
    finally:
        thread.join(2)
        listener.close()

    assert arrived and arrived[0].startswith(b"POST " + PUSH_PATH.encode())
    assert result.unknown and not result.accepted and not result.permanent
    assert result.error_code == "line:connection_lost"
    assert result.detail["retry_key"]


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("channel_access_token", ""),
        ("channel_access_token", None),
        ("channel_access_token", " token "),
        ("channel_secret", 123),
        ("timeout", 0),
        ("timeout", "10"),
        ("timeout", True),
        ("concurrency", 0),
        ("concurrency", 2.5),
        ("base_url", "api.line.me"),
        ("base_url", "ftp://api.line.me"),
        ("retry_key_namespace", 5),
        ("access_token", "x"),
    ],
)
def test_bad_options_are_improperly_configured(option, value):
    options: dict[str, Any] = {"channel_access_token": CHANNEL_ACCESS_TOKEN, option: value}

    with pytest.raises(ImproperlyConfigured, match=option):
        LineAdapter(alias="line", **options)


def test_defaults_and_settings_style_none_values():
    adapter = LineAdapter(
        alias="line",
        channel_access_token=CHANNEL_ACCESS_TOKEN,
        base_url=None,
        channel_secret=None,
        timeout=10,
    )

    assert adapter.base_url == "https://api.line.me"
    assert adapter.timeout == 10.0 and adapter.concurrency == 8
    assert adapter.channel_secret == ""


# --- the emulator's push validation -----------------------------------------------------------


def raw_push(emulator: ProviderEmulator, payload: Any, **headers: str) -> tuple[int, dict, Any]:
    import urllib.error
    import urllib.request

    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(
        emulator.url + PUSH_PATH,
        data=data,
        method="POST",
        headers={
            "Authorization": f"Bearer {CHANNEL_ACCESS_TOKEN}",
            "Content-Type": "application/json",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_the_emulator_checks_auth_first(emulator):
    status, _, body = raw_push(emulator, {}, Authorization="")
    assert (status, body) == (401, {"message": line_emulator.AUTH_HEADER_REQUIRED})

    status, _, body = raw_push(emulator, {}, Authorization="Bearer wrong")
    assert (status, body) == (401, {"message": line_emulator.AUTH_FAILED})


def test_the_emulator_lists_every_problem_in_details(emulator):
    payload = {
        "to": USER,
        "messages": [
            {"type": "text", "text": ""},
            {"type": "sticker2"},
            {"type": "flex", "altText": "x" * 401, "contents": {"type": "bubble"}},
        ],
    }

    status, headers, body = raw_push(emulator, payload)

    assert status == 400 and headers.get("x-line-request-id")
    assert body["message"] == "The request body has 4 error(s)"
    assert [d["property"] for d in body["details"]] == [
        "messages[0].text",
        "messages[1].type",
        "messages[2].altText",
        "messages[2].contents",
    ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"to": USER, "messages": []}, "The request body has 1 error(s)"),
        ({"to": USER, "messages": [{"type": "text", "text": "x"}] * 6}, "The request body has 1"),
        ({"messages": [{"type": "text", "text": "x"}]}, "The request body has 1 error(s)"),
        ({"to": "bob", "messages": []}, "The property, 'to', in the request body is invalid"),
        (b"{not json", "The request body could not be parsed as JSON (line: 1, column: 2)"),
    ],
)
def test_the_emulator_refuses_malformed_pushes(emulator, payload, message):
    status, _, body = raw_push(emulator, payload)

    assert status == 400 and body["message"].startswith(message)
    assert line_emulator.state(emulator).pushes == []


def test_the_emulator_counts_template_texts_in_grapheme_clusters(emulator):
    family = "👨\u200d👩\u200d👧\u200d👦"  # one grapheme cluster, 7 code points
    template = {
        "type": "buttons",
        "title": family * 40,
        "text": "x",
        "actions": [{"type": "message", "label": "🇯🇵" * 20, "text": "ok"}],
    }
    payload = {"to": USER, "messages": [{"type": "template", "altText": "a", "template": template}]}

    status, _, body = raw_push(emulator, payload)

    assert status == 200, body
    assert line_emulator.grapheme_length(family + "か\u3099" + "x") == 3


def test_the_emulator_checks_the_retry_key_format(emulator):
    status, _, body = raw_push(
        emulator,
        {"to": USER, "messages": [{"type": "text", "text": "x"}]},
        **{"X-Line-Retry-Key": "not-a-uuid"},
    )

    assert status == 400 and "X-Line-Retry-Key" in body["message"]


# --- the emulator's webhooks ------------------------------------------------------------------


class WebhookReceiver:
    """A tiny HTTP server that checks ``X-Line-Signature`` with the SDK's ``WebhookParser``."""

    def __init__(self, channel_secret: str) -> None:
        parser = WebhookParser(channel_secret)
        self.events: list[Any] = []
        self.destinations: list[str] = []
        self.raw: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.raw.append(body)
                try:
                    payload = parser.parse(
                        body.decode("utf-8"),
                        self.headers.get("X-Line-Signature", ""),
                        as_payload=True,
                    )
                except InvalidSignatureError:
                    status, answer = 403, b"bad signature"
                else:
                    receiver.events.extend(payload.events)
                    receiver.destinations.append(payload.destination)
                    status, answer = 200, b"{}"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/webhooks/line/"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_signed_webhooks_parse_with_the_sdk(emulator):
    with WebhookReceiver(CHANNEL_SECRET) as receiver:
        status, body = send_webhook(
            emulator,
            url=receiver.url,
            channel_secret=CHANNEL_SECRET,
            events=[
                message_event(USER, "停止"),
                follow_event(USER, unblocked=True),
                unfollow_event(USER),
            ],
        )

    assert (status, body) == (200, b"{}")
    assert receiver.destinations == [BOT_USER_ID]
    message, follow, unfollow = receiver.events
    assert isinstance(message, MessageEvent) and isinstance(message.message, TextMessageContent)
    assert message.message.text == "停止"
    assert message.message.quote_token and message.message.id.isdigit()
    assert message.reply_token and message.delivery_context.is_redelivery is False
    assert isinstance(message.source, UserSource) and message.source.user_id == USER
    assert isinstance(follow, FollowEvent) and follow.follow.is_unblocked is True
    assert isinstance(unfollow, UnfollowEvent) and unfollow.source.user_id == USER
    ids = [e.webhook_event_id for e in receiver.events]
    assert len(set(ids)) == 3 and all(len(i) == 26 for i in ids)
    assert abs(message.timestamp - time.time() * 1000) < 60_000
    # The raw body is what was signed: UTF-8, Japanese not escaped.
    assert "停止".encode() in receiver.raw[0]
    [(url, headers, raw, recorded_status)] = line_emulator.state(emulator).webhooks
    assert url == receiver.url and raw == receiver.raw[0] and recorded_status == 200
    assert headers["X-Line-Signature"] == line_emulator.sign(CHANNEL_SECRET, raw)


def test_a_webhook_signed_with_another_secret_is_refused(emulator):
    with WebhookReceiver(CHANNEL_SECRET) as receiver:
        status, _ = send_webhook(
            emulator,
            url=receiver.url,
            channel_secret="some-other-secret",
            events=[message_event(USER, "hello")],
        )
        forged, _ = send_webhook(
            emulator,
            url=receiver.url,
            channel_secret=CHANNEL_SECRET,
            events=[message_event(USER, "hello")],
            signature="AAAA",
        )

    assert status == forged == 403
    assert receiver.events == []


def test_redelivered_events_keep_their_id_and_flag(emulator):
    event = message_event(USER, "START", timestamp=1_700_000_000_000)
    redelivered = {**event, "deliveryContext": {"isRedelivery": True}}

    with WebhookReceiver(CHANNEL_SECRET) as receiver:
        send_webhook(emulator, url=receiver.url, channel_secret=CHANNEL_SECRET, events=[event])
        send_webhook(
            emulator, url=receiver.url, channel_secret=CHANNEL_SECRET, events=[redelivered]
        )

    first, second = receiver.events
    assert first.webhook_event_id == second.webhook_event_id
    assert (first.delivery_context.is_redelivery, second.delivery_context.is_redelivery) == (
        False,
        True,
    )
    assert first.timestamp == 1_700_000_000_000
    # A ULID's first 10 characters are its millisecond time.
    assert line_emulator.new_webhook_event_id(1_700_000_000_000)[:10] == first.webhook_event_id[:10]
