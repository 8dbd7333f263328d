"""The ASGI app of one node: REST, WebSocket, SSE, health, metrics, the web client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

import parley
from parley.gateway import admin, docs, errors, openapi, rest
from parley.gateway.metrics import router as metrics_router
from parley.gateway.middleware import (
    ApiPaths,
    BodyLimit,
    HostCheck,
    MetricsGuard,
    SecurityHeaders,
)
from parley.gateway.ratelimit import RateLimiter
from parley.gateway.runtime import Runtime
from parley.gateway.sse import router as sse_router
from parley.gateway.ws import PATH as WS_PATH
from parley.gateway.ws import router as ws_router
from parley.gateway.ws import ws_endpoint
from parley.settings import Settings

log = logging.getLogger("parley")

WEB_DIR = Path(parley.__file__).parent / "web"
MAX_REQUEST_BYTES = 1 << 20

READY_TIMEOUT = 2.0
"""Seconds each ``/readyz`` check may take: a load balancer's probe (nginx, Kubernetes)
usually gives up after a few seconds, and a port that hangs is as unready as one that
refuses."""

DESCRIPTION = """Parley's public API. Authenticate with `POST /api/v1/auth/token`
(OAuth2 password grant) and send `Authorization: Bearer <access_token>`.
Real-time: WebSocket at `/api/v1/ws` and Server-Sent Events at
`/api/v1/events/stream` (frames in `docs/protocol.md`)."""


class Pingable(Protocol):
    """What ``/readyz`` asks of the store, the bus and the cache."""

    async def ping(self) -> None: ...


async def _check(port: Pingable) -> str:
    """``"ok"``, or why not in one line: any failure of a ping means not ready."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await port.ping()
    except TimeoutError:
        return f"timed out after {READY_TIMEOUT:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return "ok"


class ParleyApp(FastAPI):
    """FastAPI, but the WebSocket endpoint is called directly.

    A WebSocket connection lives for hours, and every ASGI middleware and router
    layer it passes keeps a coroutine frame alive for all that time (~6 KiB per
    idle connection here); none of them does anything for a raw ASGI endpoint that
    checks its own Origin and token and answers errors in its own frames. HTTP
    requests, and any other WebSocket path, take the normal stack."""

    host_check: HostCheck | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host_check = self.host_check
        if host_check is not None and not host_check.allows(scope):
            await host_check.refuse(scope, receive, send)
            return
        if scope["type"] == "websocket" and scope["path"] in (
            WS_PATH,
            scope.get("root_path", "") + WS_PATH,
        ):
            scope["app"] = self
            await ws_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> ParleyApp:
    """One node's app; the runtime (store, bus, cache, hub) starts with its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = await Runtime.start(settings)
        app.state.runtime = rt
        app.state.limiter = RateLimiter(rt.cache, settings, enabled=settings.rate_limits == "on")
        log.info("parley %s node %s ready", parley.__version__, rt.node_id)
        try:
            yield
        finally:
            await rt.close()

    app = ParleyApp(
        title="Parley",
        version=parley.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url=None,  # gateway/docs.py: Swagger UI from the package, not a CDN
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(rest.router)
    app.include_router(admin.router)
    app.include_router(ws_router)
    app.include_router(sse_router)
    app.include_router(metrics_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Database, bus and cache all answer; 503 naming the one that does not, or
        ``draining`` once the node was told to stop (the load balancer stops sending)."""
        rt: Runtime = request.app.state.runtime
        ports: dict[str, Pingable] = {"database": rt.store, "bus": rt.bus, "cache": rt.cache}
        results = await asyncio.gather(*(_check(port) for port in ports.values()))
        checks = dict(zip(ports, results, strict=True))
        draining = rt.hub.closing
        ready = not draining and all(v == "ok" for v in checks.values())
        status = "draining" if draining else "ready" if ready else "unavailable"
        body: dict[str, Any] = {
            "status": status,
            "node_id": rt.node_id,
            "checks": checks,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    docs.install(app)
    openapi.install(app)
    if WEB_DIR.is_dir():
        web = StaticFiles(directory=WEB_DIR, html=True)
        api_routes = [*rest.router.routes, *admin.router.routes, *sse_router.routes]
        app.mount("/", ApiPaths(web, api_routes), name="web")
    if settings.public_url:
        app.host_check = HostCheck(settings.public_url)

    # The web client's first load: ~165 KB of files, ~45 KB gzipped. SSE is exempt.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(BodyLimit, limit=MAX_REQUEST_BYTES)
    app.add_middleware(MetricsGuard, token=settings.metrics_token, allow=settings.metrics_networks)
    app.add_middleware(
        SecurityHeaders,
        public_url=settings.public_url,
        hsts_max_age=settings.hsts_max_age if settings.tls else None,
    )
    return app
