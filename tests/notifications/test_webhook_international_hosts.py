"""Webhooks to an international domain name (written in its xn-- form, as the SSRF guard
requires) are delivered. They never connected: the pinned transport compared httpx's decoded
host ('bücher.test') with the checked one ('xn--bcher-kva.test'). And a name whose xn-- label
does not decode (xn--zz.test) passed the guard, then httpx raised idna's error out of `send`,
which is never to raise: the delivery job failed outside its schedule, recording no attempt.
Now it is refused when saved, naming `url`, and not sent.

This machine has no route to a public address: a second loopback address (127.0.0.2) stands for
the public one the names resolve to (see tests/utils/test_ssrf.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from notifications.webhooks import Attempt, new_secret, send
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.helpers import assert_problem, create_project, register
from tests.stand_in import PUBLIC_STAND_IN, resolve_every_host_to_the_stand_in

BUCHER = "xn--bcher-kva.test"  # bücher.test
# Punycode that is not; a label IDNA refuses beside an xn-- one (httpx decodes them together).
UNDECODABLE = ["xn--zz.test", "xn--a.com", "xn--bcher-kva.my_host.test"]


@pytest.fixture(autouse=True)
def resolves_to_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return resolve_every_host_to_the_stand_in(monkeypatch)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(secrets=[new_secret()])
    server.host = PUBLIC_STAND_IN
    with server:
        yield server


async def _send(url: str, receiver: WebhookReceiver) -> Attempt:
    return await send(
        url,
        message_id="msg_idn",
        body='{"type":"webhook.test","timestamp":"2026-12-07T00:00:00.000Z","data":{}}',
        signing_secrets=receiver.secrets,
        sent_at=datetime.now(UTC),
        seconds=5.0,
        allow_private=False,
    )


@pytest.mark.parametrize("host", [BUCHER, f"hooks.{BUCHER}"])
async def test_a_webhook_to_an_international_name_is_delivered(receiver, host):
    attempt = await _send(f"http://{host}:{receiver.port}{receiver.path}", receiver)
    assert (attempt.status_code, attempt.error, attempt.delivered) == (200, None, True)
    assert list(receiver.handled) == ["msg_idn"]
    assert [r.request.headers["host"] for r in receiver.log] == [f"{host}:{receiver.port}"]


@pytest.mark.parametrize("host", UNDECODABLE)
async def test_a_name_whose_xn_label_does_not_decode_is_not_sent(
    receiver, resolves_to_the_stand_in, host
):
    attempt = await _send(f"http://{host}:{receiver.port}{receiver.path}", receiver)
    assert attempt.refused and attempt.status_code is None and not attempt.delivered
    assert attempt.error is not None
    assert attempt.error.startswith("not sent: the URL must name an international host")
    assert receiver.log == [] and resolves_to_the_stand_in == []


@pytest.mark.parametrize("host", UNDECODABLE)
async def test_a_webhook_url_whose_xn_label_does_not_decode_is_refused_when_saved(client, host):
    owner = await register(client)
    project = await create_project(client, owner)
    hooks = f"/api/v1/projects/{project['id']}/webhooks"
    body = {"url": f"https://{host}/hook", "events": ["run.completed"]}
    refused = await client.post(hooks, json=body, headers=owner.headers)
    problem = assert_problem(refused, 422, field="url")
    assert "xn-- labels that decode" in problem["detail"]

    created = await client.post(
        hooks, json={**body, "url": f"https://{BUCHER}/hook"}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    patched = await client.patch(
        f"{hooks}/{created.json()['id']}", json={"url": body["url"]}, headers=owner.headers
    )
    assert_problem(patched, 422, field="url")
