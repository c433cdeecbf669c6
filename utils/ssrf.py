"""The SSRF guard for user-supplied URLs (HTTP targets, provider base URLs, webhooks).

Only http(s) URLs whose host resolves to public addresses pass, unless the operator allows
private networks (ASSAY_ALLOW_PRIVATE_NETWORKS, e.g. for a local Ollama). Checked when a URL is
saved and again before every call. The call then connects to the very address checked (`vet`
returns it, pinned: the HTTP clients keep the Host header and the TLS server name), so a name
that answers a public address to the check and a private one a moment later (DNS rebinding)
reaches nothing it should not. IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4,
IPv4-compatible) are judged by that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import idna

from utils.errors import InvalidInput

DNS_TIMEOUT = 5.0


class UnsafeUrl(InvalidInput):
    pass


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
# Local-use NAT64 (RFC 8215): its IPv4 sits where the network's chosen prefix length puts it,
# unknowable here, so none of it counts as public (Python calls it global).
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
# Site-local (deprecated by RFC 3879, still routed inside some networks): Python before 3.12
# calls it global.
SITE_LOCAL = ipaddress.ip_network("fec0::/10")
# Not globally reachable in IANA's registry, yet global to Python 3.11: SRv6 segment ids
# (RFC 9602), which reach functions inside an operator's network, documentation (RFC 9637) and
# the dummy prefix (RFC 9780).
NOT_GLOBAL_IPV6 = (
    LOCAL_NAT64,
    SITE_LOCAL,
    ipaddress.ip_network("5f00::/16"),
    ipaddress.ip_network("3fff::/20"),
    ipaddress.ip_network("100:0:0:1::/64"),  # the dummy prefix (RFC 9780)
)
# Not globally reachable in IANA's registry, stated here rather than left to Python's is_global:
# before 3.11.10 and 3.12.4 it called most of 192.0.0.0/24 global (192.0.0.192, a cloud's
# metadata address, among it). And the deprecated 6to4 relay anycast (RFC 7526), which reaches
# whichever relay is nearest, one inside a network as well.
NOT_GLOBAL_IPV4 = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
    )
)
# Inside those, what the registry marks globally reachable: the PCP and TURN anycast addresses.
GLOBAL_IPV4 = (ipaddress.ip_network("192.0.0.9/32"), ipaddress.ip_network("192.0.0.10/32"))


@dataclass(frozen=True)
class Pin:
    """Where a vetted URL's host is to be reached: the address that was checked."""

    host: str
    address: str
    port: int


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if (
        address in NAT64
        or address in IPV4_TRANSLATED
        or (address in IPV4_COMPATIBLE and int(address) > 1)
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in NOT_GLOBAL_IPV6):
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    elif any(address in network for network in NOT_GLOBAL_IPV4) and not any(
        address in network for network in GLOBAL_IPV4
    ):
        return False
    return address.is_global and not address.is_multicast


class HttpUrl(NamedTuple):
    scheme: str
    host: str
    port: int  # the scheme's own when the URL gives none


def parse_http_url(url: str, *, field: str) -> HttpUrl:
    """The parts of an http(s) URL that a call needs, or a 422 naming the field."""
    parts = _http_url_parts(url)
    if isinstance(parts, str):
        raise UnsafeUrl(parts, field=field)
    return parts


_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@functools.lru_cache(maxsize=1024)
def _http_url_parts(url: str) -> HttpUrl | str:
    """The URL's parts, or why it is not one to call: parsed once per URL (each call of a run
    vets its model's URL again; parsing took 3 µs of the call, the cache 0.3 µs)."""
    if _SPACE_OR_CONTROL.search(url):
        # urlsplit drops tabs and newlines where the client that connects refuses the URL.
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not host:
        return "must include a host"
    if "[" in parts.netloc and ":" not in host:
        # `[v1.x]` (an IPvFuture literal): urlsplit reads it as the name `v1.x`, which no
        # client connects to.
        return "must write an IPv6 address in brackets, without a zone"
    if parts.username or parts.password:
        return "must not carry credentials; use the API key or headers"
    problem = _host_problem(host)
    if problem is not None:
        return problem
    if port == 0:
        return "must name a port from 1 to 65535"
    return HttpUrl(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


# The host forms every HTTP client reads as this module does. Anything else may be read another
# way by the client that connects (WHATWG URL parsing, as reqwest does: an international name
# encoded by other rules, a backslash ending the host, percent-escapes, numbers meaning an IPv4
# address), and then the pin, keyed by the name checked, would not apply to the name connected.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_ENDS_IN_A_NUMBER = re.compile(r"(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)\.?$")


def _host_problem(host: str) -> str | None:
    if ":" in host:  # an IPv6 address (urlsplit took its brackets off)
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            address = None
        if address is None or address.scope_id is not None:
            return "must write an IPv6 address in brackets, without a zone"
        return None
    if not _HOST_NAME.fullmatch(host):
        return (
            "must name its host in ASCII letters, digits, dots and hyphens "
            "(an international name in its xn-- form)"
        )
    if _ENDS_IN_A_NUMBER.search(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "must write an IPv4 address as four decimal numbers (such as 192.0.2.1)"
    if len(host.rstrip(".")) > 253 or any(len(label) > 63 for label in host.split(".")):
        return "must name its host in labels of at most 63 characters, 253 in all"
    if "xn--" in host:  # the httpx clients decode such a name, raising for one that is not
        try:
            idna.decode(host)
        except idna.IDNAError as exc:
            return f"must name an international host by xn-- labels that decode: {exc}"
    return None


# Lookups run on threads of their own, not the loop's default executor: a name whose servers
# never answer holds a thread for the resolver's own timeouts (up to half a minute) after the
# caller has given up, and must not hold up what else the process runs on threads (exports,
# comparisons). A lookup under way is shared by every caller asking for the same name, so a
# name that never answers holds one thread however many call it, and runs on to its end even
# when they have all given up (the next caller shares it rather than queueing another).
# An organization has at most LOOKUPS_PER_ORGANIZATION of them under way, counted until their
# threads end, and all organizations together DNS_THREADS - RESERVED_LOOKUPS, but for the
# reserve: one with none under way may take one of those threads. So names that never answer
# fill the unreserved threads at 48 organizations (4 each of 192), each further organization's
# hold one reserved thread, and an organization's lookup finds no thread only once 112 (48 + 64)
# organizations have names hanging at once; past the 48, its second lookup at a time waits for
# its first. A lookup that may not start waits for one of its organization's own to end, or for
# any when it has none (or runs out of time, a failure a call retries). Lookups made for no
# organization share one allowance. URLs being saved look up on threads of their own (below).
DNS_THREADS = 256  # started as needed: a thread waiting on the resolver costs little
RESERVED_LOOKUPS = 64
LOOKUPS_PER_ORGANIZATION = 4
SHARED_LOOKUPS = "shared"
_dns = ThreadPoolExecutor(max_workers=DNS_THREADS, thread_name_prefix="assay-dns")
_lookups: dict[str, Future[list[Any]]] = {}  # by host name
_lookups_of: dict[str, set[Future[list[Any]]]] = {}  # by organization: those it started
_lookups_lock = threading.Lock()  # the lookups end on their threads
_lookups_owner: ContextVar[str] = ContextVar("ssrf_lookups_owner", default=SHARED_LOOKUPS)


@contextlib.contextmanager
def lookups_for(organization_id: object | None) -> Iterator[None]:
    """Counts the lookups of the block, and of the tasks it starts, as `organization_id`'s."""
    owner = str(organization_id) if organization_id is not None else SHARED_LOOKUPS
    token = _lookups_owner.set(owner)
    try:
        yield
    finally:
        _lookups_owner.reset(token)


async def resolve(host: str) -> list[Address]:
    if _saving.get():
        return await _resolve_for_saving(host)
    async with asyncio.timeout(DNS_TIMEOUT):
        lookup = await _lookup(host, _lookups_owner.get())
        infos = await asyncio.shield(_watched(lookup))  # one caller's timeout ends no other's
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def _lookup(host: str, owner: str) -> Future[list[Any]]:
    """The lookup of `host` under way, or a new one of `owner`'s once it has one to spare."""
    while True:
        with _lookups_lock:
            lookup = _lookups.get(host)
            if lookup is not None:
                return lookup
            own = _lookups_of.get(owner, set())
            under_way = [other for others in _lookups_of.values() for other in others]
            if _may_start(len(own), len(under_way)):
                lookup = _lookups[host] = _dns.submit(_getaddrinfo, host)
                _lookups_of.setdefault(owner, set()).add(lookup)
                break
            busy = list(own) or under_way
        await asyncio.wait([_watched(other) for other in busy], return_when=asyncio.FIRST_COMPLETED)
    # Added outside the lock: a lookup already ended calls it at once, here.
    lookup.add_done_callback(functools.partial(_looked_up, host, owner))
    return lookup


def _may_start(own: int, under_way: int) -> bool:
    """Whether an organization with `own` lookups under way may start one, `under_way` in all."""
    if own >= LOOKUPS_PER_ORGANIZATION or under_way >= DNS_THREADS:
        return False
    return own == 0 or under_way < DNS_THREADS - RESERVED_LOOKUPS


def _getaddrinfo(host: str) -> list[Any]:
    return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)


def _looked_up(host: str, owner: str, lookup: Future[list[Any]]) -> None:
    with _lookups_lock:
        if _lookups.get(host) is lookup:
            del _lookups[host]
        own = _lookups_of.get(owner, set())
        own.discard(lookup)
        if not own:
            _lookups_of.pop(owner, None)


def _watched(lookup: Future[list[Any]]) -> asyncio.Future[list[Any]]:
    """The lookup as this loop awaits it, its failure read even when no one waits any more."""
    awaited = asyncio.wrap_future(lookup)
    awaited.add_done_callback(_read_later)
    return awaited


# Saving a URL looks its host up only to refuse a private address early: every call checks it
# again, and that check decides. Those lookups run on threads of their own, so that a tenant
# saving names whose servers never answer cannot take the threads calls look up on; for at most
# SAVE_DNS_TIMEOUT, since the request holds a database connection meanwhile; and not at all
# while those threads are all busy (the host is then taken as not resolving yet).
SAVE_DNS_THREADS = 4
SAVE_DNS_TIMEOUT = 2.0
_save_dns = ThreadPoolExecutor(max_workers=SAVE_DNS_THREADS, thread_name_prefix="assay-dns-save")
_save_lookups = 0  # running or queued on those threads (counted on them: a loop may close)
_save_lookups_lock = threading.Lock()
_saving: ContextVar[bool] = ContextVar("ssrf_saving", default=False)  # set by check_url


async def _resolve_for_saving(host: str) -> list[Address]:
    global _save_lookups
    with _save_lookups_lock:
        if _save_lookups >= SAVE_DNS_THREADS:
            raise TimeoutError("every lookup thread for saved URLs is busy")
        _save_lookups += 1
    lookup = asyncio.get_running_loop().run_in_executor(_save_dns, _counted_getaddrinfo, host)
    lookup.add_done_callback(_read_later)
    async with asyncio.timeout(SAVE_DNS_TIMEOUT):
        infos = await asyncio.shield(lookup)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _counted_getaddrinfo(host: str) -> list[Any]:
    global _save_lookups
    try:
        return _getaddrinfo(host)
    finally:
        with _save_lookups_lock:
            _save_lookups -= 1


def _read_later(lookup: asyncio.Future[list[Any]]) -> None:
    if not lookup.cancelled():
        lookup.exception()  # its callers may all have timed out: nobody else reads it


async def check_url(url: str, *, field: str, allow_private: bool) -> None:
    """Refuse URLs that reach loopback, link-local or private ranges (when a URL is saved). A
    host that does not resolve yet, or not within a moment, is accepted: the call-time check
    (`vet`) refuses it."""
    saving = _saving.set(True)
    try:
        await vet(url, field=field, allow_private=allow_private)
    except UnresolvedHost:
        pass
    finally:
        _saving.reset(saving)


class UnresolvedHost(UnsafeUrl):
    """The host did not resolve, perhaps for a moment only: no address of it was refused."""


class LookupTimedOut(UnresolvedHost):
    """The host's lookup ran out of time (its name servers did not answer, or the
    organization's lookups were all under way): not the name's fault, a later call may pass."""


async def vet(url: str, *, field: str, allow_private: bool) -> Pin | None:
    """Check a URL before a call: the address to connect to, resolved once and checked (None
    when no pin is needed: the host is an address, or private networks are allowed)."""
    _scheme, host, port = parse_http_url(url, field=field)
    if allow_private:
        return None
    literal = _literal(host)
    addresses = [literal] if literal is not None else await _resolved(host, field)
    if not all(is_public(address) for address in addresses):
        # Which address is left unsaid: members would map the internal network's names by it.
        raise UnsafeUrl(
            "must not point at a private, loopback or link-local address; an operator can "
            "allow private networks with ASSAY_ALLOW_PRIVATE_NETWORKS",
            field=field,
        )
    if literal is not None:
        return None  # an address: nothing to resolve, nothing to pin
    return Pin(host=host, address=str(addresses[0]), port=port)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _resolved(host: str, field: str) -> list[Address]:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        raise UnsafeUrl("must not point at this machine", field=field)
    try:
        addresses = await resolve(host)
    except TimeoutError as exc:
        raise LookupTimedOut(f"host {host!r} did not resolve in time", field=field) from exc
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:  # the name servers did not answer
            raise LookupTimedOut(f"host {host!r} did not resolve in time", field=field) from exc
        raise UnresolvedHost(f"host {host!r} does not resolve", field=field) from exc
    except (OSError, UnicodeError) as exc:  # UnicodeError: a label's length
        raise UnresolvedHost(f"host {host!r} does not resolve", field=field) from exc
    if not addresses:
        raise UnresolvedHost(f"host {host!r} does not resolve", field=field)
    return addresses
