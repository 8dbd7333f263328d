"""``/docs`` with no internet: Swagger UI's files come from the package, and a real
browser renders the API's reference without a request leaving the server or a
Content-Security-Policy violation."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.testing.server import ServerThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("docs")) as server:
        yield server


def test_docs_page_uses_only_local_assets(node: ServerThread) -> None:
    page = httpx.get(f"{node.url}/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "http" not in csp
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(url.startswith("/") for url in urls), urls
    for url in urls:
        asset = httpx.get(node.url + url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert "<script>" not in page.text  # no inline script: the CSP would block it


def test_docs_render_offline_in_chromium(node: ServerThread) -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (browser tests)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: services are required)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page: Any = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on(
                "console",
                lambda msg: problems.append(msg.text) if msg.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{node.url}/docs")
            page.locator(".opblock-summary-path", has_text="/api/v1/rooms").first.wait_for(
                timeout=20_000
            )
        finally:
            browser.close()
    outside = [url for url in requests if not url.startswith((node.url + "/", "data:", "blob:"))]
    assert not outside, outside
    assert f"{node.url}/openapi.json" in requests
    assert not problems, problems  # a CSP violation is a console error
