"""A URL whose host resolves to an internal address is refused naming its field, not the
address: any member saving URLs would otherwise map the internal network's names."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from utils import ssrf


def _internal(host: str) -> list[Any]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", 0))]


@pytest.mark.parametrize("saving", [True, False])
async def test_a_host_resolving_to_an_internal_address_is_refused_without_naming_it(
    monkeypatch: pytest.MonkeyPatch, saving: bool
) -> None:
    monkeypatch.setattr(ssrf, "_getaddrinfo", _internal)
    check = ssrf.check_url if saving else ssrf.vet
    with pytest.raises(ssrf.UnsafeUrl) as refused:
        await check("https://billing-db.corp.internal/", field="url", allow_private=False)
    assert refused.value.errors == [{"field": "url", "message": refused.value.detail}]
    assert "private, loopback or link-local address" in refused.value.detail
    assert "10.20.30.40" not in refused.value.detail
