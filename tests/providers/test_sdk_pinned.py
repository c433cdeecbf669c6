"""Google and Mistral at a configured base URL, when private networks are not allowed: their SDK
client (httpx2, as pydantic-ai expects) connects to the address that was checked, holds to the
call's time limit, and its failures are `TargetError`s (which the engine retries and counts)
rather than httpx's exceptions (which would stop the chunk).

This machine has no route to a public address: a second loopback address (127.0.0.2) stands for
the public one the host name resolves to (see tests/utils/test_ssrf.py)."""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Iterator
from types import ModuleType

import httpx
import httpx2
import pytest

from providers import sdk
from providers.config import TargetReply, TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI, Fault
from tests.providers.support import target_config
from tests.stand_in import PUBLIC_STAND_IN, resolve_every_host_to_the_stand_in

HOST = "llm.pinned.test"


@pytest.fixture(autouse=True)
def resolves_to_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_every_host_to_the_stand_in(monkeypatch)


@pytest.fixture
def mistral() -> Iterator[FakeOpenAI]:
    """Mistral's chat completions are OpenAI's, at `/v1/chat/completions` of the base URL."""
    server = FakeOpenAI()
    server.host = PUBLIC_STAND_IN
    with server:
        yield server


def _closed_port() -> int:
    """A port of the stand-in address where nothing listens: connecting is refused."""
    with socket.socket() as probe:
        probe.bind((PUBLIC_STAND_IN, 0))
        return int(probe.getsockname()[1])


async def _ask(provider: str, port: int, seconds: float = 5) -> TargetReply:
    config = target_config(provider, f"http://{HOST}:{port}", timeout_seconds=seconds)
    return await call_target(config, TargetRequest(input="Hello"), allow_private_networks=False)


async def test_mistral_reaches_the_checked_address_by_its_host_name(mistral: FakeOpenAI) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reply = await _ask("mistral", mistral.port)
    assert reply.output == "echo: Hello"
    assert [r.headers["host"] for r in mistral.requests] == [f"{HOST}:{mistral.port}"]
    # Not a legacy httpx client (pydantic-ai warns of one, and lets its errors through).
    assert [str(w.message) for w in caught if "httpx" in str(w.message)] == []


@pytest.mark.parametrize("provider", ["google", "mistral"])
async def test_a_refused_connection_is_a_connection_error(provider: str) -> None:
    with pytest.raises(TargetError) as failed:
        await _ask(provider, _closed_port())
    assert failed.value.kind == "connection_error"


async def test_an_answer_that_never_comes_is_a_timeout_at_the_calls_limit(
    mistral: FakeOpenAI,
) -> None:
    mistral.enqueue(Fault.hang(10))
    started = time.perf_counter()
    with pytest.raises(TargetError) as failed:
        await _ask("mistral", mistral.port, seconds=1)
    assert failed.value.kind == "timeout"
    assert time.perf_counter() - started < 4


def _raw_error(http: ModuleType, name: str) -> Exception:
    request = http.Request("POST", f"http://{HOST}/v1/chat/completions")
    if name == "HTTPStatusError":
        response = http.Response(503, request=request)
        return http.HTTPStatusError("busy", request=request, response=response)
    return getattr(http, name)("failed", request=request)


@pytest.mark.parametrize("http", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ConnectError", "connection_error"),
        ("RemoteProtocolError", "connection_error"),
        ("DecodingError", "invalid_response"),
        ("HTTPStatusError", "server_error"),
    ],
)
def test_what_an_sdk_lets_through_of_httpx_is_a_target_error(
    http: ModuleType, name: str, kind: str
) -> None:
    """An SDK's own httpx exception that pydantic-ai does not wrap is still a `TargetError`."""
    with pytest.raises(TargetError) as failed, sdk._provider_errors(5):
        raise _raw_error(http, name)
    assert failed.value.kind == kind


@pytest.mark.parametrize("http", [httpx, httpx2], ids=["httpx", "httpx2"])
@pytest.mark.parametrize(("seconds", "kind"), [(0, "timeout"), (60, "connection_error")])
def test_an_httpx_timeout_is_a_timeout_once_the_time_is_spent(
    http: ModuleType, seconds: float, kind: str
) -> None:
    """Before then it is a connection that failed (as pydantic-ai's timeouts are read)."""
    with pytest.raises(TargetError) as failed, sdk._provider_errors(seconds):
        raise http.ReadTimeout("no bytes")
    assert failed.value.kind == kind


async def test_an_answer_past_the_cap_is_an_invalid_response_not_read_whole(
    mistral: FakeOpenAI,
) -> None:
    """The SDKs read answers themselves: at a tenant's base URL they read no more than the
    engine's own client does (a 200 MB reply was read whole)."""
    from utils.transport import MAX_RESPONSE_BYTES

    mistral.reply = lambda body: "x" * (MAX_RESPONSE_BYTES + 1)
    with pytest.raises(TargetError) as failed:
        await _ask("mistral", mistral.port)
    assert failed.value.kind == "invalid_response"
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in failed.value.message
    mistral.reply = lambda body: "x" * 1000  # within it, read as before
    assert (await _ask("mistral", mistral.port)).output == "x" * 1000
    assert {r.headers.get("accept-encoding") for r in mistral.requests} == {"identity"}


async def test_anthropics_answer_past_the_cap_is_an_invalid_response_too() -> None:
    """Anthropic's SDK reads through the same pinned transport (httpx2), and its errors are
    mapped as the others' are."""
    from tests.fakes.anthropic_server import FakeAnthropic
    from utils.transport import MAX_RESPONSE_BYTES

    server = FakeAnthropic()
    server.host = PUBLIC_STAND_IN
    with server:
        server.reply = lambda body: "x" * (MAX_RESPONSE_BYTES + 1)
        config = target_config("anthropic", f"http://{HOST}:{server.port}", model="claude-fake-1")
        with pytest.raises(TargetError) as failed:
            await call_target(config, TargetRequest(input="Hello"), allow_private_networks=False)
    assert failed.value.kind == "invalid_response", failed.value.message
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in failed.value.message


@pytest.mark.parametrize("provider", ["mistral", "anthropic"])
async def test_an_answer_past_the_cap_is_refused_at_an_address_that_needs_no_pin(
    provider: str,
) -> None:
    """A literal address (or any, with private networks allowed) is reached as it is, and its
    answers are capped all the same (a 30 MB reply was read whole)."""
    from tests.fakes.anthropic_server import FakeAnthropic
    from utils.transport import MAX_RESPONSE_BYTES

    server = FakeAnthropic() if provider == "anthropic" else FakeOpenAI()
    with server:
        server.reply = lambda body: "x" * (MAX_RESPONSE_BYTES + 1)
        config = target_config(provider, f"http://127.0.0.1:{server.port}", model="fake-1")
        with pytest.raises(TargetError) as failed:
            await call_target(config, TargetRequest(input="Hello"), allow_private_networks=True)
        assert failed.value.kind == "invalid_response", failed.value.message
        assert f"larger than {MAX_RESPONSE_BYTES} bytes" in failed.value.message
        server.reply = lambda body: "x" * 1000  # within it, read as before
        reply = await call_target(config, TargetRequest(input="Hello"), allow_private_networks=True)
        assert reply.output == "x" * 1000
