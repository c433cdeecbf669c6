from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
)

from utils.save_checks import schema_in_body
from utils.schemas import InputModel, Name, OutputModel, example

MAX_TOOLS = 128
ToolName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]

Provider = Literal[
    "openai", "anthropic", "google", "groq", "mistral", "openai-compatible", "http", "demo"
]
HOSTED_PROVIDERS = frozenset({"openai", "anthropic", "google", "groq", "mistral"})
HttpMethod = Literal["GET", "POST", "PUT", "PATCH"]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,100}$")]
# What a header's value may hold, as HTTP clients send it: printable ASCII and tabs. One with
# a line break was saved, then every call failed as the provider's unusable answer.
SENDABLE_IN_A_HEADER = r"^[\t\x20-\x7e]*$"
HeaderValue = Annotated[str, StringConstraints(max_length=4000, pattern=SENDABLE_IN_A_HEADER)]


def _sendable_key(value: SecretStr) -> SecretStr:
    """An API key travels in a header (as stored: its surrounding whitespace trimmed). One with
    a line break, a NUL or a character past ASCII (a pasted typographic quote) was saved, then
    every call failed, tried again as the provider's connection error."""
    if not re.fullmatch(SENDABLE_IN_A_HEADER, value.get_secret_value().strip()):
        raise ValueError(
            "must be printable ASCII: no line breaks, control characters, accented letters or"
            " typographic quotes, which no HTTP client sends in a header"
        )
    return value


ApiKey = Annotated[SecretStr, Field(max_length=4000), AfterValidator(_sendable_key)]
Price = Annotated[Decimal, Field(ge=0, le=100_000, decimal_places=6)]

DEFAULT_BODY_TEMPLATE = '{"input": {{ input | tojson }}}'


class ModelParameters(InputModel):
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    top_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: list[Annotated[str, StringConstraints(max_length=100)]] | None = Field(
        default=None, max_length=8
    )


class FunctionDefinition(InputModel):
    name: ToolName
    description: str | None = Field(default=None, max_length=4000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="A JSON Schema of the arguments",
    )

    @field_validator("parameters")
    @classmethod
    def _a_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return dict(schema_in_body(value))


class ToolDefinition(InputModel):
    """A function the model may call, in the OpenAI tools format (translated for the other
    providers)."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


def _named_once(tools: list[ToolDefinition]) -> list[ToolDefinition]:
    names = [tool.function.name for tool in tools]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"tools named more than once: {', '.join(twice)}")
    return tools


ToolList = Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS), AfterValidator(_named_once)]


def tool_schemas(tools: list[ToolDefinition] | None) -> list[tuple[str, Any]]:
    """Each tool's JSON Schema of its arguments, with its field (for
    `utils.save_checks.check_schemas`)."""
    return [
        (f"tools.{index}.function.parameters", tool.function.parameters)
        for index, tool in enumerate(tools or [])
    ]


class HttpTarget(InputModel):
    """A team's own LLM application reached over HTTP."""

    # Its headers' values are secrets: no error (nor log line of one) repeats what was given.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: Url
    method: HttpMethod = "POST"
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=50,
        description="Sent with every call; stored encrypted, shown masked",
    )
    body_template: Annotated[str, StringConstraints(max_length=100_000)] = Field(
        default=DEFAULT_BODY_TEMPLATE,
        description="Jinja2 (sandboxed) with {{ input }} (the user's latest message),"
        " {{ messages }} (the whole chat: an agent's tool calls and results, a conversation's"
        " turns), {{ variables }} and {{ tools }}",
    )
    response_path: Annotated[str, StringConstraints(min_length=1, max_length=1000)] = Field(
        description="JSONPath to the output in the response, e.g. $.choices[0].text (at most"
        " one recursive descent `..`, as in every path of an http target)"
    )
    tool_calls_path: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = (
        Field(
            default=None,
            description="JSONPath to the answer's tool calls (a list of {name, arguments}),"
            " e.g. $.tool_calls",
        )
    )
    stream_path: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = Field(
        default=None,
        description="With `stream`: the endpoint answers with server-sent events, and this"
        " JSONPath finds the piece of text in each event's JSON data, e.g. $.delta (events"
        " without one are skipped, `[DONE]` ends); an answer that is not an event stream is"
        " read at response_path",
    )


class ModelConfigCreate(InputModel):
    model_config = example(
        {
            "name": "gpt-4o-mini",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "api_key": "sk-your-key",
            "parameters": {"temperature": 0},
            "timeout_seconds": 30,
            "requests_per_minute": 500,
        }
    )

    name: Name
    provider: Provider = Field(
        description="`demo` answers offline (no key); `http` calls your own application"
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="The provider's model name, e.g. gpt-4o-mini"
    )
    base_url: Url | None = Field(default=None, description="For openai-compatible providers")
    api_key: ApiKey | None = Field(default=None, description="Write-only; stored encrypted")
    parameters: ModelParameters = Field(
        default_factory=ModelParameters, description="Sent with every call (temperature, ...)"
    )
    timeout_seconds: float = Field(default=60.0, gt=0, le=600, description="Per call")
    requests_per_minute: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Calls are paced to stay under it"
    )
    stream: bool = Field(
        default=False,
        description="Request streamed answers: openai, openai-compatible, anthropic, google,"
        " groq and mistral stream their tokens; an http target streams server-sent events when"
        " it has an http.stream_path. A run's live stream then carries output.delta (target) or"
        " evaluation.delta (judge) events",
    )
    input_price_per_mtok: Price | None = Field(default=None, description="USD per 1M input tokens")
    output_price_per_mtok: Price | None = Field(
        default=None, description="USD per 1M output tokens"
    )
    http: HttpTarget | None = Field(default=None, description="For the `http` provider")
    tools: ToolList = Field(
        default_factory=list,
        description="Functions the model may call (OpenAI tools format); a test's agent loop"
        " answers them with its mocked tool responses",
    )

    @field_validator("api_key")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be blank")
        return value


class ModelConfigUpdate(InputModel):
    model_config = example({"parameters": {"temperature": 0.2}, "requests_per_minute": 200})

    name: Name | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    base_url: Url | None = None
    api_key: ApiKey | None = Field(
        default=None, description="A new key; null removes the stored one"
    )
    parameters: ModelParameters | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    requests_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    stream: bool | None = None
    input_price_per_mtok: Price | None = None
    output_price_per_mtok: Price | None = None
    http: HttpTarget | None = None
    tools: ToolList | None = None


class HttpTargetRead(OutputModel):
    url: str
    method: str
    headers: dict[str, str] = Field(description="Header names with masked values")
    body_template: str
    response_path: str
    tool_calls_path: str | None = None
    stream_path: str | None = None


class ModelConfigRead(OutputModel):
    id: uuid.UUID
    name: str
    provider: Provider
    model: str | None
    base_url: str | None
    api_key: str | None = Field(description="Masked, e.g. sk-…abcd; never the key")
    parameters: dict[str, object]
    timeout_seconds: float
    requests_per_minute: int | None
    stream: bool
    input_price_per_mtok: Decimal | None
    output_price_per_mtok: Decimal | None
    http: HttpTargetRead | None
    tools: list[dict[str, object]]
    demo: bool = Field(description="True for the offline demo provider: replies are canned")
    created_at: datetime
    updated_at: datetime


class ConnectionTestRequest(InputModel):
    model_config = example({"input": "Say hello"})

    input: Annotated[str, StringConstraints(min_length=1, max_length=4000)] = (
        "Reply with the single word: pong"
    )


class ConnectionTestResult(OutputModel):
    ok: bool
    latency_ms: float | None
    reply: str | None
    error: str | None = Field(description="The provider's error in plain words")
    input_tokens: int | None = None
    output_tokens: int | None = None
