"""Provider models through pydantic-ai (Anthropic, Google, Groq, Mistral): one model and SDK
client per configuration (providers.sdk_models), no SDK retries, the SDK's timeouts held to the
call's. With `on_delta`, the answer is requested as a stream and each piece of its text handed
over as it arrives; the result is the same as a whole answer's."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import httpx2
from pydantic_ai import exceptions as ai_errors
from pydantic_ai.direct import model_request, model_request_stream
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponsePart,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition

from providers.config import TargetConfig, TargetRequest, ToolCall
from providers.errors import TargetError, error_text, http_error
from providers.sdk_models import lent_model
from providers.targets import UNREADABLE
from providers.tool_calls import MAX_TOOL_CALLS, decode_arguments, function_tools
from utils.pinned_httpx import AnswerTooLarge
from utils.ssrf import vet
from utils.url_redaction import redact_urls

# What providers.sdk_models imports for each provider: loaded in a thread before the provider's
# first call (see providers.targets._provider_sdks).
SDK_MODULES = {
    "anthropic": (
        "httpx2",
        "anthropic",
        "pydantic_ai.models.anthropic",
        "pydantic_ai.providers.anthropic",
    ),
    "groq": ("groq", "pydantic_ai.models.groq", "pydantic_ai.providers.groq"),
    "google": ("pydantic_ai.models.google", "pydantic_ai.providers.google"),
    "mistral": ("pydantic_ai.models.mistral", "pydantic_ai.providers.mistral"),
}


async def load(provider: str) -> None:
    missing = [name for name in SDK_MODULES.get(provider, ()) if name not in sys.modules]
    if missing:
        await asyncio.to_thread(lambda: [importlib.import_module(name) for name in missing])


def _messages(request: TargetRequest) -> list[ModelMessage]:
    """The conversation in pydantic-ai's terms: an agent loop's assistant turns carry their
    tool calls, and each tool's answer goes back under the name of the call it answers."""
    history: list[ModelMessage] = []
    parts: list[ModelRequestPart] = []
    called: dict[str, str] = {}  # call id -> tool name
    if request.system_prompt:
        parts.append(SystemPromptPart(request.system_prompt))
    for turn in request.chat():
        role, content = turn["role"], turn.get("content")
        if role == "system":
            parts.append(SystemPromptPart(content or ""))
        elif role == "assistant":
            if parts:
                history.append(ModelRequest(parts=parts))
                parts = []
            history.append(ModelResponse(parts=_response_parts(turn, called)))
        elif role == "tool" and turn.get("tool_call_id"):
            call_id = str(turn["tool_call_id"])
            name = called.get(call_id) or turn.get("name") or ""
            answer = content if content is not None else ""
            parts.append(ToolReturnPart(tool_name=name, content=answer, tool_call_id=call_id))
        else:
            parts.append(UserPromptPart(content or ""))
    if parts:
        history.append(ModelRequest(parts=parts))
    return history


def _response_parts(turn: dict[str, Any], called: dict[str, str]) -> list[ModelResponsePart]:
    content = turn.get("content")
    parts: list[ModelResponsePart] = [TextPart(content)] if content else []
    for call in turn.get("tool_calls") or ():
        function = call["function"]
        called[call["id"]] = function["name"]
        arguments = function.get("arguments")
        parts.append(
            ToolCallPart(tool_name=function["name"], args=arguments, tool_call_id=call["id"])
        )
    return parts or [TextPart("")]


def _parameters(config: TargetConfig) -> ModelRequestParameters | None:
    if not config.tools:
        return None
    return ModelRequestParameters(
        function_tools=[
            ToolDefinition(
                name=function.name,
                description=function.description,
                parameters_json_schema=function.parameters,
                strict=function.strict,
            )
            for function in function_tools(config.tools)
        ]
    )


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


Answer = tuple[str, tuple[int | None, int | None], tuple[ToolCall, ...]]


async def call_model(
    config: TargetConfig,
    request: TargetRequest,
    seconds: float,
    allow_private: bool,
    on_delta: Callable[[str], None] | None = None,
) -> Answer:
    """One request: (text, (input tokens, output tokens), tool calls). With `on_delta`, the
    answer is streamed and its text handed over piece by piece as it arrives."""
    pin = None
    if config.base_url:
        pin = await vet(config.base_url, field="base_url", allow_private=allow_private)
    messages = _messages(request)
    settings = _settings(config, request, seconds)
    parameters = _parameters(config)
    async with lent_model(config, seconds, pin) as model:
        return await _request(model, messages, settings, parameters, seconds, on_delta)


async def _request(
    model: Model,
    messages: list[ModelMessage],
    settings: ModelSettings,
    parameters: ModelRequestParameters | None,
    seconds: float,
    on_delta: Callable[[str], None] | None,
) -> Answer:
    with _cut_answers(), _provider_errors(seconds):
        if on_delta is None:
            response = await model_request(
                model, messages, model_settings=settings, model_request_parameters=parameters
            )
        else:
            async with model_request_stream(
                model, messages, model_settings=settings, model_request_parameters=parameters
            ) as stream:
                async for event in stream:
                    piece = _text_piece(event)
                    if piece:
                        on_delta(piece)
                response = stream.get()
            if not _finished(response):
                raise TargetError(
                    "invalid_response",
                    "the provider's answer was not usable: "
                    "the stream ended before the provider finished its answer",
                )
    return _answer(response)


def _finished(response: ModelResponse) -> bool:
    """Whether the provider said why its streamed answer ended: a stream cut short (the
    connection closed early) carries no finish reason, and its text is only a part of the
    answer. A reason pydantic-ai does not name (Anthropic's `pause_turn`) is in its details."""
    details = response.provider_details or {}
    return response.finish_reason is not None or bool(details.get("finish_reason"))


def _text_piece(event: ModelResponseStreamEvent) -> str:
    """The text an event adds to the answer: a text part's opening content, or a piece of
    it (thinking and tool calls are not part of the answer's text)."""
    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return ""


@contextlib.contextmanager
def _provider_errors(seconds: float) -> Iterator[None]:
    """pydantic-ai's errors (opening the request or reading its stream) as `TargetError`s."""
    started = time.perf_counter()
    try:
        yield
    except ai_errors.ModelHTTPError as exc:
        raise http_error(exc.status_code, error_text(exc.body), exc.headers) from exc
    except ai_errors.ModelTimeoutError as exc:
        # The SDK clients report refused and dropped connections as timeouts too: one
        # that comes before the time limit is a connection failure.
        if time.perf_counter() - started < seconds * 0.9:
            raise TargetError(
                "connection_error", f"could not reach the provider: {_said(exc)}"
            ) from exc
        raise TargetError("timeout", f"no answer within {seconds:g} s") from exc
    except ai_errors.ModelConnectionError as exc:
        raise TargetError(
            "connection_error", f"could not reach the provider: {_said(exc)}"
        ) from exc
    except ai_errors.ModelRequestTimeout as exc:
        raise TargetError("timeout", f"no answer within {seconds:g} s") from exc
    except (ai_errors.UnexpectedModelBehavior, ai_errors.ModelAPIError) as exc:
        raise TargetError(
            "invalid_response", f"the provider's answer was not usable: {_said(exc)}"
        ) from exc
    # What an SDK lets through unwrapped (pydantic-ai maps only some of it, per provider).
    except (httpx.TimeoutException, httpx2.TimeoutException) as exc:
        if time.perf_counter() - started < seconds * 0.9:
            raise TargetError(
                "connection_error", f"could not reach the provider: {_said(exc)}"
            ) from exc
        raise TargetError("timeout", f"no answer within {seconds:g} s") from exc
    except (httpx.HTTPStatusError, httpx2.HTTPStatusError) as exc:
        response = exc.response
        raise http_error(response.status_code, "", dict(response.headers)) from exc
    except (httpx.DecodingError, httpx2.DecodingError) as exc:
        raise TargetError(
            "invalid_response", f"the provider's answer was not usable: {_said(exc)}"
        ) from exc
    except (httpx.HTTPError, httpx2.HTTPError) as exc:
        raise TargetError(
            "connection_error", f"could not reach the provider: {_said(exc)}"
        ) from exc
    except (TargetError, TimeoutError, *UNREADABLE):
        raise  # call_target reports an answer's unforeseen shape, and where it was met
    except Exception as exc:
        # Whatever else an SDK lets escape (httpx's ResponseNotRead from Mistral's, reading an
        # error it never read) fails this call, not its chunk (which would be run again).
        raise TargetError(
            "invalid_response",
            f"the provider's answer was not usable: {type(exc).__name__}: {_said(exc)}",
        ) from exc


@contextlib.contextmanager
def _cut_answers() -> Iterator[None]:
    """An answer the pinned transport cut at its cap is an invalid response, however the SDK
    wrapped the transport's error (Anthropic's reports it as a failed connection)."""
    try:
        yield
    except TargetError as exc:
        cause: BaseException | None = exc
        for _ in range(20):  # (a chain may loop)
            if cause is None or isinstance(cause, AnswerTooLarge):
                break
            cause = cause.__cause__ or cause.__context__
        if not isinstance(cause, AnswerTooLarge):
            raise
        raise TargetError("invalid_response", str(cause)) from exc


def _said(exc: Exception) -> str:
    """An SDK error's words, without what a URL in them carries (an API key in the query)."""
    return redact_urls(str(exc))


def _answer(response: ModelResponse) -> Answer:
    text = "".join(part.content for part in response.parts if isinstance(part, TextPart))
    calls = [part for part in response.parts if isinstance(part, ToolCallPart)]
    if len(calls) > MAX_TOOL_CALLS:
        raise TargetError(
            "invalid_response", f"the answer asks for more than {MAX_TOOL_CALLS} tool calls"
        )
    tool_calls = tuple(
        ToolCall(part.tool_call_id, part.tool_name, decode_arguments(part.args)) for part in calls
    )
    usage = response.usage
    return text, (usage.input_tokens, usage.output_tokens), tool_calls
