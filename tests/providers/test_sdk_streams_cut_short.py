"""A streamed answer through a pydantic-ai provider (Anthropic, Groq, Mistral) that ends before
the provider said why it finished (the connection closed early, no stop reason) is an invalid
response, as the OpenAI wire format's stream without `[DONE]` is: never a truncated answer
recorded as a complete one. A complete stream still gives the whole answer."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from providers.config import TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.server import FakeServer
from tests.providers.support import target_config

QUESTION = "The answer is 4 and nothing else"
CUT_SHORT = "the stream ended before the provider finished its answer"


class FakeChatChunks(FakeServer):
    """Streamed chat completions in the OpenAI shape that Groq's API (`/openai/v1/...`) and
    Mistral's (`/v1/...`) share: the last user message echoed word by word, then a chunk with
    the finish reason and `[DONE]`. With `cut_after`, only that many chunks are sent."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_after: int | None = None

    def build_app(self) -> Starlette:
        paths = ["/v1/chat/completions", "/openai/v1/chat/completions"]
        return Starlette(routes=[Route(path, self._chat, methods=["POST"]) for path in paths])

    async def _chat(self, request: Request) -> Response:
        body = (await self.record(request)).json
        assert body["stream"], "these tests only stream"
        text = body["messages"][-1]["content"]
        return StreamingResponse(self._chunks(text, self.cut_after), media_type="text/event-stream")

    async def _chunks(self, text: str, cut_after: int | None) -> AsyncIterator[str]:
        deltas: list[tuple[dict[str, str], str | None]] = [({"role": "assistant"}, None)]
        deltas += [({"content": piece}, None) for piece in re.findall(r"\S+\s*", text)]
        deltas.append(({}, "stop"))
        for sent, (delta, finish_reason) in enumerate(deltas):
            if sent == cut_after:
                return
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "fake-1",
                "choices": [choice],
            }
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"


@pytest.fixture
def chunks() -> Iterator[FakeChatChunks]:
    with FakeChatChunks() as server:
        yield server


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


async def _ask(provider: str, url: str) -> tuple[str, list[str]]:
    config = target_config(provider, url, model="fake-1", stream=True)
    pieces: list[str] = []
    reply = await call_target(
        config, TargetRequest(input=QUESTION), allow_private_networks=True, on_delta=pieces.append
    )
    return reply.output, pieces


async def test_an_anthropic_stream_cut_short_is_an_invalid_response(
    anthropic: FakeAnthropic,
) -> None:
    # message_start, content_block_start and the first piece of text; no stop reason.
    anthropic.cut_after = 3
    with pytest.raises(TargetError) as failed:
        await _ask("anthropic", anthropic.url)
    assert failed.value.kind == "invalid_response"
    assert CUT_SHORT in failed.value.message


async def test_a_complete_anthropic_stream_is_the_whole_answer(anthropic: FakeAnthropic) -> None:
    output, pieces = await _ask("anthropic", anthropic.url)
    assert output == f"echo: {QUESTION}" == "".join(pieces)


@pytest.mark.parametrize("provider", ["groq", "mistral"])
async def test_a_groq_or_mistral_stream_cut_short_is_an_invalid_response(
    chunks: FakeChatChunks, provider: str
) -> None:
    chunks.cut_after = 3  # the role, then two pieces of text; no finish reason
    with pytest.raises(TargetError) as failed:
        await _ask(provider, chunks.url)
    assert failed.value.kind == "invalid_response"
    assert CUT_SHORT in failed.value.message
    assert len(chunks.requests) == 1


@pytest.mark.parametrize("provider", ["groq", "mistral"])
async def test_a_complete_groq_or_mistral_stream_is_the_whole_answer(
    chunks: FakeChatChunks, provider: str
) -> None:
    output, pieces = await _ask(provider, chunks.url)
    assert output == QUESTION == "".join(pieces)
