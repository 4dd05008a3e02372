"""The adapters read an answer's headers without the email parser and get what
``http.client`` would have given: the same headers, in order, and the same framing
of the body (its length, chunked or not, whether the connection stays open)."""

from __future__ import annotations

import http.client
import io

import pytest

from channels.adapters.http import Response, read_headers
from tests.channels import test_adapter_transports as transports
from tests.channels.test_adapter_transports import PROVIDERS

#: The emulator of all three providers, and the adapters closed after each test.
emulator = transports.emulator
adapters = transports.adapters

HEADER_BLOCKS = [
    b"Content-Type: application/json\r\nContent-Length: 12\r\n\r\n",
    b"X-Message-Id: abc\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
    b"Retry-After:3\r\nX-RateLimit-Reset:  1796531553 \r\n\r\n",
    b"X-Empty:\r\nX-Tab:\tvalue\r\n\n",
    b"X-Latin: caf\xe9\r\n\r\n",
    b"X-Folded: first\r\n second line\r\nX-After: yes\r\n\r\n",  # the email parser's case
    b"no colon on this line\r\nX-After: yes\r\n\r\n",
    b"Bad Name: spaces are not a header name\r\n\r\n",
    b"",
]


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_headers_are_read_as_http_client_reads_them(block):
    ours = read_headers(io.BytesIO(block))
    theirs = http.client.parse_headers(io.BytesIO(block))
    assert isinstance(ours, http.client.HTTPMessage)
    assert list(ours.items()) == list(theirs.items())
    for name in ("content-length", "set-cookie", "x-after", "retry-after"):
        assert ours.get_all(name) == theirs.get_all(name)


def test_a_header_block_too_long_is_refused_as_http_client_refuses_it():
    block = b"X-A: b\r\n" * 101 + b"\r\n"
    with pytest.raises(http.client.HTTPException):
        read_headers(io.BytesIO(block))
    with pytest.raises(http.client.LineTooLong):
        read_headers(io.BytesIO(b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n"))


ANSWERS = [
    b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nX-Message-Id: m1\r\n\r\n",
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the connection closes",
    b"HTTP/1.1 200 OK\r\n\r\nno length: until the connection closes",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\nbody",
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}",
]


class _Socket:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self._data)


@pytest.mark.parametrize("method", ["POST", "HEAD"])
@pytest.mark.parametrize("answer", ANSWERS)
def test_an_answer_is_framed_as_http_client_frames_it(answer, method):
    ours = Response(_Socket(answer), method=method)  # type: ignore[arg-type]
    theirs = http.client.HTTPResponse(_Socket(answer), method=method)  # type: ignore[arg-type]
    ours.begin()
    theirs.begin()
    for attribute in ("status", "reason", "version", "chunked", "length", "will_close"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert list(ours.headers.items()) == list(theirs.headers.items())
    assert ours.read() == theirs.read()


@pytest.mark.parametrize("answer", [b"", b"garbage\r\n", b"HTTP/2.0 200 OK\r\n\r\n"])
def test_a_broken_answer_raises_what_http_client_raises(answer):
    with pytest.raises(http.client.HTTPException) as theirs:
        http.client.HTTPResponse(_Socket(answer), method="POST").begin()  # type: ignore[arg-type]
    with pytest.raises(type(theirs.value)):
        Response(_Socket(answer), method="POST").begin()  # type: ignore[arg-type]


@pytest.mark.parametrize("name", PROVIDERS)
def test_every_adapter_reads_its_answers_this_way(emulator, adapters, monkeypatch, name):
    began: list[Response] = []
    begin = Response.begin

    def counted(self: Response) -> None:
        began.append(self)
        begin(self)

    monkeypatch.setattr(Response, "begin", counted)
    provider = PROVIDERS[name]
    adapter = provider.make(emulator.url)
    adapters.append(adapter)
    results = adapter.send([provider.message(1), provider.message(2)])
    assert all(result.accepted for result in results), results
    assert len(began) == 2
