"""The OpenAPI document describes the errors the server really sends."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from parley.testing.server import ServerThread
from tests.component.conftest import Api


@pytest.fixture(scope="module")
def document(server: ServerThread) -> dict[str, Any]:
    schema: dict[str, Any] = httpx.get(f"{server.url}/openapi.json").json()
    return schema


def check(
    document: dict[str, Any], method: str, path: str, response: httpx.Response, expected: int
) -> None:
    """``response`` is the ``expected`` error, a status the operation documents, in
    the shape documented, with a code its description names."""
    assert response.status_code == expected, response.text
    operation = document["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], (method, path, status, response.text)
    documented = operation["responses"][status]["content"]["application/json"]["schema"]
    assert documented == {"$ref": "#/components/schemas/Error"}
    body = response.json()
    error_schema = document["components"]["schemas"]["Error"]
    assert set(body) == set(error_schema["required"])
    inner = error_schema["properties"]["error"]
    assert set(inner["required"]) <= set(body["error"]) <= set(inner["properties"])
    assert all(isinstance(body["error"][k], str) for k in ("code", "message"))
    assert body["error"]["code"] in operation["responses"][status]["description"]


def test_no_fastapi_validation_shape_anywhere(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(document)
    assert "'detail'" not in str(document["components"]["schemas"])  # FastAPI's own key
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and path.startswith("/api/v1/"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
            if "security" in operation:
                assert "401" in operation["responses"], (method, path)


def test_documented_errors_match_real_answers(api: Api, document: dict[str, Any]) -> None:
    alice, bob = api.user(), api.user()
    rooms, room_path = "/api/v1/rooms", "/api/v1/rooms/{room_id}"
    messages_path = "/api/v1/rooms/{room_id}/messages"
    check(document, "get", rooms, api.anon.get(rooms), 401)
    check(document, "post", rooms, alice.post(rooms, json={"name": 5}), 422)
    malformed = alice.post(
        rooms, content=b"{not json", headers={"content-type": "application/json"}
    )
    check(document, "post", rooms, malformed, 400)
    check(document, "get", room_path, alice.get(f"{rooms}/nope"), 404)
    private = alice.post(rooms, json={"name": "r", "visibility": "private"}).json()
    public = alice.post(rooms, json={"name": "p", "visibility": "public"}).json()
    page = alice.get(f"{rooms}/{private['id']}/messages", params={"limit": 0})
    check(document, "get", messages_path, page, 422)
    check(document, "get", messages_path, bob.get(f"{rooms}/{public['id']}/messages"), 403)
    too_big = alice.post(f"{rooms}/{private['id']}/messages", json={"body": "x" * 20_000})
    check(document, "post", messages_path, too_big, 413)
    taken = api.anon.post(
        "/api/v1/auth/register", json={"username": alice.username, "password": "x" * 10}
    )
    check(document, "post", "/api/v1/auth/register", taken, 409)
    wrong = api.anon.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": bob.username, "password": "wrong" * 3},
    )
    check(document, "post", "/api/v1/auth/token", wrong, 400)
    self_dm = alice.post("/api/v1/dms", json={"user_id": alice.id})
    check(document, "post", "/api/v1/dms", self_dm, 403)
