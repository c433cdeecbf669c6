"""Calling what is under test (or judging): provider models through pydantic-ai, a team's own
HTTP endpoint through httpx, or the offline demo provider.

Every call has a timeout; failures become a `TargetError` with a kind the executor can act on
(retry a rate limit or a server error, count a timeout) and a message in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from jsonpath_ng.ext import parse as parse_jsonpath
from pydantic_ai import exceptions as ai_errors
from pydantic_ai.direct import model_request
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

from app.engine import openai_wire, transport
from app.errors import InvalidInput
from database.models.service import TargetConfig
from utils.ssrf import check_url
from utils.templates import render

ErrorKind = Literal[
    "timeout",
    "rate_limited",
    "server_error",
    "client_error",
    "auth_error",
    "connection_error",
    "invalid_response",
    "configuration_error",
    "circuit_open",
]


@dataclass(frozen=True)
class TargetRequest:
    input: str | None = None
    messages: list[dict[str, str]] | None = None
    system_prompt: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def chat(self) -> list[dict[str, str]]:
        """The conversation to send: the messages, then the input as the last user turn."""
        turns = list(self.messages or [])
        if self.input is not None:
            turns.append({"role": "user", "content": self.input})
        return turns


@dataclass(frozen=True)
class TargetReply:
    output: str
    latency_ms: float
    input_tokens: int | None = None
    output_tokens: int | None = None


DEADLINE_GRACE_SECONDS = 1.0
OWN_TRANSPORT = frozenset({"openai", "openai-compatible", "http"})


class TargetError(Exception):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after


async def call_target(
    config: TargetConfig,
    request: TargetRequest,
    *,
    allow_private_networks: bool,
    time_limit: float | None = None,
    on_delta: Callable[[str], None] | None = None,
) -> TargetReply:
    """Calls the target once. With `on_delta` and a configuration that streams, pieces of the
    answer are handed over as they arrive (the reply still holds the whole text)."""
    seconds = time_limit or config.timeout_seconds
    started = time.perf_counter()
    # An overall deadline for the SDK clients, whose timeouts are per phase and restart on
    # every byte. The engine's own HTTP client already holds each exchange to `seconds`.
    deadline = (
        contextlib.nullcontext()
        if config.provider in OWN_TRANSPORT
        else asyncio.timeout(seconds + DEADLINE_GRACE_SECONDS)
    )
    try:
        async with deadline:
            streamed = on_delta if config.stream else None
            output, usage = await _dispatch(
                config, request, seconds, allow_private_networks, streamed
            )
    except TimeoutError as exc:
        raise TargetError("timeout", f"no complete answer within {seconds:g} s") from exc
    except InvalidInput as exc:  # the SSRF guard or the request template refused
        raise TargetError("configuration_error", _redact(exc.detail, config)) from exc
    except TargetError as exc:  # providers and apps may echo the credentials they were sent
        exc.message = _redact(exc.message, config)
        exc.args = (exc.message,)
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    input_tokens, output_tokens = usage or (None, None)
    return TargetReply(output, latency_ms, input_tokens, output_tokens)


Usage = tuple[int | None, int | None]


async def _dispatch(
    config: TargetConfig,
    request: TargetRequest,
    seconds: float,
    allow_private: bool,
    on_delta: Callable[[str], None] | None,
) -> tuple[str, Usage | None]:
    if config.provider == "demo":
        return demo_reply(request), None
    if config.provider == "http":
        return await _call_http(config, request, seconds, allow_private)
    if config.provider in ("openai", "openai-compatible"):
        return await _call_openai_wire(config, request, seconds, allow_private, on_delta)
    return await _call_model(config, request, seconds, allow_private)


async def _call_openai_wire(
    config: TargetConfig,
    request: TargetRequest,
    seconds: float,
    allow_private: bool,
    on_delta: Callable[[str], None] | None = None,
) -> tuple[str, Usage]:
    if config.base_url:
        await check_url(
            config.base_url, field="base_url", allow_private=allow_private, require_resolution=True
        )
    messages = (
        [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
    )
    messages += [
        {"role": "user" if turn["role"] == "tool" else turn["role"], "content": turn["content"]}
        for turn in request.chat()
    ]
    body = openai_wire.payload(
        config.model or "", messages, {**config.parameters, **request.parameters}
    )
    try:
        text, input_tokens, output_tokens = await openai_wire.chat(
            base_url=config.base_url,
            api_key=config.api_key,
            body=body,
            seconds=seconds,
            on_delta=on_delta,
        )
    except transport.TransportError as exc:
        raise TargetError(exc.kind, str(exc)) from exc  # type: ignore[arg-type]
    except openai_wire.WireStatus as exc:
        raise _http_error(exc.status, exc.detail, exc.headers) from exc
    except ValueError as exc:
        raise TargetError(
            "invalid_response", f"the provider's answer was not usable: {exc}"
        ) from exc
    return text, (input_tokens, output_tokens)


MIN_REDACTED_LENGTH = 6


def _redact(message: str, config: TargetConfig) -> str:
    """The message without the API key or any header value (nor a header's longer words, such
    as the token of `Bearer <token>`)."""
    secrets = {config.api_key or ""}
    for value in config.http_headers.values():
        secrets.add(value)
        secrets.update(value.split())
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_REDACTED_LENGTH:
            message = message.replace(secret, "[redacted]")
    return message


# --- demo ----------------------------------------------------------------------------------


def demo_reply(request: TargetRequest) -> str:
    """The offline demo provider: deterministic canned text, clearly labelled as such."""
    turns = request.chat()
    last = turns[-1]["content"] if turns else ""
    digest = hashlib.sha256(last.encode()).hexdigest()[:8]
    return f"[demo] You said: {last.strip()[:500]} (reply {digest})"


# --- provider models through pydantic-ai ---------------------------------------------------


MODEL_CACHE_SIZE = 256
_models: OrderedDict[tuple[object, ...], Model] = OrderedDict()


def _cached_model(config: TargetConfig, timeout: float) -> Model:
    """One model (with its SDK client and connection pool) per configuration, reused across
    calls: building a client (TLS context, connection pool) costs more than a fast call."""
    key = (
        asyncio.get_running_loop(),  # clients belong to the loop they were made on
        config.id,
        config.provider,
        config.model,
        config.base_url,
        hashlib.sha256((config.api_key or "").encode()).hexdigest(),
        timeout,
    )
    model = _models.get(key)
    if model is None:
        model = _models[key] = _model(config, timeout)
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)
    else:
        _models.move_to_end(key)
    return model


def _model(config: TargetConfig, timeout: float) -> Model:
    """A pydantic-ai model whose SDK neither retries nor waits longer than `timeout`."""
    name = config.model or ""
    provider = config.provider
    # The SSRF guard checks the configured URL: the SDKs must not follow a redirect elsewhere.
    if provider == "anthropic":
        from anthropic import AsyncAnthropic
        from anthropic import DefaultAsyncHttpxClient as AnthropicHttpClient
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        anthropic = AsyncAnthropic(
            api_key=config.api_key,
            base_url=config.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=AnthropicHttpClient(follow_redirects=False),
        )
        return AnthropicModel(name, provider=AnthropicProvider(anthropic_client=anthropic))
    if provider == "groq":
        from groq import AsyncGroq
        from groq import DefaultAsyncHttpxClient as GroqHttpClient
        from pydantic_ai.models.groq import GroqModel
        from pydantic_ai.providers.groq import GroqProvider

        groq = AsyncGroq(
            api_key=config.api_key,
            base_url=config.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=GroqHttpClient(follow_redirects=False),
        )
        return GroqModel(name, provider=GroqProvider(groq_client=groq))
    if provider == "google":
        from pydantic_ai.models.google import GoogleModel
        from pydantic_ai.providers.google import GoogleProvider

        return GoogleModel(
            name, provider=GoogleProvider(api_key=config.api_key, base_url=config.base_url)
        )
    if provider == "mistral":
        from pydantic_ai.models.mistral import MistralModel
        from pydantic_ai.providers.mistral import MistralProvider

        return MistralModel(
            name, provider=MistralProvider(api_key=config.api_key, base_url=config.base_url)
        )
    raise TargetError("configuration_error", f"unknown provider {provider!r}")


def _messages(request: TargetRequest) -> list[ModelMessage]:
    history: list[ModelMessage] = []
    parts: list[SystemPromptPart | UserPromptPart] = []
    if request.system_prompt:
        parts.append(SystemPromptPart(request.system_prompt))
    for turn in request.chat():
        role, content = turn["role"], turn["content"]
        if role == "system":
            parts.append(SystemPromptPart(content))
        elif role == "assistant":
            if parts:
                history.append(ModelRequest(parts=parts))
                parts = []
            history.append(ModelResponse(parts=[TextPart(content)]))
        else:
            parts.append(UserPromptPart(content))
    if parts:
        history.append(ModelRequest(parts=parts))
    return history


def _settings(config: TargetConfig, request: TargetRequest, timeout: float) -> ModelSettings:
    params = {**config.parameters, **request.parameters}
    settings: dict[str, Any] = {"timeout": timeout}
    for key in (
        "temperature",
        "max_tokens",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    ):
        if params.get(key) is not None:
            settings[key] = params[key]
    if params.get("stop"):
        settings["stop_sequences"] = params["stop"]
    return ModelSettings(**settings)  # type: ignore[typeddict-item]


async def _call_model(
    config: TargetConfig, request: TargetRequest, seconds: float, allow_private: bool
) -> tuple[str, tuple[int | None, int | None]]:
    if config.base_url:
        await check_url(
            config.base_url, field="base_url", allow_private=allow_private, require_resolution=True
        )
    started = time.perf_counter()
    try:
        response = await model_request(
            _cached_model(config, seconds),
            _messages(request),
            model_settings=_settings(config, request, seconds),
        )
    except ai_errors.ModelHTTPError as exc:
        raise _http_error(exc.status_code, _error_text(exc.body), exc.headers) from exc
    except ai_errors.ModelTimeoutError as exc:
        # The SDK clients report refused and dropped connections as timeouts too: one
        # that comes before the time limit is a connection failure.
        if time.perf_counter() - started < seconds * 0.9:
            raise TargetError("connection_error", f"could not reach the provider: {exc}") from exc
        raise TargetError("timeout", f"no answer within {seconds:g} s") from exc
    except ai_errors.ModelConnectionError as exc:
        raise TargetError("connection_error", f"could not reach the provider: {exc}") from exc
    except (ai_errors.UnexpectedModelBehavior, ai_errors.ModelAPIError) as exc:
        raise TargetError(
            "invalid_response", f"the provider's answer was not usable: {exc}"
        ) from exc
    text = "".join(part.content for part in response.parts if isinstance(part, TextPart))
    usage = response.usage
    return text, (usage.input_tokens, usage.output_tokens)


def _error_text(body: object) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        return json.dumps(body)[:500]
    return str(body)[:500] if body else ""


def _http_error(status: int, detail: str, headers: dict[str, str] | None) -> TargetError:
    retry_after = _retry_after((headers or {}).get("retry-after"))
    kind: ErrorKind
    if status == 429:
        kind = "rate_limited"
    elif status in (401, 403):
        kind = "auth_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "client_error"
    phrase = httpx.codes.get_reason_phrase(status)
    message = f"the endpoint answered {status} {phrase}" + (f": {detail}" if detail else "")
    return TargetError(kind, message, status=status, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


# --- a team's HTTP endpoint -----------------------------------------------------------------


async def _call_http(
    config: TargetConfig, request: TargetRequest, seconds: float, allow_private: bool
) -> tuple[str, None]:
    assert config.base_url and config.body_template and config.response_path
    await check_url(
        config.base_url, field="http.url", allow_private=allow_private, require_resolution=True
    )
    body = render(
        config.body_template,
        {"input": request.input or "", "messages": request.chat(), "variables": request.variables},
        field="http.body_template",
    )
    headers = {"Content-Type": "application/json", **config.http_headers}
    method = config.http_method or "POST"
    try:
        status, reply_headers, raw = await transport.send(
            method,
            config.base_url,
            body=body if method != "GET" else None,
            headers=headers,
            seconds=seconds,
        )
    except transport.TransportError as exc:
        raise TargetError(exc.kind, str(exc)) from exc  # type: ignore[arg-type]
    if status >= 400:
        detail = raw[:300].decode(errors="replace")
        raise _http_error(status, detail, reply_headers)
    if 300 <= status < 400:  # not followed: the SSRF guard only vetted the configured URL
        raise TargetError(
            "client_error",
            f"the endpoint answered {status} {httpx.codes.get_reason_phrase(status)} to "
            f"{reply_headers.get('location', '?')}; redirects are not followed, "
            "configure the final URL",
            status=status,
        )
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise TargetError("invalid_response", "the endpoint did not answer with JSON") from exc
    matches = parse_jsonpath(config.response_path).find(document)
    if not matches:
        raise TargetError(
            "invalid_response", f"nothing at {config.response_path} in the endpoint's answer"
        )
    value = matches[0].value
    return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)), None
