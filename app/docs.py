"""The API's documentation page (Swagger UI) served with its assets: no CDN, so an install
without outside network shows working docs.

FastAPI's own page loads Swagger UI's script, stylesheet and favicon from a CDN. Here they come
from the `fastapi-swagger` package (the Swagger UI distribution files, kept current), under
`/docs/assets/`. The page gets a Content-Security-Policy that names no outside host, so the
browser refuses anything that would reach one (the inline script is allowed by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from utils.errors import NotFound

ASSETS_PACKAGE = "fastapi_swagger.resources"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
# No online validator badge: it would send the document's URL to an outside host.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def assets_directory() -> Path:
    """Where the installed package keeps the Swagger UI files."""
    directory = Path(str(resources.files(ASSETS_PACKAGE)))
    missing = [name for name in ASSETS if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"{ASSETS_PACKAGE} lacks the Swagger UI files {missing}")
    return directory


def install_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Adds the documentation page at `docs_url`, its assets at `{docs_url}/assets/{name}` and
    the OAuth2 redirect page (at `app.swagger_ui_oauth2_redirect_url`), none in the schema.

    The app must be created with `docs_url=None`, else FastAPI's CDN page takes the path."""
    if app.docs_url is not None:
        raise RuntimeError("create the app with docs_url=None: install_docs serves the page")
    if app.openapi_url is None:
        raise RuntimeError("the app serves no OpenAPI document to show")
    directory = assets_directory()
    openapi_url = app.openapi_url
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url
    assets_url = f"{docs_url.rstrip('/')}/assets"
    parameters = {**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})}

    async def swagger_ui_page(request: Request) -> Response:
        root_path = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root_path + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root_path}{assets_url}/swagger-ui-bundle.js",
            swagger_css_url=f"{root_path}{assets_url}/swagger-ui.css",
            swagger_favicon_url=f"{root_path}{assets_url}/favicon-32x32.png",
            oauth2_redirect_url=root_path + oauth2_redirect_url if oauth2_redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )
        return _with_policy(page)

    async def oauth2_redirect_page(request: Request) -> Response:
        return _with_policy(get_swagger_ui_oauth2_redirect_html())

    stats = {name: (directory / name).stat() for name in ASSETS}

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise NotFound("No such file")
        # The URL does not change with the package's version: the browser revalidates.
        response = FileResponse(
            directory / name,
            media_type=ASSETS[name],
            headers={"Cache-Control": "no-cache"},
            stat_result=stats[name],
        )
        tags = request.headers.get("if-none-match", "")
        if response.headers["etag"] in (tag.strip() for tag in tags.split(",")):
            return Response(status_code=304, headers=_validators(response))
        return response

    app.add_route(docs_url, swagger_ui_page, include_in_schema=False)
    app.add_route(f"{assets_url}/{{name}}", asset, include_in_schema=False)
    if oauth2_redirect_url:
        app.add_route(oauth2_redirect_url, oauth2_redirect_page, include_in_schema=False)


def page_policy(html: str) -> str:
    """The page's Content-Security-Policy: this origin only, and the page's own inline
    scripts by their hashes (Swagger UI's stylesheet carries its icons as data: URLs)."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self';"
        " img-src 'self' data:; font-src 'self' data:; connect-src 'self';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _validators(response: Response) -> dict[str, str]:
    return {name: response.headers[name] for name in ("etag", "last-modified", "cache-control")}


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = page_policy(bytes(page.body).decode())
    return page
