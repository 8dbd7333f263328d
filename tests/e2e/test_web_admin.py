"""The web client's admin page and account settings in a real browser against a
real ``parley serve`` (the harness of ``test_web``): a server admin, made by the
operator's CLI, deactivates a user (whose open page is signed out at once), sets
registration to invite-only and makes an invite, which a newcomer signs up with;
the audit log shows it all; a user renames themselves and deletes their account.
A user who is no admin has no admin entry in their menu."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

from tests.e2e import test_web as web

pytestmark = web.pytestmark
browser = web.browser
make_server = web.make_server
server = web.server
people = web.people


def promote(server: web.Server, username: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "parley.cli.main", "admin", "users", "promote", username],
        env=server.env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def open_account_menu(person: web.Person) -> None:
    person.page.click("#me-button")


def test_an_admin_manages_users_registration_and_invites(
    server: web.Server, people: Callable[..., web.Person]
) -> None:
    server.register("root", "Root Admin")
    server.register("bob", "Bob Builder")
    promote(server, "root")
    admin, bob, newcomer = people(server), people(server), people(server)
    bob.sign_in("bob")
    admin.sign_in("root")
    expect, page = admin.expect, admin.page

    open_account_menu(bob)
    expect(bob.page.get_by_role("menuitem", name=re.compile("Log out"))).to_be_visible()
    expect(bob.page.get_by_role("menuitem", name="Server admin")).to_have_count(0)
    bob.page.keyboard.press("Escape")

    open_account_menu(admin)
    page.get_by_role("menuitem", name="Server admin").click()
    dialog = page.locator("#dialog")
    expect(dialog).to_contain_text("Server admin")
    page.fill("#admin-user-search", "bo")
    row = dialog.locator("li[data-username='bob']")
    expect(row).to_contain_text("Bob Builder")
    row.get_by_role("button", name="Deactivate bob").click()
    expect(row.get_by_role("button", name="Reactivate bob")).to_be_visible()
    expect(row).to_contain_text("deactivated")
    # Bob's open page loses its session at once and lands on the sign-in page.
    expect(bob.page.locator("#auth")).to_be_visible()
    expect(bob.page.locator("#auth-error")).to_contain_text("deactivated")

    page.select_option("#admin-registration", "invite")
    page.fill("#admin-invite-uses", "1")
    page.get_by_role("button", name="Create invite").click()
    code_box = page.locator("#admin-invite-code")
    expect(code_box).not_to_be_empty()
    code = code_box.inner_text().strip()
    expect(dialog.locator(".admin-invites li").first).to_contain_text("used 0/1")

    newcomer.goto()
    newcomer.page.click("#tab-register")
    expect(newcomer.page.locator("#auth-invite")).to_be_visible()
    newcomer.page.fill("#auth-username", "carol")
    newcomer.page.fill("#auth-password", web.PASSWORD)
    newcomer.page.fill("#auth-invite", "not-a-code")
    newcomer.page.click("#auth-submit")
    expect(newcomer.page.locator("#auth-error")).to_contain_text("invite code is unknown")
    newcomer.page.fill("#auth-invite", code)
    newcomer.page.click("#auth-submit")
    newcomer.wait_live()

    page.keyboard.press("Escape")
    open_account_menu(admin)
    page.get_by_role("menuitem", name="Server admin").click()
    audit = page.locator(".admin-audit")
    for action in ("user.deactivated", "registration.changed", "invite.created", "auth.login"):
        expect(audit.locator(f"li[data-action='{action}']").first).to_be_visible()
    for person in (admin, newcomer):
        person.check_clean()


def test_a_user_renames_themselves_and_deletes_their_account(
    server: web.Server, people: Callable[..., web.Person]
) -> None:
    server.register("dora", "Dora")
    dora = people(server)
    dora.sign_in("dora")
    expect, page = dora.expect, dora.page
    open_account_menu(dora)
    page.get_by_role("menuitem", name="Change display name").click()
    page.fill("#f-display_name", "Dora the Explorer")
    page.locator("#dialog button[type=submit]").click()
    expect(page.locator("#me-button")).to_contain_text("Dora the Explorer")
    assert (
        server.call("GET", "/users/me", server.login("dora")["access_token"])["display_name"]
        == "Dora the Explorer"
    )

    open_account_menu(dora)
    page.get_by_role("menuitem", name="Delete account").click()
    page.fill("#f-password", "wrong password")
    page.locator("#dialog button[type=submit]").click()
    expect(page.locator("#dialog .form-error")).to_contain_text("password is wrong")
    page.fill("#f-password", web.PASSWORD)
    page.locator("#dialog button[type=submit]").click()
    expect(page.locator("#auth")).to_be_visible()
    expect(page.locator("#auth-error")).to_contain_text("account was deleted")
    response = server.http.post(
        "/auth/token", data={"grant_type": "password", "username": "dora", "password": web.PASSWORD}
    )
    assert response.status_code == 400
    dora.check_clean()
