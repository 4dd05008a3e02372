"""The emulator's HTTP server: routes per provider, a log of what arrived, injected faults.

Provider modules register their routes with ``ProviderEmulator.route``; a handler
gets a ``Received`` and returns ``(status, headers, body)`` where body is bytes,
str or a JSON-serializable object.

Faults are queued per path prefix and consumed by the next matching requests:

    emulator.fail_next("/v3/mail/send", status=503)          # one 503
    emulator.fail_next("/2010-04-01/", status=429, times=2)   # two 429s
    emulator.fail_next("/v3/mail/send", timeout=True)         # hold past the client's timeout
    emulator.fail_next("/2010-04-01/", status=400, body={...}) # a provider error body
    emulator.fail_next("/v2/bot/", status=429, headers={"Retry-After": "600"})
    emulator.fail_next(PATH, status=500, times=5, match=lambda r: b"+1415" in r.body)
                                                               # one recipient's requests only

Each request records the status it was answered with (``Received.status``; a timeout
fault's, when the provider handler took it after the delay), so a test can count
what the provider accepted apart from what it refused.

A timeout fault still records the request and, unless ``drop`` is set, lets the
provider handler accept it after the delay: the case of a provider that took the
message while the client gave up waiting.

The emulator's own waits (``wait_until``) poll with short sleeps instead of blocking
in a timed lock wait, so they keep their timeouts when the suite runs under
libfaketime at another hour.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Response = tuple[int, dict[str, str], Any]
Handler = Callable[["Received"], Response]

#: Seconds between two looks of a polling wait.
POLL_INTERVAL = 0.005
#: The longest request line or header line read, and the most header lines.
_MAX_LINE = 65536
_MAX_HEADERS = 100
_SERVER = "ProviderEmulator/1.0"
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _http_date() -> str:
    """The ``Date`` header's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    second, text = _date_cache
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date_cache = (now, text)
    return text


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """True once ``condition()`` holds, False if it still does not after ``timeout`` seconds.

    A timed lock wait (``Condition.wait(t)``, ``Event.wait(t)``, ``Thread.join(t)``)
    never times out under libfaketime, which CI uses to run the suite at other hours:
    CPython takes the deadline from the faked monotonic clock while the kernel waits
    on the real one. ``time.sleep`` and ``time.monotonic`` stay consistent there.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return condition()
        time.sleep(POLL_INTERVAL)
    return True


@dataclass
class Received:
    """One request as it arrived on the wire."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    #: Named groups of the route's pattern (e.g. the account SID).
    params: dict[str, str] = field(default_factory=dict)
    #: The HTTP status it was answered with (None until answered).
    status: int | None = None
    #: When it arrived (``time.time()``: the test's clock when time_machine moves it).
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Fault:
    prefix: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: bool = False
    #: With ``timeout``: seconds to hold the request before answering.
    delay: float = 5.0
    #: With ``timeout``: do not let the provider accept it after the delay.
    drop: bool = False
    #: Only requests for which this returns True take the fault (e.g. one recipient's).
    match: Callable[[Received], bool] | None = None


class ProviderEmulator:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self.received: list[Received] = []
        emulator = self

        class _Handler(BaseHTTPRequestHandler):
            """HTTP/1.1 with keep-alive, read and written with as few calls as it takes.

            The request line and headers are split by hand (no ``email`` parser) and
            each answer - status line, headers and body - is one write: one packet,
            one wake-up of the client, instead of the standard handler's two.
            """

            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format, *args):
                pass

            def handle_one_request(self) -> None:
                try:
                    self._handle_one()
                except TimeoutError:
                    self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout fault)

            def _handle_one(self) -> None:
                line = self.rfile.readline(_MAX_LINE + 1)
                if not line:
                    self.close_connection = True
                    return
                parts = line.split()
                if len(line) > _MAX_LINE or len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
                    self._write(400, {}, b"", close=True)
                    return
                method, target, version = (part.decode("latin-1") for part in parts)
                headers: dict[str, str] = {}
                while True:
                    raw = self.rfile.readline(_MAX_LINE + 1)
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    if len(raw) > _MAX_LINE or len(headers) >= _MAX_HEADERS:
                        self._write(431, {}, b"", close=True)
                        return
                    name, colon, value = raw.decode("latin-1").partition(":")
                    if not colon:
                        self._write(400, {}, b"", close=True)
                        return
                    headers[name.strip().lower()] = value.strip()
                connection = headers.get("connection", "").lower()
                self.close_connection = (
                    "close" in connection
                    if version == "HTTP/1.1"
                    else "keep-alive" not in connection
                )
                if headers.get("expect", "").lower() == "100-continue":
                    self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                try:
                    length = int(headers.get("content-length") or 0)
                except ValueError:
                    self._write(400, {}, b"", close=True)
                    return
                body = self.rfile.read(length) if length > 0 else b""
                path, _, query = target.partition("?")
                if "://" in path:  # an absolute URL, as a forwarding proxy receives it
                    split = urlsplit(target)
                    path, query = split.path, split.query
                request = Received(
                    method=method,
                    path=path,
                    query=parse_qs(query, keep_blank_values=True) if query else {},
                    headers=headers,
                    body=body,
                )
                status, answer_headers, payload = emulator._dispatch(request)
                if isinstance(payload, bytes):
                    data = payload
                elif isinstance(payload, str):
                    data = payload.encode()
                elif payload is None:
                    data = b""
                else:
                    data = json.dumps(payload).encode()
                    answer_headers = {"Content-Type": "application/json", **answer_headers}
                self._write(status, answer_headers, data)

            def _write(
                self, status: int, headers: dict[str, str], data: bytes, *, close: bool = False
            ) -> None:
                """The whole answer in one write; ``Connection: close`` ends the connection."""
                lines = [
                    f"HTTP/1.1 {status} {_reason(status)}",
                    f"Server: {_SERVER}",
                    f"Date: {_http_date()}",
                ]
                for name, value in headers.items():
                    lines.append(f"{name}: {value}")
                    if name.lower() == "connection" and value.lower() == "close":
                        close = True
                if close:
                    self.close_connection = True
                    if not any(name.lower() == "connection" for name in headers):
                        lines.append("Connection: close")
                lines.append(f"Content-Length: {len(data)}")
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                self.wfile.write(head + data)

        class _Server(ThreadingHTTPServer):
            # SendGrid's client opens a connection per request: with the default
            # backlog of 5, a burst of concurrent sends would be reset by the kernel.
            request_queue_size = 256

        self._server = _Server((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ProviderEmulator:
        # A short poll: stop() waits for the serving loop to notice, at most this long.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ProviderEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- routes, faults, log -------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve ``method`` requests whose path fully matches the regex ``pattern``."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def fail_next(self, prefix: str, *, times: int = 1, **fault: Any) -> None:
        with self._lock:
            self._faults.extend(Fault(prefix, **fault) for _ in range(times))

    def requests_to(self, prefix: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith(prefix)]

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.received.clear()

    def _take_fault(self, request: Received) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if request.path.startswith(fault.prefix) and (
                    fault.match is None or fault.match(request)
                ):
                    return self._faults.pop(i)
        return None

    def _dispatch(self, request: Received) -> Response:
        with self._lock:
            self.received.append(request)
        response = self._answer(request)
        request.status = response[0]
        return response

    def _answer(self, request: Received) -> Response:
        fault = self._take_fault(request)
        if fault is not None and not fault.timeout:
            return fault.status, fault.headers, fault.body
        if fault is not None:
            time.sleep(fault.delay)
            if fault.drop:
                return 504, {}, None
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                return handler(request)
        return 404, {}, {"message": f"no route for {request.method} {request.path}"}
