"""The OpenAPI document with the answers the server really sends.

FastAPI documents 422 as its own ``{"detail": [...]}`` and no other error; every
error of this API is ``{"error": {"code", "message"}}`` (``gateway/errors.py``).
This replaces those answers with one shared ``Error`` schema and adds, to each
operation, the statuses it can answer: by rule (a body can be malformed or too
large, a bearer token missing, a room unseen, any request too slow to arrive)
plus the few that only some operations have (``EXTRA``), and the second success
status of the two operations that have one (``SUCCESS``). Schemathesis checks
every answer against this (``tests/component/test_schemathesis.py``)."""

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

ADMIN_PREFIX = "/api/v1/admin/"

CODES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "bad_request (malformed HTTP)"),
    401: ("No valid access token", "unauthorized, invalid_token, token_expired"),
    403: ("Not allowed", "forbidden, banned, not_a_member"),
    404: ("Not found, or not visible to the caller", "not_found"),
    408: ("The request did not arrive in time (slow client); the connection closes", ""),
    409: ("Conflict", "conflict"),
    413: ("Request body too large", "too_large"),
    421: ("The Host is not this server's (when PARLEY_PUBLIC_URL is set)", ""),
    422: ("A field's type or shape is wrong", "invalid_input"),
    429: ("Rate limited: retry after Retry-After seconds", "rate_limited"),
    503: (
        "A backend (database, bus, cache) is down, the node is stopping, or it has "
        "too many connections (then with Retry-After)",
        "unavailable",
    ),
}

EXTRA: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/api/v1/auth/register"): {
        400: "invalid_username, invalid_password",
        403: "registration_closed, invite_required, invalid_invite",
        409: "username_taken",
        429: "rate_limited",
    },
    ("post", "/api/v1/auth/token"): {
        400: "invalid_grant, invalid_request, unsupported_grant_type",
        403: "account_deactivated (the right password of a deactivated account, or its "
        "refresh token)",
        429: "rate_limited",
    },
    ("patch", "/api/v1/users/me"): {400: "invalid_input (display_name)"},
    ("delete", "/api/v1/users/me"): {403: "wrong_password"},
    ("patch", "/api/v1/admin/users/{user_id}"): {403: "cannot_change_self"},
    ("post", "/api/v1/admin/users/{user_id}/deactivate"): {403: "cannot_change_self"},
    ("post", "/api/v1/admin/users/{user_id}/password"): {400: "invalid_password"},
    ("post", "/api/v1/auth/revoke"): {429: "rate_limited"},
    ("get", "/api/v1/auth/registration"): {429: "rate_limited"},
    ("post", "/api/v1/rooms/{room_id}/messages"): {
        413: "too_large",
        404: "not_found (the room, or thread_root_id: unknown, deleted or another room's)",
    },
    ("patch", "/api/v1/rooms/{room_id}/messages/{message_id}"): {
        409: "version_conflict (with current_version), conflict (a deleted message)"
    },
    ("post", "/api/v1/dms"): {
        400: "invalid_input (user_ids: not 2 to 9 distinct others, or the caller among them)",
        403: "dm_with_self",
        404: "not_found (no such user)",
    },
    ("delete", "/api/v1/rooms/{room_id}/members/{user_id}"): {403: "cannot_remove_self"},
    ("get", "/api/v1/events/stream"): {401: "unauthorized, invalid_token, token_expired"},
    ("post", "/api/v1/rooms/{room_id}/leave"): {403: "forbidden (a 1:1 direct room)"},
    ("put", "/api/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}"): {
        400: "invalid_input (not an emoji)"
    },
    ("delete", "/api/v1/rooms/{room_id}/messages/{message_id}/reactions/{emoji}"): {
        400: "invalid_input (not an emoji)"
    },
    ("get", "/api/v1/search"): {400: "invalid_input (an empty or malformed q, a malformed cursor)"},
    ("get", "/metrics"): {403: "forbidden (not from an allowed address, no token)"},
    ("post", "/api/v1/users/me/password"): {
        400: "invalid_password (the new one)",
        403: "wrong_password (the current one)",
    },
}

SUCCESS: dict[tuple[str, str], tuple[int, int, str]] = {
    ("post", "/api/v1/dms"): (200, 201, "The direct room, made now"),
    ("post", "/api/v1/rooms/{room_id}/messages"): (
        201,
        200,
        "The message stored before under the same client_msg_id (nothing stored)",
    ),
}
"""(documented status, other status with the same body, its description)."""

SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string", "description": "ready, or absent for a room event"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The WebSocket's frame: ready, event or error",
        },
        "id": {"type": "string", "description": "Cursors, for Last-Event-ID"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
"""One Server-Sent Event (``itemSchema``, as FastAPI documents its own streams)."""

RETRY_AFTER: dict[str, Any] = {
    "description": "Seconds to wait.",
    "schema": {"type": "integer", "minimum": 1},
}


def statuses(method: str, path: str, operation: dict[str, Any]) -> dict[int, str]:
    """Each error status ``operation`` can answer, with its codes."""
    found: dict[int, str] = {400: CODES[400][1]}
    has_body = "requestBody" in operation
    has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
    if has_body:
        found[400] += ", malformed_json, invalid_input"
        found[413] = "too_large"
    if has_body or has_query:
        found[422] = CODES[422][1]
    if "security" in operation:
        found[401] = CODES[401][1]
        found[429] = CODES[429][1]
    if "{room_id}" in path:
        found[403] = CODES[403][1]
        found[404] = "not_found"
    if "{user_id}" in path or "{message_id}" in path:
        found[404] = "not_found"
    if path.startswith(ADMIN_PREFIX):
        found[403] = "forbidden (not a server admin)"
    found[408] = "request_timeout"
    found[421] = "misdirected_request"
    found[503] = CODES[503][1]
    for status, codes in EXTRA.get((method, path), {}).items():
        found[status] = (
            f"{found[status]}, {codes}" if status in (400, 403) and status in found else codes
        )
    return found


def document_errors(schema: dict[str, Any], max_body_bytes: int | None = None) -> dict[str, Any]:
    """Put the real answers into ``schema`` (in place; also returned). A message
    body is at most ``max_body_bytes`` bytes of UTF-8 (413 beyond): JSON Schema
    counts characters, so this many characters is the nearest it can say."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR_SCHEMA
    if max_body_bytes is not None:
        for model in ("MessageIn", "MessagePatch"):
            if model in components:
                components[model]["properties"]["body"]["maxLength"] = max_body_bytes
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if (method, path) in SUCCESS:
                documented, other, description = SUCCESS[(method, path)]
                responses[str(other)] = dict(responses[str(documented)], description=description)
            for media, content in responses.get("200", {}).get("content", {}).items():
                if media == "text/event-stream":
                    content.pop("schema", None)
                    content["itemSchema"] = SSE_EVENT
            for status, codes in sorted(statuses(method, path, operation).items()):
                answer: dict[str, Any] = {
                    "description": f"{CODES[status][0]}: {codes}",
                    "content": {"application/json": {"schema": ref}},
                }
                if status == 429:
                    answer["headers"] = {"Retry-After": {"required": True, **RETRY_AFTER}}
                if status == 503:
                    answer["headers"] = {"Retry-After": RETRY_AFTER}
                responses[str(status)] = answer
    return schema


def install(app: FastAPI) -> None:
    """Have ``app`` serve the corrected document (built once, on first request)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            runtime = getattr(app.state, "runtime", None)
            limit = runtime.settings.max_body_bytes if runtime is not None else None
            app.openapi_schema = document_errors(build(), limit)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
