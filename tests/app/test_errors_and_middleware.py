"""Problem+json for every error, request ids, security headers, body-size limit."""

from __future__ import annotations

import json
import uuid

import httpx

from app.main import create_app
from tests.helpers import PASSWORD, assert_problem, register, unique_email


async def test_malformed_json_is_400_problem(client):
    response = await client.post(
        "/api/v1/auth/register",
        content=b'{"email": "a@example.com", "password": ',
        headers={"content-type": "application/json"},
    )
    body = assert_problem(response, 400)
    assert "JSON" in body["detail"]


async def test_wrong_type_names_the_field_and_reason(client):
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": unique_email(), "password": PASSWORD, "name": ["not", "a", "string"]},
    )
    body = assert_problem(response, 422, field="name")
    error = next(e for e in body["errors"] if e["field"].endswith("name"))
    assert "string" in error["message"].lower()


async def test_unknown_route_is_problem_json(client):
    response = await client.get("/api/v1/nothing-here")
    assert_problem(response, 404)


async def test_wrong_method_is_problem_json(client):
    response = await client.delete("/api/v1/auth/login")
    assert_problem(response, 405)


async def test_public_app_errors_are_problem_json_too(client):
    response = await client.get("/public/no-such-stream")
    assert_problem(response, 404)


async def test_request_id_is_generated_and_echoed(client):
    generated = await client.get("/health")
    assert len(generated.headers["x-request-id"]) >= 16
    echoed = await client.get("/health", headers={"X-Request-ID": "trace-abc.123"})
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    # A header that could forge log lines is replaced, not echoed.
    forged = await client.get("/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert forged.headers["x-request-id"] != "bad id\twith tab"


async def test_security_headers(client):
    response = await client.get("/health")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_oversized_body_is_413_by_content_length(client, settings):
    payload = b"x" * (settings.max_body_bytes + 1)
    response = await client.post(
        "/api/v1/auth/register", content=payload, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413)


async def test_oversized_streamed_body_is_413(client, settings):
    chunk = b"x" * 65536
    chunks = settings.max_body_bytes // len(chunk) + 2

    async def body():  # no Content-Length: the limit applies while reading
        for _ in range(chunks):
            yield chunk

    response = await client.post(
        "/api/v1/auth/register", content=body(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 413)


async def test_openapi_and_docs_are_served(client):
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/api/v1/auth/login" in paths
    assert "/api/v1/organizations/{organization_id}/api-keys" in paths
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_secrets_never_reach_the_logs(client, capsys):
    from utils.logging import configure_logging

    configure_logging("json")
    try:
        account = await register(client)
        await client.get("/api/v1/users/me", headers=account.headers)
        await client.post(
            "/api/v1/auth/login", data={"username": account.email, "password": PASSWORD}
        )
        err = capsys.readouterr().err
    finally:
        configure_logging("console")
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert len(requests) >= 3
    assert all(line.get("request_id") for line in requests)
    assert PASSWORD not in err
    assert account.access_token not in err
    assert account.refresh_token not in err


async def test_every_log_line_of_a_request_carries_its_id(app, database, capsys):
    import structlog

    from utils.logging import configure_logging

    log = structlog.get_logger("test")

    @app.get("/_log-probe", include_in_schema=False)
    async def probe() -> dict[str, str]:
        log.info("inside handler")
        return {"ok": "yes"}

    configure_logging("json")
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/_log-probe", headers={"X-Request-ID": "probe-1"})
        err = capsys.readouterr().err
    finally:
        configure_logging("console")
        app.router.routes[:] = [
            r for r in app.router.routes if getattr(r, "path", "") != "/_log-probe"
        ]
    assert response.status_code == 200
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    inside = [line for line in lines if line.get("event") == "inside handler"]
    assert inside and inside[0]["request_id"] == "probe-1"


async def test_cors_allows_configured_origins_only(database):
    from app.main import create_app
    from utils.config import Settings

    app = create_app(Settings(cors_origins=["https://dash.example"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        allowed = await http.options(
            "/api/v1/users/me",
            headers={
                "Origin": "https://dash.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        refused = await http.get("/health", headers={"Origin": "https://evil.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    assert "access-control-allow-origin" not in refused.headers


async def test_a_body_limit_below_the_import_limit_holds_everywhere_but_imports(
    database, runtime, monkeypatch
):
    """ASSAY_MAX_BODY_BYTES was raised to the import limit for every route: a 2 MB body
    passed a 1 MB limit. An import's file keeps its own limit."""
    monkeypatch.setattr(runtime.settings, "max_body_bytes", 1024 * 1024)
    transport = httpx.ASGITransport(app=create_app(runtime.settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        body = b"x" * (2 * 1024 * 1024)
        refused = await client.post(
            "/api/v1/auth/register", content=body, headers={"content-type": "application/json"}
        )
        assert "limit of 1048576 bytes" in assert_problem(refused, 413)["detail"]
        upload = await client.post(
            f"/api/v1/test-sets/{uuid.uuid4()}/import",
            content=body,
            headers={"content-type": "text/csv"},
        )
        assert upload.status_code == 401  # past the body limit, to the route's own checks


async def test_a_pool_with_no_connection_free_in_time_is_a_503(app, database_urls, runtime):
    """Every connection held (an overloaded process) was an unexpected error, a 500: it is
    the service's state, not the request's fault, so a 503 the client may retry."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from database.core import Database, set_database
    from utils.runtime import set_runtime

    engine = create_async_engine(
        database_urls.runtime, pool_size=1, max_overflow=0, pool_timeout=0.3
    )
    set_database(Database(engine))
    set_runtime(runtime)
    try:
        async with engine.connect():  # the pool's only connection, held
            transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.post(
                    "/api/v1/auth/login", data={"username": unique_email(), "password": PASSWORD}
                )
        body = assert_problem(response, 503)
        assert "database connection" in body["detail"]
        assert int(response.headers["retry-after"]) > 0
    finally:
        set_database(None)
        set_runtime(None)
        await engine.dispose()
