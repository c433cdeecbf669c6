"""Calling what is under test (or judging): provider models through pydantic-ai, the OpenAI wire
format, a team's own HTTP endpoint, or the offline demo provider.

Every call has a timeout; failures become a `TargetError` with a kind the engine can act on
(retry a rate limit or a server error, count a timeout) and a message in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib
import json
import re
import time
import traceback
import urllib.parse
from collections.abc import Callable
from types import ModuleType
from typing import Any

import httpx
import structlog

from providers import json_paths, openai_wire
from providers.config import TargetConfig, TargetReply, TargetRequest, ToolCall
from providers.errors import DETAIL_READ_CHARS, MESSAGE_CHARS, TargetError, http_error
from providers.http_stream import READ_ON_LOOP_BYTES, EventStream
from providers.tool_calls import openai_message, read_calls
from utils import fastjson, transport
from utils.errors import InvalidInput
from utils.ssrf import LookupTimedOut, vet
from utils.templates import render_off_loop
from utils.url_redaction import TOKEN_LIKE_CHARS, redact_urls, url_secrets

log = structlog.get_logger(__name__)

__all__ = [
    "TargetConfig",
    "TargetError",
    "TargetReply",
    "TargetRequest",
    "ToolCall",
    "call_target",
]

DEADLINE_GRACE_SECONDS = 1.0
OWN_TRANSPORT = frozenset({"openai", "openai-compatible", "http"})


async def call_target(
    config: TargetConfig,
    request: TargetRequest,
    *,
    allow_private_networks: bool,
    time_limit: float | None = None,
    on_delta: Callable[[str], None] | None = None,
) -> TargetReply:
    """Calls the target once. With `on_delta` and a configuration that streams, pieces of the
    answer are handed over as they arrive (the reply still holds the whole text): every
    provider but demo streams, an http target when it has a `stream_path` (whose events are
    read even without `on_delta`). The tools of
    the configuration are offered to the model, and the calls it asks for come back in the
    reply's `tool_calls` (its text is then often empty)."""
    if config.provider not in OWN_TRANSPORT and config.provider != "demo":
        await _provider_sdks(config.provider)  # before the clock: loaded once per process
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
            output, usage, tool_calls = await _dispatch(
                config, request, seconds, allow_private_networks, streamed
            )
            for call in tool_calls:  # (an SDK's reader has no bound of depth)
                fastjson.refuse_deep(call.arguments)
    except TimeoutError as exc:
        raise TargetError("timeout", f"no complete answer within {seconds:g} s") from exc
    except LookupTimedOut as exc:  # the host's name servers did not answer: perhaps for now
        raise TargetError("connection_error", _redact(exc.detail, config)) from exc
    except InvalidInput as exc:  # the SSRF guard or the request template refused
        raise TargetError("configuration_error", _redact(exc.detail, config)) from exc
    except TargetError as exc:  # providers and apps may echo the credentials they were sent
        exc.message = _redact(exc.message, config)[:MESSAGE_CHARS]
        exc.args = (exc.message,)
        raise
    except UNREADABLE as exc:
        # An answer of a shape the provider's SDK, or a reader here, did not foresee: this
        # case's error, not its chunk's (which would be run again, calling every case anew).
        message = f"the provider's answer was not usable: {type(exc).__name__}: {exc}"
        message = _redact(message, config)[:MESSAGE_CHARS]
        where = traceback.extract_tb(exc.__traceback__)[-1]
        log.warning("unusable answer", error=message, at=f"{where.filename}:{where.lineno}")
        raise TargetError("invalid_response", message) from exc
    latency_ms = (time.perf_counter() - started) * 1000
    input_tokens, output_tokens = usage or (None, None)
    return TargetReply(output, latency_ms, input_tokens, output_tokens, tool_calls)


# What reading an answer of a shape no one foresaw raises (the SDKs' parsers included).
UNREADABLE = (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError)
Usage = tuple[int | None, int | None]
Answer = tuple[str, Usage | None, tuple[ToolCall, ...]]  # text, token counts, tool calls


async def _dispatch(
    config: TargetConfig,
    request: TargetRequest,
    seconds: float,
    allow_private: bool,
    on_delta: Callable[[str], None] | None,
) -> Answer:
    if config.provider == "demo":
        return demo_reply(request), None, ()
    if config.provider == "http":
        # An endpoint that streams may speak only events: they are read even when no one
        # takes the pieces.
        pieces = on_delta if on_delta is not None else _ignore
        return await _call_http(config, request, seconds, allow_private, pieces)
    if config.provider in ("openai", "openai-compatible"):
        return await _call_openai_wire(config, request, seconds, allow_private, on_delta)
    sdk = await _provider_sdks(config.provider)
    return await sdk.call_model(config, request, seconds, allow_private, on_delta)


_sdk: ModuleType | None = None


async def _provider_sdks(provider: str) -> ModuleType:
    """`providers.sdk` with the provider's SDK, loaded with the first call through it (many
    installs only call OpenAI-compatible endpoints), in a thread: pydantic-ai and an SDK take
    seconds of CPU to import, which the event loop would spend frozen, every request and stream
    of the process waiting."""
    global _sdk
    if _sdk is None:
        _sdk = await asyncio.to_thread(importlib.import_module, "providers.sdk")
    await _sdk.load(provider)
    return _sdk


async def _call_openai_wire(
    config: TargetConfig,
    request: TargetRequest,
    seconds: float,
    allow_private: bool,
    on_delta: Callable[[str], None] | None = None,
) -> Answer:
    pin = None
    if config.base_url:
        pin = await vet(config.base_url, field="base_url", allow_private=allow_private)
    messages = (
        [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
    )
    messages += [openai_message(turn) for turn in request.chat()]
    body = openai_wire.payload(
        config.model or "",
        messages,
        {**config.parameters, **request.parameters},
        config.tools,
        provider=config.provider,
    )
    try:
        completion = await openai_wire.chat(
            base_url=config.base_url,
            api_key=config.api_key,
            body=body,
            seconds=seconds,
            on_delta=on_delta,
            pin=pin,
        )
    except transport.TransportError as exc:
        raise TargetError(exc.kind, str(exc)) from exc  # type: ignore[arg-type]
    except openai_wire.WireStatus as exc:
        raise http_error(exc.status, exc.detail, exc.headers) from exc
    except ValueError as exc:
        raise TargetError(
            "invalid_response", f"the provider's answer was not usable: {exc}"
        ) from exc
    usage = (completion.input_tokens, completion.output_tokens)
    return completion.text, usage, completion.tool_calls


# A header value's words: `Bearer <token>`, a cookie's `name=value; other=value`.
_HEADER_WORDS = re.compile(r"[\s;,]+")
# Words of a header value that are its form, not its secret.
_AUTH_SCHEMES = frozenset({"bearer", "basic", "digest", "token"})


def _redact(message: str, config: TargetConfig) -> str:
    """The message without the API key, what of the endpoint's URL may be its credential (its
    path and query, their longer pieces: viewers are shown a URL's origin only) or any header
    value (nor a header's longer parts, such as the token of `Bearer <token>` or a cookie's
    value), as given or as an error page may repeat it (JSON-escaped, with PHP's `\\/`, or
    percent-encoded), nor any URL's query values or user part."""
    secrets = {config.api_key or "", *url_secrets(config.base_url or "")}
    for value in config.http_headers.values():
        secrets.add(value)
        for word in _HEADER_WORDS.split(value):
            if word.lower() not in _AUTH_SCHEMES:
                name, equals, assigned = word.partition("=")  # a cookie's value, not its name
                secrets.update((word, assigned if equals and assigned.strip("=") else name))
    forms = {
        form for secret in secrets if len(secret) >= TOKEN_LIKE_CHARS for form in _forms(secret)
    }
    for form in sorted(forms, key=len, reverse=True):
        message = message.replace(form, "[redacted]")
    return redact_urls(message)


def _forms(secret: str) -> set[str]:
    escaped = json.dumps(secret)[1:-1]
    return {
        secret,
        escaped,
        escaped.replace("/", "\\/"),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }


# --- demo ----------------------------------------------------------------------------------


def demo_reply(request: TargetRequest) -> str:
    """The offline demo provider: deterministic canned text, clearly labelled as such."""
    turns = request.chat()
    last = (turns[-1].get("content") or "") if turns else ""
    digest = hashlib.sha256(last.encode()).hexdigest()[:8]
    return f"[demo] You said: {last.strip()[:500]} (reply {digest})"


# --- a team's HTTP endpoint -----------------------------------------------------------------


async def _call_http(
    config: TargetConfig,
    request: TargetRequest,
    seconds: float,
    allow_private: bool,
    on_delta: Callable[[str], None] | None = None,
) -> Answer:
    """One exchange with the team's endpoint: a JSON answer read at `response_path`, or, when
    the configuration streams and has a `stream_path`, an event stream whose pieces make the
    answer."""
    assert config.base_url and config.body_template and config.response_path
    pin = await vet(config.base_url, field="http.url", allow_private=allow_private)
    chat = request.chat()
    # Within an agent's loop or a conversation the request is its history: `input` is then
    # the user's latest message, so a template of {{ input }} alone still says something.
    latest = next((turn["content"] for turn in reversed(chat) if turn["role"] == "user"), None)
    body = await render_off_loop(
        config.body_template,
        {
            "input": request.input or latest or "",
            "messages": chat,
            "variables": request.variables,
            "tools": config.tools,
        },
        field="http.body_template",
        template_field="http.body_template",
    )
    headers = {"Content-Type": "application/json", **config.http_headers}
    method = config.http_method or "POST"
    events = None
    if on_delta is not None and config.stream and config.stream_path:
        events = _event_stream(config, config.stream_path, on_delta)
        if not any(name.lower() == "accept" for name in headers):
            headers["Accept"] = "text/event-stream, application/json;q=0.9"
    try:
        status, reply_headers, raw = await transport.send(
            method,
            config.base_url,
            body=body if method != "GET" else None,
            headers=headers,
            seconds=seconds,
            on_line=events.line if events is not None else None,
            pin=pin,
        )
    except transport.TransportError as exc:
        raise TargetError(exc.kind, str(exc)) from exc  # type: ignore[arg-type]
    if status >= 400:
        detail = raw[:DETAIL_READ_CHARS].decode(errors="replace")
        raise http_error(status, detail, reply_headers)
    if 300 <= status < 400:  # not followed: the SSRF guard only vetted the configured URL
        raise TargetError(
            "client_error",
            f"the endpoint answered {status} {httpx.codes.get_reason_phrase(status)} to "
            f"{reply_headers.get('location', '?')}; redirects are not followed, "
            "configure the final URL",
            status=status,
        )
    if events is not None and _is_event_stream(reply_headers):
        text, tool_calls = events.finish()
        return text, None, tool_calls
    # A whole answer (also from an endpoint that does not stream).
    if len(raw) > READ_ON_LOOP_BYTES:
        return await asyncio.to_thread(_read_answer, config, raw)
    return _read_answer(config, raw)


def _read_answer(config: TargetConfig, raw: bytes) -> Answer:
    """The text at the answer's `response_path`, and its tool calls."""
    assert config.response_path
    try:
        document = fastjson.loads_answer(raw)
    except ValueError as exc:
        raise TargetError("invalid_response", "the endpoint did not answer with JSON") from exc
    tool_calls = _http_tool_calls(config.tool_calls_path, document)
    matches = json_paths.compiled(config.response_path).find(document)
    if tool_calls and (not matches or matches[0].value is None):
        return "", None, tool_calls  # an answer that only calls tools
    if not matches:
        raise TargetError(
            "invalid_response", f"nothing at {config.response_path} in the endpoint's answer"
        )
    value = matches[0].value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text, None, tool_calls


def _http_tool_calls(path: str | None, document: Any) -> tuple[ToolCall, ...]:
    """The calls at `path`: one list, or each item the path finds. Nothing there (or null) is
    an answer without tool calls."""
    if not path:
        return ()
    return read_calls(_call_items(path, document), path)


def _call_items(path: str, document: Any) -> list[Any]:
    values = json_paths.values(path, document)
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    return [value for value in values if value is not None]


def _event_stream(
    config: TargetConfig, stream_path: str, on_delta: Callable[[str], None]
) -> EventStream:
    calls_path = config.tool_calls_path
    return EventStream(
        on_delta,
        stream_path=stream_path,
        find_piece=functools.partial(json_paths.values, stream_path),
        tool_calls_path=calls_path,
        find_calls=functools.partial(_call_items, calls_path) if calls_path else None,
    )


def _ignore(piece: str) -> None:
    pass


def _is_event_stream(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip() == "text/event-stream"
