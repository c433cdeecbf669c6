"""The SSRF guard: the address checked is the address connected to (DNS rebinding gets
nowhere), for the shared HTTP client and the SDKs' httpx clients alike; IPv6 forms carrying
an IPv4 address are judged by it.

This machine has no route to a public address, so a second loopback address (127.0.0.2)
stands for the public answer: the guard is told it is public, and the rebinding resolver
answers it to the check and 127.0.0.1 (where a second sink listens on the same port) to any
later lookup."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import pytest

from providers.config import TargetConfig, TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI
from utils import ssrf
from utils.pinned_httpx import pinned_transport
from utils.ssrf import Pin

HOST = "llm.rebind.test"
PUBLIC_STAND_IN = "127.0.0.2"


@pytest.fixture
def sinks() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """(the checked address's server, an internal one on 127.0.0.1, same port)."""
    for _ in range(20):  # the port free on the one address may be taken on the other
        checked = FakeOpenAI()
        checked.host = PUBLIC_STAND_IN
        checked.start()
        internal = FakeOpenAI()
        internal.port = checked.port
        try:
            internal.start()
            break
        except OSError:
            checked.stop()
    else:
        raise RuntimeError("no port free on both addresses")
    try:
        yield checked, internal
    finally:
        checked.stop()
        internal.stop()


def _stand_in_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    real_is_public = ssrf.is_public
    monkeypatch.setattr(
        ssrf,
        "is_public",
        lambda address: str(address) == PUBLIC_STAND_IN or real_is_public(address),
    )


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first lookup answers the stand-in public address, every later one loopback."""
    lookups: list[str] = []

    async def resolve(host: str) -> list[ssrf.Address]:
        lookups.append(host)
        answer = PUBLIC_STAND_IN if len(lookups) == 1 else "127.0.0.1"
        return [ipaddress.ip_address(answer)]

    monkeypatch.setattr(ssrf, "resolve", resolve)
    _stand_in_is_public(monkeypatch)
    return lookups


def _config(provider: str, url: str) -> TargetConfig:
    return TargetConfig(
        id=uuid.uuid4(),
        name="rebind",
        provider=provider,
        model="fake-model",
        base_url=url,
        api_key="sk-stored-provider-key",
        parameters={},
        timeout_seconds=5,
        requests_per_minute=None,
        input_price_per_mtok=Decimal(0),
        output_price_per_mtok=Decimal(0),
        body_template='{"messages": {{ messages | tojson }}}' if provider == "http" else None,
        response_path="$.choices[0].message.content" if provider == "http" else None,
        http_method="POST" if provider == "http" else None,
    )


@pytest.mark.parametrize("provider", ["openai-compatible", "http"])
async def test_a_call_connects_to_the_address_that_was_checked(sinks, rebinding, provider):
    checked, internal = sinks
    path = "/v1" if provider == "openai-compatible" else "/v1/chat/completions"
    config = _config(provider, f"http://{HOST}:{checked.port}{path}")
    reply = await call_target(config, TargetRequest(input="hello"), allow_private_networks=False)
    assert reply.output
    assert rebinding == [HOST]  # resolved once, by the guard
    assert len(checked.requests) == 1
    assert checked.requests[0].headers["host"] == f"{HOST}:{checked.port}"
    assert internal.requests == []  # the loopback answer, and the key, went nowhere


async def test_a_later_lookup_that_turns_private_is_refused(sinks, rebinding):
    checked, internal = sinks
    config = _config("openai-compatible", f"http://{HOST}:{checked.port}/v1")
    await call_target(config, TargetRequest(input="first"), allow_private_networks=False)
    with pytest.raises(TargetError) as refused:
        await call_target(config, TargetRequest(input="again"), allow_private_networks=False)
    assert refused.value.kind == "configuration_error"
    # The refusal names no address: members would map internal names by it.
    assert "private, loopback or link-local" in str(refused.value)
    assert "127.0.0.1" not in str(refused.value)
    assert len(checked.requests) == 1 and internal.requests == []


@pytest.mark.parametrize("http", [httpx, httpx2])
async def test_the_sdks_clients_reach_the_pinned_address_only(sinks, http):
    checked, internal = sinks
    pin = Pin(host=HOST, address=PUBLIC_STAND_IN, port=checked.port)
    async with http.AsyncClient(transport=pinned_transport(pin, http)) as client:
        response = await client.get(f"http://{HOST}:{checked.port}/v1/models")
        assert response.status_code == 200
        with pytest.raises(http.ConnectError):
            await client.get(f"http://127.0.0.1:{checked.port}/v1/models")
    assert [r.headers["host"] for r in checked.requests] == [f"{HOST}:{checked.port}"]
    assert internal.requests == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
        ("64:ff9b:1::a9fe:a9fe", False),  # local-use NAT64: where its IPv4 sits is the network's
        ("64:ff9b:1:5db8:d8:2200::", False),  # (a /56 prefix here, 93.184.216.34: not judged)
        ("::ffff:0:a9fe:a9fe", False),  # IPv4-translated 169.254.169.254
        ("::ffff:0:5db8:d822", True),  # IPv4-translated 93.184.216.34
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("::a9fe:a9fe", False),  # IPv4-compatible 169.254.169.254
        ("::1", False),
        ("fec0::10", False),  # site-local: routed inside some networks still
        ("5f00::1", False),  # an SRv6 segment id: a function inside an operator's network
        ("3fff::1", False),  # documentation (RFC 9637); Python 3.11 calls these global
        ("100:0:0:1::1", False),  # the dummy prefix (RFC 9780)
        ("2606:4700:4700::1111", True),
    ],
)
def test_ipv6_forms_are_judged_by_the_ipv4_address_they_carry(address, public):
    assert ssrf.is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://llm.example.com/v1", "must be an http or https URL"),
        ("http:///v1", "must include a host"),
        ("https://user:secret@llm.example.com/v1", "must not carry credentials"),
        ("http://llm.example.com:99999/v1", "not a valid URL"),
        ("http://llm.example.com:0/v1", "a port from 1 to 65535"),
        ("http://[::1/v1", "not a valid URL"),
        # Host forms another URL parser reads differently, so that a pin would not apply:
        ("http://bücher.example/v1", "in its xn-- form"),
        ("http://faß.example/v1", "in its xn-- form"),
        ("http://127.0.0.1\\.attacker.example/v1", "ASCII letters, digits, dots and hyphens"),
        ("http://%31%32%37.0.0.1/v1", "ASCII letters, digits, dots and hyphens"),
        ("http://2130706433/v1", "four decimal numbers"),
        ("http://0x7f.1/v1", "four decimal numbers"),
        ("http://0177.0.0.1/v1", "four decimal numbers"),
        ("http://llm.example.0x1/v1", "four decimal numbers"),
        ("http://[fe80::1%25eth0]/v1", "without a zone"),
        ("http://[v1.x]/v1", "IPv6 address in brackets"),  # urlsplit: the name `v1.x`
        # Names no resolver takes (its UnicodeError was a 500).
        (f"http://{'a' * 64}.example/v1", "at most 63 characters"),
        (f"http://{'.'.join(['a' * 63] * 4)}.example/v1", "253 in all"),
    ],
)
def test_a_url_that_is_not_one_to_call_is_refused_naming_the_field_each_time(url: str, reason: str):
    # The second refusal, parsed once already, names its own field, not the first one's.
    for field in ("base_url", "http.url"):
        with pytest.raises(ssrf.UnsafeUrl) as refused:
            ssrf.parse_http_url(url, field=field)
        assert refused.value.errors == [{"field": field, "message": refused.value.detail}]
        assert reason in refused.value.detail
    assert ssrf.parse_http_url("https://llm.example.com:8443/v1", field="base_url") == (
        "https",
        "llm.example.com",
        8443,
    )
    assert ssrf.parse_http_url("https://llm.example.com/v1", field="base_url").port == 443
    longest = f"{'.'.join(['a' * 63] * 3)}.{'b' * 61}"  # 253 characters, each label 63 at most
    assert ssrf.parse_http_url(f"https://{longest}/v1", field="base_url").host == longest
    assert ssrf.parse_http_url("http://llm.example.com/v1", field="base_url").port == 80


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://xn--bcher-kva.example/v1", "xn--bcher-kva.example"),
        ("https://LLM.Example.com./v1", "llm.example.com."),
        ("https://llm_1.example.com/v1", "llm_1.example.com"),
        ("https://v1.example.123abc/v1", "v1.example.123abc"),
        ("http://192.0.2.1:8080/v1", "192.0.2.1"),
        ("http://[2606:4700::1111]/v1", "2606:4700::1111"),
    ],
)
def test_hosts_every_client_reads_alike_are_taken(url: str, host: str):
    assert ssrf.parse_http_url(url, field="base_url").host == host


@pytest.mark.parametrize("host", ["bücher.rebind.test", "127.0.0.2\\.rebind.test"])
async def test_a_host_the_client_would_read_otherwise_is_never_called(sinks, rebinding, host):
    """The pin is keyed by the name checked: a host the connecting client would spell another
    way (its own IDNA rules, a backslash ending the host) would get its own DNS lookup."""
    checked, internal = sinks
    config = _config("openai-compatible", f"http://{host}:{checked.port}/v1")
    with pytest.raises(TargetError) as refused:
        await call_target(config, TargetRequest(input="hello"), allow_private_networks=False)
    assert refused.value.kind == "configuration_error"
    assert rebinding == []
    assert checked.requests == [] and internal.requests == []


@pytest.fixture
def slow_dns(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], threading.Event]:
    """The system's lookup, held until the event is set; the names looked up, in order."""
    asked: list[str] = []
    answer = threading.Event()

    def getaddrinfo(host: str) -> list[Any]:
        asked.append(host)
        answer.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_STAND_IN, 0))]

    monkeypatch.setattr(ssrf, "_getaddrinfo", getaddrinfo)
    return asked, answer


async def test_callers_of_one_name_share_its_lookup_and_its_wait_is_theirs(slow_dns, monkeypatch):
    """A run's lanes calling a name whose servers are slow hold one lookup thread, not one
    each; a caller that gives up leaves the lookup to the others."""
    asked, answer = slow_dns
    monkeypatch.setattr(ssrf, "DNS_TIMEOUT", 0.2)
    with pytest.raises(TimeoutError):
        await ssrf.resolve("slow.example.test")
    monkeypatch.setattr(ssrf, "DNS_TIMEOUT", 10.0)
    waiting = [asyncio.create_task(ssrf.resolve("slow.example.test")) for _ in range(20)]
    await asyncio.sleep(0.05)
    answer.set()
    for addresses in await asyncio.gather(*waiting):
        assert addresses == [ipaddress.ip_address(PUBLIC_STAND_IN)]
    assert asked == ["slow.example.test"]
    assert ssrf._lookups == {}  # nothing kept once answered: the next call looks up again
    await ssrf.resolve("slow.example.test")
    assert asked == ["slow.example.test"] * 2


async def test_lookups_do_not_wait_for_the_processs_other_threads(slow_dns):
    """The default executor (exports, comparisons) all taken: a lookup still runs."""
    _, answer = slow_dns
    answer.set()
    loop = asyncio.get_running_loop()
    busy = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(busy)
    released = threading.Event()
    held = loop.run_in_executor(None, released.wait, 10)
    try:
        addresses = await asyncio.wait_for(ssrf.resolve("other.example.test"), 5)
        assert addresses == [ipaddress.ip_address(PUBLIC_STAND_IN)]
        assert not held.done()
    finally:
        released.set()
        await held


@pytest.fixture
def blackholed_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names under blackholed.test never answer (until the test ends); others answer the
    public stand-in at once. The names looked up, in order."""
    asked: list[str] = []
    ended = threading.Event()

    def getaddrinfo(host: str) -> list[Any]:
        asked.append(host)
        if host.endswith("blackholed.test"):
            ended.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_STAND_IN, 0))]

    monkeypatch.setattr(ssrf, "_getaddrinfo", getaddrinfo)
    _stand_in_is_public(monkeypatch)
    monkeypatch.setattr(ssrf, "SAVE_DNS_TIMEOUT", 10.0)
    yield asked
    ended.set()


async def test_urls_being_saved_do_not_take_the_lookups_calls_make(blackholed_dns):
    """A member saving webhooks (or models) on names whose servers never answer held every
    lookup thread for the resolver's timeouts: every other tenant's calls then failed, their
    hosts "not resolving". And each such save held its request's database connection."""

    def save(i: int) -> Any:
        url = f"https://h{i}.blackholed.test/hook"
        return ssrf.check_url(url, field="url", allow_private=False)

    holding = [asyncio.create_task(save(i)) for i in range(ssrf.SAVE_DNS_THREADS)]
    await asyncio.sleep(0.05)
    # The saves' own threads all held: more saves do not wait for one, nor look up (accepted:
    # each call checks the URL again).
    more = range(ssrf.SAVE_DNS_THREADS, ssrf.DNS_THREADS * 2)
    await asyncio.wait_for(asyncio.gather(*(save(i) for i in more)), 2)
    assert len(blackholed_dns) == ssrf.SAVE_DNS_THREADS
    pin = await asyncio.wait_for(
        ssrf.vet("https://api.example.test/v1", field="base_url", allow_private=False), 2
    )
    assert pin is not None and pin.address == PUBLIC_STAND_IN
    for held in holding:
        held.cancel()
    await asyncio.gather(*holding, return_exceptions=True)
