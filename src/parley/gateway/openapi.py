"""The OpenAPI document with the errors the server really sends.

FastAPI documents 422 as its own ``{"detail": [...]}`` and no other error; every
error of this API is ``{"error": {"code", "message"}}`` (``gateway/errors.py``).
This replaces those answers with one shared ``Error`` schema and adds, to each
operation, the statuses it can answer: by rule (a body can be malformed or too
large, a bearer token missing, a room unseen) plus the few that only some
operations have (``EXTRA``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable, for programs."},
                "message": {"type": "string", "description": "For people."},
                "current_version": {
                    "type": "integer",
                    "description": "409 version_conflict only: the message's version now.",
                },
            },
        }
    },
}

CODES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "malformed_json, invalid_input, invalid_request, empty_body"),
    401: ("No valid access token", "unauthorized, invalid_token, token_expired"),
    403: ("Not allowed", "forbidden, banned, not_a_member"),
    404: ("Not found, or not visible to the caller", "not_found"),
    409: ("Conflict", "conflict"),
    413: ("Request body too large", "too_large"),
    422: ("A field's type or shape is wrong", "invalid_input"),
    429: ("Rate limited: retry after Retry-After seconds", "rate_limited"),
    503: ("A backend (database, bus, cache) is down, or the node is stopping", "unavailable"),
}

EXTRA: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/api/v1/auth/register"): {
        400: "invalid_username, invalid_password",
        409: "username_taken",
        429: "rate_limited",
    },
    ("post", "/api/v1/auth/token"): {
        400: "invalid_grant, invalid_request, unsupported_grant_type",
        429: "rate_limited",
    },
    ("post", "/api/v1/rooms/{room_id}/messages"): {413: "too_large", 429: "rate_limited"},
    ("patch", "/api/v1/rooms/{room_id}/messages/{message_id}"): {
        409: "version_conflict (with current_version), conflict (a deleted message)"
    },
    ("post", "/api/v1/dms"): {400: "dm_with_self", 404: "not_found (no such user)"},
    ("delete", "/api/v1/rooms/{room_id}/members/{user_id}"): {400: "cannot_remove_self"},
    ("get", "/api/v1/events/stream"): {401: "unauthorized, invalid_token, token_expired"},
    ("post", "/api/v1/rooms/{room_id}/leave"): {403: "forbidden (a direct room)"},
}


def statuses(method: str, path: str, operation: dict[str, Any]) -> dict[int, str]:
    """Each error status ``operation`` can answer, with its codes."""
    found: dict[int, str] = {}
    has_body = "requestBody" in operation
    has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
    if has_body:
        found[400] = "malformed_json, invalid_input"
        found[413] = "too_large"
    if has_body or has_query:
        found[422] = CODES[422][1]
    if "security" in operation:
        found[401] = CODES[401][1]
    if "{room_id}" in path:
        found[403] = CODES[403][1]
        found[404] = "not_found"
    if "{user_id}" in path or "{message_id}" in path:
        found[404] = "not_found"
    if path.startswith("/api/v1/"):
        found[503] = CODES[503][1]
    for status, codes in EXTRA.get((method, path), {}).items():
        found[status] = f"{found[status]}, {codes}" if status == 400 and status in found else codes
    return found


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Put the real error answers into ``schema`` (in place; also returned)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, codes in sorted(statuses(method, path, operation).items()):
                answer: dict[str, Any] = {
                    "description": f"{CODES[status][0]}: {codes}",
                    "content": {"application/json": {"schema": ref}},
                }
                if status == 429:
                    answer["headers"] = {
                        "Retry-After": {
                            "description": "Seconds to wait.",
                            "schema": {"type": "integer"},
                        }
                    }
                responses[str(status)] = answer
    return schema


def install(app: FastAPI) -> None:
    """Have ``app`` serve the corrected document (built once, on first request)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
