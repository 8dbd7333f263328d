"""``/docs``: Swagger UI from files the package ships (``web/vendor/swagger-ui``),
so the API's reference works with no internet, under a Content-Security-Policy that
allows scripts from this server only: the page has no inline script, and its one
setting (where the OpenAPI document is) is in ``/docs/init.js``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

import parley

ASSETS = Path(parley.__file__).parent / "web" / "vendor" / "swagger-ui"
ASSETS_PATH = "/docs/assets"

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley API</title>
<link rel="icon" href="/favicon.svg">
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

# validatorUrl null: no badge fetched from the Swagger validator's site.
INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
});
"""


def install(app: FastAPI) -> None:
    """Serve ``/docs``, its start-up script and Swagger UI's files (before the web
    client's catch-all mount, which would otherwise answer these paths)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/docs/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(INIT, media_type="text/javascript")

    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")
