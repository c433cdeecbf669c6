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
