"""Auth flows against a real node: register, password and refresh grants, rotation,
reuse detection, revocation, and the properties of the access token."""

from __future__ import annotations

import base64
import json
import os
import stat

import jwt

from parley.testing.server import ServerThread
from tests.component.conftest import Api, assert_error


def refresh(api: Api, token: str):  # type: ignore[no-untyped-def]
    return api.anon.post(
        "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )


def test_register_login_me(api: Api) -> None:
    alice = api.user("alice")
    me = alice.get("/api/v1/users/me").json()
    user = {"id": alice.id, "username": alice.username, "display_name": alice.username}
    assert me == {**user, "is_admin": False}  # only /users/me says is_admin
    assert alice.get(f"/api/v1/users/{alice.id}").json() == user
    found = alice.get("/api/v1/users", params={"username": alice.username}).json()
    assert found == {"users": [user]}


def test_register_display_name_and_taken(api: Api) -> None:
    r = api.anon.post(
        "/api/v1/auth/register",
        json={"username": "carol.x", "password": "long enough pw", "display_name": "Carol X"},
    )
    assert r.status_code == 201
    assert r.json()["user"]["display_name"] == "Carol X"
    again = api.anon.post(
        "/api/v1/auth/register", json={"username": "carol.x", "password": "another password"}
    )
    assert_error(again, 409, "username_taken")


def test_register_rejects_bad_usernames(api: Api) -> None:
    for bad in ["ab", "UPPER", "has space", "x" * 33, "émile", "a/b"]:
        r = api.anon.post("/api/v1/auth/register", json={"username": bad, "password": "x" * 10})
        assert_error(r, 422)


def test_wrong_password_and_unknown_user_look_alike(api: Api) -> None:
    alice = api.user()
    for username, password in [(alice.username, "wrong password"), ("nobody-here", "x" * 10)]:
        r = api.anon.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": username, "password": password},
        )
        assert_error(r, 400, "invalid_grant")


def test_unsupported_grant(api: Api) -> None:
    r = api.anon.post("/api/v1/auth/token", data={"grant_type": "client_credentials"})
    assert_error(r, 400, "unsupported_grant_type")


def test_refresh_rotates_and_reuse_revokes_family(api: Api) -> None:
    alice = api.user()
    first = refresh(api, alice.refresh_token)
    assert first.status_code == 200
    second_token = first.json()["refresh_token"]
    assert second_token != alice.refresh_token
    # The old token again: reuse. The whole family dies, including the newest token.
    assert_error(refresh(api, alice.refresh_token), 400, "invalid_grant")
    assert_error(refresh(api, second_token), 400, "invalid_grant")
    # A fresh login starts a new family that works.
    tokens = api.login(alice.username, alice.password)
    assert refresh(api, tokens["refresh_token"]).status_code == 200


def test_revoke_stops_the_family(api: Api) -> None:
    alice = api.user()
    rotated = refresh(api, alice.refresh_token).json()["refresh_token"]
    assert api.anon.post("/api/v1/auth/revoke", json={"token": rotated}).status_code == 200
    assert_error(refresh(api, rotated), 400, "invalid_grant")
    # Unknown tokens are accepted silently (RFC 7009).
    assert api.anon.post("/api/v1/auth/revoke", json={"token": "nope"}).status_code == 200


def test_access_token_claims(api: Api) -> None:
    alice = api.user()
    header = jwt.get_unverified_header(alice.access_token)
    assert header["alg"] == "HS256" and header["kid"]
    claims = jwt.decode(alice.access_token, options={"verify_signature": False})
    assert claims["sub"] == alice.id
    assert {"exp", "iat", "iss", "aud"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 900


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_forged_and_missing_tokens_are_refused(api: Api) -> None:
    alice = api.user()
    claims = jwt.decode(alice.access_token, options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    wrong_key = jwt.encode(claims, "not the server key, but long enough!", algorithm="HS256")
    for token in [unsigned, wrong_key, "garbage", alice.access_token + "x"]:
        r = api.anon.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        assert_error(r, 401)
    assert_error(api.anon.get("/api/v1/users/me"), 401)
    assert_error(api.anon.get("/api/v1/rooms"), 401)


def test_signing_key_is_private(server: ServerThread) -> None:
    key = server.settings.data_dir / "jwt.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
