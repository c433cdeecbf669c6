"""A streaming SDK model's error answers, even with an empty body, are the call's `TargetError`
of their status (retried or counted by the engine), never an exception that fails the chunk
(which would be run again, calling every case anew, and end the run without results).

Mistral's SDK, streaming, quoted an empty error body from an answer it had not read, and raised
httpx's ResponseNotRead instead of its error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers import sdk
from providers.config import TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.providers.support import target_config


@pytest.fixture(scope="module")
def mistral() -> Iterator[FakeOpenAI]:
    """Mistral's chat completions are OpenAI's, at `/v1/chat/completions` of the base URL."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(mistral: FakeOpenAI) -> None:
    mistral.reset()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "rate_limited"),
        (401, "auth_error"),
        (404, "client_error"),
        (503, "server_error"),
        (204, "invalid_response"),  # as every provider's SDK reports one, streamed or not
        (302, "invalid_response"),
    ],
)
async def test_an_empty_error_answer_to_a_stream_is_its_status_error(
    mistral: FakeOpenAI, status: int, kind: str
) -> None:
    mistral.enqueue(Fault.http(status, ""))
    config = target_config("mistral", mistral.url, model="fake-1", stream=True)
    pieces: list[str] = []
    with pytest.raises(TargetError) as failed:
        await call_target(
            config, TargetRequest(input="Hi"), allow_private_networks=True, on_delta=pieces.append
        )
    assert failed.value.kind == kind, failed.value.message
    if status >= 400:
        assert failed.value.status == status
        assert failed.value.message.startswith(f"the endpoint answered {status}")
    assert pieces == []


async def test_a_streamed_answer_is_still_read_as_it_comes(mistral: FakeOpenAI) -> None:
    config = target_config("mistral", mistral.url, model="fake-1", stream=True)
    pieces: list[str] = []
    reply = await call_target(
        config,
        TargetRequest(input="Hello there"),
        allow_private_networks=True,
        on_delta=pieces.append,
    )
    assert reply.output == "echo: Hello there"
    assert "".join(pieces) == reply.output


class _SdkBug(Exception):
    pass


def test_what_else_an_sdk_lets_escape_is_an_invalid_response() -> None:
    with pytest.raises(TargetError) as failed, sdk._provider_errors(5):
        raise _SdkBug("an SDK's own mistake at http://llm.test/v1?key=sk-secret")
    assert failed.value.kind == "invalid_response"
    assert "_SdkBug" in failed.value.message
    assert "sk-secret" not in failed.value.message


@pytest.mark.parametrize("error", [TimeoutError, KeyError, TypeError])
def test_what_call_target_reports_itself_passes_through(error: type[Exception]) -> None:
    """A time limit reached, and an answer of a shape no reader foresaw (which call_target
    logs with where it was met)."""
    with pytest.raises(error), sdk._provider_errors(5):
        raise error("x")
