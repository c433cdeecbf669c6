"""Calling a target or a judge on a run's behalf: through its model's gate (pace, retries,
circuit breaker), with streamed text handed to the live stream, and priced."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

from app.engine.gate import call_through, gate_for
from notifications.publisher import Publisher
from notifications.service import current_publisher
from providers.targets import TargetConfig, TargetReply, TargetRequest, call_target

PRICE_PROVIDERS = {"openai", "anthropic", "google", "groq", "mistral"}


async def call_model(
    config: TargetConfig,
    request: TargetRequest,
    *,
    allow_private: bool,
    time_limit: float | None = None,
    on_delta: DeltaSink | None = None,
) -> TargetReply:
    """One answer, retried through the model's gate as its errors allow."""

    def attempt() -> Awaitable[TargetReply]:
        if on_delta is not None:
            on_delta.new_attempt()
        return call_target(
            config,
            request,
            allow_private_networks=allow_private,
            time_limit=time_limit,
            on_delta=on_delta,
        )

    return await call_through(gate_for(config.id, config.requests_per_minute), attempt)


class DeltaSink:
    """Hands streamed text to this process's publisher (live only: never stored). A retried
    call first sends a reset: what a failed attempt streamed is not part of the answer."""

    def __init__(self, publisher: Publisher, run_id: uuid.UUID, key: dict[str, Any]) -> None:
        self.publisher = publisher
        self.run_id = run_id
        self.key = key
        self.attempts = 0

    def __call__(self, text: str) -> None:
        self.publisher.delta(self.run_id, {**self.key, "text": text})

    def new_attempt(self) -> None:
        if self.attempts:
            self.publisher.delta(self.run_id, {**self.key, "text": "", "reset": True})
        self.attempts += 1


def delta_sink(run_id: uuid.UUID, key: dict[str, Any]) -> DeltaSink | None:
    """Where the live text of one answer goes (nowhere in a process without a publisher)."""
    publisher = current_publisher()
    return DeltaSink(publisher, run_id, key) if publisher is not None else None


def cost(config: TargetConfig, reply: TargetReply) -> float | None:
    """The call's price in USD: the configuration's own prices, else genai-prices' table."""
    if reply.input_tokens is None or reply.output_tokens is None:
        return None
    if config.input_price_per_mtok is not None or config.output_price_per_mtok is not None:
        per_input = config.input_price_per_mtok or Decimal(0)
        per_output = config.output_price_per_mtok or Decimal(0)
        return float(
            (per_input * reply.input_tokens + per_output * reply.output_tokens) / Decimal(1_000_000)
        )
    if config.provider not in PRICE_PROVIDERS or not config.model:
        return None
    from genai_prices import Usage, calc_price  # its price table takes a while to load

    try:
        price = calc_price(
            Usage(input_tokens=reply.input_tokens, output_tokens=reply.output_tokens),
            model_ref=config.model,
            provider_id=config.provider,
        )
    except LookupError:
        return None
    return float(price.total_price)
