"""/api/docs/ works without the internet: swagger-ui comes from our own static files."""

from __future__ import annotations

import re

from django.test import Client

#: src= and href= values of the page, e.g. the scripts and stylesheets it loads.
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def test_the_api_docs_page_loads_only_local_assets_and_they_are_served():
    client = Client()

    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert not re.search(r"https?://", html), "the docs page refers to another site"
    assets = [a for a in ASSET.findall(html) if not a.startswith(("#", "data:"))]
    scripts = [a for a in assets if a.endswith(".js")]
    assert any("swagger-ui-bundle" in a for a in scripts)
    assert any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/"), asset
        response = client.get(asset)
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert body, asset
    # Without a Content-Security-Policy header the page's own inline start-up script
    # runs; if one is ever added to this page it must allow 'self' scripts.
    csp = page.headers.get("Content-Security-Policy", "")
    assert not csp or "script-src 'self'" in csp or "default-src 'self'" in csp
