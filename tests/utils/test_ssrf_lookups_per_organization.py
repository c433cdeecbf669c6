"""Host lookups are shared by every organization of the process: one whose names never answer
(as many models, tested at once) held every lookup thread, and every other organization's calls
then failed, their hosts "not resolving", a configuration error no retry would mend. An
organization now has a few lookups under way at most, its further ones waiting for its own;
and a lookup that runs out of time is a connection error, which a call retries and a webhook
delivery tries again.

The system's lookup is replaced (`ssrf._getaddrinfo`, what runs on a lookup thread): names
under hanging.test wait until the test ends, then fail as a resolver whose servers never
answered does."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from notifications.webhooks import new_secret, send
from providers.config import TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.providers.support import target_config
from utils import ssrf

PUBLIC = "93.184.215.14"
TENANT, OTHER_TENANT = uuid.uuid4(), uuid.uuid4()


class Resolver:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.ended = threading.Event()

    def getaddrinfo(self, host: str) -> list[Any]:
        self.asked.append(host)
        if host.endswith("hanging.test"):
            self.ended.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host.endswith("nxdomain.test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 0))]

    def hanging(self) -> int:
        return sum(host.endswith("hanging.test") for host in self.asked)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):  # ten seconds at most, never a measure
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never came to pass")


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    resolver = Resolver()
    monkeypatch.setattr(ssrf, "_getaddrinfo", resolver.getaddrinfo)
    yield resolver
    resolver.ended.set()
    for _ in range(1000):  # the hanging lookups' threads end: nothing held for the next test
        with ssrf._lookups_lock:
            if not ssrf._lookups and not ssrf._lookups_of:
                return
        threading.Event().wait(0.01)
    raise AssertionError("lookups still held")


def _vet(host: str) -> Any:
    return ssrf.vet(f"https://{host}/v1", field="base_url", allow_private=False)


async def test_an_organization_whose_names_never_answer_holds_no_other_organizations_lookups(
    dns: Resolver,
) -> None:
    with ssrf.lookups_for(TENANT):
        held = [
            asyncio.create_task(_vet(f"m{i}.hanging.test"))
            for i in range(ssrf.DNS_THREADS + ssrf.LOOKUPS_PER_ORGANIZATION)
        ]
    await _until(lambda: dns.hanging() >= ssrf.LOOKUPS_PER_ORGANIZATION)
    await asyncio.sleep(0.05)  # room for more to start, were they allowed
    with ssrf.lookups_for(OTHER_TENANT):
        pin = await _vet("llm.other-tenant.test")
    assert pin is not None and pin.address == PUBLIC
    shared = await _vet("llm.no-tenant.test")  # lookups made for no organization
    assert shared is not None and shared.address == PUBLIC
    assert dns.hanging() == ssrf.LOOKUPS_PER_ORGANIZATION  # the rest wait for those
    dns.ended.set()
    for refused in await asyncio.gather(*held, return_exceptions=True):
        assert isinstance(refused, ssrf.LookupTimedOut), refused


async def test_an_organizations_further_lookups_wait_for_its_own_to_end(
    dns: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its callers giving up frees nothing: its lookups hold their threads until they end."""
    monkeypatch.setattr(ssrf, "DNS_TIMEOUT", 0.2)
    with ssrf.lookups_for(TENANT):
        held = [
            asyncio.create_task(_vet(f"m{i}.hanging.test"))
            for i in range(ssrf.LOOKUPS_PER_ORGANIZATION)
        ]
        for refused in await asyncio.gather(*held, return_exceptions=True):
            assert isinstance(refused, ssrf.LookupTimedOut), refused
        with pytest.raises(ssrf.LookupTimedOut) as waited:
            await _vet("llm.tenant.test")
        assert waited.value.errors == [{"field": "base_url", "message": waited.value.detail}]
        assert "llm.tenant.test" not in dns.asked  # it waited for a lookup of its own
        dns.ended.set()
        await _until(lambda: not ssrf._lookups_of)
        pin = await _vet("llm.tenant.test")
    assert pin is not None and pin.address == PUBLIC


async def test_organizations_past_the_unreserved_threads_get_one_lookup_each_from_the_reserve(
    dns: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each organization held only its own few lookup threads, yet enough organizations (one
    account may create 20 an hour) held them all: every other organization's lookups then
    waited, and failed. Now some threads are kept for organizations with no lookup under way."""
    monkeypatch.setattr(ssrf, "DNS_THREADS", 12)
    monkeypatch.setattr(ssrf, "RESERVED_LOOKUPS", 4)
    monkeypatch.setattr(ssrf, "LOOKUPS_PER_ORGANIZATION", 2)
    held: list[asyncio.Task[Any]] = []

    def hang(organizations: list[uuid.UUID], names: int) -> None:
        for organization in organizations:
            with ssrf.lookups_for(organization):
                held.extend(
                    asyncio.create_task(_vet(f"n{i}.{organization}.hanging.test"))
                    for i in range(names)
                )

    def asked_of(organization: uuid.UUID) -> int:
        return sum(str(organization) in host for host in dns.asked)

    filling = [uuid.uuid4() for _ in range(4)]  # 2 each: the 8 unreserved threads
    hang(filling, names=3)
    await _until(lambda: dns.hanging() == 8)
    reserved = [uuid.uuid4() for _ in range(3)]
    hang(reserved, names=2)
    await _until(lambda: dns.hanging() >= 11)
    await asyncio.sleep(0.05)  # room for more to start, were they allowed
    assert [asked_of(organization) for organization in filling] == [2, 2, 2, 2]
    # Past the unreserved threads, one each: their second waits for their first.
    assert [asked_of(organization) for organization in reserved] == [1, 1, 1]
    assert not any(task.done() for task in held)
    assert len(held) - len(dns.asked) == 4 + 3  # blocked, not asked: the rest hang

    with ssrf.lookups_for(uuid.uuid4()):  # none under way: the last reserved thread
        pin = await _vet("llm.fresh.test")
    assert pin is not None and pin.address == PUBLIC

    hang([uuid.uuid4()], names=1)  # the last reserved thread held: every thread is
    await _until(lambda: dns.hanging() == 12)
    monkeypatch.setattr(ssrf, "DNS_TIMEOUT", 0.2)
    with ssrf.lookups_for(uuid.uuid4()), pytest.raises(ssrf.LookupTimedOut):
        await _vet("llm.late.test")
    assert "llm.late.test" not in dns.asked

    dns.ended.set()
    for refused in await asyncio.gather(*held, return_exceptions=True):
        assert isinstance(refused, ssrf.LookupTimedOut), refused


def _http_target(host: str) -> Any:
    return target_config(
        "http",
        f"https://{host}/chat",
        api_key=None,
        http_method="POST",
        body_template='{"input": {{ input | tojson }}}',
        response_path="$.answer",
    )


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("llm.hanging.test", "connection_error"),  # ran out of time: retried
        ("llm.nxdomain.test", "configuration_error"),  # no such name: not
    ],
)
async def test_a_lookup_that_runs_out_of_time_is_a_connection_error_a_call_retries(
    dns: Resolver, monkeypatch: pytest.MonkeyPatch, host: str, kind: str
) -> None:
    monkeypatch.setattr(ssrf, "DNS_TIMEOUT", 0.2)
    with pytest.raises(TargetError) as failed:
        await call_target(
            _http_target(host), TargetRequest(input="hi"), allow_private_networks=False
        )
    assert failed.value.kind == kind, failed.value.message
    assert host in failed.value.message


async def test_the_resolvers_own_give_up_is_a_connection_error_too(dns: Resolver) -> None:
    dns.ended.set()  # hanging.test now fails at once, as a resolver that gave up does
    with pytest.raises(TargetError) as failed:
        await call_target(
            _http_target("llm.hanging.test"),
            TargetRequest(input="hi"),
            allow_private_networks=False,
        )
    assert failed.value.kind == "connection_error"


async def test_a_webhook_whose_host_lookup_runs_out_of_time_is_tried_again(
    dns: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssrf, "DNS_TIMEOUT", 0.2)
    attempt = await send(
        "https://hooks.hanging.test/in",
        message_id="msg_1",
        body='{"type":"run.completed"}',
        signing_secrets=[new_secret()],
        sent_at=datetime.now(UTC),
        seconds=5,
        allow_private=False,
    )
    assert not attempt.delivered and not attempt.refused
    assert attempt.error == "not sent: the URL host 'hooks.hanging.test' did not resolve in time"
