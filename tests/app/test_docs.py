"""/docs works offline: the Swagger UI page and its assets come from this server, and the page
names no outside host (the browser test in tests/e2e/test_docs_page.py renders it)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from app.docs import ASSETS, install_docs
from app.errors import install_error_handlers

BASE_URL = "http://assay.test"
# What each kind of asset must be: a content type, and more than a stub of a file.
EXPECTED = {
    ".js": ("text/javascript", 500_000),
    ".css": ("text/css", 50_000),
    ".png": ("image/png", 100),
}


class _Links(HTMLParser):
    """Every src and href of a page, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script" and not dict(attrs).get("src")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.scripts.append(data)


def parse(html: str) -> _Links:
    links = _Links()
    links.feed(html)
    links.close()
    return links


def outside_references(html: str) -> list[str]:
    """Whatever in the page could point at another host: absolute or scheme-relative URLs,
    in attributes or in the inline script."""
    found = [link for link in parse(html).links if urlsplit(link).scheme or link.startswith("//")]
    found += re.findall(r"""[a-z][a-z0-9+.-]*://[^\s"'<>)]+""", html, re.IGNORECASE)
    found += re.findall(r"""["'(]//[^\s"'<>)]+""", html)
    return found


def docs_app() -> FastAPI:
    app = FastAPI(title="Docs", docs_url=None, redoc_url=None)
    install_error_handlers(app)

    @app.get("/things")
    async def things() -> list[str]:
        return []

    install_docs(app)
    return app


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=docs_app())
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def check_offline_page(client: httpx.AsyncClient, path: str = "/docs") -> list[str]:
    """The page at `path` is Swagger UI with no outside reference; every asset it names loads.
    Returns the asset URLs."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "SwaggerUIBundle(" in html
    assert outside_references(html) == []
    assets = parse(html).links
    assert len(assets) == 3, assets  # the script, the stylesheet, the favicon
    for url in assets:
        asset = await client.get(url)
        assert asset.status_code == 200, (url, asset.text[:200])
        content_type, least = EXPECTED[url[url.rindex(".") :]]
        assert asset.headers["content-type"].split(";")[0] == content_type, url
        assert len(asset.content) > least, (url, len(asset.content))
    (document_url,) = re.findall(r"url: '([^']+)'", html)
    document = await client.get(document_url)
    assert document.status_code == 200
    assert document.json()["paths"]
    return assets


async def test_the_page_and_its_assets_come_from_the_app(http):
    assets = await check_offline_page(http)
    assert sorted(assets) == sorted(f"/docs/assets/{name}" for name in ASSETS)
    script = await http.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in script.content


async def test_the_page_forbids_every_other_origin(http):
    page = await http.get("/docs")
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["style-src"] == "'self'"
    assert "unsafe" not in policy and "*" not in policy and "http" not in policy
    # The inline script runs by its hash, not by 'unsafe-inline'.
    (script,) = parse(page.text).scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert directives["script-src"] == f"'self' 'sha256-{digest}'"
    # No validator badge: Swagger UI would send the document's URL to its online validator.
    assert '"validatorUrl": null' in page.text


async def test_the_oauth2_redirect_page_is_served_with_the_docs(http):
    page = await http.get("/docs")
    assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in page.text
    redirect = await http.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert "swaggerUIRedirectOauth2" in redirect.text
    assert outside_references(redirect.text) == []
    (script,) = parse(redirect.text).scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in redirect.headers["content-security-policy"]


async def test_only_the_known_assets_are_served(http):
    for name in ("missing.js", "__init__.py", "..%2F__init__.py", "oauth2-redirect.html"):
        response = await http.get(f"/docs/assets/{name}")
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"


async def test_assets_are_revalidated(http):
    first = await http.get("/docs/assets/swagger-ui.css")
    assert first.headers["cache-control"] == "no-cache"
    again = await http.get(
        "/docs/assets/swagger-ui.css", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304


async def test_the_docs_routes_are_not_in_the_schema(http):
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert list(paths) == ["/things"]


async def test_the_page_follows_the_root_path():
    transport = httpx.ASGITransport(app=docs_app(), root_path="/assay")
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        page = await client.get("/assay/docs")
        assert page.status_code == 200, page.text
        assert sorted(parse(page.text).links) == sorted(
            f"/assay/docs/assets/{name}" for name in ASSETS
        )
        assert "url: '/assay/openapi.json'" in page.text
        assert "'/assay/docs/oauth2-redirect'" in page.text
        assert (await client.get("/assay/docs/assets/swagger-ui.css")).status_code == 200


def test_fastapi_own_page_must_be_off():
    with pytest.raises(RuntimeError, match="docs_url=None"):
        install_docs(FastAPI())


# The application itself.


async def test_the_app_serves_its_docs_offline(client):
    await check_offline_page(client)


def test_no_page_of_the_app_loads_from_a_cdn(app):
    """FastAPI's own /docs and /redoc pages load their scripts from a CDN: they are off, in the
    app and in every app mounted in it."""
    apps = [app] + [
        route.app for route in app.routes if isinstance(getattr(route, "app", None), FastAPI)
    ]
    assert len(apps) >= 2  # the public app too
    for each in apps:
        assert (each.docs_url, each.redoc_url) == (None, None), each.title
