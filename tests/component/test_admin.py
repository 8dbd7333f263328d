"""Server admins, against a real node: the admin API, deactivation ending live
connections at once, registration modes and invites, account self-service, and an
audit entry for every audited action. The first admin is made as an operator would,
with ``parley admin users promote``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.cli.main import main as parley
from parley.domain.admin import AuditAction
from parley.gateway.app import create_app
from parley.settings import Settings
from parley.testing.server import ServerThread
from tests.component.conftest import Account, Api, assert_error
from tests.conftest import require_service
from tests.realtime_support import TIMEOUT, frames_until_closed, recv, ws_connect

ADMIN = "/api/v1/admin"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("admin"), rate_limits="off") as running:
        yield running


def cli(server: ServerThread, *words: str) -> int:
    return parley(["admin", "--data-dir", str(server.settings.data_dir), *words])


@pytest.fixture
def admin(api: Api, server: ServerThread) -> Account:
    """A server admin, promoted by the operator's CLI on the database the node uses."""
    account = api.user("admin")
    assert cli(server, "users", "promote", account.username) == 0
    return account


def audit(admin: Account, action: AuditAction, **match: Any) -> list[dict[str, Any]]:
    """The newest entries of ``action`` whose target or fields match."""
    r = admin.get(f"{ADMIN}/audit", params={"action": action.value, "before": 2**53, "limit": 500})
    assert r.status_code == 200, r.text
    found = []
    for entry in r.json()["entries"]:
        flat = {**entry, **{f"target_{k}": v for k, v in entry["target"].items()}}
        if all(flat.get(k) == v or entry["details"].get(k) == v for k, v in match.items()):
            found.append(entry)
    return found


def test_me_says_who_is_a_server_admin(api: Api, admin: Account) -> None:
    plain = api.user()
    assert plain.get("/api/v1/users/me").json()["is_admin"] is False
    assert admin.get("/api/v1/users/me").json()["is_admin"] is True
    assert "is_admin" not in plain.get(f"/api/v1/users/{admin.id}").json()


def admin_routes() -> list[tuple[str, str]]:
    """Every admin operation of the app, from its own OpenAPI document (built from
    its routes, with no node started): a route added later is tested too."""
    paths = create_app(Settings()).openapi()["paths"]
    found = [
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith(ADMIN + "/")
        for method in operations
    ]
    assert len(found) >= 11, found
    return found


@pytest.mark.parametrize(("method", "path"), admin_routes())
def test_every_admin_route_is_refused_to_non_admins(api: Api, method: str, path: str) -> None:
    plain = api.user()
    url = path
    for name in ("user_id", "room_id", "message_id"):
        url = url.replace(f"{{{name}}}", str(uuid.uuid4()))
    assert "{" not in url, url
    assert_error(plain.http.request(method, url, json={}), 403, "forbidden")
    assert_error(api.anon.request(method, url, json={}), 401)


def test_users_are_listed_by_prefix_and_paged(api: Api, admin: Account) -> None:
    prefix = f"l{uuid.uuid4().hex[:6]}"
    made = [api.user(prefix) for _ in range(3)]
    admin.post(f"{ADMIN}/users/{made[0].id}/deactivate").raise_for_status()
    first = admin.get(f"{ADMIN}/users", params={"prefix": prefix, "limit": 2}).json()
    assert len(first["users"]) == 2 and first["next_after"] == first["users"][-1]["username"]
    rest = admin.get(
        f"{ADMIN}/users", params={"prefix": prefix, "after": first["next_after"]}
    ).json()
    listed = {u["id"]: u for u in first["users"] + rest["users"]}
    assert set(listed) == {m.id for m in made} and rest["next_after"] is None
    assert listed[made[0].id]["deactivated"] is True
    assert listed[made[1].id]["deactivated"] is False


async def test_deactivation_ends_a_live_websocket_at_once_and_blocks_login(
    api: Api, admin: Account, server: ServerThread
) -> None:
    target = api.user("d")
    ws = await ws_connect(server.url, target.access_token)
    assert (await recv(ws))["type"] == "ready"
    started = time.monotonic()
    r = await asyncio.to_thread(admin.post, f"{ADMIN}/users/{target.id}/deactivate")
    assert r.status_code == 200 and r.json()["deactivated"] is True
    frames, code = await frames_until_closed(ws)
    assert code == 1008 and frames[-1]["code"] == "session_ended"
    assert time.monotonic() - started < 5
    assert_error(target.get("/api/v1/rooms"), 401, "invalid_token")
    login = {"grant_type": "password", "username": target.username, "password": target.password}
    assert_error(api.anon.post("/api/v1/auth/token", data=login), 403, "account_deactivated")
    wrong = {**login, "password": "not the password"}
    assert_error(api.anon.post("/api/v1/auth/token", data=wrong), 400, "invalid_grant")
    refresh = {"grant_type": "refresh_token", "refresh_token": target.refresh_token}
    assert_error(api.anon.post("/api/v1/auth/token", data=refresh), 403, "account_deactivated")
    admin.post(f"{ADMIN}/users/{target.id}/reactivate").raise_for_status()
    assert api.anon.post("/api/v1/auth/token", data=login).status_code == 200
    assert audit(admin, AuditAction.DEACTIVATED, target_user_id=target.id, actor_id=admin.id)
    assert audit(admin, AuditAction.REACTIVATED, target_user_id=target.id)


async def test_deactivation_ends_a_live_sse_stream_at_once(
    api: Api, admin: Account, server: ServerThread
) -> None:
    target = api.user("sse")
    lines: list[str] = []
    url = f"{server.url}/api/v1/events/stream"
    async with (
        httpx.AsyncClient(timeout=TIMEOUT) as http,
        http.stream("GET", url, params={"access_token": target.access_token}) as response,
    ):
        assert response.status_code == 200
        async with asyncio.timeout(TIMEOUT):
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith("data: ") and '"ready"' in line:
                    deactivate = f"{ADMIN}/users/{target.id}/deactivate"
                    r = await asyncio.to_thread(admin.post, deactivate)
                    assert r.status_code == 200, r.text
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert data[-1]["type"] == "error" and data[-1]["code"] == "session_ended"


def test_admins_cannot_lock_themselves_out(admin: Account) -> None:
    assert_error(admin.post(f"{ADMIN}/users/{admin.id}/deactivate"), 403, "cannot_change_self")
    patch = admin.patch(f"{ADMIN}/users/{admin.id}", json={"is_admin": False})
    assert_error(patch, 403, "cannot_change_self")


def test_promote_demote_and_reset_password(api: Api, admin: Account) -> None:
    other = api.user("p")
    assert admin.patch(f"{ADMIN}/users/{other.id}", json={"is_admin": True}).json()["is_admin"]
    assert other.get(f"{ADMIN}/users").status_code == 200
    admin.patch(f"{ADMIN}/users/{other.id}", json={"is_admin": False}).raise_for_status()
    assert_error(other.get(f"{ADMIN}/users"), 403, "forbidden")
    reset = admin.post(f"{ADMIN}/users/{other.id}/password", json={"new_password": "brand new pw"})
    assert reset.status_code == 200, reset.text
    assert_error(other.get("/api/v1/rooms"), 401, "invalid_token")  # its session ended
    api.login(other.username, "brand new pw")
    assert audit(admin, AuditAction.PROMOTED, target_user_id=other.id)
    assert audit(admin, AuditAction.DEMOTED, target_user_id=other.id)
    assert audit(admin, AuditAction.PASSWORD_RESET, target_user_id=other.id)


def register(api: Api, **extra: Any) -> httpx.Response:
    body = {"username": f"r{uuid.uuid4().hex[:10]}", "password": "correct horse battery"}
    return api.anon.post("/api/v1/auth/register", json=body | extra)


def test_registration_modes_and_invites(api: Api, admin: Account) -> None:
    try:
        r = admin.put(f"{ADMIN}/registration", json={"mode": "closed"})
        assert r.json() == {"mode": "closed"}
        assert api.anon.get("/api/v1/auth/registration").json() == {"mode": "closed"}
        assert_error(register(api), 403, "registration_closed")
        admin.put(f"{ADMIN}/registration", json={"mode": "invite"}).raise_for_status()
        assert_error(register(api), 403, "invite_required")
        assert_error(register(api, invite="made-up"), 403, "invalid_invite")
        made = admin.post(f"{ADMIN}/invites", json={"max_uses": 2})
        assert made.status_code == 201, made.text
        code, invite_id = made.json()["code"], made.json()["invite"]["id"]
        assert register(api, invite=code).status_code == 201
        assert register(api, invite=code).status_code == 201
        assert_error(register(api, invite=code), 403, "invalid_invite")  # used up
        listed = {i["id"]: i for i in admin.get(f"{ADMIN}/invites").json()["invites"]}
        assert listed[invite_id]["uses"] == 2 and "code" not in listed[invite_id]
        short = admin.post(f"{ADMIN}/invites", json={"expires_in": 1}).json()
        time.sleep(1.1)
        assert_error(register(api, invite=short["code"]), 403, "invalid_invite")  # expired
        entries = audit(admin, AuditAction.REGISTRATION_CHANGED, actor_id=admin.id)
        assert [e["details"]["to"] for e in entries][-2:] == ["closed", "invite"]
        assert audit(admin, AuditAction.INVITE_CREATED, invite_id=invite_id)
    finally:
        admin.put(f"{ADMIN}/registration", json={"mode": "open"}).raise_for_status()
    assert register(api).status_code == 201


def test_an_admin_delete_erases_like_the_senders(api: Api, admin: Account) -> None:
    owner, member = api.user("o"), api.user("m")
    room = owner.post("/api/v1/rooms", json={"name": "erase"}).json()["id"]
    owner.post(f"/api/v1/rooms/{room}/members", json={"user_id": member.id}).raise_for_status()
    sent = member.post(f"/api/v1/rooms/{room}/messages", json={"body": "a secret to erase"})
    message = sent.json()["id"]
    member.patch(
        f"/api/v1/rooms/{room}/messages/{message}", json={"body": "an edited secret", "version": 1}
    ).raise_for_status()
    removed = admin.delete(f"{ADMIN}/rooms/{room}/messages/{message}")
    assert removed.status_code == 200, removed.text
    assert removed.json()["deleted"] is True and removed.json()["body"] == ""
    events = owner.get(f"/api/v1/rooms/{room}/events").text
    assert "secret" not in events and '"message.deleted"' in events
    assert_error(admin.delete(f"{ADMIN}/rooms/{room}/messages/{uuid.uuid4()}"), 404, "not_found")
    [entry] = audit(admin, AuditAction.MESSAGE_REMOVED, target_message_id=message)
    assert entry["target"]["user_id"] == member.id and entry["details"]["by"] == "server_admin"


def test_room_moderation_and_logins_are_audited(api: Api, admin: Account) -> None:
    owner, a, b, c = api.user("o"), api.user("a"), api.user("b"), api.user("c")
    room = owner.post("/api/v1/rooms", json={"name": "mod"}).json()["id"]
    members = f"/api/v1/rooms/{room}/members"
    owner.post(members, json={"user_id": a.id, "role": "admin"}).raise_for_status()
    owner.post(members, json={"user_id": b.id}).raise_for_status()
    owner.post(members, json={"user_id": c.id}).raise_for_status()
    sent = b.post(f"/api/v1/rooms/{room}/messages", json={"body": "rude"}).json()["id"]
    a.delete(f"/api/v1/rooms/{room}/messages/{sent}").raise_for_status()
    owner.delete(f"{members}/{b.id}").raise_for_status()
    owner.delete(f"{members}/{c.id}", params={"ban": "true"}).raise_for_status()
    assert audit(admin, AuditAction.ROLE_GRANTED, target_user_id=a.id, role="admin")
    [removed] = audit(admin, AuditAction.MESSAGE_REMOVED, target_message_id=sent)
    assert removed["actor_id"] == a.id and removed["details"]["by"] == "room_admin"
    assert audit(admin, AuditAction.KICK, target_user_id=b.id, target_room_id=room)
    assert audit(admin, AuditAction.BAN, target_user_id=c.id, target_room_id=room)
    assert audit(admin, AuditAction.LOGIN, actor_id=a.id)[-1]["ip"] == "127.0.0.1"
    bad = {"grant_type": "password", "username": a.username, "password": "wrong password"}
    api.anon.post("/api/v1/auth/token", data=bad)
    failed = audit(admin, AuditAction.LOGIN_FAILED, username=a.username)
    assert failed and failed[-1]["ip"] == "127.0.0.1" and failed[-1]["actor_id"] is None
    refresh = {"grant_type": "refresh_token", "refresh_token": a.refresh_token}
    assert api.anon.post("/api/v1/auth/token", data=refresh).status_code == 200
    assert_error(api.anon.post("/api/v1/auth/token", data=refresh), 400, "invalid_grant")
    assert audit(admin, AuditAction.REFRESH_REUSE, target_user_id=a.id)


def test_the_audit_log_pages_by_cursor(api: Api, admin: Account) -> None:
    for _ in range(3):
        api.user("pg")
    newest = admin.get(f"{ADMIN}/audit", params={"before": 2**53, "limit": 2}).json()
    ids = [e["id"] for e in newest["entries"]]
    assert ids == sorted(ids) and newest["has_more"]
    after = admin.get(f"{ADMIN}/audit", params={"after": ids[0] - 1, "limit": 5}).json()
    assert [e["id"] for e in after["entries"]][:2] == ids


def test_bad_admin_input_gets_the_error_shape(admin: Account) -> None:
    unknown = uuid.uuid4()
    assert_error(admin.patch(f"{ADMIN}/users/{unknown}", json={"is_admin": "yes"}), 422)
    assert_error(admin.patch(f"{ADMIN}/users/{unknown}", json={"is_admin": True}), 404)
    assert_error(admin.post(f"{ADMIN}/users/{unknown}/deactivate"), 404, "not_found")
    assert_error(admin.put(f"{ADMIN}/registration", json={"mode": "maybe"}), 422)
    assert_error(admin.post(f"{ADMIN}/invites", json={"max_uses": 0}), 422)
    assert_error(admin.post(f"{ADMIN}/invites", json={"expires_in": "soon"}), 422)
    assert_error(admin.get(f"{ADMIN}/audit", params={"action": "nothing"}), 422)
    assert_error(admin.get(f"{ADMIN}/audit", params={"limit": 0}), 422)
    assert_error(admin.get(f"{ADMIN}/users", params={"prefix": "a%"}), 422)
    short = admin.post(f"{ADMIN}/users/{admin.id}/password", json={"new_password": "short"})
    assert_error(short, 422)
    assert admin.get("/api/v1/users/me").json()["is_admin"] is True  # nothing changed


def test_users_rename_themselves_and_delete_their_account(api: Api, admin: Account) -> None:
    user, other = api.user("s"), api.user("t")
    renamed = user.patch("/api/v1/users/me", json={"display_name": "Sam"})
    assert renamed.status_code == 200 and renamed.json()["display_name"] == "Sam"
    assert_error(user.patch("/api/v1/users/me", json={"display_name": "  "}), 400)
    room = user.post("/api/v1/rooms", json={"name": "bye"}).json()["id"]
    user.post(f"/api/v1/rooms/{room}/members", json={"user_id": other.id}).raise_for_status()
    user.post(f"/api/v1/rooms/{room}/messages", json={"body": "stays"}).raise_for_status()
    wrong = user.http.request("DELETE", "/api/v1/users/me", json={"password": "nope"})
    assert_error(wrong, 403, "wrong_password")
    gone = user.http.request("DELETE", "/api/v1/users/me", json={"password": user.password})
    assert gone.status_code == 200, gone.text
    assert_error(user.get("/api/v1/rooms"), 401)
    login = {"grant_type": "password", "username": user.username, "password": user.password}
    assert_error(api.anon.post("/api/v1/auth/token", data=login), 400, "invalid_grant")
    [message] = other.get(f"/api/v1/rooms/{room}/messages").json()["messages"]
    assert message["body"] == "stays"
    sender = other.get(f"/api/v1/users/{user.id}").json()
    assert sender["display_name"] == "Deleted user"
    again = api.anon.post(
        "/api/v1/auth/register", json={"username": user.username, "password": "another pass"}
    )
    assert again.status_code == 201 and again.json()["user"]["id"] != user.id
    assert audit(admin, AuditAction.ACCOUNT_DELETED, target_user_id=user.id)


def test_the_cli_administers_and_prints_the_audit_log(
    api: Api, server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    target = api.user("cli")
    capsys.readouterr()
    assert cli(server, "users", "deactivate", target.username) == 0
    assert "deactivated" in capsys.readouterr().out
    assert cli(server, "users", "list", "--prefix", target.username, "--json") == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["id"] == target.id and listed["deactivated"] is True
    assert cli(server, "users", "reactivate", target.username) == 0
    assert cli(server, "invites", "create", "--max-uses", "1") == 0
    assert len(capsys.readouterr().out.split()[-1]) >= 20  # the code
    assert cli(server, "keys", "rotate") == 0
    capsys.readouterr()
    assert cli(server, "audit", "--action", "keys.rotated", "--json", "--limit", "1") == 0
    [entry] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["action"] == "keys.rotated" and entry["details"]["key_id"] >= 2
    assert cli(server, "audit", "--limit", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "keys.rotated" in lines[-1]
    assert cli(server, "users", "promote", "no-such-user") == 1
    assert capsys.readouterr().err.strip() == "error: no user 'no-such-user'"
    assert cli(server, "registration") == 0
    assert capsys.readouterr().out.strip() == "registration: open"


async def test_a_cli_deactivation_reaches_the_nodes_on_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``parley admin users deactivate`` publishes the ended sessions on the bus, as
    the API does: a node's open WebSocket of that user closes at once."""
    require_service("redis")
    bus_url = f"redis://127.0.0.1:6379/0?prefix=t{uuid.uuid4().hex[:8]}"
    with ServerThread(tmp_path / "data", rate_limits="off", bus_url=bus_url) as node:
        api = Api(node)
        try:
            target = api.user("bus")
            ws = await ws_connect(node.url, target.access_token)
            assert (await recv(ws))["type"] == "ready"
            monkeypatch.setenv("PARLEY_BUS_URL", bus_url)
            assert await asyncio.to_thread(cli, node, "users", "deactivate", target.username) == 0
            frames, code = await frames_until_closed(ws)
            assert code == 1008 and frames[-1]["code"] == "session_ended"
            assert_error(target.get("/api/v1/rooms"), 401, "invalid_token")
        finally:
            api.close()
