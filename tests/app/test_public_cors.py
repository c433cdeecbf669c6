"""With ASSAY_CORS_ORIGINS set, the API's CORS answers the API only: /public keeps its own (any
origin, Authorization and Last-Event-ID), which the API's once overrode, refusing a preflight
from an origin not in the list, or one asking to send Last-Event-ID."""

from __future__ import annotations

import uuid

import httpx
import pytest

from app.main import create_app
from utils.config import Settings

LISTED = "https://dash.example"
OTHER = "https://other.example"
EVENTS = f"/public/runs/{uuid.uuid4()}/events"


def _preflight(origin: str, headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": headers,
    }


@pytest.fixture(params=[[LISTED]], ids=["listed"])
async def http(request, database):
    app = create_app(Settings(cors_origins=request.param))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


@pytest.mark.parametrize("origin", [LISTED, OTHER])
@pytest.mark.parametrize("headers", ["authorization", "last-event-id"])
async def test_public_preflights_are_the_public_apps_to_answer(http, origin, headers) -> None:
    response = await http.options(EVENTS, headers=_preflight(origin, headers))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert headers in {name.strip() for name in allowed.split(",")}


@pytest.mark.parametrize("http", [[], [LISTED]], ids=["none", "listed"], indirect=True)
async def test_a_public_refusal_lets_any_origin_read_its_retry_after(http) -> None:
    # What a page of another origin reads of a refusal: the request id, and when to come back.
    response = await http.get(EVENTS, params={"token": "x"}, headers={"Origin": OTHER})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == "*"
    exposed = response.headers["access-control-expose-headers"]
    assert {name.strip() for name in exposed.split(",")} == {"X-Request-ID", "Retry-After"}


async def test_the_api_keeps_to_its_listed_origins(http) -> None:
    listed = await http.options("/api/v1/users/me", headers=_preflight(LISTED, "authorization"))
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == LISTED
    other = await http.options("/api/v1/users/me", headers=_preflight(OTHER, "authorization"))
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    # A path that only starts like the public app's is the API's to answer.
    lookalike = await http.options("/publication", headers=_preflight(OTHER, "authorization"))
    assert lookalike.status_code == 400
