"""/docs in a real headless Chromium that cannot reach any other host: Swagger UI renders every
operation of the server's document, and runs one ("Try it out"), from this server alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.browser import DevTools, chromium, find_browser
from tests.e2e.servers import free_port, server_env, start_server

pytestmark = pytest.mark.slow

CDN_SCRIPT = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# Collects what the page's Content-Security-Policy refused, from the first script on.
WATCH_POLICY = """window.__refused = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__refused.push(`${e.effectiveDirective} ${e.blockedURI}`);
});"""

RENDERED = """(() => ({
  title: document.querySelector(".swagger-ui .info .title")?.textContent ?? null,
  operations: document.querySelectorAll(".opblock").length,
  errors: Array.from(document.querySelectorAll(".errors-wrapper"), (e) => e.textContent),
  refused: window.__refused,
}))()"""

# Opens GET /health, presses "Try it out" then "Execute"; each call does the next step it can.
TRY_HEALTH = """(() => {
  const block = Array.from(document.querySelectorAll(".opblock-get")).find(
    (b) => b.querySelector(".opblock-summary-path")?.textContent.trim() === "/health");
  if (!block) return "no /health operation";
  const status = block.querySelector(".live-responses-table tbody .response-col_status");
  if (status) return `status ${status.textContent.trim()}`;
  const execute = block.querySelector("button.execute");
  if (execute) { execute.click(); return "executed"; }
  const tryOut = block.querySelector("button.try-out__btn");
  if (tryOut) { tryOut.click(); return "trying"; }
  block.querySelector(".opblock-summary-control")?.click();
  return "opened";
})()"""


def offline_flags() -> tuple[str, ...]:
    """Chromium with no way out but loopback: no host name resolves, and every request that
    does not go to 127.0.0.1 goes to a proxy that is not there."""
    return (
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{free_port()}",
    )


async def poll(page: DevTools, expression: str, done: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await page.evaluate(expression)
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {value}")
        await asyncio.sleep(0.2)


async def test_docs_render_and_run_without_any_other_host(tmp_path):
    binary = find_browser()
    server = start_server(server_env(tmp_path / "data"), tmp_path / "server.log")
    try:
        await asyncio.to_thread(server.wait_healthy, 120)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            document = (await http.get("/openapi.json")).json()
        # The page shows the webhooks (the messages Assay sends) among the operations.
        items = [*document["paths"].values(), *document.get("webhooks", {}).values()]
        operations = sum(1 for item in items for method in item if method in METHODS)
        assert document.get("webhooks"), "the document describes the messages it sends"
        async with chromium(
            binary, tmp_path / "profile", tmp_path / "chromium.log", *offline_flags()
        ) as page:
            for domain in ("Page", "Runtime", "Network"):
                await page.send(f"{domain}.enable")
            # The browser really is cut off: the CDN that FastAPI's own page uses is unreachable.
            probe = await page.send("Page.navigate", {"url": CDN_SCRIPT})
            assert probe.get("errorText", "").startswith("net::ERR_"), probe
            page.events.clear()

            await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_POLICY})
            opened = await page.send("Page.navigate", {"url": f"{server.url}/docs"})
            assert "errorText" not in opened, opened
            shown = await poll(page, RENDERED, lambda s: s["operations"] >= operations, 60)
            assert shown["title"] is not None and shown["title"].startswith("Assay"), shown
            assert shown["operations"] == operations, shown
            assert shown["errors"] == [] and shown["refused"] == [], shown

            tried = await poll(page, TRY_HEALTH, lambda s: s.startswith("status"), 30)
            assert tried == "status 200", tried
            await asyncio.sleep(0.5)  # then collect the events of anything still loading
            assert await page.evaluate("window.__refused") == []
    finally:
        server.stop()

    origin = urlsplit(server.url)
    requested = [p["request"]["url"] for p in page.params_of("Network.requestWillBeSent")]
    elsewhere = [
        url
        for url in requested
        if not url.startswith("data:")
        and (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
    ]
    assert elsewhere == [], elsewhere
    paths = {urlsplit(url).path for url in requested}
    assert {
        "/docs",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/favicon-32x32.png",
        "/openapi.json",
        "/health",
    } <= paths, paths
    failed = page.params_of("Network.loadingFailed")
    assert failed == [], failed
    statuses = {
        urlsplit(p["response"]["url"]).path: p["response"]["status"]
        for p in page.params_of("Network.responseReceived")
        if p["response"]["url"].startswith(server.url)
    }
    assert all(status == 200 for status in statuses.values()), statuses
    thrown = page.params_of("Runtime.exceptionThrown")
    assert thrown == [], thrown
