"""What a call to a model takes and gives back: the configuration (secrets decrypted), the
request, and the reply."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class TargetConfig:
    """A model configuration with its secrets decrypted: what the engine calls. Never logged."""

    id: uuid.UUID
    name: str
    provider: str
    model: str | None
    base_url: str | None
    api_key: str | None = field(repr=False)
    parameters: dict[str, Any]
    timeout_seconds: float
    requests_per_minute: int | None
    input_price_per_mtok: Decimal | None
    output_price_per_mtok: Decimal | None
    http_method: str | None = None
    http_headers: dict[str, str] = field(default_factory=dict, repr=False)
    body_template: str | None = None
    response_path: str | None = None
    stream: bool = False
    # Functions the model may call, in the OpenAI tools format:
    # [{"type": "function", "function": {"name", "description", "parameters": JSON Schema}}]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_calls_path: str | None = None  # http: a JSONPath to the answer's tool calls
    # http: a JSONPath to the text piece of each event when the endpoint streams (`stream`)
    stream_path: str | None = None


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for. `arguments` is the decoded JSON object, or the raw
    text when the model sent something that is not a JSON object (scored as such, not fixed)."""

    id: str
    name: str
    arguments: dict[str, Any] | str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class TargetRequest:
    """`messages` are chat messages in the OpenAI shape; within an agent loop they carry the
    assistant's `tool_calls` ([{"id", "type": "function", "function": {"name", "arguments":
    JSON text}}]) and the tools' answers ({"role": "tool", "tool_call_id", "content"})."""

    input: str | None = None
    messages: list[dict[str, Any]] | None = None
    system_prompt: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def chat(self) -> list[dict[str, Any]]:
        """The conversation to send: the messages, then the input as the last user turn."""
        turns = list(self.messages or [])
        if self.input is not None:
            turns.append({"role": "user", "content": self.input})
        return turns


MAX_TOKENS = 2**31 - 1  # what a result's count of tokens holds


@dataclass(frozen=True)
class TargetReply:
    output: str
    latency_ms: float
    input_tokens: int | None = None
    output_tokens: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        # A count no call could have used is unknown, rather than a failure to store it.
        for name in ("input_tokens", "output_tokens"):
            count = getattr(self, name)
            if count is not None and not 0 <= count <= MAX_TOKENS:
                object.__setattr__(self, name, None)
