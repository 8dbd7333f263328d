"""Mentions and notifications in the web client, in a real browser (the rig of
``test_web``): the ``@`` autocomplete of the room's members, mentions highlighted,
the bell's unread badge and its panel, a room's notification level, and the
browser's own notification while the tab is hidden. Axe-core on the new views."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.e2e.test_web import (
    Person,
    Server,
    axe_findings,
    browser,
    make_server,
    people,
    pytestmark,
    screenshot,
    server,
)

__all__ = ["browser", "make_server", "people", "pytestmark", "server"]

# The page's Notification API and visibility, under the test's control: a stand-in
# that records what would have popped up, and a tab that can be "hidden".
FAKE_BROWSER = """
window.__shown = [];
window.__hidden = false;
window.Notification = class {
  constructor(title, options) { window.__shown.push({ title, body: options.body }); }
  static get permission() { return window.__permission || 'default'; }
  static requestPermission() { window.__permission = 'granted'; return Promise.resolve('granted'); }
};
Object.defineProperty(document, 'visibilityState', {
  get: () => (window.__hidden ? 'hidden' : 'visible'),
});
"""


def test_mention_autocomplete_badge_panel_levels_and_desktop_notifications(
    server: Server, people: Callable[..., Person]
) -> None:
    alice_user, alice_token = server.register("alice", "Alice Liddell")
    bob_user, bob_token = server.register("bob", "Bob Builder")
    garden = server.call("POST", "/rooms", alice_token, json={"name": "garden"})
    server.call("POST", f"/rooms/{garden['id']}/join", bob_token)
    server.call("POST", "/rooms", bob_token, json={"name": "bobs-corner"})
    alice = people(server)
    bob = people(server, bypass_csp=True)
    bob.page.add_init_script(FAKE_BROWSER)
    a, b, expect = alice.page, bob.page, alice.expect

    alice.sign_in("alice")
    alice.open_room("garden")
    bob.sign_in("bob")
    bob.open_room("bobs-corner")
    expect(b.locator("#notif-count")).to_be_hidden()

    # Alice types "@b": the room's members are offered; Enter takes the first.
    a.click("#composer-input")
    a.keyboard.type("hey @b")
    options = a.locator("#mention-options [role=option]")
    expect(options).to_have_count(1)
    expect(options.first).to_contain_text("@bob")
    expect(a.locator("#composer-input")).to_have_attribute("aria-expanded", "true")
    screenshot(alice, "mention-autocomplete.png")
    a.keyboard.press("Enter")
    expect(a.locator("#composer-input")).to_have_value("hey @bob ")
    expect(a.locator("#mention-options")).to_be_hidden()
    a.keyboard.type("look at this")
    a.keyboard.press("Enter")
    expect(alice.message("look at this").locator(".mention")).to_have_text("@bob")
    # @room is offered to the owner; an unknown name is offered nothing.
    a.keyboard.type("@ro")
    expect(a.locator("#mention-options [role=option]")).to_have_text(re.compile("@room"))
    a.keyboard.press("Escape")
    expect(a.locator("#mention-options")).to_be_hidden()
    a.fill("#composer-input", "")

    # Bob, in another room, sees the badge; the panel says who and where.
    expect(b.locator("#notif-count")).to_have_text("1")
    b.click("#notif-toggle")
    item = b.locator("#notif-panel .notif-item").first
    expect(item).to_contain_text("Alice Liddell mentioned you in #garden")
    expect(item).to_contain_text("hey @bob look at this")
    expect(item).to_have_class(re.compile(r"\bunread\b"))
    findings = axe_findings(bob, "notifications panel")
    screenshot(bob, "notifications-panel.png")
    item.locator("button").click()
    expect(b.locator("#room-title")).to_contain_text("garden")
    expect(b.locator("#notif-count")).to_be_hidden()
    mention = bob.message("look at this")
    expect(mention).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(mention.locator(".mention.me")).to_have_text("@bob")
    screenshot(bob, "mention-highlight.png")

    # Bob turns the room to "Nothing" in its menu.
    b.click("#room-menu")
    b.get_by_role("menuitem", name="Notifications…").click()
    expect(b.locator("#dialog")).to_be_visible()
    expect(b.locator("#dialog input[value=mentions]")).to_be_checked()
    findings += axe_findings(bob, "notification level dialog")
    b.locator("#dialog label", has_text="Nothing").click()
    b.locator("#dialog button[type=submit]").click()
    expect(b.locator("#dialog")).to_be_hidden()
    level = server.call("GET", f"/rooms/{garden['id']}/notifications", bob_token)
    assert level == {"level": "none"}
    server.post(alice_token, garden["id"], "@bob you will not hear this")
    expect(bob.message("you will not hear this")).to_be_visible()

    # Desktop notifications: allowed from the panel, shown only while hidden.
    bob.open_room("bobs-corner")
    b.click("#notif-toggle")
    b.get_by_role("button", name="Enable desktop notifications").click()
    expect(b.get_by_role("button", name="Enable desktop notifications")).to_be_hidden()
    b.keyboard.press("Escape")
    dm = server.call("POST", "/dms", alice_token, json={"user_id": bob_user["id"]})
    server.post(alice_token, dm["id"], "seen while visible")
    expect(b.locator("#notif-count")).to_have_text("1")
    b.evaluate("window.__hidden = true")
    away = server.post(alice_token, dm["id"], "while you were away")
    expect(b.locator("#notif-count")).to_have_text("2")
    shown = b.evaluate("window.__shown")
    assert shown == [{"title": "Alice Liddell", "body": "while you were away"}]
    b.evaluate("window.__hidden = false")
    # A deleted message takes its notification along, live.
    server.call("DELETE", f"/rooms/{dm['id']}/messages/{away['id']}", alice_token)
    expect(b.locator("#notif-count")).to_have_text("1")
    b.click("#notif-toggle")
    b.get_by_role("button", name="Mark all read").click()
    expect(b.locator("#notif-count")).to_be_hidden()
    assert server.call("GET", "/notifications", bob_token)["unread"] == 0
    assert alice_user["id"] != bob_user["id"]
    assert findings == [], "\n".join(findings)
    alice.check_clean()
    assert bob.errors == [] and bob.dialogs == []
