"""Searching from the web client: the search dialog, results with their matched words
marked (and a hostile body inert), and a click that opens the message in its room,
older history loaded around it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.test_web import (  # noqa: F401  (fixtures)
    Person,
    Server,
    browser,
    make_server,
    people,
    server,
)

pytestmark = [
    pytest.mark.service("chromium"),
    pytest.mark.xdist_group("web-e2e"),
    pytest.mark.timeout(300),
]


def test_search_finds_marks_and_jumps_to_the_message(
    server: Server,  # noqa: F811
    people: Callable[..., Person],  # noqa: F811
) -> None:
    _, token = server.register("seeker", "Seeker")
    room = server.call("POST", "/rooms", token, json={"name": "library", "visibility": "public"})
    other = server.call("POST", "/rooms", token, json={"name": "lobby", "visibility": "public"})
    server.post(token, room["id"], 'the needle is <img src=x onerror="window.__pwned=1"> here')
    for i in range(150):  # older than one page of history
        server.post(token, room["id"], f"hay {i:03d}")
    server.post(token, other["id"], "東京都の天気")
    reader = people(server)
    reader.sign_in("seeker")
    page, expect = reader.page, reader.expect
    reader.open_room("lobby")
    assert not reader.message("needle").count()

    page.keyboard.press("Control+k")
    expect(page.locator("#search-input")).to_be_focused()
    page.fill("#search-input", "NEEDLE")
    page.press("#search-input", "Enter")
    results = page.locator("#search-results li")
    expect(results).to_have_count(1)
    expect(results.first.locator("mark")).to_have_text("needle")
    expect(results.first).to_contain_text('<img src=x onerror="window.__pwned=1"> here')
    expect(results.first).to_contain_text("in #library")

    results.first.locator("button").click()
    expect(page.locator("#room-title")).to_contain_text("library")
    target = reader.message("the needle is")
    expect(target).to_be_in_viewport()
    assert page.evaluate("window.__pwned") is None

    # CJK by substring, and a search limited to the open room.
    page.click("#search-open")
    page.fill("#search-input", "京都")
    page.press("#search-input", "Enter")
    expect(page.locator("#search-results li")).to_have_count(1)
    expect(page.locator("#search-results mark")).to_have_text("京都")
    page.check("#search-here")
    page.press("#search-input", "Enter")
    expect(page.locator("#search-status")).to_have_text("No messages found.")
    page.fill("#search-input", '"unclosed')
    page.press("#search-input", "Enter")
    expect(page.locator("#search-status")).to_contain_text("unclosed quote")
    page.keyboard.press("Escape")
    reader.check_clean()
