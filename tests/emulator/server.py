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

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Response = tuple[int, dict[str, str], Any]
Handler = Callable[["Received"], Response]

#: Seconds between two looks of a polling wait.
POLL_INTERVAL = 0.005


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
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's
            # algorithm holds the body until the client's delayed ACK (~40 ms a request).
            disable_nagle_algorithm = True

            def log_message(self, format, *args):
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                request = Received(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                status, headers, payload = emulator._dispatch(request)
                if isinstance(payload, bytes):
                    data = payload
                elif isinstance(payload, str):
                    data = payload.encode()
                elif payload is None:
                    data = b""
                else:
                    data = json.dumps(payload).encode()
                    headers = {"Content-Type": "application/json", **headers}
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout fault)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

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
