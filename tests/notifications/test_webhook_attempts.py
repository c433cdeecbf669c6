"""One attempt at sending a message, on its own: the SSRF guard at sending time, redirects,
timeouts and large answers, each a short error for the delivery log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from notifications.webhooks import new_secret, send
from tests.fakes.webhook_receiver import Fault, WebhookReceiver
from utils.logging import configure_logging


async def _send(url: str, secret: str, *, seconds: float, allow_private: bool) -> Any:
    """One attempt at sending a test message, signed with `secret`."""
    return await send(
        url,
        message_id="msg_1",
        body='{"type":"webhook.test","timestamp":"2026-12-02T00:00:00.000Z","data":{}}',
        signing_secrets=[secret],
        sent_at=datetime.now(UTC),
        seconds=seconds,
        allow_private=allow_private,
    )


async def test_one_attempt_says_what_went_wrong_and_reads_little() -> None:
    """Nothing is sent where the guard refuses; the URL (it may carry a token) is never in
    an error."""
    secret = new_secret()
    with WebhookReceiver(secrets=[secret]) as receiver:

        async def attempt(url: str = receiver.endpoint, allow_private: bool = True) -> Any:
            return await _send(url, secret, seconds=1.0, allow_private=allow_private)

        refused = await attempt(allow_private=False)
        assert refused.status_code is None and not refused.delivered
        assert refused.error.startswith("not sent: the URL must not point at a private")
        assert receiver.log == []  # the guard refused before any connection

        receiver.enqueue(Fault.http(302, headers={"location": "http://169.254.169.254/"}))
        moved = await attempt()
        assert moved.status_code == 302
        assert moved.error == "answered 302: redirects are not followed, configure the final URL"

        receiver.enqueue(Fault.hang(5))
        slow = await attempt()
        assert slow.error == "no answer within 1 s" and 900 <= slow.latency_ms < 3000

        # A 2xx whose body never ends was "no answer" and sent again: the status is its word.
        receiver.enqueue(Fault.stall(200, 5))
        stalled = await attempt()
        assert stalled.status_code == 200 and stalled.delivered and stalled.error is None
        receiver.enqueue(Fault.stall(503, 5))
        failing = await attempt()
        assert failing.status_code == 503 and failing.error == "answered 503"

        receiver.enqueue(Fault.http(500, "x" * 100_000))
        large = await attempt()
        assert large.status_code == 500 and large.error == "answered 500: " + "x" * 200

        tokened = f"{receiver.url}/hooks/assay?token=s3cret"
        receiver.stop()
        down = await attempt(url=tokened)
        assert down.error.startswith("could not connect") and "s3cret" not in down.error

    assert len([r for r in receiver.log if r.outcome == "fault"]) == 5


async def test_an_answer_the_database_cannot_hold_is_shown_storable() -> None:
    """A NUL in an error page (UTF-16, say) made the attempt's record fail: the attempt went
    unlogged and the webhook's retry schedule unused."""
    secret = new_secret()
    with WebhookReceiver(secrets=[secret]) as receiver:
        receiver.enqueue(Fault.http(500, "bad\x00thing"))
        answered = await _send(receiver.endpoint, secret, seconds=1.0, allow_private=True)
    assert answered.status_code == 500 and answered.error == "answered 500: bad\ufffdthing"


async def test_only_an_address_the_guard_refuses_ends_the_attempts() -> None:
    """A private address will be refused at every attempt; a name that does not resolve may
    resolve later, and a receiver that is down may come back."""
    secret = new_secret()
    with WebhookReceiver(secrets=[secret]) as receiver:
        private = await _send(receiver.endpoint, secret, seconds=1.0, allow_private=False)
        unresolved = await _send(
            "https://nothing.invalid/hooks", secret, seconds=3.0, allow_private=False
        )
        url = receiver.endpoint
        receiver.stop()
        down = await _send(url, secret, seconds=1.0, allow_private=True)
    assert private.refused and not private.delivered
    assert unresolved.error == "not sent: the URL host 'nothing.invalid' does not resolve"
    assert not unresolved.refused and not down.refused


async def test_a_url_the_http_client_refuses_ends_the_attempts_without_raising() -> None:
    """The guard's parse passes it, the client refuses it (longer than it reads): an
    attempt, refused as every later one would be, with the URL (it may hold a token) unsaid."""
    url = "http://127.0.0.1:9/hooks?token=" + "s3cret" * 12_000
    refused = await _send(url, new_secret(), seconds=2.0, allow_private=True)
    assert refused.refused and refused.status_code is None
    assert refused.error == "not sent: the URL is not one the HTTP client accepts"


def test_a_url_in_a_clients_error_shows_its_host_only() -> None:
    """The pinned transport connects to the checked address: a URL in the client's words is
    then not the one configured, and its path (a chat service's credential) must go too."""
    from notifications.webhooks import _reason

    url = "https://hooks.example.com/services/T000/B000/PATHSECRET?token=QUERYSECRET"
    pinned = "https://192.0.2.10/services/T000/B000/PATHSECRET?token=QUERYSECRET"
    said = _reason(httpx.ConnectError(f"connecting to {pinned} failed; {url}"), url)
    assert said == "connecting to https://192.0.2.10/… failed; the URL"


async def test_a_urls_secret_never_reaches_the_log(capfd: pytest.CaptureFixture[str]) -> None:
    """Logging as a server does by default (INFO): the HTTP client's line with the whole URL
    is not written, a webhook's path and token being secrets."""
    secret = new_secret()
    configure_logging("json", "INFO")
    try:
        with WebhookReceiver(secrets=[secret]) as receiver:
            url = f"{receiver.url}/services/T000/B000/PATHSECRET?token=QUERYSECRET"
            answered = await _send(url, secret, seconds=5.0, allow_private=True)
        logged = capfd.readouterr().err
    finally:
        configure_logging("console")
    assert answered.status_code == 404  # sent, to a path the receiver does not serve
    assert "PATHSECRET" not in logged and "QUERYSECRET" not in logged


def test_retries_follow_the_standard_webhooks_schedule() -> None:
    """By default a failed delivery is retried after 5 s, 5 min, 30 min, 2 h, 5 h, then every
    10 h: eight attempts span more than a day of a receiver being down."""
    from app.engine.webhooks import retry_delay
    from utils.config import Settings

    settings = Settings()
    schedule = settings.webhook_retry_seconds
    assert schedule == [5, 300, 1800, 7200, 18000, 36000]
    for attempt, expected in [(1, 5), (2, 300), (5, 18000), (6, 36000), (19, 36000)]:
        delay = retry_delay(schedule, attempt)
        assert expected * 0.9 <= delay <= expected * 1.1, (attempt, delay)
    span = sum(schedule[min(n, len(schedule)) - 1] for n in range(1, settings.webhook_max_attempts))
    assert span > 24 * 3600
    assert Settings(webhook_retry_seconds="1, 2.5").webhook_retry_seconds == [1.0, 2.5]
    with pytest.raises(ValueError, match="none negative"):
        Settings(webhook_retry_seconds="1,-2")


@pytest.mark.parametrize("hours", [-7, 0, 2, 13])
def test_a_message_signed_at_a_time_of_any_zone_verifies(hours: int) -> None:
    """The library signs the time's wall clock read as UTC: given a time of another zone, its
    signature and the timestamp header named two different instants."""
    from datetime import timedelta, timezone

    import standardwebhooks

    from notifications.webhooks import signature_headers

    secret = new_secret()
    at = datetime.now(timezone(timedelta(hours=hours)))
    body = '{"type":"webhook.test"}'
    headers = signature_headers("msg_1", body, [secret], at)
    assert int(headers["webhook-timestamp"]) == int(at.timestamp())
    standardwebhooks.Webhook(secret).verify(body, headers)  # raises when it does not verify
