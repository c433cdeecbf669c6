"""A webhook disabled while an attempt at one of its messages is under way: disabling fails
the message as not sent, but the attempt goes on, and the receiver may take the message. The
delivery log says what happened: the message delivered, or the attempt's failure."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fakes.webhook_receiver import Fault, WebhookReceiver
from tests.notifications.conftest import Live
from tests.notifications.test_webhooks import _deliveries, _hooks, _subscribe

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("answered", [200, 500])
async def test_an_attempt_under_way_when_its_webhook_is_disabled_is_recorded(
    live: Live, answered: int
) -> None:
    with WebhookReceiver() as receiver:
        receiver.latency = 1.5
        if answered != 200:
            receiver.enqueue(Fault.http(answered))
        hook, secret = await _subscribe(live, receiver.endpoint, ["run.completed"])
        receiver.secrets = [secret]
        await live.post(f"{_hooks(live)}/{hook}/test", {}, expect=202)
        deadline = time.monotonic() + 20
        while not receiver.requests:  # the attempt has reached the receiver
            assert time.monotonic() < deadline, "no attempt was made"
            await asyncio.sleep(0.05)
        disabled = await live.client.patch(
            f"/api/v1{_hooks(live)}/{hook}",
            json={"enabled": False},
            headers=live.account.headers,
        )
        assert disabled.status_code == 200, disabled.text
        [delivery] = await _deliveries(live, hook)
        while delivery["attempts"] == 0:  # the attempt, still under way, is recorded
            assert time.monotonic() < deadline, delivery
            await asyncio.sleep(0.1)
            [delivery] = await _deliveries(live, hook)
    assert delivery["last_status_code"] == answered
    if answered == 200:
        assert delivery["status"] == "delivered", delivery
        assert delivery["message_id"] in receiver.handled
    else:
        assert delivery["status"] == "failed", delivery
        assert delivery["last_error"].startswith("the webhook was disabled during an attempt")
