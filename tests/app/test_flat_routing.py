"""The management API's operations sit on the application's own router: a request tries each
route once instead of walking nested router branches (each level matched twice)."""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from app.main import create_app


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
