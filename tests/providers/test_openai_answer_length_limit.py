"""A model's `max_tokens` reaches OpenAI as `max_completion_tokens`: OpenAI refuses `max_tokens`
for its reasoning models (o-series, gpt-5), so every call to one failed with a 400. Other
OpenAI-compatible servers (Ollama, vLLM, ...) are still sent `max_tokens`, which they know."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import AsyncOpenAI, BadRequestError

from providers.config import TargetRequest
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI
from tests.providers.support import target_config

REASONING_MODELS = ["gpt-5", "gpt-5.1-mini", "o3", "o4-mini"]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


async def test_the_fake_refuses_max_tokens_for_a_reasoning_model_as_openai_does(fake):
    client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    question = [{"role": "user", "content": "Hi"}]
    with pytest.raises(BadRequestError) as refused:
        await client.chat.completions.create(model="o3", messages=question, max_tokens=20)  # type: ignore[arg-type]
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == "max_tokens"
    assert "Use 'max_completion_tokens' instead" in refused.value.message
    answered = await client.chat.completions.create(
        model="o3",
        messages=question,  # type: ignore[arg-type]
        max_completion_tokens=20,
    )
    assert answered.choices[0].message.content == "echo: Hi"
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", REASONING_MODELS)
async def test_openai_is_sent_max_completion_tokens(fake, model, stream):
    config = target_config(
        "openai", fake.base_url, model=model, parameters={"max_tokens": 64}, stream=stream
    )
    reply = await call_target(
        config,
        TargetRequest(input="Hi"),
        allow_private_networks=True,
        on_delta=(lambda piece: None) if stream else None,
    )
    assert reply.output == "echo: Hi"
    sent = fake.requests[0].json
    assert sent["max_completion_tokens"] == 64
    assert "max_tokens" not in sent


async def test_an_openai_compatible_server_is_still_sent_max_tokens(fake):
    config = target_config(
        "openai-compatible", fake.base_url, model="llama3", parameters={"max_tokens": 64}
    )
    reply = await call_target(config, TargetRequest(input="Hi"), allow_private_networks=True)
    assert reply.output == "echo: Hi"
    sent = fake.requests[0].json
    assert sent["max_tokens"] == 64
    assert "max_completion_tokens" not in sent


async def test_no_limit_configured_sends_neither(fake):
    config = target_config("openai", fake.base_url, model="gpt-5")
    await call_target(config, TargetRequest(input="Hi"), allow_private_networks=True)
    assert not {"max_tokens", "max_completion_tokens"} & set(fake.requests[0].json)
