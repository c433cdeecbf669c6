"""A failed call's message becomes a result's `error_message`, its live event and perhaps a log
line, read by everyone in the project: it names where the call went, never a token in the URL's
query string. Through real HTTP (a connection dropped, a port nobody listens on, an error page
repeating the URL), and for the SDK clients' own errors (Google's, Mistral's httpx clients)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from pydantic_ai import exceptions as ai_errors

from providers import sdk
from providers.config import TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.http_app import FakeHttpApp, Fault
from tests.providers.support import target_config

SECRET = "QUERYSECRET"


@pytest.fixture
def app() -> Iterator[FakeHttpApp]:
    with FakeHttpApp(paths=["/chat"]) as server:
        yield server


async def _failed_call(url: str) -> TargetError:
    config = target_config(
        "http",
        url,
        api_key=None,
        http_method="POST",
        body_template='{"message": {{ input | tojson }}}',
        response_path="$.data.answer",
    )
    with pytest.raises(TargetError) as failed:
        await call_target(config, TargetRequest(input="hi"), allow_private_networks=True)
    return failed.value


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_dropped_connection_names_the_endpoint_without_its_token(
    app: FakeHttpApp,
) -> None:
    app.enqueue(Fault.close())
    error = await _failed_call(f"{app.url}/chat?key={SECRET}")
    assert error.kind == "connection_error"
    assert SECRET not in error.message
    assert f"{app.url}/…" in error.message


async def test_an_unreachable_endpoint_names_itself_by_its_origin_alone() -> None:
    """Its path may carry its key (`/hooks/<token>/chat`), and these words reach whoever reads
    the result: a viewer, who is shown only a model's origin, and every export."""
    port = _closed_port()
    error = await _failed_call(f"http://127.0.0.1:{port}/hooks/{SECRET}/chat?api_key={SECRET}")
    assert error.kind == "connection_error"
    assert SECRET not in error.message
    assert f"http://127.0.0.1:{port}/…" in error.message


async def test_an_error_page_repeating_the_url_loses_its_token(app: FakeHttpApp) -> None:
    url = f"{app.url}/chat?key={SECRET}"
    app.enqueue(Fault.http(404, f"no route for {url}"))
    error = await _failed_call(url)
    assert error.kind == "client_error" and error.status == 404
    assert SECRET not in error.message
    assert f"no route for {app.url}[redacted]" in error.message  # the endpoint's origin only


URL = f"https://generativelanguage.example.com/v1beta/models?key={SECRET}"


@pytest.mark.parametrize(
    "raised",
    [
        httpx2.ConnectError(f"could not open {URL}"),
        httpx.ReadError(f"connection to {URL} reset"),
        httpx2.DecodingError(f"bad gzip from {URL}"),
        ai_errors.ModelAPIError("gemini", f"request to {URL} failed"),
    ],
    ids=lambda raised: type(raised).__name__,
)
def test_an_sdk_clients_error_loses_the_token_of_its_url(raised: Exception) -> None:
    def fail() -> Any:
        with sdk._provider_errors(seconds=0):
            raise raised

    with pytest.raises(TargetError) as failed:
        fail()
    assert SECRET not in failed.value.message
    assert "https://generativelanguage.example.com/v1beta/models?key=[redacted]" in (
        failed.value.message
    )


async def test_an_error_page_repeating_a_header_escaped_or_encoded_shows_none_of_it(
    app: FakeHttpApp,
) -> None:
    """An endpoint echoing its request: PHP's JSON escapes `/` as `\\/`, a query string
    percent-encodes, and a cookie's value stands apart from its name."""
    token, session = "AbC/dEf+GhI/jKlMnOp==", "s3cr3tSess10n"
    echoed = (
        '{"headers": {"Authorization": "Bearer AbC\\/dEf+GhI\\/jKlMnOp=="}},'
        " seen as token=AbC%2FdEf%2BGhI%2FjKlMnOp%3D%3D; session " + session + " has expired;"
        " send Bearer auth"
    )
    app.enqueue(Fault.http(401, echoed))
    config = target_config(
        "http",
        f"{app.url}/chat",
        api_key=None,
        http_method="POST",
        body_template='{"message": {{ input | tojson }}}',
        response_path="$.data.answer",
        http_headers={"Authorization": f"Bearer {token}", "Cookie": f"session={session}; a=b"},
    )
    with pytest.raises(TargetError) as failed:
        await call_target(config, TargetRequest(input="hi"), allow_private_networks=True)
    message = failed.value.message
    for form in ("AbC", "dEf", session):
        assert form not in message, message
    assert "session [redacted]" in message and "Bearer auth" in message  # names stay


async def test_an_error_page_repeating_the_endpoints_path_shows_its_origin_only() -> None:
    """A path may be the endpoint's credential (viewers are shown a model's URL as its origin);
    an error page repeating the URL showed it to them in the result."""
    path = "/hooks/T0K3N-in-the-path"
    with FakeHttpApp(paths=[path]) as app:
        app.enqueue(Fault.http(404, f"nothing is served at {app.url}{path} now"))
        error = await _failed_call(f"{app.url}{path}")
    assert "T0K3N" not in error.message and f"{app.url}[redacted] now" in error.message
