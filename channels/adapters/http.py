"""Shared HTTP plumbing for adapters: urllib3 pools that keep connections and retry nothing.

Retrying is the outbox's job (with backoff, and never after the provider may have
accepted a message), so urllib3 retries nothing and follows no redirects. Proxy
settings are read from the environment once, when an adapter is built.

An answer's header block is read by ``Response``: ``http.client`` hands it to the
``email`` package's parser, which was the largest single cost of a send after the
request itself. Well-formed header lines (``Name: value``) are split directly into
the same ``HTTPMessage``; anything else (folded lines, a line without a name) still
goes through the ``email`` parser. Everything else about the answer - its status
line, framing, keep-alive - is ``http.client``'s own.
"""

from __future__ import annotations

import email.parser
import http.client
import re
import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: No retries inside urllib3, and no redirects followed.
NO_RETRIES = urllib3.Retry(total=False, redirect=False)


def environment_proxy(url: str) -> str:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY`` and the like, with
    ``NO_PROXY``), as urllib and ``requests`` pick it; ``""`` for none."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return ""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all") or ""
    if proxy and "://" not in proxy:
        proxy = "http://" + proxy
    return proxy


#: The limits ``http.client`` puts on a header block.
_MAX_LINE = 65536
_MAX_HEADERS = 100
#: A header name as the ``email`` parser takes it: printable ASCII, no colon or space.
_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")


def read_headers(fp: Any) -> http.client.HTTPMessage:
    """The header block at ``fp`` as ``http.client.parse_headers`` returns it."""
    lines: list[bytes] = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    message = http.client.HTTPMessage()
    for line in lines[:-1]:
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon or not _NAME.fullmatch(name):
            # Folded, nameless or odd: the email parser, as http.client does it.
            block = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(block)
        # The value as the email parser keeps it: leading blanks and the line end cut.
        message[name] = value.lstrip(" \t").rstrip("\r\n")
    return message


class Response(http.client.HTTPResponse):
    """``http.client``'s response, its header block read by ``read_headers``.

    ``begin`` reads the status line with ``http.client`` (whose errors - a connection
    closed before an answer, a garbled status line - are raised as they were) and
    frames the body as HTTP/1.1 says: chunked, else ``Content-Length``, else until the
    connection closes; none for 1xx, 204, 304 and HEAD.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        version, status, reason = self._read_status()  # type: ignore[attr-defined]
        while status == http.client.CONTINUE:  # an interim answer: its headers are dropped
            read_headers(self.fp)
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = read_headers(self.fp)

        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        self.length = None
        declared = self.headers.get("content-length")
        if declared and not self.chunked:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            self.length = length if length >= 0 else None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":  # type: ignore[attr-defined]
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # the body ends when the connection does


class _HTTPConnection(HTTPConnection):
    response_class = Response


class _HTTPSConnection(HTTPSConnection):
    response_class = Response


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def fast_headers(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """``manager``, its pools from now on reading answers' headers with ``read_headers``."""
    manager.pool_classes_by_scheme = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}
    return manager


def pool_manager(proxy: str, maxsize: int) -> urllib3.PoolManager:
    """A thread-safe, keep-alive pool manager (through ``proxy`` if given).

    Certificates are checked against ``certifi``'s bundle, as ``requests`` does;
    urllib3's connections set ``TCP_NODELAY``; answers' headers are read by ``Response``.
    """
    options: dict[str, Any] = {
        "maxsize": maxsize,
        "retries": NO_RETRIES,
        "ca_certs": certifi.where(),
    }
    if not proxy:
        return fast_headers(urllib3.PoolManager(**options))
    parts = urlsplit(proxy)
    proxy_headers = None
    if parts.username:
        proxy_headers = urllib3.make_headers(
            proxy_basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        )
    return fast_headers(urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **options))
