"""Pure ASGI middleware: body-size limit, security headers, the ``Host`` check,
the ``/metrics`` guard, and the API's own 405s under the web client's mount.

Pure ASGI (not ``BaseHTTPMiddleware``) so it adds no task per request and leaves
WebSocket and streaming responses alone.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley.protocol import codec

# The web client loads only its own files; nothing inline, no frames (clickjacking).
# ``connect-src`` names the server's own WebSocket origin (``{ws}``), not any host.
CSP_TEMPLATE = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'{ws}; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
"""A ``Host`` value safe to name in a header (no spaces, quotes or semicolons)."""
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
# Swagger UI (gateway/docs.py) loads only this server's files, as the web client
# does; the OpenAPI document may carry data: images.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
DOCS_PATHS = ("/docs",)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def normal_host(host: str, scheme: str) -> str:
    """``host[:port]`` in lower case, without the scheme's default port."""
    host = host.strip().lower().rstrip(".")
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and not name.endswith(":") and _DEFAULT_PORTS.get(scheme) == port:
        return name
    return host


def _json_error(status: int, code: str, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = codec.dumps({"error": {"code": code, "message": message}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return headers, body


async def _answer(
    send: Send,
    status: int,
    code: str,
    message: str,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers, body = _json_error(status, code, message)
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """CSP and friends on every HTTP answer. The CSP's ``connect-src`` names the
    WebSocket origin of ``public_url`` if set, else the request's own ``Host``.
    ``hsts_max_age``: the server itself answers HTTPS only (``PARLEY_TLS_CERT``), so
    browsers are told never to try plain HTTP for this host."""

    def __init__(
        self, app: ASGIApp, public_url: str | None = None, hsts_max_age: int | None = None
    ) -> None:
        self.app = app
        self.hsts = None if hsts_max_age is None else b"max-age=%d" % hsts_max_age
        self.fixed_csp: str | None = None
        if public_url:
            parts = urlsplit(public_url)
            ws = "wss" if parts.scheme == "https" else "ws"
            self.fixed_csp = CSP_TEMPLATE.format(ws=f" {ws}://{parts.netloc}")

    def csp(self, scope: Scope) -> str:
        if self.fixed_csp is not None:
            return self.fixed_csp
        host = _header(scope, b"host")
        if host is None or not _HOST_RE.match(host):
            return CSP_TEMPLATE.format(ws="")
        # Behind a TLS proxy that is not trusted the scheme is unknown: both.
        return CSP_TEMPLATE.format(ws=f" ws://{host} wss://{host}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else self.csp(scope)
        hsts = self.hsts

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if hsts is not None:
                    headers.append((b"strict-transport-security", hsts))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before any route reads
    them, whether or not ``Content-Length`` tells the truth."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _reject(send, self.limit)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await _reject(send, self.limit)


async def _reject(send: Send, limit: int) -> None:
    body = codec.dumps(
        {"error": {"code": "too_large", "message": f"request body over {limit} bytes"}}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HostCheck:
    """With ``PARLEY_PUBLIC_URL`` set, only requests naming its host are served
    (HTTP and WebSocket): a page on a rebound DNS name (DNS rebinding) reaches the
    node's address but names its own host. Health probes, which name whatever
    address they dial, are exempt."""

    EXEMPT = ("/healthz", "/readyz")

    def __init__(self, public_url: str) -> None:
        parts = urlsplit(public_url)
        self.scheme = parts.scheme or "http"
        self.host = normal_host(parts.netloc, self.scheme)

    def allows(self, scope: Scope) -> bool:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.EXEMPT:
            return True
        host = _header(scope, b"host")
        return host is not None and normal_host(host, self.scheme) == self.host

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = "this server answers for its public host only"
        if scope["type"] == "http":
            await _answer(send, 421, "misdirected_request", message)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            headers, body = _json_error(421, "misdirected_request", message)
            start = {"type": "websocket.http.response.start", "status": 421, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


class MetricsGuard:
    """``/metrics`` only with ``Authorization: Bearer <token>`` (when a token is set)
    or from the allowed addresses (by default loopback): the figures describe the
    node's load and are nobody else's business."""

    PATH = "/metrics"

    def __init__(self, app: ASGIApp, *, token: str | None, allow: Sequence[str]) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allow = [ipaddress.ip_network(a, strict=False) for a in allow]

    def _allowed(self, scope: Scope) -> bool:
        if self.token is not None:
            given = _header(scope, b"authorization") or ""
            kind, _, value = given.partition(" ")
            if kind.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token):
                return True
        client = scope.get("client")
        try:
            address = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        return address is not None and any(address in net for net in self.allow)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.PATH and not self._allowed(scope):
            extra = [(b"www-authenticate", b"Bearer")] if self.token is not None else []
            await _answer(send, 403, "forbidden", "metrics are not public", extra)
            return
        await self.app(scope, receive, send)


class ApiPaths:
    """In front of the web client's static files mounted at ``/``: an ``/api/``
    path the router did not match is the API's, never a file. A method the path
    does not take is 405 with the path's ``Allow``; an unknown path 404.
    ``routes``: the API's routes, their paths in full."""

    PREFIX = "/api/"

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = [r for r in routes if isinstance(r, Route)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.PREFIX):
            await self.app(scope, receive, send)
            return
        methods: set[str] = set()
        for route in self.routes:
            if route.methods:
                match, _ = route.matches(scope)
                if match is not Match.NONE:
                    methods |= route.methods
        if not methods:
            await _answer(send, 404, "not_found", "Not Found")
            return
        allow = ", ".join(sorted(methods)).encode()
        await _answer(send, 405, "method_not_allowed", "Method Not Allowed", [(b"allow", allow)])
