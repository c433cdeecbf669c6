"""The pydantic-ai model (with its SDK client and connection pool) of each provider
configuration: built once, in a thread, and lent to its calls.

A model is kept per configuration, not per address its base URL's host answers: a host whose
DNS answers another address at every call would otherwise have a model built (each one TLS
contexts, tens of milliseconds of CPU) at every call. The address each call checked
(`utils.ssrf.vet`) is handed to the model's transport for that call only, so each request still
goes to the very address its call checked; connections are pooled per address, so none made
for one call's address serves another's. A model that leaves the cache has its client closed
once no call holds it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import httpx2
import structlog
from pydantic_ai.models import Model

from providers.config import TargetConfig
from providers.errors import TargetError
from utils.pinned_httpx import pinned_transport
from utils.ssrf import Pin, parse_http_url

log = structlog.get_logger(__name__)

MODEL_CACHE_SIZE = 256
_checked_pin: ContextVar[Pin | None] = ContextVar("checked_pin", default=None)


@dataclass(frozen=True)
class _Built:
    model: Model
    client: Any  # the httpx or httpx2 AsyncClient it was given


@dataclass
class _Slot:
    """A model being built or built, and how many calls hold it (or wait for it) now."""

    built: asyncio.Future[_Built]
    loop: asyncio.AbstractEventLoop  # the one its client belongs to
    holders: int = 0
    retired: bool = False


@dataclass
class _Cache:
    slots: OrderedDict[tuple[object, ...], _Slot] = field(default_factory=OrderedDict)
    closing: set[asyncio.Task[None]] = field(default_factory=set)  # held till done


_cache = _Cache()


@contextlib.asynccontextmanager
async def lent_model(config: TargetConfig, seconds: float, pin: Pin | None) -> AsyncIterator[Model]:
    """The configuration's model, for one call whose base URL's host was checked at `pin`'s
    address (None: the URL's host is reached as it is)."""
    slot = _slot(config, seconds, pinned=pin is not None)
    slot.holders += 1
    try:
        built = await _built(slot, config)
        checked = _checked_pin.set(pin)
        try:
            yield built.model
        finally:
            _checked_pin.reset(checked)
    finally:
        slot.holders -= 1
        if slot.retired and slot.holders == 0:
            _close(slot)


def _slot(config: TargetConfig, seconds: float, *, pinned: bool) -> _Slot:
    loop = asyncio.get_running_loop()
    key = (
        loop,  # clients belong to the loop they were made on
        config.id,
        config.provider,
        config.model,
        config.base_url,
        hashlib.sha256((config.api_key or "").encode()).hexdigest(),
        seconds,
        pinned,
    )
    slot = _cache.slots.get(key)
    if slot is not None:
        _cache.slots.move_to_end(key)
        return slot
    # Built in a thread (TLS contexts, the SDK's set-up: up to 0.1 s of CPU), once for all the
    # calls that ask for it meanwhile.
    building = loop.run_in_executor(None, _build, config, seconds, pinned)
    slot = _cache.slots[key] = _Slot(building, loop)
    slot.built.add_done_callback(functools.partial(_forget_failed, key))
    while len(_cache.slots) > MODEL_CACHE_SIZE:
        _retire(_cache.slots.popitem(last=False)[1])
    return slot


async def _built(slot: _Slot, config: TargetConfig) -> _Built:
    try:
        return await asyncio.shield(slot.built)  # a caller that gives up ends no other's wait
    except TargetError:
        raise
    except Exception as exc:  # the SDK refused the configuration (no key it can use)
        message = f"the {config.provider} client could not be set up: {type(exc).__name__}: {exc}"
        raise TargetError("configuration_error", message) from exc


def _forget_failed(key: tuple[object, ...], built: asyncio.Future[_Built]) -> None:
    if built.cancelled() or built.exception() is not None:
        slot = _cache.slots.get(key)
        if slot is not None and slot.built is built:
            del _cache.slots[key]


def _retire(slot: _Slot) -> None:
    """A model out of the cache: its client is closed once no call holds it."""
    slot.retired = True
    if slot.holders == 0:
        _close(slot)


def _close(slot: _Slot) -> None:
    """Closes the client in the background. Only on the loop it belongs to: one of a loop that
    has ended (as each test's does) lost its connections with it."""
    if not slot.built.done():
        slot.built.add_done_callback(lambda _: _close(slot))
        return
    if slot.built.cancelled() or slot.built.exception() is not None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is slot.loop:
        closing = running.create_task(_aclose(slot.built.result().client))
        _cache.closing.add(closing)
        closing.add_done_callback(_cache.closing.discard)


async def _aclose(client: Any) -> None:
    try:
        await client.aclose()
    except Exception as exc:  # a client that cannot close has nothing left to lose
        log.warning("closing a provider client failed", error=f"{type(exc).__name__}: {exc}")


class _CheckedForTheCall:
    """Read as a `Pin` by the pinned transport: the base URL's host, and the address checked
    for the call under way (there must be one, of this host, or nothing is sent)."""

    def __init__(self, host: str, http: ModuleType) -> None:
        self.host = host
        self._http = http

    @property
    def address(self) -> str:
        pin = _checked_pin.get()
        if pin is None or pin.host != self.host:
            raise self._http.ConnectError(f"no address of {self.host} was checked for this call")
        return pin.address


def _transport(config: TargetConfig, pinned: bool, http: ModuleType) -> Any:
    if not pinned:
        return pinned_transport(None, http)
    host = parse_http_url(config.base_url or "", field="base_url").host  # as `vet` reads it
    return pinned_transport(cast(Pin, _CheckedForTheCall(host, http)), http)


def _build(config: TargetConfig, timeout: float, pinned: bool) -> _Built:
    """A pydantic-ai model whose SDK neither retries nor waits longer than `timeout`, and
    reaches a configured base URL's host at the address checked for each call only."""
    name = config.model or ""
    provider = config.provider
    # The SSRF guard checks the configured URL: the SDKs must not follow a redirect elsewhere.
    if provider == "anthropic":
        from anthropic import AsyncAnthropic
        from anthropic import DefaultAsyncHttpxClient as AnthropicHttpClient
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        client: Any = AnthropicHttpClient(
            follow_redirects=False, transport=_transport(config, pinned, httpx2)
        )
        anthropic = AsyncAnthropic(
            api_key=config.api_key,
            base_url=config.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=client,
        )
        model: Model = AnthropicModel(name, provider=AnthropicProvider(anthropic_client=anthropic))
    elif provider == "groq":
        import httpx
        from groq import AsyncGroq
        from groq import DefaultAsyncHttpxClient as GroqHttpClient
        from pydantic_ai.models.groq import GroqModel
        from pydantic_ai.providers.groq import GroqProvider

        client = GroqHttpClient(follow_redirects=False, transport=_transport(config, pinned, httpx))
        groq = AsyncGroq(
            api_key=config.api_key,
            base_url=config.base_url,
            max_retries=0,
            timeout=timeout,
            http_client=client,
        )
        model = GroqModel(name, provider=GroqProvider(groq_client=groq))
    elif provider == "google":
        from pydantic_ai.models.google import GoogleModel
        from pydantic_ai.providers.google import GoogleProvider

        client = _client(config, pinned, timeout)
        with warnings.catch_warnings():
            # It takes any client timeout of 5 s for httpx's default: ours is the call's own.
            warnings.filterwarnings("ignore", "The `http_client` passed to the Google provider")
            google = GoogleProvider(
                api_key=config.api_key, base_url=config.base_url, http_client=client
            )
        model = GoogleModel(name, provider=google)
    elif provider == "mistral":
        from pydantic_ai.models.mistral import MistralModel
        from pydantic_ai.providers.mistral import MistralProvider

        client = _client(config, pinned, timeout)
        mistral = MistralProvider(
            api_key=config.api_key, base_url=config.base_url, http_client=client
        )
        model = MistralModel(name, provider=mistral)
    else:
        raise TargetError("configuration_error", f"unknown provider {provider!r}")
    return _Built(model, client)


def _client(config: TargetConfig, pinned: bool, timeout: float) -> httpx2.AsyncClient:
    """For the SDKs that take an httpx client (Google, Mistral): pinned, and its answers
    capped. httpx2, as pydantic-ai expects: it maps only httpx2's transport errors to its own
    (a legacy httpx client's failures would escape it, and it is deprecated there)."""
    return httpx2.AsyncClient(
        transport=_transport(config, pinned, httpx2),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx2.Timeout(timeout),  # not httpx's 5 s default
        event_hooks={"response": [_read_unless_streamed]},
    )


async def _read_unless_streamed(response: httpx2.Response) -> None:
    """An answer other than a successful event stream is read (capped) before the SDK sees it:
    streaming, Mistral's SDK quotes an error's empty body from an answer it never read, and
    fails (httpx's ResponseNotRead) where it would report the status."""
    streamed = response.headers.get("content-type", "").startswith("text/event-stream")
    if not (response.is_success and streamed):
        await response.aread()
