"""International domain names, in the xn-- form the SSRF guard requires, reach the checked
address through every outbound client: the SDKs' pinned httpx and httpx2 transports (which
compared httpx's decoded host, 'bücher.test', with the checked 'xn--bcher-kva.test', and refused
every such name) and the shared pyreqwest transport. A name whose xn-- labels do not decode is
refused when the URL is read: httpx raised idna's own error for it, past the callers' handling.

A second loopback address (127.0.0.2) stands for the public one the names resolve to (see
tests/utils/test_ssrf.py)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import httpx
import httpx2
import pytest

from providers.config import TargetRequest
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI
from tests.providers.support import target_config
from tests.stand_in import PUBLIC_STAND_IN, resolve_every_host_to_the_stand_in
from utils import ssrf
from utils.pinned_httpx import pinned_transport
from utils.ssrf import Pin

BUCHER = "xn--bcher-kva.test"  # bücher.test


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.host = PUBLIC_STAND_IN
    with server:
        yield server


@pytest.fixture
def resolves_to_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_every_host_to_the_stand_in(monkeypatch)


@pytest.mark.parametrize(
    "host", [BUCHER, f"api.{BUCHER}", "xn--fiqs8s.xn--55qx5d.test", f"{BUCHER}."]
)
def test_an_international_name_in_its_xn_form_is_read(host: str) -> None:
    assert ssrf.parse_http_url(f"https://{host}/v1", field="base_url").host == host


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("xn--zz.test", "Invalid A-label"),
        ("xn--a.com", "not allowed"),
        ("api.xn--zz.test", "Invalid A-label"),
        ("xn--.test", "no Punycode"),
        ("xn--bcher-kva.my_host.test", "U+005F"),  # httpx decodes the whole name
    ],
)
def test_a_name_whose_xn_labels_do_not_decode_is_refused_naming_the_field(host, reason):
    with pytest.raises(ssrf.UnsafeUrl) as refused:
        ssrf.parse_http_url(f"https://{host}/v1", field="base_url")
    assert refused.value.errors == [{"field": "base_url", "message": refused.value.detail}]
    assert refused.value.detail.startswith("must name an international host by xn-- labels")
    assert reason in refused.value.detail


@pytest.mark.parametrize("http", [httpx, httpx2])
@pytest.mark.parametrize("host", [BUCHER, f"api.{BUCHER}"])
async def test_the_sdks_pinned_clients_reach_an_international_name(
    fake: FakeOpenAI, http: ModuleType, host: str
) -> None:
    pin = Pin(host=host, address=PUBLIC_STAND_IN, port=fake.port)
    async with http.AsyncClient(transport=pinned_transport(pin, http)) as client:
        response = await client.get(f"http://{host}:{fake.port}/v1/models")
        assert response.status_code == 200
        with pytest.raises(http.ConnectError, match="is not the host that was checked"):
            await client.get(f"http://xn--bcher-kva.other:{fake.port}/v1/models")
    assert [r.headers["host"] for r in fake.requests] == [f"{host}:{fake.port}"]


@pytest.mark.parametrize("provider", ["openai-compatible", "mistral"])  # pyreqwest; httpx2
@pytest.mark.usefixtures("resolves_to_the_stand_in")
async def test_a_provider_at_an_international_name_is_called(fake: FakeOpenAI, provider):
    base_url = f"http://{BUCHER}:{fake.port}" + ("/v1" if provider == "openai-compatible" else "")
    config = target_config(provider, base_url)
    reply = await call_target(config, TargetRequest(input="Hi"), allow_private_networks=False)
    assert reply.output == "echo: Hi"
    assert [r.headers["host"] for r in fake.requests] == [f"{BUCHER}:{fake.port}"]
