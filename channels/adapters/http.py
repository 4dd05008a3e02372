"""Shared HTTP plumbing for adapters: urllib3 pools that keep connections and retry nothing.

Retrying is the outbox's job (with backoff, and never after the provider may have
accepted a message), so urllib3 retries nothing and follows no redirects. Proxy
settings are read from the environment once, when an adapter is built.
"""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
import urllib3

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


def pool_manager(proxy: str, maxsize: int) -> urllib3.PoolManager:
    """A thread-safe, keep-alive pool manager (through ``proxy`` if given).

    Certificates are checked against ``certifi``'s bundle, as ``requests`` does;
    urllib3's connections set ``TCP_NODELAY``.
    """
    options: dict[str, Any] = {
        "maxsize": maxsize,
        "retries": NO_RETRIES,
        "ca_certs": certifi.where(),
    }
    if not proxy:
        return urllib3.PoolManager(**options)
    parts = urlsplit(proxy)
    proxy_headers = None
    if parts.username:
        proxy_headers = urllib3.make_headers(
            proxy_basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        )
    return urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, **options)
