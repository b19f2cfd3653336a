"""/openapi.json and /docs: the OpenAPI document of this app's own routes (http/openapi.py) and
Swagger UI rendering it. Swagger UI's files come from the swagger-ui-py package (Apache-2.0), served
from here: the page loads nothing from another origin, and its CSP says so. No customer data, so no
token; the Host allowlist applies as everywhere."""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from billingwatch.http.openapi import DOCS_ASSETS, Json, document

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BillingWatch API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
<link rel="stylesheet" href="docs/static/swagger-ui.css">
</head><body>
<div id="swagger-ui"><noscript>This page needs JavaScript; the document itself is
<a href="openapi.json">/openapi.json</a>.</noscript></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/static/docs.js"></script>
</body></html>
"""

MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}


def package_dir(name: str) -> Path:
    """A package's directory, found without importing it (swagger_ui's __init__ pulls in jinja2)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed; it ships the /docs assets")
    return Path(next(iter(spec.submodule_search_locations)))


def asset_paths() -> dict[str, Path]:
    ours = Path(__file__).resolve().parent / "docs_static"
    theirs = package_dir("swagger_ui") / "static"
    return {name: (ours if name == "docs.js" else theirs) / name for name in DOCS_ASSETS}


class ApiDocs:
    def __init__(self, detector_names: Sequence[str]) -> None:
        self._detector_names = tuple(detector_names)
        self._document: Json | None = None
        self._assets = asset_paths()

    async def openapi(self, request: Request) -> Response:
        if self._document is None:  # the routes are the app's own: known once the app exists
            self._document = document(request.app.routes, self._detector_names)
        return JSONResponse(self._document)

    async def page(self, request: Request) -> Response:
        return Response(PAGE, media_type="text/html", headers={"Content-Security-Policy": CSP})

    async def asset(self, request: Request) -> Response:
        path = self._assets.get(request.path_params["name"])
        if path is None:
            return JSONResponse({"error": "no such asset"}, status_code=404)
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"})
