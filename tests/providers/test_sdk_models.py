"""One SDK model per provider configuration, whatever address its base URL's host answers at
each call: each call's request still goes to the address that call checked, nothing is sent
without one, the model is built off the event loop (once for the calls that ask for it at the
same time), and a model that leaves the cache has its client closed once no call holds it.

This machine has no route to a public address: loopback addresses (127.0.0.2, 127.0.0.3) stand
for the public ones the host name resolves to (see tests/providers/test_sdk_pinned.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from providers import sdk_models
from providers.config import TargetConfig, TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import FakeServer
from tests.providers.support import target_config
from utils import ssrf

HOST = "llm.rotating.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3")


@pytest.fixture
def answers() -> list[str]:
    """The addresses the host's name answers, one per lookup, in turn (DNS with a TTL of 0)."""
    return []


@pytest.fixture(autouse=True)
def rotating_dns(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> None:
    async def resolve(host: str) -> list[ssrf.Address]:
        address = ADDRESSES[len(answers) % len(ADDRESSES)]
        answers.append(address)
        return [ipaddress.ip_address(address)]

    real_is_public = ssrf.is_public
    monkeypatch.setattr(ssrf, "resolve", resolve)
    monkeypatch.setattr(
        ssrf, "is_public", lambda address: str(address) in ADDRESSES or real_is_public(address)
    )


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread each model was built on, one entry a build."""
    built: list[int] = []
    build = sdk_models._build

    def counted(*args: Any) -> sdk_models._Built:
        built.append(threading.get_ident())
        return build(*args)

    monkeypatch.setattr(sdk_models, "_build", counted)
    return built


def _servers(provider: str) -> list[FakeServer]:
    """One fake at each address, on the same port."""
    kind: type[FakeServer] = FakeAnthropic if provider == "anthropic" else FakeOpenAI
    for _ in range(20):  # the port free on the one address may be taken on the other
        servers: list[FakeServer] = []
        try:
            for address in ADDRESSES:
                server = kind()
                server.host = address
                server.port = servers[0].port if servers else 0
                servers.append(server.start())
            return servers
        except OSError:
            for server in servers:
                server.stop()
    raise RuntimeError("no port free on both addresses")


@pytest.fixture(params=["mistral", "anthropic"])
def fakes(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[FakeServer]]]:
    servers = _servers(request.param)
    try:
        yield request.param, servers
    finally:
        for server in servers:
            server.stop()


def _config(provider: str, port: int) -> TargetConfig:
    return target_config(provider, f"http://{HOST}:{port}", model="fake-1")


async def test_a_host_whose_address_changes_keeps_one_model_and_each_call_its_address(
    fakes: tuple[str, list[FakeServer]], answers: list[str], builds: list[int]
) -> None:
    provider, servers = fakes
    config = _config(provider, servers[0].port)
    for _ in range(4):
        reply = await call_target(config, TargetRequest(input="Hi"), allow_private_networks=False)
        assert reply.output
    assert answers == ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]
    # Each call's request went to the address that call checked, by the host's name.
    for server in servers:
        assert [r.headers["host"] for r in server.requests] == [f"{HOST}:{server.port}"] * 2
    assert len(builds) == 1  # not one per address


async def test_the_model_is_built_off_the_loop_once_for_the_calls_that_wait_for_it(
    fakes: tuple[str, list[FakeServer]], builds: list[int]
) -> None:
    provider, servers = fakes
    config = _config(provider, servers[0].port)
    ask = TargetRequest(input="Hi")
    replies = await asyncio.gather(
        *(call_target(config, ask, allow_private_networks=False) for _ in range(5))
    )
    assert all(reply.output for reply in replies)
    assert len(builds) == 1
    assert builds[0] != threading.get_ident()


def _client_of(config: TargetConfig) -> Any:
    """The HTTP client of the configuration's model (built, in the cache)."""
    (slot,) = [slot for key, slot in sdk_models._cache.slots.items() if key[1] == config.id]
    return slot.built.result().client


async def test_a_pinned_model_sends_nothing_without_an_address_checked_for_its_call() -> None:
    server = FakeOpenAI()
    server.host = ADDRESSES[0]
    with server:
        config = _config("mistral", server.port)
        checked = ssrf.Pin(host=HOST, address=ADDRESSES[0], port=server.port)
        async with sdk_models.lent_model(config, 5, checked):
            pass
        client = _client_of(config)
        url = f"http://{HOST}:{server.port}/v1/models"
        with pytest.raises(httpx2.ConnectError, match="no address of"):
            await client.get(url)  # no call under way
        other = ssrf.Pin(host="elsewhere.test", address=ADDRESSES[0], port=server.port)
        async with sdk_models.lent_model(config, 5, other):
            with pytest.raises(httpx2.ConnectError, match="no address of"):
                await client.get(url)  # a call checked another host
        assert server.requests == []


async def test_a_model_out_of_the_cache_is_closed_once_no_call_holds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdk_models, "MODEL_CACHE_SIZE", 1)
    first, second, third = (target_config("mistral", "http://127.0.0.1:9") for _ in range(3))
    async with sdk_models.lent_model(first, 5, None):
        held = _client_of(first)
        async with sdk_models.lent_model(second, 5, None):
            unheld = _client_of(second)
        # `first` has left the cache, but the call under way still holds it.
        await asyncio.gather(*sdk_models._cache.closing)
        assert not held.is_closed
    async with sdk_models.lent_model(third, 5, None):
        pass  # `second` leaves it, held by no call
    await asyncio.gather(*sdk_models._cache.closing)
    assert held.is_closed and unheld.is_closed
    assert [key[1] for key in sdk_models._cache.slots] == [third.id]


async def test_a_model_retired_while_it_is_built_serves_the_call_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdk_models, "MODEL_CACHE_SIZE", 1)
    waiting, crowding = (target_config("mistral", "http://127.0.0.1:9") for _ in range(2))
    build, gate = sdk_models._build, threading.Event()

    def held_back(*args: Any) -> sdk_models._Built:
        gate.wait(10)
        return build(*args)

    entered, leave = asyncio.Event(), asyncio.Event()

    async def call() -> None:
        async with sdk_models.lent_model(waiting, 5, None):
            entered.set()
            await leave.wait()

    monkeypatch.setattr(sdk_models, "_build", held_back)
    calling = asyncio.create_task(call())
    await asyncio.sleep(0)  # the call holds its model's slot, waiting for the build
    (slot,) = sdk_models._cache.slots.values()
    monkeypatch.setattr(sdk_models, "_build", build)
    async with sdk_models.lent_model(crowding, 5, None):
        pass  # pushes the model being built out of the cache
    gate.set()
    await entered.wait()
    client = slot.built.result().client
    await asyncio.gather(*sdk_models._cache.closing)
    assert slot.retired and not client.is_closed  # the waiting call is using it
    leave.set()
    await calling
    await asyncio.gather(*sdk_models._cache.closing)
    assert client.is_closed


@pytest.mark.parametrize("provider", ["google", "mistral", "groq"])
async def test_a_client_the_sdk_will_not_set_up_is_a_configuration_error(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    config = target_config(provider, "http://127.0.0.1:9", api_key=None)
    with pytest.raises(TargetError) as failed:
        await call_target(config, TargetRequest(input="Hi"), allow_private_networks=True)
    assert failed.value.kind == "configuration_error"
    assert "client could not be set up" in failed.value.message
