"""Calling a target or a judge on a run's behalf: through its model's gate (pace, retries,
circuit breaker), with streamed text handed to the live stream, and priced."""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from app.engine.gate import call_through, gate_for
from notifications.publisher import Publisher
from notifications.service import current_publisher
from providers.targets import TargetConfig, TargetError, TargetReply, TargetRequest, call_target
from utils import tracing
from utils.metrics import Metrics, metrics

PRICE_PROVIDERS = {"openai", "anthropic", "google", "groq", "mistral"}
# The kinds of a failed call as the `outcome` label says them (a fixed set).
OUTCOMES = {
    "rate_limited": "429",
    "server_error": "5xx",
    "timeout": "timeout",
    "connection_error": "connection_error",
    "client_error": "4xx",
    "auth_error": "auth_error",
    "circuit_open": "circuit_open",
}
# The run and result a call is made for, as attributes of its span (set per case).
call_owner: ContextVar[dict[str, str] | None] = ContextVar("call_owner", default=None)


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
        return observed(
            config,
            call_target(
                config,
                request,
                allow_private_networks=allow_private,
                time_limit=time_limit,
                on_delta=on_delta,
            ),
        )

    gate = gate_for(
        config.id, config.requests_per_minute, provider=config.provider, model=config.model
    )
    return await call_through(
        gate, attempt, time_limit=time_limit, model_time_limit=config.timeout_seconds
    )


async def observed(config: TargetConfig, call: Awaitable[TargetReply]) -> TargetReply:
    """One attempt at a call, counted (`assay_provider_*`) and, when tracing, a span in the
    GenAI semantic conventions with the run and result it was made for."""
    into = metrics()
    counted = _counted(into, config.provider, into.model_label(config.model))
    started = time.perf_counter()
    with (
        tracing.span(
            f"chat {config.model or config.name}", _attributes(config), kind=SpanKind.CLIENT
        )
        if tracing.enabled()
        else contextlib.nullcontext()
    ) as span:
        try:
            reply = await call
        except TargetError as error:
            outcome = OUTCOMES.get(error.kind, "error")
            into.provider_calls.labels(counted.provider, counted.model, outcome).inc()
            counted.duration.observe(time.perf_counter() - started)
            tracing.failed(span, error.kind, error.message)
            raise
        counted.ok.inc()
        counted.duration.observe(time.perf_counter() - started)
        price = cost(config, reply)
        if reply.input_tokens:
            counted.input_tokens.inc(reply.input_tokens)
        if reply.output_tokens:
            counted.output_tokens.inc(reply.output_tokens)
        if price:
            counted.cost.inc(price)
        if span is not None:
            span.set_attribute("gen_ai.usage.input_tokens", reply.input_tokens or 0)
            span.set_attribute("gen_ai.usage.output_tokens", reply.output_tokens or 0)
            if price is not None:
                span.set_attribute("assay.cost_usd", price)
        return reply


def _attributes(config: TargetConfig) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": config.provider,
        "gen_ai.request.model": config.model,
        "server.address": urlsplit(config.base_url).hostname if config.base_url else None,
        **(call_owner.get() or {}),
    }


@dataclass(frozen=True)
class _Counted:
    """One model's labelled series, looked up once: a label lookup per series and call costs
    more than the call's own counting."""

    provider: str
    model: str
    ok: Any
    duration: Any
    input_tokens: Any
    output_tokens: Any
    cost: Any


@functools.lru_cache(maxsize=256)
def _counted(into: Metrics, provider: str, model: str) -> _Counted:
    return _Counted(
        provider,
        model,
        into.provider_calls.labels(provider, model, "ok"),
        into.provider_duration.labels(provider, model),
        into.provider_tokens.labels(provider, model, "input"),
        into.provider_tokens.labels(provider, model, "output"),
        into.provider_cost.labels(provider, model),
    )


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
