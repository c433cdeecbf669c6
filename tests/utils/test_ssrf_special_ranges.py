"""The IPv4 ranges IANA marks not globally reachable are refused whatever the interpreter's
`is_global` says of them: Python before 3.11.10 and 3.12.4 called most of 192.0.0.0/24 global,
192.0.0.192 (a cloud's metadata address) among it."""

from __future__ import annotations

import ipaddress

import pytest

from utils import ssrf


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.192",
        "192.0.0.8",
        "192.0.0.255",
        "192.88.99.1",  # the deprecated 6to4 relay anycast
        "198.18.0.1",
        "100.64.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::ffff:192.0.0.192",  # IPv6 forms carrying one
        "64:ff9b::c000:c0",
        "2002:c000:c0::1",
    ],
)
def test_an_address_iana_marks_not_globally_reachable_is_not_public(address: str) -> None:
    assert not ssrf.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["192.0.0.9", "192.0.0.10", "192.0.1.1", "192.88.98.1", "198.20.0.1", "8.8.8.8"]
)
def test_what_the_registry_leaves_global_stays_public(address: str) -> None:
    assert ssrf.is_public(ipaddress.ip_address(address))


async def test_a_url_at_such_an_address_is_refused_naming_the_field() -> None:
    with pytest.raises(ssrf.UnsafeUrl) as refused:
        await ssrf.vet("http://192.0.0.192/latest", field="base_url", allow_private=False)
    assert refused.value.errors == [{"field": "base_url", "message": refused.value.detail}]
    assert "private, loopback or link-local address" in refused.value.detail
