"""The SSRF guard for user-supplied URLs (HTTP targets, provider base URLs, webhooks).

Only http(s) URLs whose host resolves to public addresses pass, unless the operator allows
private networks (ASSAY_ALLOW_PRIVATE_NETWORKS, e.g. for a local Ollama). Checked when a URL is
saved and again before every call, since DNS answers can change in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from utils.errors import InvalidInput

DNS_TIMEOUT = 5.0


class UnsafeUrl(InvalidInput):
    pass


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def parse_http_url(url: str, *, field: str) -> tuple[str, str]:
    """(scheme, host) of an http(s) URL, or a 422 naming the field."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}", field=field) from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("must be an http or https URL", field=field)
    if not host:
        raise UnsafeUrl("must include a host", field=field)
    if parts.username or parts.password:
        raise UnsafeUrl("must not carry credentials; use the API key or headers", field=field)
    return parts.scheme, host


async def resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(DNS_TIMEOUT):
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def check_url(url: str, *, field: str, allow_private: bool, require_resolution: bool) -> None:
    """Refuse URLs that reach loopback, link-local or private ranges.

    `require_resolution=False` (at save time) accepts a host that does not resolve yet; the
    call-time check, with `True`, refuses it.
    """
    _, host = parse_http_url(url, field=field)
    if allow_private:
        return
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise UnsafeUrl("must not point at this machine", field=field) from None
        try:
            addresses = await resolve(host)
        except (OSError, TimeoutError) as exc:
            if require_resolution:
                raise UnsafeUrl(f"host {host!r} does not resolve", field=field) from exc
            return
    blocked = [str(a) for a in addresses if not _is_public(a)]
    if blocked:
        raise UnsafeUrl(
            f"must not point at a private, loopback or link-local address ({blocked[0]}); "
            "an operator can allow private networks with ASSAY_ALLOW_PRIVATE_NETWORKS",
            field=field,
        )
