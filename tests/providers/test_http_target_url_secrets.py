"""An HTTP target's error page may repeat the URL it was called at, in its own words: Azure
Functions' `No function matches POST /api/chat?code=<key>`, a path token named alone. The
failed call's message becomes a result's `error_message`, read by viewers, who are shown only
the endpoint's origin: it keeps neither the query's secret nor the path's, in any form the
page may give them (as sent, percent-decoded, a `+` read as a space)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.server import FakeServer
from tests.providers.test_error_redaction import _failed_call


class EchoingEndpoint(FakeServer):
    """Answers 404 to everything, naming the path and query it was asked for, then each piece
    of the path and each query value alone, decoded."""

    def build_app(self) -> Starlette:
        methods = ["GET", "POST"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _handle(self, request: Request) -> Response:
        await self.record(request)
        asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        pieces = [piece for piece in request.url.path.split("/") if piece]
        values = list(request.query_params.values())
        said = f"No function matches {request.method} {asked}; pieces {pieces}; values {values}"
        return PlainTextResponse(said, status_code=404)


@pytest.fixture
def endpoint() -> Iterator[EchoingEndpoint]:
    with EchoingEndpoint() as server:
        yield server


@pytest.mark.parametrize(
    ("path_and_query", "secrets"),
    [
        ("/api/chat?code=AzureFunctionKeySecret123", ["AzureFunctionKeySecret123"]),
        ("/hooks/T0KENabcdef99/chat", ["T0KENabcdef99"]),
        # A signature as the URL encodes it, decoded by the endpoint (its `+`, escaped, stays).
        ("/api/chat?sig=Zx9%2BqL0pR7%2BT%3D&v=1", ["Zx9%2BqL0pR7%2BT%3D", "Zx9+qL0pR7+T="]),
        ("/t/Path-T0ken-42/chat?key=Query-T0ken-42", ["Path-T0ken-42", "Query-T0ken-42"]),
    ],
)
async def test_an_error_page_echoing_the_url_keeps_neither_its_query_nor_its_path_secret(
    endpoint: EchoingEndpoint, path_and_query: str, secrets: list[str]
) -> None:
    error = await _failed_call(f"{endpoint.url}{path_and_query}")
    assert error.kind == "client_error" and error.status == 404
    assert len(endpoint.requests) == 1  # the page was the endpoint's answer
    assert "No function matches POST" in error.message  # its words stay
    for secret in secrets:
        assert secret not in error.message, error.message
