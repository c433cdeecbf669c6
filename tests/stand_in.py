"""A public stand-in for tests of the SSRF guard's pinning: every host name resolves to a
loopback address the guard takes as public, so a fake server there is reached by name."""

from __future__ import annotations

import ipaddress

import pytest

from utils import ssrf

PUBLIC_STAND_IN = "127.0.0.2"


def resolve_every_host_to_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names looked up, in order, as they are."""
    looked_up: list[str] = []

    async def resolve(host: str) -> list[ssrf.Address]:
        looked_up.append(host)
        return [ipaddress.ip_address(PUBLIC_STAND_IN)]

    real_is_public = ssrf.is_public
    monkeypatch.setattr(ssrf, "resolve", resolve)
    monkeypatch.setattr(
        ssrf,
        "is_public",
        lambda address: str(address) == PUBLIC_STAND_IN or real_is_public(address),
    )
    return looked_up
