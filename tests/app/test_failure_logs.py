"""A request that fails unexpectedly: every line logged about it carries its request id, those
of the server included (served by uvicorn, as `python -m app serve` does)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.routing import Mount

from app.main import create_app
from tests.serving import port_of, served
from utils.config import Settings
from utils.logging import configure_logging


def _failing_app() -> FastAPI:
    """The app logging JSON lines, with a route that fails unexpectedly in the API and in the
    public app."""
    app = create_app(Settings(log_format="json"))
    public = next(
        route.app for route in app.routes if isinstance(route, Mount) and route.path == "/public"
    )
    assert isinstance(public, FastAPI)

    async def fail() -> None:
        raise RuntimeError("an unexpected failure")

    app.add_api_route("/api/v1/_fail", fail, include_in_schema=False)
    public.add_api_route("/_fail", fail, include_in_schema=False)
    return app


async def _handled(server: uvicorn.Server) -> None:
    """Waits until the server has finished with every request (and logged what it logs)."""
    for _ in range(500):
        if not server.server_state.tasks:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("a request is still being handled")


@pytest.mark.parametrize("path", ["/public/_fail", "/api/v1/_fail"])
async def test_every_log_line_of_a_failed_request_carries_its_id(path, capsys):
    try:
        async with served(_failing_app()) as server:
            capsys.readouterr()  # the server's start
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_of(server)}") as http:
                response = await http.get(path, headers={"X-Request-ID": "failure-1"})
            await _handled(server)
            err = capsys.readouterr().err
    finally:
        with capsys.disabled():  # to the session's stderr: the captured one ends with the test
            configure_logging("console")

    assert response.status_code == 500
    assert response.json()["request_id"] == "failure-1"
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    lines = [line for line in records if line["logger"] != "httpx"]  # (the client's own)
    events = {line["event"].strip() for line in lines}
    # Ours (the error, the request) and the server's own report of the exception.
    assert {"unhandled error", "request", "Exception in ASGI application"} <= events
    assert [line for line in lines if line.get("request_id") != "failure-1"] == []
