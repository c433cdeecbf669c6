"""What the provider tests share: a configuration to call, and a tool to offer."""

from __future__ import annotations

import uuid
from typing import Any

from providers.config import TargetConfig

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
    "required": ["city"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": WEATHER_SCHEMA,
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


def target_config(provider: str, base_url: str | None, **fields: Any) -> TargetConfig:
    settings: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": f"{provider} under test",
        "provider": provider,
        "model": "fake-model",
        "base_url": base_url,
        "api_key": "sk-provider-test-key",
        "parameters": {},
        "timeout_seconds": 5,
        "requests_per_minute": None,
        "input_price_per_mtok": None,
        "output_price_per_mtok": None,
    }
    return TargetConfig(**{**settings, **fields})
