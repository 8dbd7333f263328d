"""The web client's JavaScript unit tests (``node --test``), run from pytest.

They check ``src/parley/web/js/markdown.js``, the renderer every message body goes
through: only allow-listed, well-nested tags, safe link schemes, and no
catastrophic backtracking on hostile 16 KiB bodies; the delivery logic of
``client.js`` and ``store.js``; and the timeline's system lines. Node.js is not a dependency of
Parley (the client has no build step), so without ``node`` this test skips with a
message, under ``CI=true`` too: the browser test covers the renderer in Chromium.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).parent / "js"


def test_web_client_js_unit_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: skipping the web client's JavaScript unit tests")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    major = int(version.stdout.strip().lstrip("v").split(".")[0] or 0)
    if major < 20:
        pytest.skip(f"node {version.stdout.strip()} is too old for these tests (needs 20+)")
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, "no JavaScript tests found"
    result = subprocess.run(
        [node, "--test", *files], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
