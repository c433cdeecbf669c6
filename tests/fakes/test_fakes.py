"""The fakes speak real HTTP: exercise them with httpx and the official OpenAI SDK."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.fakes.http_app import FakeHttpApp
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there world"},
]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(require_api_key="sk-test") as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def app() -> Iterator[FakeHttpApp]:
    with FakeHttpApp(paths=["/chat", "/v2/ask"]) as server:
        yield server


async def test_completion_echoes_with_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hello there world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == {
        "prompt_tokens": 5,
        "completion_tokens": 4,
    }
    assert completion.usage.total_tokens == 9


async def test_streaming_pieces_and_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.reply = lambda request: "one two  three\n"
    stream = await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish_reasons, usages = [], [], []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish_reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            usages.append(chunk.usage)

    assert len([piece for piece in pieces if piece]) == 3
    assert "".join(pieces) == "one two  three\n"
    assert finish_reasons[-1] == "stop"
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usages] == [(5, 3, 8)]


async def test_stream_without_usage_option_has_no_usage_chunk(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(headers={"Authorization": "Bearer sk-test"}) as http:
        response = await http.post(
            f"{fake.base_url}/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk and chunk["choices"] for chunk in chunks)


async def test_rate_limit_carries_retry_after(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(Fault.http(429, retry_after=7))
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"


async def test_error_shapes_parse_in_sdk(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(Fault.http(500), Fault.http(401), None)
    with pytest.raises(openai.InternalServerError) as server_error:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert server_error.value.type == "server_error"
    with pytest.raises(openai.AuthenticationError) as auth_error:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert auth_error.value.code == "invalid_api_key"
    assert auth_error.value.body == {
        "message": "Fake OpenAI error 401",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    # None in the script: this request is answered normally, and the script is used up.
    await client.chat.completions.create(model="m", messages=MESSAGES)
    assert fake.pending_faults == 0


async def test_custom_error_body(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(Fault.http(503, "upstream overloaded", headers={"x-fake": "1"}))
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.response.text == "upstream overloaded"
    assert caught.value.response.headers["x-fake"] == "1"


async def test_wrong_or_missing_api_key(fake: FakeOpenAI) -> None:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            await sdk.chat.completions.create(model="m", messages=MESSAGES)
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{fake.base_url}/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_hang_exceeds_client_timeout(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(Fault.hang())
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="m", messages=MESSAGES, timeout=0.3)


async def test_close_is_a_connection_error(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(Fault.close())
    with pytest.raises(openai.APIConnectionError) as caught:
        await client.chat.completions.create(model="m", messages=MESSAGES)
    assert not isinstance(caught.value, openai.APITimeoutError)
    # The server keeps answering afterwards.
    await client.chat.completions.create(model="m", messages=MESSAGES)


async def test_malformed_json_is_an_error(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.enqueue(Fault.malformed(), Fault.malformed())
    with pytest.raises(json.JSONDecodeError):
        await client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(json.JSONDecodeError):
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass


async def test_latency_is_applied(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.latency = 0.3
    started = time.monotonic()
    await client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started >= 0.3


async def test_requests_are_recorded_and_reset(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    models = await client.models.list()
    assert [model.id for model in models.data] == ["fake-model"]

    first, second = fake.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == "Bearer sk-test"
    assert first.json["model"] == "gpt-test"
    assert first.json["messages"] == MESSAGES
    assert (second.method, second.path) == ("GET", "/v1/models")

    fake.enqueue(Fault.close())
    fake.reset()
    assert fake.requests == []
    assert fake.pending_faults == 0


def test_sync_use_and_quick_stop_with_hanging_request() -> None:
    threads_before = set(threading.enumerate())
    fake = FakeOpenAI().start()
    fake.enqueue(Fault.hang())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fake.base_url}/chat/completions", json={"messages": []}, timeout=0.2)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    assert set(threading.enumerate()) <= threads_before
    fake.stop()  # idempotent


async def test_http_app_reply_and_recording(app: FakeHttpApp) -> None:
    async with httpx.AsyncClient(base_url=app.url) as http:
        response = await http.post("/chat", json={"message": "what is up"}, headers={"X-K": "v"})
        assert response.status_code == 200
        assert response.json() == {
            "data": {"answer": "echo: what is up"},
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }

        app.reply = lambda body: {"custom": body["question"].upper()}
        response = await http.put("/v2/ask?lang=en", json={"question": "why"})
        assert response.json() == {"custom": "WHY"}

        assert (await http.post("/elsewhere", content="plain")).status_code == 404

    first, second, third = app.requests
    assert (first.method, first.path, first.json) == ("POST", "/chat", {"message": "what is up"})
    assert first.headers["x-k"] == "v"
    assert (second.method, second.path, second.query) == ("PUT", "/v2/ask", {"lang": "en"})
    assert (third.text, third.json) == ("plain", None)


async def test_http_app_faults_and_latency(app: FakeHttpApp) -> None:
    app.enqueue(
        Fault.http(502),
        Fault.http(429, {"detail": "slow down"}, retry_after=2),
        Fault.malformed(),
        Fault.close(),
        Fault.hang(),
    )
    async with httpx.AsyncClient(base_url=app.url) as http:
        response = await http.post("/chat", json={})
        assert (response.status_code, response.json()) == (502, {"error": "fake error 502"})
        response = await http.post("/chat", json={})
        assert (response.status_code, response.json()) == (429, {"detail": "slow down"})
        assert response.headers["retry-after"] == "2"
        response = await http.post("/chat", json={})
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            response.json()
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/chat", json={})
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/chat", json={}, timeout=0.2)

        app.latency = 0.2
        started = time.monotonic()
        response = await http.post("/chat", json={"prompt": "hi"})
        assert time.monotonic() - started >= 0.2
        assert response.json()["data"]["answer"] == "echo: hi"
