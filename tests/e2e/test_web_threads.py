"""Threads and group direct messages in the web client, in a real browser against a
real ``parley serve`` (the fixtures and helpers of ``test_web``): replying in a
thread's pane, the reply count under the root moving live for someone following,
replies kept out of the main timeline, and a group conversation started by
picking several people, listed with the direct messages on every side."""

# The fixtures are test_web's, imported by name: the tests' parameters name them.
# ruff: noqa: F811

from __future__ import annotations

import re
from collections.abc import Callable

from tests.e2e.test_web import (  # noqa: F401
    Person,
    Server,
    axe_findings,
    browser,
    make_server,
    people,
    screenshot,
    server,
)


def test_reply_in_a_thread_and_follow_it_live(
    server: Server, people: Callable[..., Person]
) -> None:
    _, alice_token = server.register("alice", "Alice Liddell")
    server.register("bob", "Bob Builder")
    room = server.call("POST", "/rooms", alice_token, json={"name": "garden"})
    root = server.post(alice_token, room["id"], "plan for friday?")
    bob_token = server.login("bob")["access_token"]
    server.call("POST", f"/rooms/{room['id']}/join", bob_token)

    alice, bob = people(server), people(server)
    alice.sign_in("alice")
    alice.open_room("garden")
    bob.sign_in("bob")
    bob.open_room("garden")

    # Bob opens the thread from the message's actions and replies in the pane.
    bob.message("plan for friday").hover()
    bob.message("plan for friday").get_by_role("button", name="Reply in thread").click()
    pane = bob.page.locator("#thread")
    bob.expect(pane).to_be_visible()
    bob.expect(pane.locator(".thread-root")).to_contain_text("plan for friday?")
    bob.page.fill("#thread-input", "picnic at noon")
    bob.page.press("#thread-input", "Enter")
    bob.expect(pane.locator(".thread-reply")).to_have_text([re.compile("picnic at noon")])
    bob.expect(bob.message("plan for friday").locator(".thread-summary")).to_contain_text("1 reply")

    # Alice, with the room open, sees the count move, opens the thread and follows it.
    summary = alice.message("plan for friday").locator(".thread-summary")
    alice.expect(summary).to_contain_text("1 reply")
    summary.click()
    alice_pane = alice.page.locator("#thread")
    alice.expect(alice_pane.locator(".thread-reply")).to_have_count(1)
    server.call(
        "POST",
        f"/rooms/{room['id']}/messages",
        bob_token,
        json={"body": "bring lemonade", "thread_root_id": root["id"]},
    )
    alice.expect(alice_pane.locator(".thread-reply")).to_have_count(2)
    alice.expect(alice_pane.locator(".thread-reply").last).to_contain_text("bring lemonade")
    alice.expect(summary).to_contain_text("2 replies")
    # Alice replies too; Bob's open pane follows.
    alice.page.fill("#thread-input", "I'll bake")
    alice.page.press("#thread-input", "Enter")
    bob.expect(pane.locator(".thread-reply")).to_have_count(3)

    # Replies stay in their thread, out of the main timeline.
    for person in (alice, bob):
        assert not any("picnic" in b or "lemonade" in b for b in person.bodies()), person.bodies()
    screenshot(alice, "thread-pane.png")
    alice.page.click("#thread-close")
    alice.expect(alice_pane).to_be_hidden()
    alice.check_clean()
    bob.check_clean()


def test_start_a_group_message_by_picking_people(
    server: Server, people: Callable[..., Person]
) -> None:
    server.register("alice", "Alice Liddell")
    server.register("bob", "Bob Builder")
    server.register("carol", "Carol Danvers")
    alice, bob = people(server), people(server)
    alice.sign_in("alice")
    bob.sign_in("bob")

    page = alice.page
    page.click("#new-group-dm")
    dialog = page.locator("#dialog")
    alice.expect(dialog).to_be_visible()
    dialog.locator("input").first.fill("bob, carol")
    dialog.locator("button[type=submit]").click()
    alice.expect(page.locator("#room-title")).to_contain_text("Bob Builder")
    alice.expect(page.locator("#room-title")).to_contain_text("Carol Danvers")
    alice.send("hello you two")
    alice.expect(alice.message("hello you two")).to_be_visible()
    group = alice.page.locator("#dm-list a.room-link", has_text="Carol Danvers")
    alice.expect(group).to_be_visible()

    # Bob finds it with his direct messages, named by the others in it.
    bob_link = bob.page.locator("#dm-list a.room-link", has_text="Carol Danvers")
    bob.expect(bob_link).to_contain_text("Alice Liddell")
    bob_link.click()
    bob.expect(bob.message("hello you two")).to_be_visible()
    # The same people again open the same conversation.
    page.click("#new-group-dm")
    dialog.locator("input").first.fill("carol bob")
    dialog.locator("button[type=submit]").click()
    alice.expect(page.locator("#dm-list a.room-link", has_text="Carol Danvers")).to_have_count(1)
    # A single person is not a group: the dialog says so and stays open.
    page.click("#new-group-dm")
    dialog.locator("input").first.fill("bob")
    dialog.locator("button[type=submit]").click()
    alice.expect(dialog).to_contain_text("at least two")
    page.keyboard.press("Escape")
    alice.check_clean()
    bob.check_clean()


def test_thread_pane_and_group_dialog_have_no_serious_accessibility_findings(
    server: Server, people: Callable[..., Person]
) -> None:
    _, alice_token = server.register("alice", "Alice Liddell")
    room = server.call("POST", "/rooms", alice_token, json={"name": "garden"})
    root = server.post(alice_token, room["id"], "root message")
    server.call(
        "POST",
        f"/rooms/{room['id']}/messages",
        alice_token,
        json={"body": "a reply", "thread_root_id": root["id"]},
    )
    person = people(server, bypass_csp=True)
    person.sign_in("alice")
    person.open_room("garden")
    person.message("root message").locator(".thread-summary").click()
    person.expect(person.page.locator("#thread .thread-reply")).to_have_count(1)
    findings = axe_findings(person, "thread pane")
    person.page.click("#new-group-dm")
    person.expect(person.page.locator("#dialog")).to_be_visible()
    findings += axe_findings(person, "group message dialog")
    assert findings == [], "\n".join(findings)
