"""A user's mistakes get one line on stderr that names the problem and the fix,
and a non-zero exit: real ``parley`` processes, as a user runs them."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

PARLEY = [sys.executable, "-m", "parley.cli.main"]
USERS_DO_NOT_SET = ("PARLEY_", "PYTHONASYNCIODEBUG")
"""Left out of the command's environment: the test's settings, and CI's asyncio debug
mode, whose slow-callback warnings would be lines of stderr a user never sees."""


def run(tmp_path: Path, *args: str, stdin: str = "") -> tuple[int, str]:
    """Exit status and stderr, which must be a single line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(USERS_DO_NOT_SET)}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "config"), "PARLEY_DATA_DIR": str(tmp_path / "d")}
    done = subprocess.run(
        [*PARLEY, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("parley: "), done.stderr
    return done.returncode, done.stderr


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def refused_url() -> str:
    """A URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_server_not_running_names_the_url(tmp_path: Path) -> None:
    url = refused_url()
    code, err = run(
        tmp_path, "login", "--server", url, "--username", "a", "--password-stdin", stdin="pw\n"
    )
    assert code == 1
    assert f"cannot connect to {url}" in err and "is Parley running there?" in err


def test_api_path_as_server_url_asks_for_the_base_url(tmp_path: Path) -> None:
    url = refused_url()
    code, err = run(tmp_path, "rooms", "--server", f"{url}/api/v1/")
    assert code == 1 and f"base URL, {url}," in err


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://example.org"])
def test_not_a_server_url(tmp_path: Path, url: str) -> None:
    code, err = run(tmp_path, "rooms", "--server", url)
    assert code == 1 and "is not a server URL" in err and "--server" in err


def test_port_in_use_is_found_before_anything_starts(tmp_path: Path) -> None:
    with listening_socket() as taken:
        port = str(taken.getsockname()[1])
        code, err = run(tmp_path, "serve", "--port", port)
    assert code == 1
    assert f"port {port} is already in use" in err and "--port" in err
    assert not (tmp_path / "d" / "parley.db").exists()  # no migration ran


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--port", "eighty"), "--port (PARLEY_PORT) 'eighty': input should be a valid integer"),
        (("--port", "70000"), "--port (PARLEY_PORT) '70000': input should be less than"),
        (("--rate-limits", "maybe"), "--rate-limits (PARLEY_RATE_LIMITS) 'maybe'"),
    ],
)
def test_bad_setting_names_the_flag(tmp_path: Path, args: tuple[str, str], expected: str) -> None:
    code, err = run(tmp_path, "serve", *args)
    assert code == 2 and expected in err and "Traceback" not in err


def test_bad_secret_key_is_not_echoed(tmp_path: Path) -> None:
    code, err = run(tmp_path, "serve", "--secret-key", "not-hex-at-all")
    assert code == 2 and "must be hex" in err and "not-hex-at-all" not in err


@pytest.mark.parametrize("command", [("serve",), ("admin", "migrate")])
def test_uncreatable_data_dir(tmp_path: Path, command: tuple[str, ...]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run(tmp_path, *command, "--data-dir", str(blocker / "data"))
    assert code == 2
    assert f"--data-dir (PARLEY_DATA_DIR) '{blocker / 'data'}': cannot create it" in err


def test_some_other_server_is_named(tmp_path: Path) -> None:
    """A URL where another kind of server answers (here Python's file server)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as other:
        thread = threading.Thread(target=other.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{other.server_address[1]}"
        try:
            code, err = run(
                tmp_path, "login", "--server", url, "--username", "a", "--password-stdin",
                stdin="pw\n",
            )  # fmt: skip
        finally:
            other.shutdown()
            thread.join()
    assert code == 1 and f"{url} answered 501" in err and "Parley server's base URL" in err
