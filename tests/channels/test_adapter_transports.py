"""The HTTP under the SendGrid, Twilio and LINE adapters: pooled keep-alive connections.

Each adapter keeps one urllib3 connection pool, shared by its sending threads:
connections outlive a message and a batch, a forked child opens its own, an idle
connection the provider closed is replaced without a word, nothing is ever
resent behind the adapter's back, and (SendGrid, Twilio) a proxy named by the
environment is read once, when the adapter is made. Everything runs against the
provider emulator over real sockets.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from channels.adapters.base import ChannelAdapter, OutboundMessage
from channels.adapters.line import LineAdapter
from channels.adapters.sendgrid import SendGridAdapter
from channels.adapters.twilio_sms import PooledHttpClient, TwilioSmsAdapter
from channels.adapters.twilio_whatsapp import TwilioWhatsAppAdapter
from tests.emulator import ProviderEmulator
from tests.emulator import line as line_emulator
from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator import twilio as twilio_emulator
from tests.emulator.line import CHANNEL_ACCESS_TOKEN, PUSH_PATH
from tests.emulator.twilio import ACCOUNT_SID, AUTH_TOKEN

MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass(frozen=True)
class Provider:
    name: str
    path: str
    install: Callable[[ProviderEmulator], None]
    make: Callable[..., ChannelAdapter]
    message: Callable[[int], OutboundMessage]


def _sendgrid(base_url: str, **options: Any) -> SendGridAdapter:
    return SendGridAdapter(
        alias="email",
        api_key="SG.test-key",
        from_email="Stride Running <hello@example.com>",
        base_url=base_url,
        # One request per message: these tests count connections and requests.
        **{"timeout": 2, "max_personalizations": 1, **options},
    )


def _twilio(base_url: str, **options: Any) -> TwilioSmsAdapter:
    return TwilioSmsAdapter(
        alias="sms",
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number="+15005550006",
        base_url=base_url,
        **{"timeout": 2, **options},
    )


def _whatsapp(base_url: str, **options: Any) -> TwilioWhatsAppAdapter:
    return TwilioWhatsAppAdapter(
        alias="whatsapp",
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number="+14155238886",
        base_url=base_url,
        **{"timeout": 2, **options},
    )


def _line(base_url: str, **options: Any) -> LineAdapter:
    return LineAdapter(
        alias="line",
        channel_access_token=CHANNEL_ACCESS_TOKEN,
        base_url=base_url,
        **{"timeout": 2, **options},
    )


PROVIDERS = {
    "sendgrid": Provider(
        "sendgrid",
        sendgrid_emulator.PATH,
        sendgrid_emulator.install,
        _sendgrid,
        lambda n: OutboundMessage(
            message_id=n,
            channel="email",
            to=f"runner{n}@example.org",
            subject="Your spring plan",
            body="Week 1: three easy runs.",
        ),
    ),
    "twilio": Provider(
        "twilio",
        MESSAGES,
        twilio_emulator.install,
        _twilio,
        lambda n: OutboundMessage(
            message_id=n, channel="sms", to=f"+1415555{n:04d}", body="Your order shipped."
        ),
    ),
    "whatsapp": Provider(
        "whatsapp",
        MESSAGES,
        twilio_emulator.install,
        _whatsapp,
        lambda n: OutboundMessage(
            message_id=n,
            channel="whatsapp",
            to=f"+1415555{n:04d}",
            body="Your order shipped.",
            metadata={"whatsapp": {"session_open": True}},
        ),
    ),
    "line": Provider(
        "line",
        PUSH_PATH,
        line_emulator.install,
        _line,
        lambda n: OutboundMessage(
            message_id=n, channel="line", to=f"U{n:032x}", body="ご注文の商品を発送しました。"
        ),
    ),
}
#: The adapters that take a proxy from the environment.
PROXIED = ("sendgrid", "twilio")


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    server = ProviderEmulator()
    for install in {p.install for p in PROVIDERS.values()}:
        install(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def adapters() -> Iterator[list[ChannelAdapter]]:
    made: list[ChannelAdapter] = []
    yield made
    for adapter in made:
        adapter.close()  # type: ignore[attr-defined]


def connections(emulator: ProviderEmulator) -> list[Any]:
    """The addresses of the TCP connections the emulator accepts from now on."""
    accepted: list[Any] = []
    server = emulator._server
    original = server.get_request

    def get_request() -> tuple[socket.socket, Any]:
        conn, address = original()
        accepted.append(address)
        return conn, address

    server.get_request = get_request  # type: ignore[method-assign]
    return accepted


def one_request_per_connection(emulator: ProviderEmulator) -> None:
    """From now on the emulator hangs up after each answer, without saying so in
    ``Connection: close``: as a provider closing an idle keep-alive connection does."""
    server = emulator._server
    handler = server.RequestHandlerClass

    class OneRequest(handler):  # type: ignore[misc, valid-type]
        def handle(self) -> None:
            self.handle_one_request()

    server.RequestHandlerClass = OneRequest


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send(adapter: ChannelAdapter, *messages: OutboundMessage) -> list[Any]:
    results = adapter.send(list(messages))
    assert all(r.accepted for r in results), [(r.error_code, r.error) for r in results]
    return results


# --- keep-alive -------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
def test_one_connection_serves_message_after_message(emulator, adapters, name):
    provider = PROVIDERS[name]
    adapter = provider.make(emulator.url, concurrency=1)
    adapters.append(adapter)
    accepted = connections(emulator)

    for n in range(1, 5):
        send(adapter, provider.message(n))

    assert len(emulator.requests_to(provider.path)) == 4
    assert len(accepted) == 1


@pytest.mark.parametrize("name", PROVIDERS)
def test_batches_share_at_most_concurrency_connections(emulator, adapters, name):
    provider = PROVIDERS[name]
    adapter = provider.make(emulator.url, concurrency=3)
    adapters.append(adapter)
    accepted = connections(emulator)

    for first in (1, 101, 201):
        results = send(adapter, *(provider.message(first + i) for i in range(8)))
        assert [r.message_id for r in results] == list(range(first, first + 8))

    assert len(emulator.requests_to(provider.path)) == 24
    assert 1 <= len(accepted) <= 3


@pytest.mark.parametrize("name", PROVIDERS)
def test_an_idle_connection_the_provider_closed_is_replaced(emulator, adapters, name):
    provider = PROVIDERS[name]
    adapter = provider.make(emulator.url, concurrency=1)
    adapters.append(adapter)
    one_request_per_connection(emulator)
    accepted = connections(emulator)

    for n in range(1, 4):
        send(adapter, provider.message(n))
        time.sleep(0.05)  # idle: the hang-up reaches the client before the next send

    assert len(emulator.requests_to(provider.path)) == 3
    assert len(accepted) == 3


@pytest.mark.parametrize("name", PROVIDERS)
def test_close_drops_the_connections_and_the_adapter_stays_usable(emulator, adapters, name):
    provider = PROVIDERS[name]
    adapter = provider.make(emulator.url, concurrency=1)
    adapters.append(adapter)
    accepted = connections(emulator)

    send(adapter, provider.message(1))
    adapter.close()  # type: ignore[attr-defined]
    send(adapter, provider.message(2))
    send(adapter, provider.message(3))

    assert len(accepted) == 2


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_forked_child_opens_connections_of_its_own(emulator, adapters, name):
    provider = PROVIDERS[name]
    adapter = provider.make(emulator.url, concurrency=1)
    adapters.append(adapter)
    send(adapter, provider.message(1))
    accepted = connections(emulator)

    pid = os.fork()
    if pid == 0:  # the child: report by exit status, never return into pytest
        code = 1
        try:
            [result] = adapter.send([provider.message(2)])
            code = 0 if result.accepted else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    send(adapter, provider.message(3))  # the parent's connection survived the child
    assert len(accepted) == 1
    assert len(emulator.requests_to(provider.path)) == 3


# --- nothing is resent ------------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_request_whose_connection_broke_is_sent_once(adapters, name):
    """A server that reads each request and hangs up: the outcome is unknown, and the
    request must not be sent again on a new connection."""
    provider = PROVIDERS[name]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    requests: list[bytes] = []
    stop = threading.Event()

    def read_and_hang_up() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                requests.append(data)

    thread = threading.Thread(target=read_and_hang_up, daemon=True)
    thread.start()
    try:
        adapter = provider.make(f"http://127.0.0.1:{listener.getsockname()[1]}")
        adapters.append(adapter)
        [result] = adapter.send([provider.message(1)])
    finally:
        stop.set()
        thread.join(2)
        listener.close()

    assert result.unknown and not result.accepted and not result.permanent
    assert len(requests) == 1


# --- proxies from the environment -------------------------------------------------------


@pytest.mark.parametrize("name", PROXIED)
def test_a_proxy_from_the_environment_carries_the_requests(emulator, adapters, monkeypatch, name):
    """The emulator plays the proxy: a forwarding HTTP proxy receives the absolute URL,
    whose path the emulator serves as usual. The provider's own address is closed."""
    provider = PROVIDERS[name]
    host, port = emulator._server.server_address[:2]
    monkeypatch.setenv("HTTP_PROXY", f"http://relay:s%40cret@{host}:{port}")
    adapter = provider.make(f"http://127.0.0.1:{closed_port()}")
    adapters.append(adapter)
    # Read once, when the adapter was made: later changes do not matter.
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    send(adapter, provider.message(1), provider.message(2))

    arrived = emulator.requests_to(provider.path)
    assert len(arrived) == 2
    credentials = base64.b64encode(b"relay:s@cret").decode()
    assert {r.header("proxy-authorization") for r in arrived} == {f"Basic {credentials}"}


@pytest.mark.parametrize("name", PROXIED)
def test_no_proxy_sends_directly(emulator, adapters, monkeypatch, name):
    provider = PROVIDERS[name]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    adapter = provider.make(emulator.url)
    adapters.append(adapter)

    send(adapter, provider.message(1))

    [request] = emulator.requests_to(provider.path)
    assert request.header("proxy-authorization") == ""


@pytest.mark.parametrize("name", PROXIED)
def test_an_unreachable_proxy_means_never_sent(adapters, monkeypatch, name):
    provider = PROVIDERS[name]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    adapter = provider.make("http://provider.example", timeout=0.5)
    adapters.append(adapter)

    [result] = adapter.send([provider.message(1)])

    assert not result.accepted and not result.unknown and not result.permanent
    assert result.error_code in ("sendgrid:unreachable", "twilio:connect")


# --- the Twilio SDK's HTTP client ---------------------------------------------------------


@pytest.fixture
def client(emulator: ProviderEmulator) -> Iterator[PooledHttpClient]:
    http = PooledHttpClient(emulator.url + "/relay/", timeout=2, maxsize=2)
    yield http
    http.close()


def test_the_twilio_client_form_encodes_as_the_sdks_own_client_does(emulator, client):
    response = client.request(
        "post",
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Things.json",
        params={"PageSize": 20, "Status": ["queued", "sent"]},
        data={"To": "+14155550100", "Body": "Hi & bye = 100%", "MediaUrl": ["a", "b"]},
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Extra": "1"},
        auth=("AC1", "tök"),
    )

    [request] = emulator.requests_to("/relay/")
    assert request.method == "POST"
    assert request.path == "/relay/2010-04-01/Accounts/AC1/Things.json"
    assert request.query == {"PageSize": ["20"], "Status": ["queued", "sent"]}
    assert request.form() == {
        "To": ["+14155550100"],
        "Body": ["Hi & bye = 100%"],
        "MediaUrl": ["a", "b"],
    }
    assert request.header("x-extra") == "1"
    assert request.header("authorization") == "Basic " + base64.b64encode(
        "AC1:tök".encode("latin1")
    ).decode("ascii")
    # The SDK's Response: status, text and headers of what came back (here, no route).
    assert response.status_code == 404
    assert "no route" in response.text
    assert response.headers["content-type"] == "application/json"


def test_the_twilio_client_sends_json_for_a_json_content_type(emulator, client):
    client.request(
        "POST",
        "https://preview.twilio.com/v1/Things",
        data={"name": "x", "tags": ["a"]},
        headers={"Content-Type": "application/json"},
    )

    [request] = emulator.requests_to("/relay/")
    assert request.path == "/relay/v1/Things"
    assert request.json() == {"name": "x", "tags": ["a"]}
    assert "authorization" not in request.headers


def test_the_twilio_client_refuses_a_non_positive_timeout(client):
    with pytest.raises(ValueError):
        client.request("GET", "https://api.twilio.com/x", timeout=0)


def test_the_twilio_client_is_shared_by_threads(emulator, client):
    errors: list[BaseException] = []

    def fetch(n: int) -> None:
        try:
            response = client.request("GET", f"https://api.twilio.com/n/{n}")
            assert response.status_code == 404
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    assert sorted(r.path for r in emulator.requests_to("/relay/n/")) == sorted(
        f"/relay/n/{n}" for n in range(8)
    )


# --- LINE's pooled SDK clients --------------------------------------------------------------


def test_a_line_client_reused_after_a_push_does_not_report_its_old_answer(emulator, adapters):
    """A failure before the next request reaches LINE must not read as the previous
    push's 200 left on the reused SDK client."""
    provider = PROVIDERS["line"]
    adapter = provider.make(emulator.url, concurrency=1)
    adapters.append(adapter)
    send(adapter, provider.message(1))

    rest = adapter._rest
    assert rest is not None
    pool_manager = rest.pool_manager

    class Broken:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("broken before sending")

        def clear(self) -> None:
            pool_manager.clear()

    rest.pool_manager = Broken()
    [result] = adapter.send([provider.message(2)])

    assert not result.accepted and result.unknown
    assert result.error_code == "line:unexpected"
    assert len(emulator.requests_to(PUSH_PATH)) == 1
