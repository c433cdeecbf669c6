"""What a receiver answers goes into the delivery log, which those shown only the webhook URL's
origin may read: a receiver that echoes its URL, whole or in pieces (for chat services' webhooks
the path is the credential), or names another URL, has none of it kept there."""

from __future__ import annotations

from datetime import UTC, datetime

from notifications.webhooks import Attempt, new_secret, send
from tests.fakes.webhook_receiver import Fault, WebhookReceiver
from utils.url_redaction import REDACTED

PATH = "/services/T0ABC123/B0DEF456/xoxSeCrEtToKeN"
QUERY_TOKEN = "qu3rys3cr3t"


async def _answered(answer: str, token: str = QUERY_TOKEN) -> Attempt:
    secret = new_secret()
    with WebhookReceiver(secrets=[secret], path=PATH) as receiver:
        url = f"{receiver.endpoint}?token={token}&v=1"
        receiver.enqueue(Fault.http(400, answer.replace("{url}", url)))
        return await send(
            url,
            message_id="msg_1",
            body='{"type":"run.completed"}',
            signing_secrets=[secret],
            sent_at=datetime.now(UTC),
            seconds=5,
            allow_private=True,
        )


async def test_a_receiver_echoing_its_path_and_query_has_them_kept_out_of_the_log() -> None:
    attempt = await _answered(
        f"no hook at {PATH}?token={QUERY_TOKEN}&v=1; token xoxSeCrEtToKeN; "
        f"query token={QUERY_TOKEN}; path {PATH.replace('/', '%2F')}"
    )
    assert attempt.status_code == 400 and attempt.error is not None
    for secret in ("xoxSeCrEtToKeN", QUERY_TOKEN, "T0ABC123", "B0DEF456"):
        assert secret not in attempt.error
    assert attempt.error.startswith(f"answered 400: no hook at {REDACTED}; token {REDACTED}")


async def test_no_url_a_receiver_names_is_kept_past_its_origin() -> None:
    attempt = await _answered("posted to {url}, see https://internal.example/admin/k3y?key=abc")
    assert attempt.error is not None
    assert attempt.error == "answered 400: posted to the URL, see https://internal.example/…"
    assert "k3y" not in attempt.error and "abc" not in attempt.error


async def test_a_plain_answer_is_kept_as_it_was() -> None:
    attempt = await _answered("bad signature version v1")
    assert attempt.error == "answered 400: bad signature version v1"


async def test_a_query_value_echoed_as_the_url_encodes_it_is_kept_out_of_the_log() -> None:
    """A signature such as Azure's `sig=Zx9%2BqL0pR7sT%3D`, echoed encoded, decoded, or with
    its plus read as a space."""
    token = "Zx9%2BqL0pR7+T%3D"
    attempt = await _answered(
        f"signature {token} invalid; decoded Zx9+qL0pR7+T=; as a form Zx9+qL0pR7 T=", token
    )
    assert attempt.error is not None
    for secret in (token, "Zx9+qL0pR7+T=", "Zx9+qL0pR7 T="):
        assert secret not in attempt.error, attempt.error
