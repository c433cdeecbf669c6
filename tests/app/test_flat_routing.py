"""The management API's operations sit on the application's own router: a request tries each
route once instead of walking nested router branches (each level matched twice)."""

from __future__ import annotations

import re
import uuid

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match, Mount, Route

from app.main import create_app
from database.routing import CappedJsonRoute, api_router


def test_every_operation_is_on_the_app_router() -> None:
    app = create_app()
    # No nested router branch (FastAPI's included routers are neither routes nor mounts).
    assert all(isinstance(route, (Route, Mount)) for route in app.router.routes)
    operations = [r for r in app.router.routes if isinstance(r, APIRoute)]
    assert {r.operation_id for r in operations if r.include_in_schema} >= {
        "runs_create",
        "tests_read",
        "users_read_me",
    }
    documented = {
        op["operationId"] for path in app.openapi()["paths"].values() for op in path.values()
    }
    assert documented == {r.operation_id for r in operations if r.include_in_schema} | {
        op for op in documented if op.startswith("health")
    }


def _path_for(route: APIRoute, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, route.path_format)


def test_each_operation_is_still_the_first_route_its_own_path_matches() -> None:
    """A route refuses a path without its literal text before trying its regex: every
    operation's path, with its parameters filled in, still reaches that operation first."""
    app = create_app()
    routes = app.router.routes
    operations = [r for r in routes if isinstance(r, APIRoute)]
    assert len(operations) > 90
    for operation in operations:
        path = _path_for(operation, str(uuid.uuid4()))
        for method in sorted(operation.methods or ()):
            scope = {"type": "http", "path": path, "root_path": "", "method": method}
            matched = next(r for r in routes if r.matches(scope)[0] == Match.FULL)
            assert matched is operation, (method, path, getattr(matched, "path", matched))


def test_a_path_without_the_routes_text_is_refused_before_its_regex() -> None:
    route = CappedJsonRoute("/api/v1/things/{thing_id}/parts", lambda: None)
    refused, _ = route.matches({"type": "http", "path": "/api/v1/stuff/1/parts", "root_path": ""})
    assert refused is Match.NONE
    for root_path in ("", "/behind/a/proxy"):
        scope = {
            "type": "http",
            "path": root_path + "/api/v1/things/7/parts",
            "root_path": root_path,
            "method": "GET",
        }
        found, child = route.matches(scope)
        assert found is Match.FULL
        assert child["path_params"] == {"thing_id": "7"}


async def test_a_route_included_under_a_prefix_still_matches() -> None:
    """The literal text is searched in the whole path, not expected at its start: under an
    included router's prefix it comes further in."""
    inner = api_router()

    @inner.get("/things/{thing_id}")
    async def read_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app = FastAPI()
    app.include_router(inner, prefix="/outer/{tenant}")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        response = await client.get("/outer/acme/things/7")
        missing = await client.get("/outer/acme/other/7")
    assert response.status_code == 200
    assert response.json() == {"id": 7}
    assert missing.status_code == 404
