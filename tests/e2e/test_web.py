"""The web client in a real browser (Debian's Chromium) against a real ``parley serve``.

Each test starts the server as a subprocess on a free port with its own
``PARLEY_DATA_DIR`` under ``tmp_path``, and drives one or two browser contexts
(one per person). What is checked is what a user sees: two people chatting in a
room and a direct message, history paging, edits and deletes on the other side,
hostile message bodies staying inert, a server restart in mid-conversation
that the pages ride out without losing or doubling a message, membership and
room changes as system lines, admin actions, and no serious axe-core finding
(``vendor/axe-core``) in light or dark.

Without ``/usr/bin/chromium`` the tests skip with a message, except under
``CI=true``, where they fail. Install it with ``apt-get install -y chromium``
(``make browser``); never ``playwright install``. Screenshots are written to
``tests/e2e/output/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [
    pytest.mark.service("chromium"),
    pytest.mark.xdist_group("web-e2e"),
    pytest.mark.timeout(300),
]

CHROMIUM = Path("/usr/bin/chromium")
OUTPUT = Path(__file__).parent / "output"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery"
# Argon2 at its cheapest: these tests are about the client, not password hashing.
FAST = {"PARLEY_ARGON2_MEMORY_KIB": "1024", "PARLEY_ARGON2_TIME_COST": "1"}
TIMEOUT_MS = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``parley serve`` process that can be stopped and started again on the
    same port and data directory, plus a few REST helpers for setting the scene."""

    def __init__(self, data_dir: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = log
        base = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        self.env = base | FAST | {"PARLEY_DATA_DIR": str(data_dir), "PARLEY_RATE_LIMITS": "off"}
        self.env |= env
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"{self.url}/api/v1", timeout=10)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parley.cli.main", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"parley serve exited: {self.log.read_text()[-3000:]}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError("parley serve did not become ready")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self.http.close()

    # REST helpers

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.request(method, path, headers=headers, **kw)
        assert response.status_code < 400, f"{method} {path}: {response.text}"
        return response.json()

    def register(self, username: str, display_name: str) -> tuple[dict[str, Any], str]:
        """Create an account; returns (user, access token)."""
        user = self.call(
            "POST",
            "/auth/register",
            json={"username": username, "password": PASSWORD, "display_name": display_name},
        )["user"]
        return user, self.login(username)["access_token"]

    def login(self, username: str) -> dict[str, Any]:
        data = {"grant_type": "password", "username": username, "password": PASSWORD}
        return dict(self.call("POST", "/auth/token", data=data))

    def post(self, token: str, room_id: str, body: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/rooms/{room_id}/messages", token, json={"body": body}))

    def messages(self, token: str, room_id: str) -> list[dict[str, Any]]:
        """Every message of a room, oldest first."""
        found: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            params: dict[str, int] = {"limit": 200}
            if before is not None:
                params["before_seq"] = before
            page = self.call("GET", f"/rooms/{room_id}/messages", token, params=params)
            found = page["messages"] + found
            if not page["has_more"] or not page["messages"]:
                return found
            before = page["messages"][0]["seq"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium (browser tests)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: services are required)")
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    # Generous: these tests share the machine with the rest of the suite.
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**env: str) -> Server:
        server = Server(
            tmp_path / f"data{len(servers)}", tmp_path / f"server{len(servers)}.log", **env
        )
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


class Person:
    """One browser context: a person at their own computer (or phone)."""

    def __init__(self, browser: Any, server: Server, **context: Any) -> None:
        from playwright.sync_api import expect

        self.expect = expect
        self.server = server
        context.setdefault("viewport", {"width": 1280, "height": 800})
        self.context = browser.new_context(**context)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", self._dialog)
        # Any CSP violation (an inline style or script in our own code, or a
        # message body that got through) is recorded for the final check.
        self.page.add_init_script(
            "window.__csp = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self) -> None:
        self.page.goto(f"{self.server.url}/")

    def sign_in(self, username: str) -> None:
        self.goto()
        page = self.page
        page.fill("#auth-username", username)
        page.fill("#auth-password", PASSWORD)
        page.click("#auth-submit")
        self.wait_live()

    def sign_up(self, username: str, display_name: str) -> None:
        self.goto()
        page = self.page
        page.click("#tab-register")
        page.fill("#auth-username", username)
        page.fill("#auth-display", display_name)
        page.fill("#auth-password", PASSWORD)
        page.click("#auth-submit")
        self.wait_live()

    def wait_live(self) -> None:
        self.expect(self.page.locator("#shell")).to_be_visible()
        self.expect(self.page.locator("#conn-status")).to_have_class(re.compile(r"\blive\b"))

    def message(self, text: str) -> Any:
        return self.page.locator("#messages li.msg", has_text=text)

    def send(self, text: str) -> None:
        self.page.fill("#composer-input", text)
        self.page.press("#composer-input", "Enter")

    def open_room(self, name: str) -> None:
        self.page.locator("#sidebar a.room-link", has_text=name).click()
        self.expect(self.page.locator("#room-title")).to_contain_text(name)

    def bodies(self) -> list[str]:
        return list(
            self.page.eval_on_selector_all(
                "#messages li.msg .msg-body", "els => els.map(e => e.innerText.trim())"
            )
        )

    def seqs(self) -> list[int]:
        return [
            int(s)
            for s in self.page.eval_on_selector_all(
                "#messages li.msg[data-seq]", "els => els.map(e => e.dataset.seq)"
            )
        ]

    def storage(self, key: str) -> Any:
        return self.page.evaluate("k => JSON.parse(localStorage.getItem(k) || 'null')", key)

    def check_clean(self) -> None:
        """No uncaught errors, no alert()/confirm(), no CSP violations."""
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs
        assert self.page.evaluate("window.__csp") == []

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def people(browser: Any) -> Iterator[Callable[..., Person]]:
    made: list[Person] = []

    def make(server: Server, **context: Any) -> Person:
        person = Person(browser, server, **context)
        made.append(person)
        return person

    yield make
    for person in made:
        person.close()


# Bytes transferred for the page and its static files (API calls excluded).
FIRST_LOAD_BYTES = """() => [performance.getEntriesByType('navigation')[0],
    ...performance.getEntriesByType('resource')]
  .filter(e => !new URL(e.name).pathname.startsWith('/api/'))
  .reduce((sum, e) => sum + e.transferSize, 0)"""


def screenshot(person: Person, name: str) -> Path:
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / name
    person.page.screenshot(path=str(path))
    return path


def test_two_people_chat_in_a_room_and_a_direct_message(
    server: Server, people: Callable[..., Person]
) -> None:
    server.register("alice", "Alice Liddell")
    alice = people(server)
    bob = people(server, color_scheme="dark")
    # First load, nothing cached: well under 200 KB on the wire.
    alice.goto()
    alice.page.wait_for_load_state("networkidle")
    loaded = alice.page.evaluate(FIRST_LOAD_BYTES)
    assert 20_000 < loaded < 200_000, loaded
    alice.sign_in("alice")
    bob.sign_up("bob", "Bob Builder")
    a, b = alice.page, bob.page
    expect = alice.expect

    # Alice has no rooms yet: the welcome screen offers to create one.
    expect(a.locator("#empty-state")).to_contain_text("Welcome to Parley")
    a.click("#create-room")
    a.fill("#f-name", "general")
    a.fill("#f-topic", "Anything goes")
    a.locator("#dialog button[type=submit]").click()
    expect(a.locator("#room-title")).to_contain_text("general")
    expect(a.locator("#room-topic")).to_have_text("Anything goes")
    expect(a.locator("#composer-input")).to_be_focused()

    # Bob finds it in the directory and joins.
    b.click("#browse-rooms")
    b.get_by_role("button", name="Join general").click()
    expect(b.locator("#room-title")).to_contain_text("general")
    expect(b.locator("#composer-input")).to_be_focused()

    # A message goes out pending and comes back acknowledged, on both sides.
    alice.send("Hello Bob, welcome to *Parley*")
    expect(alice.message("Hello Bob")).not_to_have_class(re.compile("pending"))
    expect(bob.message("Hello Bob")).to_be_visible()
    expect(bob.message("Hello Bob").locator("em")).to_have_text("Parley")

    # Typing shows on the other side.
    b.locator("#composer-input").press_sequentially("Hi Al")
    expect(a.locator("#typing")).to_have_text("Bob Builder is typing…")
    b.locator("#composer-input").press_sequentially("ice, **thanks**!")
    b.press("#composer-input", "Enter")
    expect(alice.message("Hi Alice").locator("strong")).to_have_text("thanks")
    expect(a.locator("#typing")).to_have_text("")
    # Shift+Enter is a new line, not a send.
    b.locator("#composer-input").press_sequentially("line one")
    b.press("#composer-input", "Shift+Enter")
    b.locator("#composer-input").press_sequentially("line two")
    b.press("#composer-input", "Enter")
    expect(alice.message("line one").locator(".msg-body br")).to_have_count(1)
    expect(alice.message("line one")).to_contain_text("line two")

    # Reactions, through the message's action toolbar.
    hello = alice.message("Hi Alice")
    hello.hover()
    hello.get_by_role("button", name="Add reaction").click()
    a.get_by_role("menuitem", name="React with 👍").click()
    expect(bob.message("Hi Alice").locator(".reaction")).to_have_attribute(
        "aria-label", re.compile(r"^👍 1: Alice Liddell")
    )
    expect(alice.message("Hi Alice").locator(".reaction")).to_have_attribute("aria-pressed", "true")

    # Edit with the keyboard: Up in an empty composer edits one's last message.
    a.focus("#composer-input")
    a.press("#composer-input", "ArrowUp")
    editor = a.locator(".msg-editor textarea")
    expect(editor).to_be_focused()
    editor.fill("Hello Bob, welcome (edited text)")
    editor.press("Enter")
    expect(bob.message("welcome (edited text)").locator(".edited")).to_be_visible()
    expect(a.locator("#composer-input")).to_be_focused()

    # An edit that conflicts with a change made elsewhere is not lost silently.
    token = server.login("alice")["access_token"]
    room_id = a.evaluate("location.hash.split('/').pop()")
    [first] = [m for m in server.messages(token, room_id) if "edited text" in m["body"]]
    a.press("#composer-input", "ArrowUp")
    expect(editor).to_be_focused()
    editor.fill("My version")
    server.call(
        "PATCH",
        f"/rooms/{room_id}/messages/{first['id']}",
        token,
        json={"body": "Their version", "version": first["version"]},
    )
    expect(bob.message("Their version")).to_be_visible()
    editor.press("Enter")
    expect(a.locator(".conflict")).to_contain_text("changed elsewhere")
    expect(a.locator(".conflict")).to_contain_text("Their version")
    expect(editor).to_have_value("My version")
    editor.press("Enter")
    expect(bob.message("My version")).to_be_visible()
    expect(a.locator(".conflict")).to_have_count(0)

    # Delete: confirmed in a dialog, seen as a tombstone by the other side.
    mine = alice.message("My version")
    mine.hover()
    mine.get_by_role("button", name="Delete message").click()
    a.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(bob.page.locator("#messages li.msg.deleted")).to_have_text(
        re.compile("This message was deleted")
    )
    expect(bob.message("My version")).to_have_count(0)

    a.locator("#members-toggle").click()
    expect(a.locator("#member-list")).to_contain_text("Bob Builder")
    expect(a.locator("#member-list")).to_contain_text("Owner")
    path = screenshot(alice, "main-view.png")
    assert path.stat().st_size > 10_000
    screenshot(bob, "main-view-dark.png")

    # A direct message: Alice starts it by username; Bob sees it unread.
    a.click("#new-dm")
    a.fill("#f-username", "bob")
    a.locator("#dialog button[type=submit]").click()
    expect(a.locator("#room-title")).to_contain_text("Bob Builder")
    alice.send("psst, just between us")
    dm_link = b.locator("#dm-list a.room-link", has_text="Alice Liddell")
    expect(dm_link.locator(".badge")).to_have_text("1")
    dm_link.click()
    expect(bob.message("psst")).to_be_visible()
    expect(b.locator("#messages .unread-marker")).to_be_visible()
    expect(dm_link.locator(".badge")).to_have_count(0)
    bob.send("ok 🤫")
    expect(alice.message("ok 🤫")).to_be_visible()

    # The read cursor reached the server: Bob has nothing unread there.
    bob_token = server.login("bob")["access_token"]
    deadline = time.monotonic() + 10
    while True:
        rooms = server.call("GET", "/rooms", bob_token)["rooms"]
        if all(r["unread"] == 0 for r in rooms) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [r["unread"] for r in rooms] == [0, 0]

    # A message in a room Bob is not looking at shows as unread there.
    alice.open_room("general")
    alice.send("ping in general")
    expect(b.locator("#room-list a.room-link", has_text="general").locator(".badge")).to_have_text(
        "1"
    )

    # Bob leaves the room; it disappears from his list.
    bob.open_room("general")
    b.click("#room-menu")
    b.get_by_role("menuitem", name="Leave room").click()
    b.locator("#dialog").get_by_role("button", name="Leave").click()
    expect(b.locator("#room-list a.room-link", has_text="general")).to_have_count(0)
    expect(a.locator("#member-list")).not_to_contain_text("Bob Builder")

    # Logging out revokes the refresh token.
    refresh = bob.storage("parley.auth")["refresh_token"]
    b.click("#me-button")
    b.get_by_role("menuitem", name=re.compile("Log out")).click()
    expect(b.locator("#auth")).to_be_visible()
    assert bob.storage("parley.auth") is None
    answer = server.http.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert answer.status_code == 400

    alice.check_clean()
    bob.check_clean()


def test_history_scrolls_back_to_the_first_message(
    server: Server, people: Callable[..., Person]
) -> None:
    _, token = server.register("historian", "Herodotus")
    room = server.call("POST", "/rooms", token, json={"name": "archive", "visibility": "public"})
    total = 230
    for i in range(total):
        server.post(token, room["id"], f"history message {i:03d}")
    reader = people(server)
    reader.sign_in("historian")
    page = reader.page
    expect = reader.expect

    # The newest message is at the bottom, in view.
    newest = reader.message("history message 229")
    expect(newest).to_be_in_viewport()
    assert len(reader.seqs()) < total

    # Scrolling up pages back through the whole history.
    deadline = time.monotonic() + 60
    while "very beginning" not in page.inner_text("#history-status"):
        assert time.monotonic() < deadline, "never reached the first message"
        page.eval_on_selector("#timeline", "el => { el.scrollTop = 0; }")
        page.wait_for_timeout(150)
    expect(page.locator("#history-status")).to_contain_text("very beginning of #archive")
    assert reader.bodies() == [f"history message {i:03d}" for i in range(total)]
    seqs = reader.seqs()
    assert seqs == sorted(set(seqs))
    expect(page.locator("#messages li.day-sep")).to_have_count(1)
    expect(page.locator("#messages li.day-sep")).to_have_text("Today")
    # Consecutive messages of one sender are grouped under one name.
    expect(page.locator("#messages .msg-author")).to_have_count(1)
    reader.check_clean()


HOSTILE = [
    "<img src=x onerror=\"window.__pwned='img'\">",
    "<script>window.__pwned='script'</script>",
    "[click me](javascript:window.__pwned='link')",
    "[data](data:text/html,<script>alert(1)</script>)",
    '"><svg onload="window.__pwned=\'svg\'">',
    "**<b onmouseover=\"window.__pwned='b'\">bold</b>**",
    "`<iframe src=javascript:alert(1)>` and <style>body{display:none}</style>",
    '> <a href="javascript:alert(1)">quoted</a>',
    "https://example.com/\"onmouseover=\"window.__pwned='url'",
    "x" * 16_000,
    ("wide " * 3000).strip(),
]


def test_hostile_bodies_render_inert(server: Server, people: Callable[..., Person]) -> None:
    _, token = server.register("mallory", "Mallory <b>Evil</b>")
    room = server.call("POST", "/rooms", token, json={"name": "<i>pwn</i>", "topic": "<img src=x>"})
    for body in HOSTILE:
        server.post(token, room["id"], body)
    victim = people(server)
    victim.sign_in("mallory")
    page = victim.page
    expect = victim.expect
    expect(victim.message("wide wide")).to_be_visible()
    for element in victim.page.locator("#messages li.msg").all():
        element.hover()  # fire any mouseover handler that slipped through

    assert page.evaluate("window.__pwned") is None
    # svg.icon: the client's own action icons (markdown.js never emits a class).
    forbidden = "img, script, iframe, svg:not(.icon), object, embed, style, b, i, form, input"
    assert page.locator(f"#messages {forbidden.replace(', ', ', #messages ')}").count() == 0
    links = page.eval_on_selector_all(
        "#messages a", "els => els.map(a => [a.getAttribute('href'), a.rel, a.target])"
    )
    assert links, "the safe URL should still be a link"
    for href, rel, target in links:
        assert href.startswith(("http://", "https://", "mailto:")), href
        assert rel == "noopener noreferrer"
        assert target == "_blank"
    # The markup shows as text, exactly as typed.
    expect(victim.message("onerror")).to_contain_text("<img src=x onerror=")
    expect(victim.message("click me")).to_contain_text("[click me](javascript:")
    expect(page.locator("#room-title")).to_contain_text("<i>pwn</i>")
    expect(page.locator("#me-button")).to_contain_text("Mallory <b>Evil</b>")
    # Huge bodies wrap instead of widening the page.
    overflow = page.eval_on_selector("#timeline", "el => el.scrollWidth - el.clientWidth")
    assert overflow <= 0
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")

    # A send the server refuses is marked failed; it can be retried or discarded.
    victim.send("bell \u0007 character")
    failed = victim.message("bell")
    expect(failed.locator(".msg-status.failed")).to_contain_text("Not sent")
    failed.get_by_role("button", name="Retry").click()
    expect(failed.locator(".msg-status.failed")).to_contain_text("Not sent")
    failed.get_by_role("button", name="Discard").click()
    expect(victim.message("bell")).to_have_count(0)
    victim.check_clean()


def test_server_restart_mid_conversation_loses_and_doubles_nothing(
    server: Server, people: Callable[..., Person]
) -> None:
    _, alice_token = server.register("alice", "Alice")
    server.register("bob", "Bob")
    _, carol_token = server.register("carol", "Carol")
    room = server.call("POST", "/rooms", alice_token, json={"name": "ops", "visibility": "public"})
    bob_token = server.login("bob")["access_token"]
    server.call("POST", f"/rooms/{room['id']}/join", bob_token)
    server.call("POST", f"/rooms/{room['id']}/join", carol_token)
    alice = people(server)
    bob = people(server, viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True)
    alice.sign_in("alice")
    bob.sign_in("bob")
    expect = alice.expect
    for i in range(3):
        alice.send(f"alice before {i}")
        bob.send(f"bob before {i}")
    expect(bob.message("alice before 2")).to_be_visible()
    expect(alice.message("bob before 2")).to_be_visible()
    screenshot(bob, "phone.png")

    server.stop()
    for person in (alice, bob):
        expect(person.page.locator("#banner")).to_be_visible()
        expect(person.page.locator("#banner")).to_contain_text(
            re.compile("Reconnecting|Connection lost")
        )
    # Written while the server is down: held as pending, delivered after.
    alice.send("alice while down")
    expect(alice.message("alice while down")).to_have_class(re.compile("pending"))
    expect(alice.message("alice while down")).to_contain_text("Waiting for the connection")
    screenshot(alice, "reconnecting.png")

    server.start()
    # Others keep talking before the pages are back: the pages must catch up.
    carol_token = server.login("carol")["access_token"]
    for i in range(5):
        server.post(carol_token, room["id"], f"carol after restart {i}")

    for person in (alice, bob):
        # Backoff with jitter: the last wait before the server is back may be ~16 s.
        expect(person.page.locator("#banner")).to_be_hidden(timeout=60_000)
        expect(person.message("carol after restart 4")).to_be_visible()
        expect(person.message("alice while down")).to_be_visible()
    expect(alice.message("alice while down")).not_to_have_class(re.compile("pending"))
    alice.send("alice after")
    bob.send("bob after")
    for person in (alice, bob):
        expect(person.message("bob after")).to_be_visible()
        expect(person.message("alice after")).to_be_visible()

    truth = [m["body"] for m in server.messages(alice_token, room["id"])]
    assert len(truth) == len(set(truth)) == 3 * 2 + 1 + 5 + 2
    for person in (alice, bob):
        expect(person.page.locator("#messages li.msg")).to_have_count(len(truth))
        assert person.bodies() == truth
        seqs = person.seqs()
        assert seqs == sorted(set(seqs))
        assert person.page.locator("#messages li.msg.pending").count() == 0
        person.check_clean()


def test_tokens_refresh_silently(
    make_server: Callable[..., Server], people: Callable[..., Person]
) -> None:
    server = make_server(PARLEY_ACCESS_TOKEN_TTL="30")
    _, token = server.register("dora", "Dora")
    server.call("POST", "/rooms", token, json={"name": "lobby"})
    dora = people(server)
    sent: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []

    def watch(ws: Any) -> None:
        ws.on("framesent", lambda payload: sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: received.append(json.loads(payload)))

    dora.page.on("websocket", watch)
    dora.sign_in("dora")
    first = dora.storage("parley.auth")
    # The client renews at three quarters of a short lifetime, without a sign-in.
    deadline = time.monotonic() + 40
    while dora.storage("parley.auth")["refresh_token"] == first["refresh_token"]:
        assert time.monotonic() < deadline, "the tokens were never refreshed"
        time.sleep(0.5)
    # ...and hands the new access token to the open socket. A server that cannot
    # re-authenticate a socket answers already_authenticated, which changes nothing.
    fresh = dora.storage("parley.auth")["access_token"]
    reauth = [f for f in sent if f.get("type") == "auth" and f.get("token") == fresh]
    while not reauth or not any(f.get("id") == reauth[0]["id"] for f in received):
        assert time.monotonic() < deadline, f"no answered re-auth: {sent} {received}"
        dora.page.wait_for_timeout(200)
        reauth = [f for f in sent if f.get("type") == "auth" and f.get("token") == fresh]
    answer = next(f for f in received if f.get("id") == reauth[0]["id"])
    assert answer["type"] == "auth.ok" or answer.get("code") == "already_authenticated", answer
    dora.expect(dora.page.locator("#toasts .toast")).to_have_count(0)
    # The page still works on the new tokens, and after a reload.
    dora.send("still here")
    expect = dora.expect
    expect(dora.message("still here")).not_to_have_class(re.compile("pending"))
    dora.page.reload()
    dora.wait_live()
    expect(dora.message("still here")).to_be_visible()
    dora.check_clean()
    # The first refresh token was rotated away. (Presenting it again revokes the
    # whole family, so this comes last.)
    answer = server.http.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    assert answer.status_code == 400


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


@pytest.mark.parametrize("viewport", [(1280, 800), (390, 700)])
def test_presence_system_lines_toasts_and_icons(
    server: Server, people: Callable[..., Person], viewport: tuple[int, int]
) -> None:
    _, alice_token = server.register("alice", "Alice Liddell")
    bob_user, bob_token = server.register("bob", "Bob Builder")
    room = server.call("POST", "/rooms", alice_token, json={"name": "garden"})
    server.post(alice_token, room["id"], "hello garden")
    alice = people(server, viewport={"width": viewport[0], "height": viewport[1]})
    alice.sign_in("alice")
    page, expect = alice.page, alice.expect

    # Own presence follows the connection, not the (never echoed) presence feed.
    expect(page.locator("#me-button .presence")).to_have_class(re.compile(r"\bonline\b"))
    if viewport[0] > 760:  # the sidebar is off-canvas on a phone
        expect(page.locator("#me-button")).to_have_accessible_name(
            re.compile(r"^Alice Liddell \(@alice\), online")
        )

    # Joins, topic and name changes, kicks and bans become system lines in order.
    server.call("POST", f"/rooms/{room['id']}/join", bob_token)
    lines = page.locator("#messages li.sys-line")
    expect(lines.last).to_contain_text("Bob Builder joined")
    server.call("PATCH", f"/rooms/{room['id']}", alice_token, json={"topic": "roses"})
    expect(lines.last).to_contain_text("You set the topic to “roses”")
    server.call("PATCH", f"/rooms/{room['id']}", alice_token, json={"name": "rose-garden"})
    expect(lines.last).to_contain_text("You renamed the room to “rose-garden”")
    server.call("DELETE", f"/rooms/{room['id']}/members/{bob_user['id']}", alice_token)
    expect(lines.last).to_contain_text("You removed Bob Builder")
    server.call(
        "POST", f"/rooms/{room['id']}/members", alice_token, json={"user_id": bob_user["id"]}
    )
    expect(lines.last).to_contain_text("You added Bob Builder")
    server.call(
        "DELETE",
        f"/rooms/{room['id']}/members/{bob_user['id']}",
        alice_token,
        params={"ban": "true"},
    )
    expect(lines.last).to_contain_text("You banned Bob Builder")
    expect(lines).to_have_count(6)
    assert "hello garden" in alice.bodies()[0]

    # Action icons are SVG, with no character that needs an emoji font: react,
    # reply in thread, edit, delete.
    message = alice.message("hello garden")
    message.hover()
    actions = message.locator(".msg-actions button")
    expect(actions).to_have_count(4)
    for i in range(4):
        expect(actions.nth(i).locator("svg")).to_have_count(1)
        assert actions.nth(i).inner_text().strip() == ""

    # A toast never covers the composer.
    page.evaluate("location.hash = '#/r/no-such-room'")
    toast = page.locator("#toasts .toast")
    expect(toast).to_be_visible()
    box = page.locator("#toasts").bounding_box()
    for target in ("#send-button", "#composer-input"):
        assert not overlaps(box, page.locator(target).bounding_box()), target
    screenshot(alice, f"system-lines-{viewport[0]}.png")
    alice.check_clean()


AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_RUN = """() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations
  .filter(v => v.impact === 'serious' || v.impact === 'critical')
  .map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(' ') + ' :: ' + n.failureSummary)})))"""


def axe_findings(person: Person, view: str) -> list[str]:
    """Serious and critical axe-core findings on the page as it is now."""
    page = person.page
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate(AXE_RUN)
    return [f"{view}: {v['impact']} {v['id']} ({v['help']}): {v['nodes']}" for v in found]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_serious_accessibility_findings(
    server: Server, people: Callable[..., Person], scheme: str
) -> None:
    """axe-core on the main views; the context bypasses the CSP only so that the
    checker's script tag can be injected."""
    alice_user, alice_token = server.register("alice", "Alice Liddell")
    _, bob_token = server.register("bob", "Bob Builder")
    room = server.call("POST", "/rooms", alice_token, json={"name": "garden", "topic": "roses"})
    server.call("POST", f"/rooms/{room['id']}/join", bob_token)
    first = server.post(
        bob_token, room["id"], "hello **garden**, see `code` and https://example.org"
    )
    server.call("PUT", f"/rooms/{room['id']}/messages/{first['id']}/reactions/👍", alice_token)
    server.call("POST", "/rooms", alice_token, json={"name": "secret", "visibility": "private"})
    dm = server.call("POST", "/dms", bob_token, json={"user_id": alice_user["id"]})
    server.post(bob_token, dm["id"], "unread, for the badge")
    person = people(server, color_scheme=scheme, bypass_csp=True)
    page, expect = person.page, person.expect
    findings: list[str] = []

    person.goto()
    expect(page.locator("#auth-form")).to_be_visible()
    findings += axe_findings(person, "sign-in")
    page.click("#tab-register")
    findings += axe_findings(person, "register")
    page.click("#tab-login")

    person.sign_in("alice")
    assert person.errors == [], person.errors
    person.open_room("garden")
    expect(person.message("hello")).to_be_visible()
    expect(page.locator("#messages .unread-marker")).to_be_visible()
    expect(page.locator("#dm-list .badge")).to_be_visible()
    person.send("my own message")
    expect(person.message("my own message")).to_have_class(re.compile(r"\bmine\b"))
    findings += axe_findings(person, "room")
    person.message("hello").hover()
    findings += axe_findings(person, "room, message actions")
    page.click("#members-toggle")
    expect(page.locator("#members .member")).to_have_count(2)
    findings += axe_findings(person, "members")
    page.click("#room-menu")
    findings += axe_findings(person, "room menu")
    page.get_by_role("menuitem", name="Room settings").click()
    expect(page.locator("#dialog")).to_be_visible()
    findings += axe_findings(person, "room settings dialog")
    page.keyboard.press("Escape")
    page.click("#create-room")
    expect(page.locator("#dialog")).to_be_visible()
    findings += axe_findings(person, "create-room dialog")
    page.keyboard.press("Escape")
    screenshot(person, f"axe-{scheme}.png")
    assert findings == [], "\n".join(findings)


def test_admins_remove_and_ban_members_and_change_room_settings(
    server: Server, people: Callable[..., Person]
) -> None:
    _, alice_token = server.register("alice", "Alice Liddell")
    _, bob_token = server.register("bob", "Bob Builder")
    _, carol_token = server.register("carol", "Carol Singer")
    room = server.call("POST", "/rooms", alice_token, json={"name": "garden"})
    for token in (bob_token, carol_token):
        server.call("POST", f"/rooms/{room['id']}/join", token)
    alice = people(server)
    bob = people(server)
    alice.sign_in("alice")
    bob.sign_in("bob")
    page, expect = alice.page, alice.expect

    # A plain member gets no remove or ban buttons.
    bob.page.click("#members-toggle")
    expect(bob.page.locator("#members .member")).to_have_count(3)
    expect(bob.page.locator("#members .member-kick, #members .member-ban")).to_have_count(0)

    page.click("#members-toggle")
    members = page.locator("#members .member")
    expect(members).to_have_count(3)
    # The owner can remove and ban the two members, not themself.
    expect(page.locator("#members .member-kick")).to_have_count(2)
    bob_row = members.filter(has_text="Bob Builder")
    bob_row.hover()
    bob_row.get_by_role("button", name="Remove Bob Builder").click()
    page.locator("#dialog").get_by_role("button", name="Remove").click()
    expect(members).to_have_count(2)
    expect(page.locator("#messages li.sys-line").last).to_contain_text("You removed Bob Builder")
    expect(bob.page.locator("#toasts")).to_contain_text("You were removed from #garden")

    carol_row = members.filter(has_text="Carol Singer")
    carol_row.hover()
    carol_row.get_by_role("button", name="Ban Carol Singer").click()
    page.locator("#dialog").get_by_role("button", name="Ban").click()
    expect(members).to_have_count(1)
    expect(page.locator("#messages li.sys-line").last).to_contain_text("You banned Carol Singer")
    banned = server.http.post(
        f"/rooms/{room['id']}/join", headers={"Authorization": f"Bearer {carol_token}"}
    )
    assert banned.status_code == 403, banned.text
    assert banned.json()["error"]["code"] == "banned"

    # Room settings: name and topic in one dialog; each change is one system line.
    page.click("#room-menu")
    page.get_by_role("menuitem", name="Room settings").click()
    dialog = page.locator("#dialog")
    dialog.get_by_label("Name").fill("rose-garden")
    dialog.get_by_label("Topic").fill("roses and thorns")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#room-title")).to_contain_text("rose-garden")
    expect(page.locator("#room-topic")).to_have_text("roses and thorns")
    expect(page.locator("#messages li.sys-line").last).to_contain_text(
        "You renamed the room to “rose-garden” and set the topic to “roses and thorns”"
    )
    assert server.call("GET", f"/rooms/{room['id']}", alice_token)["topic"] == "roses and thorns"
    screenshot(alice, "admin-actions.png")
    alice.check_clean()
    bob.check_clean()
